"""What the speed benches share: thread set-up, offline defaults, and Trainer-vs-loop timing.

The scripts in bench/ run as `python bench/X.py` and import this module as a sibling
(`from _common import ...`); the Makefile's `bench` target skips files named `_*`.

Benchmarks on a shared 2-core machine are only meaningful when the compared sides run in the same
process, interleaved finely, on a stated number of threads. `lockstep` does that for "the Trainer
against a hand-written loop": after every Trainer step a callback runs one step of the hand loop,
and each side is timed on its own steps only, so a busy neighbour slows both alike.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from collections.abc import Callable, Iterable

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from succu.devices import set_threads
from succu.modules.base import LanguageModule
from succu.optim import warmup_cosine


def add_thread_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")


def setup_threads(n: int) -> int:
    """Pin torch to n threads and say so: every timing a bench prints is for this many."""
    n = set_threads(n)
    print(f"torch threads: {n}", flush=True)
    return n


def offline() -> None:
    """Benches read the local corpora; never let a missing file turn into a download."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")


class HandLoop:
    """The hand-written side: fetch, forward, loss, backward, (clip), optimizer, zero_grad, schedule."""

    def __init__(self, module: LanguageModule, batches: Callable[[], Iterable], optimizer: Callable,
                 total: int, clip: float | None = None):
        self.module, self.model = module, module.model.train()
        self.optimizer = optimizer(module.param_groups())
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, module.warmup_steps, total, module.min_lr_ratio)
        )
        self.make_batches, self.batches, self.clip = batches, iter(batches()), clip

    def next_batch(self) -> dict[str, torch.Tensor]:
        # A new epoch when the loader runs out (a StopIteration escaping a callback would be
        # taken by Lightning for the end of its own epoch).
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.make_batches())
            return next(self.batches)

    def step(self) -> int:
        batch = self.next_batch()
        loss = self.module.loss(self.model(batch["input_ids"]), batch["labels"])
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return batch["input_ids"].numel()


class Lockstep(L.Callback):
    """After every Trainer step, one hand-loop step. A Trainer iteration is timed as the whole
    interval between consecutive `on_train_batch_end` calls (fetch, hooks, step, logging) less the
    hand step run inside it, so both sides are timed within the same few milliseconds."""

    def __init__(self, hand: HandLoop, warmup: int):
        self.hand, self.warmup, self.last = hand, warmup, None
        self.seconds = {"trainer": 0.0, "loop": 0.0}
        self.tokens = {"trainer": 0, "loop": 0}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        timed = trainer.global_step > self.warmup
        if timed and self.last is not None:
            self.seconds["trainer"] += now - self.last
            self.tokens["trainer"] += batch["input_ids"].numel()
        start = time.perf_counter()
        tokens = self.hand.step()
        self.last = time.perf_counter()
        if timed:
            self.seconds["loop"] += self.last - start
            self.tokens["loop"] += tokens


def lockstep(base: LanguageModule, datamodule: L.LightningDataModule, optimizer: Callable,
             steps: int, warmup: int, clip: float | None = None) -> dict[str, float]:
    """Tokens/s of the Trainer and of the hand loop over `steps` timed steps each.

    Both sides start from copies of `base` (same weights) and read the same datamodule's loader.
    """
    total = warmup + steps + 1
    hand = HandLoop(copy.deepcopy(base), datamodule.train_dataloader, optimizer, total, clip)
    clock = Lockstep(hand, warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=total, gradient_clip_val=clip,
            logger=CSVLogger(tmp), enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=[clock], log_every_n_steps=50,
        )
        trainer.fit(copy.deepcopy(base), datamodule=datamodule)
    return {side: clock.tokens[side] / clock.seconds[side] for side in clock.seconds}


def report_rounds(rounds: list[dict[str, float]], target: float = 0.95) -> float:
    """Print both sides' tokens/s over rounds (harmonic mean: equal tokens per round) and the ratio."""
    overall = {}
    for side, label in (("trainer", "Trainer:  "), ("loop", "hand loop:")):
        rates = [r[side] for r in rounds]
        overall[side] = len(rates) / sum(1.0 / x for x in rates)
        print(f"  {label} {overall[side]:8.0f} tokens/s   (rounds: {', '.join(f'{x:.0f}' for x in rates)})")
    per_round = ", ".join(f"{r['trainer'] / r['loop']:.3f}" for r in rounds)
    ratio = overall["trainer"] / overall["loop"]
    print(f"  ratio Trainer / loop: {ratio:.3f}   (rounds: {per_round}; target >= {target})")
    return ratio
