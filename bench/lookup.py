"""The snap's lookup backends: recall@1 against the exact nearest code, and speed.

    python bench/lookup.py [--sizes 1000 10000 100000] [--dim 128] [--queries 256]
    python bench/lookup.py --quick

NoiseLM's hard snap replaces a query by the nearest of V fixed codes. Every backend of
succu/nn/lookup.py is measured at V = 10^3, 10^4, 10^5 codes ~ Uniform(0, 1)^d, on queries that
are codes plus N(0, `--query_noise`^2) noise, against the float64 exact answer; the exact matmul
backend is the baseline in the same run: microseconds per query (batches of `--queries`, best of
`--reps`, one thread). faiss rows need `pip install faiss-cpu` (skipped without it); digit_hash is
the write-up's table (aligned keys, left-to-right digit penalty, digit closeness).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _common import add_thread_arg, setup_threads

from succu.nn.lookup import available_backends, make_lookup

# ---- lookup backends ---------------------------------------------------------------------------
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
        f"\n== lookup: d = {dim}, {n_queries} queries per batch, query = code + "
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--query_noise", type=float, default=0.05)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smoke test: V = 10^3, one rep")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.reps = [1000], 1
    setup_threads(args.threads)
    lookup_bench(args.sizes, args.dim, args.queries, args.query_noise, args.reps)


if __name__ == "__main__":
    main()
