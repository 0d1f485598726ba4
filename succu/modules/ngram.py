"""NgramModule: the interpolated Kneser-Ney n-gram baseline (succu.models.ngram) in Lightning.

It trains through the same Trainer, data, checkpoints and metrics as the neural models, but a
training step counts instead of descending a gradient: the batch's rows (input_ids plus the last
label) are added to the n-gram counts. `train/loss` is the batch's NLL under the counts from
before it was added (each batch scored as held-out data), computed on the steps whose metrics
reach the loggers. The forward returns normalised log-probabilities, so the base module's
cross-entropy is the exact NLL (log_softmax of log-probabilities is the identity) and validation,
test, perplexity, `succu.evaluate` and generation (no KV cache: each step rescores the window)
are the base module's.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from succu.models.ngram import KneserNeyLM, NgramConfig
from succu.modules.base import IGNORE_INDEX, LanguageModule


class NoStep(torch.optim.Optimizer):
    """An optimizer that changes nothing. Under manual optimisation Lightning counts a step
    (`global_step`, hence max_steps, val_check_interval by steps, checkpoint names) only when an
    optimizer steps, so the n-gram module steps this one once per batch. Its one parameter is an
    empty tensor outside the module; `lr` is 0 (what the `lr` metric shows)."""

    def __init__(self) -> None:
        super().__init__([torch.zeros(0)], {"lr": 0.0})

    def step(self, closure=None):
        """Run the closure (Lightning's hooks around a step); update nothing."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


def training_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The token rows (B, T + 1) a batch was cut from: input_ids[:, 0] then the labels (labels are
    input_ids shifted by one, the data contract). A position whose label is IGNORE_INDEX
    (padding) becomes -1, which the model does not count: only n-grams of contiguous valid
    tokens are added."""
    ids, labels = batch["input_ids"], batch["labels"]
    rows = torch.cat([ids[:, :1], labels], dim=1)
    valid = torch.cat([torch.ones_like(ids[:, :1], dtype=torch.bool), labels != IGNORE_INDEX], dim=1)
    return rows.masked_fill(~valid, -1)


class NgramModule(LanguageModule):
    """Interpolated Kneser-Ney n-gram model, counted by the Trainer's training loop.

    Manual optimisation: nothing has a gradient. The Trainer must not clip gradients or
    accumulate batches (configs set `gradient_clip_val: null`; a value is a one-line error) and
    must run on one device (counts are not synchronised across DDP ranks).

    Args:
        model: the n-gram order and discount (NgramConfig).
        count_epochs: count only the first `count_epochs` epochs' worth of training batches
            (count_epochs x the Trainer's batches per epoch, by global step, so a resumed run
            stops counting where an uninterrupted one would); None: every batch. A finite
            dataset met again in a later epoch only multiplies every count, which leaves the
            count-of-counts discounts nothing to estimate from and starves held-out text of
            smoothing; data that draws fresh random windows every epoch wants None.
        **kwargs: the base module's arguments (optimizer, warmup_steps, min_lr_ratio); accepted,
            so a config can switch modules, but unused: no optimizer trains anything here.
    """

    config_class = NgramConfig

    def __init__(self, model: NgramConfig = NgramConfig(), count_epochs: int | None = None,  # noqa: B008
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        if count_epochs is not None and count_epochs < 1:
            raise ValueError(f"count_epochs must be >= 1 or None (every epoch), got {count_epochs}")
        self.count_epochs = count_epochs
        self.model = KneserNeyLM(self.model_config)
        self.automatic_optimization = False

    def configure_callbacks(self) -> list[L.Callback]:
        # The first hook with the Trainer attached, before Lightning checks the loop set-up
        # (whose own message about gradient clipping speaks of "manual optimization").
        check_trainer(self._trainer)
        return []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return NoStep()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss = None
        if self.logs_this_step():
            # Scored before the batch is counted: each batch is held-out text for this number.
            loss = self.loss(self(batch["input_ids"]), batch["labels"])
            self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        if self.counts_this_step():
            self.model.update(training_rows(batch))
        self.optimizers().step()  # advances global_step (NoStep)
        return loss

    def counts_this_step(self) -> bool:
        """Whether this batch lies in the first `count_epochs` epochs' worth of batches. By global
        step (one per batch, restored on resume) rather than Lightning's epoch counter, which a
        run resumed mid-epoch starts one epoch ahead of its (resumable) data."""
        if self.count_epochs is None or self._trainer is None:
            return True
        per_epoch = self.trainer.num_training_batches
        return not math.isfinite(per_epoch) or self.global_step < self.count_epochs * per_epoch

    def logs_this_step(self) -> bool:
        """Whether this step's metrics reach the loggers (Lightning's own test, so `train/loss`
        lands on every logged step); always without a Trainer or under fast_dev_run."""
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run:
            return True
        return bool(getattr(trainer._logger_connector, "should_update_logs", True))


def check_trainer(trainer: L.Trainer | None) -> None:
    """Trainer settings the n-gram module cannot honour, as one line naming the setting."""
    if trainer is None:
        return
    if trainer.gradient_clip_val:
        raise ValueError(f"NgramModule counts n-grams and has no gradients to clip: set "
                         f"trainer.gradient_clip_val: null (got {trainer.gradient_clip_val})")
    if trainer.accumulate_grad_batches != 1:
        raise ValueError(f"NgramModule counts every batch as it comes: set "
                         f"trainer.accumulate_grad_batches: 1 (got {trainer.accumulate_grad_batches})")
    if trainer.world_size > 1:
        raise ValueError(f"NgramModule keeps its counts in one process: run it on devices: 1 "
                         f"(got {trainer.world_size} processes)")
