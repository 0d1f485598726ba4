"""AlphaBetaSampling: the abcGPT training dial, alpha ~ Beta(a, b) and corpus ~ Bernoulli(alpha).

This callback is where a user configures the draws; it does not draw them. At setup it installs a
`succu.contracts.DialSampler` into the datamodule, whose training pipeline then draws, for every
row, alpha and the corpus and cuts that row from the drawn corpus; each batch carries `alpha` and
`source`, which the gated module reads like any other input. Because a Shakespeare row (corpus 1)
tends to come with a high alpha and a TinyStories row (corpus 0) with a low one, units specialised
at m ~ 1 learn Shakespeare and units at m ~ 0 learn TinyStories.

The draws for batch k on rank r come from a generator seeded by (seed, r, k) in the datamodule, so
DDP ranks draw different dials, DataLoader workers can make batches, and a resumed run continues
the same draws from the batch index alone: the callback keeps no state.
"""

from __future__ import annotations

import lightning as L
import torch

from succu.contracts import DialSampler, NamedCorpora, require
from succu.loggers import logged_step


class AlphaBetaSampling(L.Callback):
    """Configure the dial's training draws: alpha ~ Beta(a, b), corpus ~ Bernoulli(alpha).

    Args:
        a: first Beta parameter of alpha's distribution.
        b: second Beta parameter of alpha's distribution.
        distribution: "beta" (Beta(a, b)) or "uniform" (U(0, 1)).
        per_sample: every row of the batch gets its own alpha and corpus (else one per batch).
    """

    def __init__(
        self, a: float = 0.5, b: float = 0.5, distribution: str = "beta", per_sample: bool = False
    ):
        self.sampler = DialSampler(a=a, b=b, distribution=distribution, per_sample=per_sample)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = require(trainer.datamodule, NamedCorpora, "AlphaBetaSampling")
        data.install_dial(self.sampler)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        # What the pipeline drew, for the dashboard, on the steps the loggers write; the batch
        # itself is left as it is.
        if not logged_step(trainer):
            return
        alpha, source = batch["alpha"], batch["source"]
        n = source.numel()
        pl_module.log("train/alpha", alpha.float().mean(), batch_size=n)
        pl_module.log("train/corpus1_share", (source == 1).float().mean(), batch_size=n)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if isinstance(data, NamedCorpora):
            data.install_dial(None)


def dial_batch_alpha(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's alpha per row, (B,), whether it was drawn per row or once for the batch."""
    alpha = batch["alpha"]
    return alpha.expand(batch["source"].numel()) if alpha.numel() == 1 else alpha
