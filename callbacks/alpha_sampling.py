"""AlphaBetaSampling: the abcGPT training dial, alpha ~ Beta(a, b) and corpus ~ Bernoulli(alpha).

Before every training step the callback draws alpha and the corpus from its own generator, asks
the datamodule for a batch of that corpus (`batch_from`, a seeded stream of its own) and hands
both to the module (`set_dial`). Because a Shakespeare batch (corpus 1) tends to come with a high
alpha and a TinyStories batch (corpus 0) with a low one, units specialised at m ~ 1 learn
Shakespeare and units at m ~ 0 learn TinyStories.

The generator is seeded from (seed, global rank), so DDP ranks draw different dials, and its state
is in `state_dict`, so a resumed run continues the same sequence of draws.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import numpy as np
import torch


class AlphaBetaSampling(L.Callback):
    """Draw the dial and the corpus for every training step.

    Args:
        a: first Beta parameter of alpha's distribution.
        b: second Beta parameter of alpha's distribution.
        distribution: "beta" (Beta(a, b)) or "uniform" (U(0, 1)).
        per_sample: every row of the batch gets its own alpha and corpus.
        seed: seed of the draws (default: the global seed); the DDP rank is mixed in.
    """

    def __init__(
        self,
        a: float = 0.5,
        b: float = 0.5,
        distribution: str = "beta",
        per_sample: bool = False,
        seed: int | None = None,
    ):
        if distribution not in ("beta", "uniform"):
            raise ValueError(f"distribution must be 'beta' or 'uniform', got {distribution!r}")
        if not (a > 0 and b > 0):
            raise ValueError(f"Beta parameters must be positive, got a={a}, b={b}")
        self.a, self.b, self.distribution = a, b, distribution
        self.per_sample, self.seed = per_sample, seed
        self.rng: np.random.Generator | None = None
        self.rank = 0
        self.counts = [0, 0]  # rows drawn from corpus 0 and corpus 1 so far
        self.draws: list[int] = []  # sizes of the draws made, to replay them on resume

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.rank = trainer.global_rank
        self.start(self.draws)

    def start(self, replay: list[int]) -> None:
        """A fresh stream for (seed, rank), fast-forwarded past `replay` earlier draws.

        Replaying rather than saving the generator state keeps resume exact under DDP, where
        only rank 0's callback state reaches the checkpoint but every rank needs its own stream.
        """
        base = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.rng = np.random.default_rng([base, self.rank])
        self.draws = []
        for n in replay:
            self.draw(n)

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n alphas in [0, 1] and n corpora in {0, 1}, corpus ~ Bernoulli(alpha)."""
        if self.distribution == "uniform":
            alpha = self.rng.random(n)
        else:
            alpha = self.rng.beta(self.a, self.b, n)
        corpus = (self.rng.random(n) < alpha).astype(np.int64)
        self.draws.append(n)
        return torch.from_numpy(alpha).float(), torch.from_numpy(corpus)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        datamodule = trainer.datamodule
        n = batch["input_ids"].size(0)
        alpha, corpus = self.draw(n if self.per_sample else 1)
        # The step trains on rows of the drawn corpus: replace the loader's rows in place
        # (Lightning hands this same dict to training_step).
        rows = datamodule.batch_from(corpus if self.per_sample else int(corpus), batch_size=n)
        batch.update({k: v.to(pl_module.device) for k, v in rows.items()})
        if self.per_sample:
            pl_module.set_dial(alpha.to(pl_module.device), corpus.to(pl_module.device))
        else:
            pl_module.set_dial(float(alpha), int(corpus))
        shakespeare_rows = int(corpus.sum()) * (1 if self.per_sample else n)
        self.counts[1] += shakespeare_rows
        self.counts[0] += n - shakespeare_rows
        pl_module.log("train/alpha", alpha.mean(), batch_size=n)
        pl_module.log("train/corpus1_share", self.counts[1] / sum(self.counts), batch_size=n)

    def state_dict(self) -> dict[str, Any]:
        return {"draws": list(self.draws), "counts": list(self.counts)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks after setup(): rebuild this rank's stream and replay it.
        self.counts = list(state_dict["counts"])
        self.start(list(state_dict["draws"]))
