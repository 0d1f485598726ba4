"""TTLinear forward against nn.Linear: time ratio and params ratio over a range of bonds.

    python bench/tt_speed.py [--threads 1] [--reps 7] [--layouts mps,ttm]

Two sizes: SuccuLM's FFN (50 -> 200, modes 5x10 -> 10x20, and back) and a GPT-2 FFN
(768 -> 3072, modes 24x32 -> 48x64). Each at two row counts: a training batch and one decoding
step. For every (size, layout, bond, rows) the dense layer and the TT layer (impl "auto", the
default, and "factorized") run interleaved in this one process, rep by rep, on the same input; the
median of each is reported with

    time ratio   = TT time / dense time        (< 1: TT is faster)
    params ratio = TT params / dense params    (< 1: TT is smaller; biases counted in both)
    flops ratio  = TT FLOPs (auto) / dense FLOPs

"mps" bonds are the (out|in) bond with the outer bonds exact (the layer of the SuccuLM
tensor-network article); "ttm" bonds are the single bond between the two (m_k, n_k) cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import add_thread_arg, setup_threads
from torch import nn

from succu.nn.tt import TTLinear

SIZES = [  # (name, in, out, in_modes, out_modes, rows: (training batch, decode step), bonds)
    ("succulm 50->200", 50, 200, (5, 10), (10, 20), (736, 1), (5, 10, 20, 27, 39, 50)),
    ("succulm 200->50", 200, 50, (10, 20), (5, 10), (736, 1), (5, 10, 20, 27, 39, 50)),
    ("gpt2 768->3072", 768, 3072, (24, 32), (48, 64), (512, 1), (8, 16, 32, 64, 128, 256)),
]


def bonds_for(layout: str, in_modes, out_modes, bond: int) -> list[int | None]:
    if layout == "ttm":
        return [bond]
    bonds: list[int | None] = [None] * (len(in_modes) + len(out_modes) - 1)
    bonds[len(out_modes) - 1] = bond
    return bonds


def timed(fn, x: torch.Tensor, inner: int) -> float:
    """Seconds per call, over `inner` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(inner):
        fn(x)
    return (time.perf_counter() - t0) / inner


@torch.no_grad()
def compare(dense: nn.Linear, tts: dict[str, TTLinear], rows: int, reps: int) -> dict[str, float]:
    """Median seconds per forward of the dense layer and of each TT variant, interleaved."""
    x = torch.randn(rows, dense.in_features)
    inner = max(1, int(2e7 // (rows * dense.in_features * dense.out_features + 1)))
    inner = min(inner, 2000)
    times: dict[str, list[float]] = {"dense": [], **{k: [] for k in tts}}
    for rep in range(reps + 1):  # rep 0 warms every path up
        for name, layer in [("dense", dense), *tts.items()]:
            t = timed(layer, x, inner)
            if rep:
                times[name].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def run_size(spec, layouts: list[str], reps: int) -> None:
    name, n_in, n_out, in_modes, out_modes, row_counts, bonds = spec
    torch.manual_seed(0)
    dense = nn.Linear(n_in, n_out)
    dense_params = sum(p.numel() for p in dense.parameters())
    print(f"\n== {name}  (dense params {dense_params})")
    print(f"{'layout':6} {'bond':>5} {'rows':>5} {'params':>8} {'p.ratio':>8} {'f.ratio':>8} "
          f"{'dense us':>9} {'tt us':>9} {'t.ratio':>8} {'auto->':>10} {'fact. t.ratio':>13}")
    for layout in layouts:
        for bond in bonds:
            b = bonds_for(layout, in_modes, out_modes, bond)
            auto = TTLinear.from_linear(dense, in_modes, out_modes, b, layout, impl="auto")
            fact = TTLinear.from_linear(dense, in_modes, out_modes, b, layout, impl="factorized")
            for rows in row_counts:
                t = compare(dense, {"auto": auto, "factorized": fact}, rows, reps)
                chosen = auto.auto_impl(rows)
                print(f"{layout:6} {bond:5d} {rows:5d} {auto.num_params():8d} "
                      f"{auto.num_params() / dense_params:8.3f} "
                      f"{auto.flops(rows) / (2 * rows * n_in * n_out):8.3f} "
                      f"{t['dense'] * 1e6:9.1f} {t['auto'] * 1e6:9.1f} "
                      f"{t['auto'] / t['dense']:8.2f} {chosen:>10} "
                      f"{t['factorized'] / t['dense']:13.2f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--layouts", default="mps,ttm")
    args = p.parse_args()
    setup_threads(args.threads)
    for spec in SIZES:
        run_size(spec, args.layouts.split(","), args.reps)


if __name__ == "__main__":
    main()
