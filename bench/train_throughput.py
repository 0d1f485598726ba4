"""Training throughput of SuccuLM through the Lightning Trainer against a hand-written loop.

    python bench/train_throughput.py [--threads 1] [--steps 300] [--rounds 3]

Same model (same initial weights), same data loader (same seeded order), same batch size, same
optimizer and schedule; the two sides run in this process, interleaved round by round, so a busy
neighbour slows both alike. Each side skips its first `--warmup` steps and times the rest.
Prints tokens/s (input tokens, padding included, identical for both sides) and the ratio
Trainer / loop (target >= 0.95).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules.succulent import SuccuPairsDataModule
from succu.modules.base import warmup_cosine
from succu.modules.succulm import SuccuLMModule


class StepTimer(L.Callback):
    """Wall time from the start of step `warmup` to the end of the last step, and tokens seen."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.tokens = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
        if trainer.global_step >= self.warmup:
            self.tokens += batch["input_ids"].numel()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


def with_trainer(module: SuccuLMModule, dm: SuccuPairsDataModule, steps: int, warmup: int) -> float:
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=warmup + steps, logger=CSVLogger(tmp),
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer], log_every_n_steps=50,
        )
        trainer.fit(module, datamodule=dm)
    return timer.tokens / (timer.end - timer.start)


def by_hand(module: SuccuLMModule, dm: SuccuPairsDataModule, steps: int, warmup: int) -> float:
    model = module.model.train()
    optimizer = torch.optim.AdamW(module.param_groups(), lr=3e-3, weight_decay=0.01)
    total = warmup + steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, module.warmup_steps, total, module.min_lr_ratio)
    )
    step, tokens, start = 0, 0, 0.0
    while step < total:
        for batch in dm.train_dataloader():
            if step == warmup:
                start = time.perf_counter()
            if step >= warmup:
                tokens += batch["input_ids"].numel()
            logits = model(batch["input_ids"])
            loss = module.loss(logits, batch["labels"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            step += 1
            if step == total:
                break
    return tokens / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--profile", default="upper_middle")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    L.seed_everything(0, verbose=False)
    dm = SuccuPairsDataModule(seed=0, batch_size=args.batch_size)
    dm.setup("fit")
    base = SuccuLMModule(vocab_size=dm.vocab_size, block_size=dm.block_size, profile=args.profile,
                         optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01))
    rates: dict[str, list[float]] = {"trainer": [], "loop": []}
    for _ in range(args.rounds):
        rates["trainer"].append(with_trainer(copy.deepcopy(base), dm, args.steps, args.warmup))
        rates["loop"].append(by_hand(copy.deepcopy(base), dm, args.steps, args.warmup))
    trainer, loop = statistics.median(rates["trainer"]), statistics.median(rates["loop"])
    print(f"SuccuLM {args.profile}, batch {args.batch_size}, {args.steps} timed steps x {args.rounds} rounds")
    print(f"Trainer:      {trainer:10.0f} tokens/s   (rounds: {', '.join(f'{r:.0f}' for r in rates['trainer'])})")
    print(f"hand loop:    {loop:10.0f} tokens/s   (rounds: {', '.join(f'{r:.0f}' for r in rates['loop'])})")
    print(f"ratio Trainer / loop: {trainer / loop:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
