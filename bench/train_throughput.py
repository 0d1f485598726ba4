"""Training throughput of SuccuLM through the Lightning Trainer against a hand-written loop.

    python bench/train_throughput.py [--threads 1] [--steps 300] [--rounds 3]

Same model (same initial weights), same data loader (the succulent pairs, seeded shuffle), same
batch size, optimizer and schedule; both sides in this process, interleaved step by step (after
each Trainer step a callback runs one hand-loop step, and each side is timed on its own steps
only), so a busy neighbour slows both alike. The first `--warmup` steps are not timed. Prints
tokens/s (input tokens, padding included) of both sides and the ratio Trainer / loop
(target >= 0.95).
"""

from __future__ import annotations

import argparse

from _common import add_thread_arg, lockstep, offline, report_rounds, setup_threads

offline()

import lightning as L  # noqa: E402
import torch  # noqa: E402

from datamodules.succulent import SuccuPairsDataModule  # noqa: E402
from succu.models.succulm import SuccuLMConfig  # noqa: E402
from succu.modules.succulm import SuccuLMModule  # noqa: E402


def adamw(params):
    return torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01, fused=True)  # as configs/succulm.yaml


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--steps", type=int, default=300, help="timed steps per side and round")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--profile", default="upper_middle")
    args = p.parse_args()
    setup_threads(args.threads)
    L.seed_everything(0, verbose=False)
    dm = SuccuPairsDataModule(seed=0, batch_size=args.batch_size)
    config = SuccuLMConfig(vocab_size=dm.vocab_size, block_size=dm.block_size, profile=args.profile)
    base = SuccuLMModule(model=config, optimizer=adamw)
    rounds = [lockstep(base, dm, adamw, args.steps, args.warmup) for _ in range(args.rounds)]
    print(f"SuccuLM {args.profile}, batch {args.batch_size}, {args.steps} timed steps x "
          f"{args.rounds} rounds, step by step")
    report_rounds(rounds)


if __name__ == "__main__":
    main()
