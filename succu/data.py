"""Data pipeline pieces shared by the datamodules."""

from __future__ import annotations

from typing import Any

import lightning as L


def pin_memory(trainer: L.Trainer | None) -> bool:
    """Whether a DataLoader should hand out page-locked batches: only when they go to a CUDA
    device, where the copy (`non_blocking`) can then overlap the step; elsewhere pinning is a
    wasted copy per batch."""
    return trainer is not None and trainer.strategy.root_device.type == "cuda"


class ResumableTraining(L.LightningDataModule):
    """A LightningDataModule whose training stream is a pure function of how many training
    batches the model has received: it counts them and checkpoints the count.

    `train_cursor` is a dict of named counters, `{"consumed": n}`, shared with the training
    dataset or sampler, which starts at batch `n`: a resumed run sees exactly the batches an
    uninterrupted run would have seen. The count lives in the checkpoint as `train_batches`.
    """

    @property
    def train_cursor(self) -> dict[str, int]:
        cursor = self.__dict__.get("_train_cursor")
        if cursor is None:
            cursor = self.__dict__["_train_cursor"] = {"consumed": 0}
        return cursor

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Count the training batches the model actually receives (the loader runs one ahead).
        if self.trainer is not None and self.trainer.training:
            self.train_cursor["consumed"] += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"train_batches": self.train_cursor["consumed"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_cursor["consumed"] = int(state.get("train_batches", 0))
