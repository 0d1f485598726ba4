"""NoiseLM against a same-size softmax transformer, with one ablation per idea.

    python bench/noiselm.py [--threads 1] [--succ_steps 1000] [--seeds 0 1] [--ts_steps 300]
                            [--parts succulent,stop,tinystories,lookup]
    python bench/noiselm.py --quick          # smoke test: a few steps of everything

Everything is measured in this run, on one thread by default. Steps are few (CPU budget): the
TinyStories numbers are early-training numbers. Every model is trained by the product,
`succu.fit.main` (what `python -m succu.fit` runs), from a shipped config plus command-line
overrides (steps, seeds, the variant's fields), so the recipe is the config's: AdamW betas
(0.9, 0.99), warmup then cosine to 0.1 x lr, clip 1.0. The K = 1 row of part 1, seed 0, is

    python -m succu.fit --config configs/noiselm_succulent.yaml --trainer.max_steps 1000 \
        --seed_everything 0 --model.init_args.model.n_noise 1

Validation runs once, after the last step; its val/loss is the module's own (token-weighted NLL;
NoiseLM's outputs are log-probabilities, so it is exact). Seconds are the Trainer's training time
(validation excluded).

1. Succulent QA (answers of different lengths), word tokens: configs/noiselm_succulent.yaml and
   its GPT control configs/noiselm_gpt_succulent.yaml (learned token embedding, tied softmax
   head); the softmax-head control is NoiseLM's inputs and encoder with a softmax head and K = 1.
   All have the same encoder size (2 layers, 4 heads, 64 wide; codes d = 64), train the same steps
   on the same data stream (batch 32, lr 3e-3, weight decay 0.01), for each of two model seeds
   (the val set is small, so seed spread is printed). Printed: val loss (exact NLL per token on
   the held-out pairs), greedy answer exact match on the training and held-out questions (EOS
   stop), parameters, seconds; and how the full model uses its states.
   Variants: full (K = 4 noise states, 3 stride-1 levels, 4 scattershot subsets, fixed
   Uniform(0, 1) codes); K = 1; no hierarchy (no levels, no subsets); trainable C; centred codes.
2. Stop rule, on the full NoiseLM of part 1: the tolerance is calibrated teacher-forced on the
   training questions; then EOS, the key rule (greedy, EOS banned) and the stub search (B = 4)
   answer the training and held-out questions. Printed: mean absolute length error (tokens),
   exact-stop rate (length equals the reference answer's) and answer exact match.
3. TinyStories characters at baby size: configs/noiselm_tinystories.yaml and its GPT control
   configs/gpt_tinystories_char.yaml (4 layers, 4 heads, 128 wide, block 64, batch 12, lr 1e-3;
   codes d = 128), the same variants, the same (few, stated) steps with warmup min(100, steps / 5);
   val loss on 256 fixed windows.
4. Lookup: recall@1 against the exact nearest code and microseconds per query (batches of
   `--queries`, 1 thread) of every backend at V = 10^3, 10^4, 10^5, d = 128; queries are codes plus
   N(0, `--query_noise`^2) noise. faiss rows need `pip install faiss-cpu` (skipped without it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

from succu.benchmark import add_thread_arg, offline, setup_threads  # noqa: E402

offline()

import torch  # noqa: E402
from lightning.pytorch.callbacks import Timer  # noqa: E402

from datamodules.succulent import SuccuPairsDataModule  # noqa: E402
from succu import fit  # noqa: E402
from succu.analysis.qa import qa_exact_match  # noqa: E402
from succu.modules.base import IGNORE_INDEX, LanguageModule  # noqa: E402
from succu.modules.noise_lm import NoiseLMModule  # noqa: E402
from succu.nn.lookup import available_backends, make_lookup  # noqa: E402

VARIANTS: dict[str, dict] = {  # overrides of the NoiseLM config's model fields
    "full": {},
    "K=1": {"n_noise": 1},
    "no hierarchy": {"n_levels": 0, "n_scatter": 0},
    "trainable C": {"trainable_codes": True},
    "centred codes": {"centred_codes": True},
    "softmax head, same in": {"head": "softmax", "n_noise": 1},
}
MODELS = ["GPT softmax", *VARIANTS]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SUCC_CONFIGS = {"GPT softmax": "noiselm_gpt_succulent.yaml", "NoiseLM": "noiselm_succulent.yaml"}
TS_CONFIGS = {"GPT softmax": "gpt_tinystories_char.yaml", "NoiseLM": "noiselm_tinystories.yaml"}
# A bench run: no loggers or progress output, validation only after the last step (no sanity
# check), and the Trainer's own clock. Checkpoints go to a temporary folder that is then deleted.
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
         '--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.Timer", '
         '"init_args": {"interval": "step", "verbose": false}}']


# ---- training through the product and evaluation ----------------------------------------------
def fit_args(configs: dict[str, str], kind: str, steps: int, extra: list[str]) -> list[str]:
    """`python -m succu.fit` arguments: the model's config, steps, the variant's fields, `extra`."""
    config = configs.get(kind, configs["NoiseLM"])
    out = ["--config", str(CONFIGS / config), "--trainer.max_steps", str(steps),
           "--trainer.val_check_interval", str(steps)]
    for key, value in VARIANTS.get(kind, {}).items():
        out += [f"--model.init_args.model.{key}", str(value).lower()]
    return out + extra


def run_fit(argv: list[str]):
    """Fit through the product; returns the LightningCLI and the seconds spent training."""
    # stdout is silenced: the CLI's end-of-fit talk session is for users (EM is measured below).
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        cli = fit.main([*argv, *QUIET, "--trainer.default_root_dir", tmp])
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, Timer))
    return cli, timer.time_elapsed("train") - timer.time_elapsed("validate")


def val_loss(cli) -> float:
    """The module's val/loss of the validation after the last step."""
    return float(cli.trainer.callback_metrics["val/loss"])


def learning_rate(cli) -> float:
    return cli.config["fit"]["model"]["init_args"]["optimizer"]["init_args"]["lr"]


def n_params(module: LanguageModule) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---- 1. succulent QA --------------------------------------------------------------------------
@torch.no_grad()
def hmm_usage(module: NoiseLMModule, loader) -> str:
    """How the noise states are used on validation tokens: A's diagonal, the mean of max_k pi_t(k)
    and the effective number of states exp(H(mean pi))."""
    log_a, _ = module.model.transition()
    top, mean_pi, n = 0.0, 0.0, 0
    for batch in loader:
        pi = module.model.outputs(batch["input_ids"]).log_pi.exp()
        mask = (batch["labels"] != IGNORE_INDEX).unsqueeze(-1)
        top += float((pi.max(-1, keepdim=True).values * mask).sum())
        mean_pi = mean_pi + (pi * mask).sum((0, 1))
        n += int(mask.sum())
    mean_pi = mean_pi / n
    eff = math.exp(float(-(mean_pi * mean_pi.clamp(min=1e-12).log()).sum()))
    return (
        f"A diagonal {log_a.exp().diagonal().mean():.2f}, mean max_k pi_t(k) {top / n:.2f}, "
        f"effective states {eff:.2f} of {len(mean_pi)}"
    )


def succulent_header(cli, steps: int, seeds: list[int]) -> None:
    dm = cli.datamodule
    print(
        f"\n== 1. succulent QA: vocab {dm.vocab_size}, block {dm.block_size}, "
        f"{len(dm.train_pairs)} train pairs ({len(dm.train_qa)} QA), {len(dm.val_pairs)} val "
        f"pairs ({len(dm.heldout_qa)} held-out QA); {steps} steps, batch {dm.batch_size}, "
        f"lr {learning_rate(cli):g}; model seeds {seeds} =="
    )
    print(
        f"{'model':22s} {'seed':>4s} {'params':>8s} {'val loss':>9s} {'train EM':>9s} "
        f"{'held EM':>8s} {'s':>6s}"
    )


def succulent_means(results: dict, seeds: list[int]) -> None:
    print(f"{'mean over seeds':22s}")
    for kind in MODELS:
        rows = [results[(kind, s)] for s in seeds]
        val = sum(r["val"] for r in rows) / len(rows)
        spread = max(r["val"] for r in rows) - min(r["val"] for r in rows)
        tr = sum(r["train_em"] for r in rows) / len(rows)
        he = sum(r["held_em"] for r in rows) / len(rows)
        print(
            f"  {kind:20s} val {val:.4f} (spread {spread:.4f})  train EM {tr:.1%}  held EM {he:.1%}"
        )


def succulent(steps: int, seeds: list[int]) -> tuple[dict, NoiseLMModule, SuccuPairsDataModule]:
    """{(kind, seed): row} for every model and seed; the full NoiseLM of the first seed."""
    results, full = {}, None
    for seed, kind in itertools.product(seeds, MODELS):
        # The model seed is the run's seed_everything; the world and its shuffle stay the config's.
        cli, secs = run_fit(fit_args(SUCC_CONFIGS, kind, steps, ["--seed_everything", str(seed)]))
        module, dm = cli.model, cli.datamodule
        if not results:
            succulent_header(cli, steps, seeds)
        row = {
            "val": val_loss(cli),
            "train_em": qa_exact_match(module, dm.train_qa).exact_match,
            "held_em": qa_exact_match(module, dm.heldout_qa).exact_match,
        }
        results[(kind, seed)] = row
        print(
            f"{kind:22s} {seed:4d} {n_params(module):8,d} {row['val']:9.4f} "
            f"{row['train_em']:9.1%} {row['held_em']:8.1%} {secs:6.1f}",
            flush=True,
        )
        if kind == "full" and full is None:
            full, full_dm = module, dm
    succulent_means(results, seeds)
    print(f"HMM of the full NoiseLM (seed {seeds[0]}): {hmm_usage(full, full_dm.val_dataloader())}")
    return results, full, full_dm


# ---- 2. stop rule -----------------------------------------------------------------------------
def teacher_forced_exact(module: NoiseLMModule, pairs, tol: float) -> float:
    end, before = module.stop_profile(pairs)
    return sum(e <= tol < b for e, b in zip(end, before)) / len(end)


def stop_rule(module: NoiseLMModule, dm: SuccuPairsDataModule, beams: int) -> dict:
    tok = dm.tokenizer
    tol = module.calibrate_stop(dm.train_qa)
    forced = {
        n: teacher_forced_exact(module, p, tol)
        for n, p in (("train", dm.train_qa), ("held-out", dm.heldout_qa))
    }
    print(
        f"\n== 2. stop rule (full NoiseLM of part 1): tol {tol:.3g} on the mismatch D, calibrated "
        f"teacher-forced on the training questions; teacher-forced exact stop: train "
        f"{forced['train']:.1%}, held-out {forced['held-out']:.1%} =="
    )
    print(
        f"{'questions':9s} {'rule':16s} {'|len err|':>9s} {'exact stop':>10s} {'answer EM':>9s} "
        f"{'s':>5s}"
    )
    rules = [("eos", 1), ("key", 1)] + ([("key", beams)] if beams > 1 else [])
    out = {}
    for (name, pairs), (rule, b) in itertools.product(
        (("train", dm.train_qa), ("held-out", dm.heldout_qa)), rules
    ):
        truth = [tok.encode(a) for _, a in pairs]
        start = time.perf_counter()
        got = module.answer_ids([q for q, _ in pairs], rule=rule, beams=b)
        secs = time.perf_counter() - start
        err = sum(abs(len(g) - len(t)) for g, t in zip(got, truth)) / len(pairs)
        exact = sum(len(g) == len(t) for g, t in zip(got, truth)) / len(pairs)
        em = sum(g == t for g, t in zip(got, truth)) / len(pairs)
        label = "EOS" if rule == "eos" else ("key, greedy" if b == 1 else f"key, search B={b}")
        out[(name, label)] = {"err": err, "exact": exact, "em": em}
        print(f"{name:9s} {label:16s} {err:9.2f} {exact:10.1%} {em:9.1%} {secs:5.1f}", flush=True)
    return out


# ---- 3. TinyStories ---------------------------------------------------------------------------
def tinystories(steps: int, seed: int, cache_dir: str | None) -> dict:
    """Every model on TinyStories chars, one seed (model and training windows)."""
    extra = ["--seed_everything", str(seed), "--data.init_args.seed", str(seed),
             "--model.init_args.warmup_steps", str(min(100, steps // 5))]
    extra += ["--data.init_args.cache_dir", cache_dir] if cache_dir else []
    results = {}
    for kind in MODELS:
        cli, secs = run_fit(fit_args(TS_CONFIGS, kind, steps, extra))
        if not results:
            dm = cli.datamodule
            print(
                f"\n== 3. TinyStories chars, baby size (4x4x128, block {dm.block_size}, batch "
                f"{dm.batch_size}): vocab {dm.vocab_size}, {steps} steps, lr "
                f"{learning_rate(cli):g}, val on {dm.val_windows} fixed windows =="
            )
            print(f"{'model':22s} {'params':>9s} {'val loss':>9s} {'s':>6s}")
        results[kind] = {"val": val_loss(cli)}
        print(f"{kind:22s} {n_params(cli.model):9,d} {results[kind]['val']:9.4f} {secs:6.1f}", flush=True)
    return results


# ---- 4. lookup backends -----------------------------------------------------------------------
LOOKUPS = (
    ("matmul", "matmul", {}),
    ("faiss_flat", "faiss_flat", {"threads": 1}),
    ("faiss_hnsw", "faiss_hnsw", {"threads": 1, "m": 16, "ef_construction": 40, "ef_search": 64}),
    ("digit_hash", "digit_hash", {"rerank": "digits"}),
    ("digit_hash+l2", "digit_hash", {"rerank": "l2"}),
)


HNSW_WIDE = 512


def timed_nearest(backend, queries: torch.Tensor, reps: int) -> tuple[torch.Tensor, float]:
    """(ids, microseconds per query): one warm-up call, then the best of `reps` timed calls."""
    found = backend.nearest(queries)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        backend.nearest(queries)
        best = min(best, time.perf_counter() - start)
    return found, 1e6 * best / queries.size(0)


def exact_nearest(codes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Ground truth in float64: argmin_y ||q - c_y||^2 by the expanded square, in blocks."""
    c = codes.double()
    half = 0.5 * (c * c).sum(-1)
    return torch.cat([(q.double() @ c.t() - half).argmax(1) for q in queries.split(64)])


def lookup_bench(sizes: list[int], dim: int, n_queries: int, noise: float, reps: int) -> dict:
    have = set(available_backends())
    print(
        f"\n== 4. lookup: d = {dim}, {n_queries} queries per batch, query = code + "
        f"N(0, {noise}^2), 1 thread; microseconds per query (best of {reps}) =="
    )
    print(f"{'V':>7s} {'backend':14s} {'recall@1':>9s} {'us/query':>9s} {'build s':>8s}")
    out = {}
    for V in sizes:
        gen = torch.Generator().manual_seed(V)
        codes = torch.rand(V, dim, generator=gen)
        ids = torch.randint(0, V, (n_queries,), generator=gen)
        queries = codes[ids] + noise * torch.randn(n_queries, dim, generator=gen)
        truth = exact_nearest(codes, queries)
        for label, kind, opts in LOOKUPS:
            if kind not in have:
                print(f"{V:7d} {label:14s}   skipped (pip install faiss-cpu)")
                continue
            start = time.perf_counter()
            backend = make_lookup(kind, codes, **opts)
            build_s = time.perf_counter() - start
            found, us = timed_nearest(backend, queries, reps)
            recall = float((found == truth).float().mean())
            out[(V, label)] = {"recall": recall, "us": us}
            print(
                f"{V:7d} {label:14s} {recall:9.3f} {out[(V, label)]['us']:9.1f} {build_s:8.2f}",
                flush=True,
            )
            if kind == "faiss_hnsw":  # the same graph searched wider: recall bought with time
                backend.ef_search = HNSW_WIDE
                label = f"  efSearch {HNSW_WIDE}"
                found, us = timed_nearest(backend, queries, reps)
                recall = float((found == truth).float().mean())
                out[(V, label)] = {"recall": recall, "us": us}
                print(f"{V:7d} {label:14s} {recall:9.3f} {us:9.1f} {'':>8s}", flush=True)
    return out


# ---- summary ----------------------------------------------------------------------------------
IDEAS = (  # (idea, the model without it, the model with it)
    ("noise embeddings + HMM (K=4 vs K=1)", "K=1", "full"),
    ("scattershot levels + subsets", "no hierarchy", "full"),
    ("fixed codes (vs trainable C)", "trainable C", "full"),
    ("Uniform(0,1) codes (vs centred)", "centred codes", "full"),
    ("snap + HMM head (vs softmax, same in)", "softmax head, same in", "full"),
    ("whole NoiseLM (vs GPT softmax)", "GPT softmax", "full"),
)


def verdict(deltas: list[float], margin: float) -> str:
    """delta = val loss without the idea - with it; all > margin: helps, all < -margin: hurts."""
    if all(d > margin for d in deltas):
        return "helps"
    if all(d < -margin for d in deltas):
        return "hurts"
    return "no clear effect" if all(abs(d) <= margin for d in deltas) else "mixed"


def summary(succ: dict, seeds: list[int], ts: dict, margin: float) -> None:
    print(
        f"\n== summary: val loss without the idea - with it (nats/token; per succulent seed, then "
        f"TinyStories); 'helps' needs every delta > {margin} =="
    )
    print(f"{'idea':40s} {'succulent':>18s} {'tinystories':>12s}  verdict")
    for idea, without, with_ in IDEAS:
        s_d = [succ[(without, s)]["val"] - succ[(with_, s)]["val"] for s in seeds if succ]
        t_d = [ts[without]["val"] - ts[with_]["val"]] if ts else []
        shown = " ".join(f"{d:+.3f}" for d in s_d) or "-"
        t_shown = f"{t_d[0]:+.3f}" if t_d else "-"
        parts = []
        if s_d:
            parts.append(f"succulent: {verdict(s_d, margin)}")
        if t_d:
            parts.append(f"tinystories: {verdict(t_d, margin)}")
        print(f"{idea:40s} {shown:>18s} {t_shown:>12s}  {'; '.join(parts)}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--succ_steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="succulent model seeds")
    p.add_argument("--ts_steps", type=int, default=300)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--query_noise", type=float, default=0.05)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--ts_seed", type=int, default=0)
    p.add_argument("--cache_dir", default=None, help="TinyStories token cache (default: the datamodule's)")
    p.add_argument("--parts", default="all", help="comma list of succulent,stop,tinystories,lookup")
    p.add_argument("--quick", action="store_true", help="smoke test: a few steps, one seed, V = 10^3")
    args = p.parse_args()
    if args.quick:
        args.succ_steps, args.seeds, args.ts_steps, args.sizes, args.reps = 30, [0], 20, [1000], 1
    return args


def main() -> None:
    args = parse_args()
    setup_threads(args.threads)
    for name in ("lightning.pytorch", "lightning.fabric"):  # per-run banners
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch/Lightning, once per run
    every = {"succulent", "stop", "tinystories", "lookup"}
    parts = every if args.parts == "all" else set(args.parts.split(","))
    start = time.perf_counter()
    succ, ts = {}, {}
    if parts & {"succulent", "stop"}:
        succ, full, dm = succulent(args.succ_steps, args.seeds)
        if "stop" in parts:
            stop_rule(full, dm, args.beams)
    if "tinystories" in parts:
        ts = tinystories(args.ts_steps, args.ts_seed, args.cache_dir)
    if "lookup" in parts:
        lookup_bench(args.sizes, args.dim, args.queries, args.query_noise, args.reps)
    if succ or ts:
        summary(succ, args.seeds, ts, args.margin)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
