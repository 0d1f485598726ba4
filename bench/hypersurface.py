"""Adaptive latent hypersurfaces against trained embeddings: in-domain and out-of-domain loss.

    python bench/hypersurface.py [--threads 1] [--steps 600] [--seeds 0,1,2]
                                 [--train_on tinystories,shakespeare] [--n_embd 64] [--n_layer 3]
    python bench/hypersurface.py --quick          # smoke test: 20 steps, one seed

Trains the three hypersurface variants (film, lowrank, orthogonal: frozen random latents E and a
1-block causal hypernetwork emitting T_t) and the baselines B0 (trainable tied E, plain GPT),
B1 (frozen E, trainable head) and B2 (frozen E, one context-free T) with the same steps, batches
and seeds, char-level, at a size that fits a shared CPU: d = n_embd, n_layer body blocks for the
variants and n_layer + 1 for the baselines (the hypernetwork's block moved into the body), so
trainable parameter counts match within ~2% (printed). Per seed every model sees the same E (the
frozen latents, or B0's initial E), the same training windows and the same val windows.

Every model is trained by the product, `succu.fit.main` (what `python -m succu.fit` runs), from
configs/hypersurface_<corpus>.yaml, or configs/hypersurface_<b0|b1|b2>_<corpus>.yaml where that
exists, plus command-line overrides: steps, seed (model, latents E and training windows), variant,
sizes, lr and warmup. Everything else is the config's: MixtureDataModule over [tinystories,
shakespeare] with one char tokenizer and natural surfaces, training rows only from the home corpus
(weights one-hot), AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, warmup then cosine to
0.1 x lr, gradient clipping 1.0, batch 12 x 64, dropout 0. Validation runs once, after the last
step, on the fixed val windows (256 x 64 per corpus) of both corpora: the module's val/loss/<corpus>
are the in-domain (ID) and out-of-domain (OOD) losses. Each direction in --train_on is one table.
tok/s is the Trainer's training time (the Timer callback, validation excluded) on a shared
machine: indicative.

Columns, mean +- sample sd over seeds:
    ID, OOD       val loss (nats per char) on the training corpus and on the other one
    OOD/ID        ratio of the two (lower: generalises relatively better)
    coh E, coh TE coherence (max |cos| between rows) of E and of the readout table T_t E averaged
                  over 256 val contexts (B1: its head W; B0: its trained E; seed means)
    gram TE       RMS off-diagonal cosine of that table (||G - I||_F / sqrt(V (V - 1)))
    ctx-avg       in-domain loss change when T_t is replaced by its context average (nats/char)
Then paired differences against B0 (same seed: same data, same initial E) and a verdict line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from succu.benchmark import add_thread_arg, offline, setup_threads  # noqa: E402

offline()

import torch  # noqa: E402
from lightning.pytorch.callbacks import Timer  # noqa: E402

from succu import fit  # noqa: E402
from succu.analysis.latents import context_average_ablation, latent_geometry  # noqa: E402
from succu.models.hypersurface import BASELINES, VARIANTS  # noqa: E402

CORPORA = ["tinystories", "shakespeare"]  # the configs' MixtureDataModule corpora, in order
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# A bench run: no loggers or progress output, validation only after the last step (no sanity
# check), and the Trainer's own clock. Checkpoints go to a temporary folder that is then deleted.
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
         '--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.Timer", '
         '"init_args": {"interval": "step", "verbose": false}}']


def config_for(model: str, home: str) -> Path:
    """The shipped config of this model and training corpus (baselines have their own files)."""
    own = CONFIGS / f"hypersurface_{model}_{home}.yaml"
    return own if own.is_file() else CONFIGS / f"hypersurface_{home}.yaml"


def fit_args(model: str, home: str, seed: int, args) -> list[str]:
    """`python -m succu.fit` arguments for one run; all that differs from the config is here."""
    extra = 0 if model in VARIANTS else 1  # the hypernetwork's block, moved into the body
    net = {"variant": model, "n_layer": args.n_layer + extra, "n_head": args.n_head,
           "n_embd": args.n_embd, "rank": args.rank, "n_hyper_layer": 1, "latent_seed": seed}
    out = ["--config", str(config_for(model, home)), "--seed_everything", str(seed),
           "--trainer.max_steps", str(args.steps), "--trainer.val_check_interval", str(args.steps),
           "--model.init_args.diagnostics", "false",  # measured below, on more contexts
           "--model.init_args.warmup_steps", str(args.warmup),
           "--model.init_args.optimizer.init_args.lr", str(args.lr),
           "--data.init_args.seed", str(seed)]
    for key, value in net.items():
        out += [f"--model.init_args.model.{key}", str(value)]
    return out + (["--data.init_args.cache_dir", args.cache_dir] if args.cache_dir else [])


def run_fit(argv: list[str]):
    """Fit through the product; returns the LightningCLI and the seconds spent training."""
    # stdout is silenced: the CLI's end-of-fit talk session is for users, not for this table.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        cli = fit.main([*argv, *QUIET, "--trainer.default_root_dir", tmp])
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, Timer))
    return cli, timer.time_elapsed("train") - timer.time_elapsed("validate")


def evaluate(cli, home: int) -> dict[str, float]:
    """ID and OOD loss from the Trainer's validation; geometry and the ablation on home val windows."""
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    loss_id, loss_ood = (metrics[f"val/loss/{CORPORA[i]}"] for i in (home, 1 - home))
    model = cli.model.model.eval()
    own = [b for b in cli.datamodule.val_batches() if int(b["source"][0]) == home]
    geo = latent_geometry(model, torch.cat([b["input_ids"] for b in own[:8]]), max_contexts=256)
    return {
        "id": loss_id, "ood": loss_ood, "ratio": loss_ood / loss_id,
        "coh_E": geo["coherence/E"], "coh_TE": geo["coherence/TE"], "gram_TE": geo["gram/TE"],
        "ctx": context_average_ablation(model, own)["delta"],
    }


def ms(values: list[float], fmt: str = ".3f") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}}+-{sd:.3f}"


def paired(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b)]
    return f"{statistics.mean(d):+.3f} [{min(d):+.3f}, {max(d):+.3f}]"


def report(home: str, models: list[str], results: dict, params: dict, args, shape: str) -> None:
    other = CORPORA[1 - CORPORA.index(home)]
    print(f"\ntrain on {home}, OOD = {other}: {args.steps} steps x {shape} chars, "
          f"d={args.n_embd}, seeds {args.seeds} (mean+-sd over seeds)")
    head = (f"{'model':<11}{'params':>8}{'vs b0':>7}  {'ID loss':>13}  {'OOD loss':>13}  {'OOD/ID':>13}"
            f"  {'coh E':>6} {'coh TE':>6} {'gram TE':>7}  {'ctx-avg dL':>14}  {'tok/s':>6}")
    print(head)
    for m in models:
        r = results[m]
        ctx = ms(r["ctx"], "+.3f") if m in VARIANTS else "-"
        print(f"{m:<11}{params[m]:>8,}{params[m] / params.get('b0', params[m]) - 1:>+7.1%}  {ms(r['id']):>13}"
              f"  {ms(r['ood']):>13}  {ms(r['ratio']):>13}  {statistics.mean(r['coh_E']):6.3f}"
              f" {statistics.mean(r['coh_TE']):6.3f} {statistics.mean(r['gram_TE']):7.3f}  {ctx:>14}"
              f"  {statistics.mean(r['tps']):6.0f}")
    if "b0" in results:
        report_paired(models, results)


def report_paired(models: list[str], results: dict) -> None:
    r0 = results["b0"]
    print("paired vs b0 (model - b0, mean [min, max] over seeds; negative = better than b0):")
    for m in models:
        if m != "b0":
            r = results[m]
            print(f"  {m:<11} ID {paired(r['id'], r0['id'])}   OOD {paired(r['ood'], r0['ood'])}"
                  f"   OOD/ID {paired(r['ratio'], r0['ratio'])}")
    for m in [v for v in models if v in VARIANTS]:
        r = results[m]
        wins_id = sum(x < y for x, y in zip(r["id"], r0["id"]))
        wins_ratio = sum(x < y for x, y in zip(r["ratio"], r0["ratio"]))
        print(f"  {m}: lower ID loss than b0 on {wins_id}/{len(r['id'])} seeds, "
              f"lower OOD/ID on {wins_ratio}/{len(r['id'])} seeds")


def direction(home: str, models: list[str], seeds: list[int], args, started: float):
    """Train every model on every seed with `home` as the training corpus; print its table."""
    results: dict[str, dict[str, list[float]]] = {m: {} for m in models}
    params: dict[str, int] = {}
    for seed in seeds:
        for m in models:
            cli, secs = run_fit(fit_args(m, home, seed, args))
            dm = cli.datamodule
            params[m] = cli.model.model.num_params()
            tps = args.steps * dm.batch_size * dm.block_size / secs
            row = {**evaluate(cli, CORPORA.index(home)), "tps": tps}
            for k, v in row.items():
                results[m].setdefault(k, []).append(v)
            print(f"  [{time.perf_counter() - started:5.0f}s] {home} seed {seed} {m:<10} "
                  f"ID {row['id']:.3f} OOD {row['ood']:.3f} ctx {row['ctx']:+.4f} {tps:.0f} tok/s",
                  flush=True)
    report(home, models, results, params, args, f"{dm.batch_size} x {dm.block_size}")
    return dm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--steps", type=int, default=600, help="training steps per run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--train_on", default="tinystories,shakespeare", help="directions, comma-separated")
    p.add_argument("--models", default=",".join(VARIANTS + BASELINES))
    p.add_argument("--n_embd", type=int, default=64)
    p.add_argument("--n_layer", type=int, default=3, help="body blocks of the variants (baselines +1)")
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--cache_dir", default=None, help="token cache (default: the datamodule's)")
    p.add_argument("--quick", action="store_true", help="smoke test: 20 steps, warmup 5, seed 0")
    args = p.parse_args()
    if args.quick:
        args.steps, args.warmup, args.seeds = 20, 5, "0"
    setup_threads(args.threads)
    for name in ("lightning.pytorch", "lightning.fabric"):  # per-run banners
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch/Lightning, once per run
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    for home in args.train_on.split(","):
        dm = direction(home, args.models.split(","), seeds, args, started)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, vocab {dm.vocab_size} chars")


if __name__ == "__main__":
    main()
