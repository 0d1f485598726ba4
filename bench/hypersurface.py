"""Adaptive latent hypersurfaces against trained embeddings: in-domain and out-of-domain loss.

    python bench/hypersurface.py [--threads 1] [--steps 600] [--seeds 0,1,2]
                                 [--train_on tinystories,shakespeare] [--n_embd 64] [--n_layer 3]

Trains the three hypersurface variants (film, lowrank, orthogonal: frozen random latents E and a
1-block causal hypernetwork emitting T_t) and the baselines B0 (trainable tied E, plain GPT),
B1 (frozen E, trainable head) and B2 (frozen E, one context-free T) with the same steps, batches
and seeds, char-level, at a size that fits a shared CPU: d = n_embd, n_layer body blocks for the
variants and n_layer + 1 for the baselines (the hypernetwork's block moved into the body), so
trainable parameter counts match within ~2% (printed). Per seed every model sees the same E (the
frozen latents, or B0's initial E), the same training windows and the same val windows.

Data: MixtureDataModule over [tinystories, shakespeare] with one char tokenizer over both and
natural surfaces; training rows come only from the `--train_on` corpus (weights one-hot), and the
fixed val windows (256 x 64 per corpus) of both corpora give the in-domain (ID) and out-of-domain
(OOD) losses. Each direction in --train_on is one table ("and the reverse").

Recipe: AdamW lr --lr, betas (0.9, 0.99), weight decay 0.1 on matrices, warmup then cosine to
0.1 x lr, gradient clipping 1.0, batch 12 x 64, dropout 0, a hand-written loop (the Trainer's
step, without its overhead) timed for tokens/s (training only, on a shared machine: indicative).

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
import statistics
import time

from succu.benchmark import add_thread_arg, offline, setup_threads  # noqa: E402

offline()

import lightning as L  # noqa: E402
import torch  # noqa: E402

from datamodules.mixture import MixtureDataModule  # noqa: E402
from succu.analysis.latents import context_average_ablation, corpus_losses, latent_geometry  # noqa: E402
from succu.models.hypersurface import BASELINES, VARIANTS  # noqa: E402
from succu.modules.base import warmup_cosine  # noqa: E402
from succu.modules.hypersurface import HypersurfaceModule  # noqa: E402

CORPORA = ["tinystories", "shakespeare"]
BLOCK, BATCH, CLIP = 64, 12, 1.0


def build(variant: str, vocab: int, args, seed: int) -> HypersurfaceModule:
    L.seed_everything(seed, verbose=False)
    extra = 0 if variant in VARIANTS else 1  # the hypernetwork's block, moved into the body
    return HypersurfaceModule(
        vocab_size=vocab, block_size=BLOCK, n_layer=args.n_layer + extra, n_head=args.n_head,
        n_embd=args.n_embd, variant=variant, rank=args.rank, n_hyper_layer=1, latent_seed=seed,
        diagnostics=False, warmup_steps=args.warmup,
    )


def train(module: HypersurfaceModule, dm: MixtureDataModule, steps: int, lr: float, warmup: int) -> float:
    """The Trainer's step by hand; returns training tokens/s."""
    model = module.model.train()
    opt = torch.optim.AdamW(module.param_groups(), lr=lr, betas=(0.9, 0.99), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, steps, 0.1))
    sampler = dm.sampler()
    start = time.perf_counter()
    for k in range(steps):
        batch = sampler.batch(k)
        loss = module.loss(model(batch["input_ids"]), batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    return steps * BATCH * BLOCK / (time.perf_counter() - start)


def evaluate(module: HypersurfaceModule, dm: MixtureDataModule, home: int) -> dict[str, float]:
    model = module.model.eval()
    val = dm.val_batches()
    losses = corpus_losses(model, val)
    own = [b for b in val if int(b["source"][0]) == home]
    ids = torch.cat([b["input_ids"] for b in own[:8]])
    geo = latent_geometry(model, ids, max_contexts=256)
    ablation = context_average_ablation(model, own)
    return {
        "id": losses[home], "ood": losses[1 - home], "ratio": losses[1 - home] / losses[home],
        "coh_E": geo["coherence/E"], "coh_TE": geo["coherence/TE"], "gram_TE": geo["gram/TE"],
        "ctx": ablation["delta"],
    }


def ms(values: list[float], fmt: str = ".3f") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}}+-{sd:.3f}"


def paired(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b)]
    return f"{statistics.mean(d):+.3f} [{min(d):+.3f}, {max(d):+.3f}]"


def report(home: str, models: list[str], results: dict, params: dict, args) -> None:
    other = CORPORA[1 - CORPORA.index(home)]
    print(f"\ntrain on {home}, OOD = {other}: {args.steps} steps x {BATCH} x {BLOCK} chars, "
          f"d={args.n_embd}, seeds {args.seeds} (mean+-sd over seeds)")
    head = (f"{'model':<11}{'params':>8}{'vs b0':>7}  {'ID loss':>13}  {'OOD loss':>13}  {'OOD/ID':>13}"
            f"  {'coh E':>6} {'coh TE':>6} {'gram TE':>7}  {'ctx-avg dL':>14}  {'tok/s':>6}")
    print(head)
    r0 = results.get("b0")
    for m in models:
        r = results[m]
        ctx = ms(r["ctx"], "+.3f") if m in VARIANTS else "-"
        print(f"{m:<11}{params[m]:>8,}{params[m] / params.get('b0', params[m]) - 1:>+7.1%}  {ms(r['id']):>13}"
              f"  {ms(r['ood']):>13}  {ms(r['ratio']):>13}  {statistics.mean(r['coh_E']):6.3f}"
              f" {statistics.mean(r['coh_TE']):6.3f} {statistics.mean(r['gram_TE']):7.3f}  {ctx:>14}"
              f"  {statistics.mean(r['tps']):6.0f}")
    if r0 is None:
        return
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
    args = p.parse_args()
    setup_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    started = time.perf_counter()
    for home in args.train_on.split(","):
        weights = [1.0 if c == home else 0.0 for c in CORPORA]
        dm = MixtureDataModule(corpora=CORPORA, weights=weights, abc_style=[], block_size=BLOCK,
                               batch_size=BATCH, val_windows=256)
        dm.setup()
        results: dict[str, dict[str, list[float]]] = {m: {} for m in models}
        params: dict[str, int] = {}
        for seed in seeds:
            dm.seed = seed  # training windows: the same for every model of this seed
            for m in models:
                module = build(m, dm.vocab_size, args, seed)
                params[m] = module.model.num_params()
                tps = train(module, dm, args.steps, args.lr, args.warmup)
                row = {**evaluate(module, dm, CORPORA.index(home)), "tps": tps}
                for k, v in row.items():
                    results[m].setdefault(k, []).append(v)
                print(f"  [{time.perf_counter() - started:5.0f}s] {home} seed {seed} {m:<10} "
                      f"ID {row['id']:.3f} OOD {row['ood']:.3f} ctx {row['ctx']:+.4f} {tps:.0f} tok/s",
                      flush=True)
        report(home, models, results, params, args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, vocab {dm.vocab_size} chars")


if __name__ == "__main__":
    main()
