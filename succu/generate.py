"""`python -m succu.generate --ckpt PATH --prompt "is ruby a boy?"`: talk to any succu checkpoint.

The checkpoint carries the module class, hyperparameters and tokenizer, so nothing else is needed.
Prompt words the vocabulary lacks become `<UNK>`. Sampling is seeded (`--seed`) and reproducible.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from succu.checkpoint import CheckpointError, load_module
from succu.modules.base import check_sampling
from succu.nn.gates import check_alpha

ALPHA_SWEEP = [0.0, 0.25, 0.5, 0.75, 1.0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m succu.generate", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="path to a succu checkpoint (.ckpt)")
    p.add_argument("--prompt", action="append", required=True, help="prompt text; repeat for several")
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help="tokens to add (default: up to the model's block_size)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature, > 0")
    p.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (ignores temperature/top_k)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    p.add_argument("--no_cache", action="store_true", help="recompute the full context every step")
    p.add_argument("--device", default="cpu", help="torch device to run on")
    p.add_argument("--alpha", type=float, default=None,
                   help="dial position in [0, 1] for gated models (GatedGPT)")
    p.add_argument("--alpha_sweep", action="store_true",
                   help="gated models: continue each prompt at alpha = 0, 0.25, 0.5, 0.75, 1")
    return p


def main(argv: list[str] | None = None) -> list[str]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_sampling(args.temperature, args.top_k, args.max_new_tokens or 0)
        if args.alpha is not None:
            check_alpha(args.alpha)
        module = load_module(args.ckpt, map_location=args.device)
    except (CheckpointError, ValueError) as err:
        if os.environ.get("SUCCU_DEBUG"):
            raise
        parser.exit(2, f"error: {err}\n")
    if (args.alpha is not None or args.alpha_sweep) and not module.has_dial:
        parser.exit(2, f"error: --alpha needs a gated model; {args.ckpt} holds {type(module.model).__name__}\n")
    alphas = ALPHA_SWEEP if args.alpha_sweep else [args.alpha]
    outputs = []
    for alpha in alphas:
        # The same seed at every alpha, so the dial is the only thing that changes.
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        texts = module.complete(
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            greedy=args.greedy,
            use_cache=not args.no_cache,
            generator=generator,
            **({} if alpha is None else {"alpha": alpha}),
        )
        for prompt, text in zip(args.prompt, texts):
            tag = "" if alpha is None else f"[alpha={alpha:g}] "
            print(f"{tag}{prompt} -> {text}")
        outputs += texts
    return outputs


if __name__ == "__main__":
    main(sys.argv[1:])
