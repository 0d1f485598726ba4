"""Data pipeline pieces shared by the datamodules."""

from __future__ import annotations

from typing import Any


class ResumableTraining:
    """Mixin for a LightningDataModule whose training stream is a pure function of how many
    training batches the model has received: it counts them and checkpoints the count.

    `train_cursor` is a dict of named counters, `{"consumed": n}`, shared with the training
    dataset or sampler, which starts at batch `n`: a resumed run sees exactly the batches an
    uninterrupted run would have seen. The count lives in the checkpoint as `train_batches`.
    List this class before `L.LightningDataModule` among the bases, so its hooks take precedence.
    """

    @property
    def train_cursor(self) -> dict[str, int]:
        cursor = self.__dict__.get("_train_cursor")
        if cursor is None:
            cursor = self.__dict__["_train_cursor"] = {"consumed": 0}
        return cursor

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Count the training batches the model actually receives (the loader runs one ahead).
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            self.train_cursor["consumed"] += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"train_batches": self.train_cursor["consumed"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_cursor["consumed"] = int(state.get("train_batches", 0))
