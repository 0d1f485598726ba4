"""abcGPT's own code trained at the dial study's settings: the reference of `studies.dial --variants`.

abcGPT's GatedGPT (its gated_gpt_tent.py) at the `--variants` settings gives the reference figures
that `python -m studies.dial --variants` prints beside succu's GatedGPT.

    python -m studies.abcgpt_reference PATH/TO/abcGPT [--steps 3000] [--seeds 1337,1,2]
                                       [--out runs/abcgpt_reference.json] [--jobs 1] [--dry-run]

PATH is an abcGPT checkout (iamtrask/abcGPT); only its gated_gpt_tent.py is used, loaded by path
(importlib), nothing written into the checkout. The model is abcGPT's GatedGPT and GatedGPTConfig;
the training is its notebook's (notebooks/train_gated_tent_karpathy_sts.ipynb, `train_gated`),
written out here, step by step:

    alpha ~ Beta(0.5, 0.5) per iteration, the batch's corpus ~ Bernoulli(alpha) (Shakespeare with
    probability alpha), loss = model(x, alpha, y) (no `corpus`: unrouted, as the notebook trains);
    AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on the matrices and 0 on the vectors,
    100 warmup steps then cosine to 1e-4 at the last step, gradients clipped at 1.0.

Everything else is the dial study's `--variants` (studies/dial.py: `variant_train`, whose
`reference` variant is this recipe in succu): 4 layers, 4 heads, 128 wide, block 64, batch 12,
dropout 0, bias off, narrowness 1 (the notebook's 6x384, block 256, batch 64, dropout 0.2 and 10,000
GPU steps are its full size), 3,000 steps, and the same data: succu's MixtureDataModule over
TinyStories and Shakespeare (char-level, Shakespeare in abcGPT's surface form), whose data
pipeline draws each batch's alpha, corpus and windows (`succu.dial.DialSampler`, one Beta(0.5, 0.5)
alpha per batch) from generators seeded by (seed, batch index): the `reference` variant's draws
exactly. Per seed: torch.manual_seed(seed) before the model is built (its initial weights, as the
notebook seeds them), the specialties' mask_seed, and the windows' and draws' seed (the notebook's
seed 1337 is the first). Scored on the variants' validation windows (256 fixed windows per corpus):
the token-weighted val loss of each corpus at each alpha of studies.dial.ALPHAS.

Writes --out (JSON: per seed, then "mean" and "sd" over seeds, with the settings and the sha256 of
the gated_gpt_tent.py trained) and prints the table. `--dry-run`: 4 steps of a 1-layer, 16-wide
model on 16-character windows, the whole path on the CPU in seconds (not a reference).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

from studies import runner

runner.offline()

import torch  # noqa: E402

from studies.dial import (  # noqa: E402
    ALPHAS,
    REFERENCE_JSON,
    TWO,
    VARIANT_SIZE,
    VARIANT_WINDOWS,
    mean_sd,
    variant_data,
)
from succu.dial import DialSampler  # noqa: E402
from succu.io import atomic_write  # noqa: E402
from succu.optim import warmup_cosine  # noqa: E402

ABCGPT_FILES = ("gated_gpt_tent.py",)
USAGE = "usage: python -m studies.abcgpt_reference PATH/TO/abcGPT (a clone of https://github.com/iamtrask/abcGPT)"
# abcGPT's notebook: train_gated(n_iters, lr=1e-3, warmup=100, lr_decay_iters=n_iters, min_lr=1e-4,
# beta2=0.99, weight_decay=0.1, grad_clip=1.0, alpha_dist='beta_half')
LR, MIN_LR, WARMUP, BETAS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, 1e-4, 100, (0.9, 0.99), 0.1, 1.0
DRY_RUN = dict(steps=4, model=dict(block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0),
               windows=dict(block_size=16, batch_size=4, val_windows=8))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("abcgpt", nargs="?", help="path of an abcGPT checkout (read only)")
    p.add_argument("--steps", type=int, default=3000, help="training steps per seed (default 3000)")
    p.add_argument("--seeds", default="1337,1,2", help="comma list (default 1337,1,2)")
    p.add_argument("--out", type=Path, default=REFERENCE_JSON, help=f"the JSON (default {REFERENCE_JSON})")
    p.add_argument("--jobs", type=int, default=1, help="seeds at once, one torch thread each (default 1)")
    p.add_argument("--cache_dir", default=None, help="token cache (default: the datamodule's)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help=f"{DRY_RUN['steps']} steps of a tiny model: the path, not a reference")
    args = p.parse_args(argv)
    if args.abcgpt is None:
        sys.exit(f"error: no abcGPT checkout given; {USAGE}")
    missing = [f for f in ABCGPT_FILES if not (Path(args.abcgpt) / f).is_file()]
    if missing:
        sys.exit(f"error: {args.abcgpt} lacks {', '.join(missing)}; {USAGE}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds takes a comma list of integers, got {args.seeds!r}")
    if args.dry_run:
        args.steps = DRY_RUN["steps"]
    if args.steps < 1 or args.jobs < 1:
        p.error(f"--steps and --jobs must be >= 1, got {args.steps}, {args.jobs}")
    return args


def load_abcgpt(checkout: Path):
    """abcGPT's gated_gpt_tent.py as a module, loaded from its path (it imports only torch)."""
    path = Path(checkout) / "gated_gpt_tent.py"
    spec = importlib.util.spec_from_file_location("abcgpt_gated_gpt_tent", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def val_losses(model, batches: list[dict], names: list[str]) -> dict[str, list[float]]:
    """Token-weighted val loss of each corpus at each alpha of ALPHAS (batches hold one corpus each)."""
    model.eval()
    out = {}
    for name in names:
        mine = [b for b in batches if names[int(b["source"][0])] == name]
        tokens = sum(b["labels"].numel() for b in mine)
        out[name] = [sum(float(model(b["input_ids"], alpha, b["labels"])[1]) * b["labels"].numel()
                         for b in mine) / tokens for alpha in ALPHAS]
    return out


def train_seed(seed: int, checkout: str, steps: int, dry_run: bool, cache_dir: str | None) -> dict:
    """One seed: abcGPT's model trained by its notebook's loop on the variants' data and scored."""
    runner.quiet_worker()
    abc = load_abcgpt(Path(checkout))
    size, windows = (DRY_RUN["model"], DRY_RUN["windows"]) if dry_run else (VARIANT_SIZE, VARIANT_WINDOWS)
    dm = variant_data(seed, cache_dir, **windows)
    dm.install_dial(DialSampler(a=0.5, b=0.5, per_sample=False))  # one alpha and corpus per batch
    draws = dm.sampler()
    torch.manual_seed(seed)
    model = abc.GatedGPT(abc.GatedGPTConfig(vocab_size=dm.vocab_size, bias=False, mask_seed=seed,
                                            tent_narrowness=1.0, **size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=LR, betas=BETAS)
    warmup = min(WARMUP, steps // 5)  # 100 at the real sizes; a few-step run still decays
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:  # the notebook's get_lr: warmup, cosine to MIN_LR
            group["lr"] = LR * warmup_cosine(step, warmup, steps, MIN_LR / LR)
        batch = draws.batch(step)
        _, loss = model(batch["input_ids"], float(batch["alpha"][0]), batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    dm.setup("validate")
    losses = val_losses(model, dm.val_batches(), list(dm.corpora))
    return {"seed": seed, "val_loss": losses, "train_seconds": seconds,
            "seconds": time.perf_counter() - start, "params": sum(p.numel() for p in model.parameters())}


def summary(args: argparse.Namespace, runs: list[dict]) -> dict:
    size, windows = (DRY_RUN["model"], DRY_RUN["windows"]) if args.dry_run else (VARIANT_SIZE, VARIANT_WINDOWS)
    stats = {c: [mean_sd([r["val_loss"][c][i] for r in runs]) for i in range(len(ALPHAS))] for c in TWO}
    code = (Path(args.abcgpt) / "gated_gpt_tent.py").read_bytes()
    return {
        "what": "abcGPT's gated_gpt_tent.py trained by its notebook's loop at the dial study's variant "
                "settings: val loss (nats/char) per corpus at each alpha",
        "command": "python -m studies.abcgpt_reference " + " ".join(args.argv),
        "gated_gpt_tent_sha256": hashlib.sha256(code).hexdigest(), "dry_run": args.dry_run,
        "steps": args.steps, "seeds": args.seeds, "alphas": ALPHAS,
        "settings": {"model": size, "windows": windows, "lr": LR, "min_lr": MIN_LR,
                     "warmup": min(WARMUP, args.steps // 5), "betas": list(BETAS), "weight_decay": WEIGHT_DECAY,
                     "grad_clip": GRAD_CLIP, "alpha": "Beta(0.5, 0.5), one per batch; corpus ~ Bernoulli(alpha)",
                     "narrowness": 1.0, "routing": False},
        "runs": runs,
        "mean": {c: [m for m, _ in stats[c]] for c in TWO},
        "sd": {c: [s for _, s in stats[c]] for c in TWO},
    }


def table(data: dict) -> str:
    lines = [f"abcGPT's gated_gpt_tent.py, {data['steps']} steps, seeds {','.join(map(str, data['seeds']))}"
             f"{' (--dry-run: not a reference)' if data['dry_run'] else ''}: val loss (nats/char), mean ± sd",
             "alpha  " + "".join(f"{c:>18}" for c in TWO)]
    for i, alpha in enumerate(data["alphas"]):
        lines.append(f"{alpha:<7g}" + "".join(f"{data['mean'][c][i]:>10.3f} ± {data['sd'][c][i]:.3f}" for c in TWO))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    torch.set_num_threads(1)
    print(f"{len(args.seeds)} seeds x {args.steps} steps of abcGPT's GatedGPT from {args.abcgpt}, "
          f"{args.jobs} at a time, one torch thread each", flush=True)
    started = time.perf_counter()

    def progress(run: dict) -> None:
        ends = ", ".join(f"{c} {run['val_loss'][c][-1 if c == TWO[1] else 0]:.4f}" for c in TWO)
        print(f"  [{time.perf_counter() - started:5.0f}s] seed {run['seed']}: own ends {ends} "
              f"(train {run['train_seconds']:.0f} s)", flush=True)

    work = partial(train_seed, checkout=str(Path(args.abcgpt).resolve()), steps=args.steps,
                   dry_run=args.dry_run, cache_dir=args.cache_dir)
    runs = runner.pool_map(work, args.seeds, args.jobs, progress)
    bad = [(r["seed"], c) for r in runs for c in TWO if not all(map(math.isfinite, r["val_loss"][c]))]
    data = summary(args, runs)
    atomic_write(args.out, (json.dumps(data, indent=1) + "\n").encode())
    print(table(data))
    print(f"wrote {args.out}")
    if bad:
        sys.exit(f"error: non-finite val loss (seed, corpus): {bad}")


if __name__ == "__main__":
    main()
