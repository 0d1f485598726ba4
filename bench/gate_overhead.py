"""GatedGPT training-step time over the plain GPT's, same config, same process, interleaved.

    python bench/gate_overhead.py [--threads 1] [--steps 50] [--rounds 5] [--per_sample]

A step is forward, backward and an AdamW update on a batch of random tokens (speed does not depend
on the text). The sides alternate in short rounds so a busy neighbour slows both alike; the
median step time of each is compared (target: gated / plain <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import add_thread_arg, setup_threads

from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.models.gpt import GPT


def timed_steps(model, optimizer, batches, kwargs_of) -> list[float]:
    times = []
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        logits = model(x, **kwargs_of(i))
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--per_sample", action="store_true", help="one alpha and corpus per row")
    p.add_argument("--routing", action="store_true", help="straight-through corpus routing on")
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=12)
    args = p.parse_args()
    setup_threads(args.threads)
    cfg = GatedGPTConfig(vocab_size=80, block_size=args.block_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, routing=args.routing)
    torch.manual_seed(0)
    gated, plain = GatedGPT(cfg).train(), GPT(cfg).train()
    opts = {m: torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (gated, plain)}
    g = torch.Generator().manual_seed(0)
    B, T = args.batch_size, args.block_size
    batches = [(torch.randint(0, 80, (B, T), generator=g), torch.randint(0, 80, (B, T), generator=g))
               for _ in range(args.steps)]
    dial = torch.Generator().manual_seed(1)

    def gated_kwargs(i):
        n = B if args.per_sample else 1
        alpha = torch.rand(n, generator=dial)
        corpus = (torch.rand(n, generator=dial) < alpha).long()
        if args.per_sample:
            return {"alpha": alpha, "source": corpus}
        return {"alpha": float(alpha), "source": int(corpus)}

    results: dict[str, list[float]] = {"gated": [], "plain": []}
    for r in range(args.rounds + 1):  # round 0 warms both up
        t_plain = timed_steps(plain, opts[plain], batches, lambda i: {})
        t_gated = timed_steps(gated, opts[gated], batches, gated_kwargs)
        if r:
            results["plain"] += t_plain
            results["gated"] += t_gated
    plain_ms = statistics.median(results["plain"]) * 1e3
    gated_ms = statistics.median(results["gated"]) * 1e3
    mode = "per-sample alpha" if args.per_sample else "one alpha per batch"
    print(f"config: {args.n_layer} layers, {args.n_head} heads, {args.n_embd} wide, block {T}, "
          f"batch {B}, {mode}, routing {'on' if args.routing else 'off'}")
    print(f"plain GPT step:  {plain_ms:7.2f} ms (median of {len(results['plain'])})")
    print(f"GatedGPT step:   {gated_ms:7.2f} ms (median of {len(results['gated'])})")
    print(f"ratio gated / plain: {gated_ms / plain_ms:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
