"""KV-cache generation against full recomputation: 256 new tokens from a SuccuLM.

    python bench/generate.py [--threads 1] [--profile upper_middle] [--new_tokens 256] [--reps 5]

Both sides run in this process, interleaved rep by rep, on the same random-weight model (speed does
not depend on the weights) with greedy decoding, so they produce the same tokens; the script checks
that and prints tokens/s of each and the speed-up (target >= 3x).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import add_thread_arg, setup_threads

from succu.models.succulm import SuccuLMConfig
from succu.modules.succulm import SuccuLMModule


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--profile", default="upper_middle")
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--prompt_len", type=int, default=16)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    setup_threads(args.threads)
    torch.manual_seed(0)
    block = args.prompt_len + args.new_tokens
    module = SuccuLMModule(SuccuLMConfig(vocab_size=160, block_size=block, profile=args.profile)).eval()
    prompt = torch.randint(4, 160, (1, args.prompt_len))

    times: dict[bool, list[float]] = {True: [], False: []}
    outputs = {}
    for rep in range(args.reps + 1):  # rep 0 warms up both paths
        for use_cache in (True, False):
            t0 = time.perf_counter()
            outputs[use_cache] = module.generate(prompt, args.new_tokens, greedy=True, use_cache=use_cache)
            if rep:
                times[use_cache].append(time.perf_counter() - t0)
    assert torch.equal(outputs[True], outputs[False]), "cached and recomputed tokens differ"
    cached, full = statistics.median(times[True]), statistics.median(times[False])
    print(f"model: SuccuLM {args.profile}, prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy, batch 1")
    print(f"kv-cache:        {args.new_tokens / cached:9.1f} tokens/s  ({cached * 1e3:.1f} ms)")
    print(f"full recompute:  {args.new_tokens / full:9.1f} tokens/s  ({full * 1e3:.1f} ms)")
    print(f"speed-up (cache / recompute): {full / cached:.2f}x  (target >= 3x)")


if __name__ == "__main__":
    main()
