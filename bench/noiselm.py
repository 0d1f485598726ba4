"""NoiseLM (issue #7) against a same-size softmax transformer, with one ablation per idea.

    python bench/noiselm.py [--threads 1] [--succ_steps 1200] [--ts_steps 300] [--parts all]

Everything is measured in this run, on one thread by default:

1. Succulent QA (answers of different lengths), word tokens. A softmax baseline (GPT: learned
   token embedding, tied softmax head) and NoiseLM variants of the same encoder size (2 layers,
   4 heads, 64 wide; codes d = 64) train the same steps on the same batches (AdamW, warmup then
   cosine, clip 1.0). Printed: val loss (exact NLL per token on the held-out pairs), greedy answer
   exact match on the training and held-out questions (EOS stop), parameters, seconds.
   Variants: full (K = 4 noise states, 3 stride-1 levels, 4 scattershot subsets, fixed
   Uniform(0, 1) codes); K = 1; no hierarchy (no levels, no subsets); trainable C; centred codes.
2. Stop rule, on the full NoiseLM of part 1: the tolerance is calibrated teacher-forced on the
   training questions; then EOS, the key rule (greedy, EOS banned) and the stub search (B = 4)
   answer the training and held-out questions. Printed: mean absolute length error (tokens),
   exact-stop rate (length equals the reference answer's) and answer exact match.
3. TinyStories characters at baby size (4 layers, 4 heads, 128 wide, block 64, batch 12; codes
   d = 128): the same models, the same (few, stated) steps; val loss on 256 fixed windows.
4. Lookup: recall@1 against the exact nearest code and microseconds per query (batches of
   `--queries`, 1 thread) of every backend at V = 10^3, 10^4, 10^5, d = 128; queries are codes plus
   N(0, `--query_noise`^2) noise. faiss rows need `pip install faiss-cpu` (skipped without it).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_thread_arg, offline, setup_threads  # noqa: E402

offline()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from datamodules.succulent import SuccuPairsDataModule  # noqa: E402
from succu.analysis.qa import qa_exact_match  # noqa: E402
from succu.modules.base import IGNORE_INDEX, LanguageModule, warmup_cosine  # noqa: E402
from succu.modules.gpt import GPTModule  # noqa: E402
from succu.modules.noise_lm import NoiseLMModule  # noqa: E402
from succu.nn.lookup import available_backends, make_lookup  # noqa: E402

VARIANTS: dict[str, dict] = {
    "full": {},
    "K=1": {"n_noise": 1},
    "no hierarchy": {"n_levels": 0, "n_scatter": 0},
    "trainable C": {"trainable_codes": True},
    "centred codes": {"centred_codes": True},
}
SUCC_SIZE = dict(n_layer=2, n_head=4, n_embd=64)
BABY_SIZE = dict(n_layer=4, n_head=4, n_embd=128)


# ---- training and evaluation -----------------------------------------------------------------
def build(kind: str, vocab: int, block: int, size: dict, seed: int) -> LanguageModule:
    torch.manual_seed(seed)
    if kind == "softmax":
        return GPTModule(vocab_size=vocab, block_size=block, **size)
    return NoiseLMModule(vocab_size=vocab, block_size=block, code_dim=size["n_embd"], **size,
                         **VARIANTS[kind])


def batch_loss(module: LanguageModule, batch: dict) -> torch.Tensor:
    if isinstance(module, NoiseLMModule):
        return module.losses(batch)["loss"]
    return module.loss(module(batch["input_ids"]), batch["labels"])


def train(module: LanguageModule, batches, steps: int, lr: float, wd: float, warmup: int) -> float:
    """The Trainer's recipe by hand (AdamW groups, warmup + cosine to 0.1, clip 1.0); seconds."""
    module.train()
    opt = torch.optim.AdamW(module.param_groups(), lr=lr, betas=(0.9, 0.99), weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, steps, 0.1))
    start = time.perf_counter()
    for batch in itertools.islice(batches, steps):
        loss = batch_loss(module, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        sched.step()
    module.eval()
    return time.perf_counter() - start


@torch.no_grad()
def val_loss(module: LanguageModule, loader) -> float:
    """Token-weighted mean NLL; NoiseLM's outputs are log-probabilities, so this is exact."""
    total, count = 0.0, 0
    for batch in loader:
        logits = module(batch["input_ids"])
        total += float(F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                       ignore_index=IGNORE_INDEX, reduction="sum"))
        count += int((batch["labels"] != IGNORE_INDEX).sum())
    return total / count


def forever(dm):
    loader = dm.train_dataloader()
    while True:
        yield from loader


def n_params(module: LanguageModule) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---- 1. succulent QA --------------------------------------------------------------------------
def succulent(steps: int, seed: int) -> tuple[dict, NoiseLMModule, SuccuPairsDataModule]:
    dm = SuccuPairsDataModule(seed=42, batch_size=32)
    print(f"\n== 1. succulent QA: vocab {dm.vocab_size}, block {dm.block_size}, "
          f"{len(dm.train_pairs)} train pairs ({len(dm.train_qa)} QA), {len(dm.val_pairs)} val "
          f"pairs ({len(dm.heldout_qa)} held-out QA); {steps} steps, batch 32, lr 3e-3 ==")
    print(f"{'model':16s} {'params':>8s} {'val loss':>9s} {'train EM':>9s} {'held EM':>8s} {'s':>6s}")
    results, full = {}, None
    for kind in ["softmax", *VARIANTS]:
        module = build(kind, dm.vocab_size, dm.block_size, SUCC_SIZE, seed)
        module.tokenizer = dm.tokenizer
        secs = train(module, forever(dm), steps, lr=3e-3, wd=0.01, warmup=100)
        row = {
            "val": val_loss(module, dm.val_dataloader()),
            "train_em": qa_exact_match(module, dm.train_qa).exact_match,
            "held_em": qa_exact_match(module, dm.heldout_qa).exact_match,
        }
        results[kind] = row
        print(f"{kind:16s} {n_params(module):8,d} {row['val']:9.4f} {row['train_em']:9.1%} "
              f"{row['held_em']:8.1%} {secs:6.1f}", flush=True)
        if kind == "full":
            full = module
    return results, full, dm


# ---- 2. stop rule -----------------------------------------------------------------------------
def stop_rule(module: NoiseLMModule, dm: SuccuPairsDataModule, beams: int) -> dict:
    tok = dm.tokenizer
    tol = module.calibrate_stop(dm.train_qa)
    end, before = module.stop_profile(dm.heldout_qa)
    forced = sum(e <= tol < b for e, b in zip(end, before)) / len(end)
    print(f"\n== 2. stop rule (full NoiseLM of part 1): tol {tol:.3g} calibrated teacher-forced on "
          f"the training questions; teacher-forced exact stop on held-out: {forced:.1%} ==")
    print(f"{'questions':9s} {'rule':14s} {'|len err|':>9s} {'exact stop':>10s} {'answer EM':>9s} "
          f"{'s':>5s}")
    out = {}
    for name, pairs in (("train", dm.train_qa), ("held-out", dm.heldout_qa)):
        truth = [tok.encode(a) for _, a in pairs]
        for rule, b in (("eos", 1), ("key", 1), ("key", beams)):
            if rule == "key" and b == 1 and beams == 1 and (rule, b) in out:
                continue
            start = time.perf_counter()
            got = module.answer_ids([q for q, _ in pairs], rule=rule, beams=b)
            secs = time.perf_counter() - start
            err = sum(abs(len(g) - len(t)) for g, t in zip(got, truth)) / len(pairs)
            exact = sum(len(g) == len(t) for g, t in zip(got, truth)) / len(pairs)
            em = sum(g == t for g, t in zip(got, truth)) / len(pairs)
            label = "EOS" if rule == "eos" else ("key, greedy" if b == 1 else f"key, search B={b}")
            out[(name, label)] = {"err": err, "exact": exact, "em": em}
            print(f"{name:9s} {label:14s} {err:9.2f} {exact:10.1%} {em:9.1%} {secs:5.1f}", flush=True)
    return out


# ---- 3. TinyStories ---------------------------------------------------------------------------
def tinystories(steps: int, seed: int) -> dict:
    from datamodules.tinystories import TinyStoriesDataModule

    dm = TinyStoriesDataModule(block_size=64, batch_size=12, tokenizer_kind="char", seed=seed,
                               val_windows=256)
    dm.prepare_data()
    dm.setup("fit")
    print(f"\n== 3. TinyStories chars, baby size (4x4x128, block 64, batch 12): vocab "
          f"{dm.vocab_size}, {steps} steps, lr 1e-3, val on 256 fixed windows ==")
    print(f"{'model':16s} {'params':>9s} {'val loss':>9s} {'s':>6s}")
    results = {}
    for kind in ["softmax", *VARIANTS]:
        module = build(kind, dm.vocab_size, 64, BABY_SIZE, seed)
        module.tokenizer = dm.tokenizer
        secs = train(module, forever(dm), steps, lr=1e-3, wd=0.1, warmup=min(100, steps // 5))
        results[kind] = {"val": val_loss(module, dm.val_dataloader())}
        print(f"{kind:16s} {n_params(module):9,d} {results[kind]['val']:9.4f} {secs:6.1f}", flush=True)
    return results


# ---- 4. lookup backends -----------------------------------------------------------------------
LOOKUPS = (
    ("matmul", "matmul", {}),
    ("faiss_flat", "faiss_flat", {"threads": 1}),
    ("faiss_hnsw", "faiss_hnsw", {"threads": 1, "m": 16, "ef_construction": 40, "ef_search": 64}),
    ("digit_hash", "digit_hash", {"rerank": "digits"}),
    ("digit_hash+l2", "digit_hash", {"rerank": "l2"}),
)


def exact_nearest(codes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Ground truth in float64: argmin_y ||q - c_y||^2 by the expanded square, in blocks."""
    c = codes.double()
    half = 0.5 * (c * c).sum(-1)
    return torch.cat([(q.double() @ c.t() - half).argmax(1) for q in queries.split(64)])


def lookup_bench(sizes: list[int], dim: int, n_queries: int, noise: float, reps: int) -> dict:
    have = set(available_backends())
    print(f"\n== 4. lookup: d = {dim}, {n_queries} queries per batch, query = code + "
          f"N(0, {noise}^2), 1 thread; microseconds per query (best of {reps}) ==")
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
            found = backend.nearest(queries)  # also the warm-up
            best = math.inf
            for _ in range(reps):
                start = time.perf_counter()
                backend.nearest(queries)
                best = min(best, time.perf_counter() - start)
            recall = float((found == truth).float().mean())
            out[(V, label)] = {"recall": recall, "us": 1e6 * best / n_queries}
            print(f"{V:7d} {label:14s} {recall:9.3f} {out[(V, label)]['us']:9.1f} {build_s:8.2f}",
                  flush=True)
    return out


# ---- summary ----------------------------------------------------------------------------------
def verdict(delta: float, margin: float) -> str:
    """delta = ablated - full val loss: > margin means the idea helps (removing it hurts)."""
    return "helps" if delta > margin else ("hurts" if delta < -margin else "no clear effect")


def summary(succ: dict, ts: dict, margin: float) -> None:
    print(f"\n== summary: val-loss deltas (ablation - full; > {margin} nats: the idea helps) ==")
    rows = (
        ("noise embeddings + HMM (K=4 vs 1)", "K=1", +1),
        ("scattershot hierarchy + subsets", "no hierarchy", +1),
        ("fixed codes (vs trainable C)", "trainable C", +1),
        ("Uniform(0,1) codes (vs centred)", "centred codes", +1),
        ("distance snap on codes (vs softmax)", "softmax", +1),
    )
    print(f"{'idea':38s} {'succulent':>10s} {'tinystories':>12s}  verdict")
    for idea, kind, sign in rows:
        deltas = [
            sign * (res[kind]["val"] - res["full"]["val"]) if res and kind in res else None
            for res in (succ, ts)
        ]
        shown = [f"{d:+.4f}" if d is not None else "-" for d in deltas]
        known = [d for d in deltas if d is not None]
        verdicts = {verdict(d, margin) for d in known}
        word = verdicts.pop() if len(verdicts) == 1 else "mixed"
        print(f"{idea:38s} {shown[0]:>10s} {shown[1]:>12s}  {word}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--succ_steps", type=int, default=1200)
    p.add_argument("--ts_steps", type=int, default=300)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--query_noise", type=float, default=0.05)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", default="all", help="comma list of succulent,stop,tinystories,lookup")
    args = p.parse_args()
    setup_threads(args.threads)
    parts = {"succulent", "stop", "tinystories", "lookup"} if args.parts == "all" else set(args.parts.split(","))
    start = time.perf_counter()
    succ, ts = {}, {}
    if parts & {"succulent", "stop"}:
        succ, full, dm = succulent(args.succ_steps, args.seed)
        if "stop" in parts:
            stop_rule(full, dm, args.beams)
    if "tinystories" in parts:
        ts = tinystories(args.ts_steps, args.seed)
    if "lookup" in parts:
        lookup_bench(args.sizes, args.dim, args.queries, args.query_noise, args.reps)
    if succ or ts:
        summary(succ, ts, args.margin)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
