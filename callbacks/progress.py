"""What every fit reports as it trains: the learning rate, and a line every n steps in a log.

`python -m succu.fit` adds both to every trainer unless the config names its own.

    LearningRate  `lr` at every logged step (`succu.loggers.logged_step`).
    ProgressLog   without a progress bar (stdout not a terminal), one line every n steps:
                  step, train/loss, val/loss, it/s; and one after each validation.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from succu.loggers import logged_step


class LearningRate(L.Callback):
    """Logs `lr`: the learning rate the coming step uses (first optimizer, first parameter group;
    succu's groups share it). Lightning's LearningRateMonitor names it `lr-<Optimizer>` and
    refuses runs without a logger."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.optimizers and logged_step(trainer):
            # A CPU tensor: a float would be copied to the module's device (on a GPU, a blocking copy).
            lr = torch.tensor(float(trainer.optimizers[0].param_groups[0]["lr"]))
            pl_module.log("lr", lr, on_step=True, on_epoch=False, batch_size=1)


class ProgressLog(L.Callback):
    """Without a progress bar, one line every `every_n_steps` training steps (rank 0):
    `step 200/2500  train/loss 1.2345  val/loss 1.3456  8.1 it/s`, one at the end of training and
    one after each validation of a fit (`validation at step 200: val/loss 1.3456  val/ppl 3.84`).
    A log file (or W&B's console capture) gets these instead of a bar's thousands of redraws.

    Args:
        every_n_steps: steps between lines (None: the trainer's log_every_n_steps).
    """

    def __init__(self, every_n_steps: int | None = None):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.active = False
        self.last: tuple[float, int] = (0.0, 0)  # (time, step) of the previous line

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = trainer.progress_bar_callback is None and trainer.is_global_zero
        self.last = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        every = self.every_n_steps or trainer.log_every_n_steps or 50
        step = trainer.global_step
        if self.active and step % every == 0 and step != self.last[1]:  # steps repeat when accumulating
            print(self.line(trainer), flush=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and trainer.global_step != self.last[1]:
            print(self.line(trainer), flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        shown = [f"{k} {float(metrics[k]):.4f}" for k in ("val/loss", "val/ppl") if k in metrics]
        print(f"validation at step {trainer.global_step}: {'  '.join(shown)}", flush=True)

    def line(self, trainer: L.Trainer) -> str:
        now, step = time.perf_counter(), trainer.global_step
        rate = (step - self.last[1]) / max(now - self.last[0], 1e-9)
        self.last = (now, step)
        total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        parts = [f"step {step}{total}"]
        for key in ("train/loss", "val/loss"):
            if key in trainer.callback_metrics:
                parts.append(f"{key} {float(trainer.callback_metrics[key]):.4f}")
        return "  ".join([*parts, f"{rate:.1f} it/s"])
