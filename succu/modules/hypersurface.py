"""HypersurfaceModule: HypersurfaceLM in Lightning, with per-corpus val losses and `diag/` geometry."""

from __future__ import annotations

import math
from typing import Any

import torch

from succu.analysis.latents import validation_diagnostics
from succu.contracts import NamedCorpora
from succu.models.hypersurface import HypersurfaceConfig, HypersurfaceLM
from succu.modules.base import LanguageModule


class HypersurfaceModule(LanguageModule):
    """Frozen random token latents adapted per context by a hypernetwork's transform, or a baseline.

    Validation logs `val/loss/<corpus>` and `val/ppl/<corpus>` for every corpus of the datamodule
    (rows labelled by `source`), and `val/loss`, `val/ppl` pooled over the in-domain corpora (those
    with a positive training weight), so training on TinyStories with
    MixtureDataModule(corpora=[tinystories, shakespeare], weights=[1, 0]) monitors TinyStories and
    reports Shakespeare as out-of-domain. With `diagnostics`, the first in-domain val batch also
    gives `diag/coherence/E`, `diag/gram/E`, `diag/coherence/TE`, `diag/gram/TE` and
    `diag/ctx_avg/loss_delta` (succu.analysis.latents).

    Args:
        model: the network (HypersurfaceConfig: sizes, variant, rank, hypernetwork depth).
        diagnostics: log the `diag/` measurements at every validation.
    """

    config_class = HypersurfaceConfig

    def __init__(
        self,
        model: HypersurfaceConfig = HypersurfaceConfig(),  # noqa: B008
        diagnostics: bool = True,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.model = HypersurfaceLM(self.model_config)
        self.diagnostics = diagnostics
        self.in_domain: set[int] | None = None  # None: every corpus is in-domain
        self._diag_done = False

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if isinstance(datamodule, NamedCorpora) and len(datamodule.corpora) > 1:
            self.in_domain = {i for i, w in enumerate(datamodule.corpus_weights) if w > 0}

    def is_in_domain(self, corpus: int) -> bool:
        return self.in_domain is None or corpus in self.in_domain

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._diag_done = False

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Val batches hold one corpus each (fixed windows), named by `source`.
        corpus = int(batch["source"][0]) if "source" in batch else 0
        self.accumulate_loss(corpus, self(batch["input_ids"]), batch["labels"])
        if self.diagnostics and not self._diag_done and self.is_in_domain(corpus):
            self._diag_done = True
            for name, value in validation_diagnostics(self.model, batch).items():
                self.log(f"diag/{name}", value, batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        losses = self.reduced_losses(self.corpus_indices())
        for corpus, (loss, _) in losses.items():
            name = self.corpus_name(corpus)
            self.log(f"val/loss/{name}", loss)
            self.log(f"val/ppl/{name}", math.exp(min(loss, 50.0)))
        # Pooled over the in-domain corpora, token-weighted.
        pooled = [(loss * n, n) for c, (loss, n) in losses.items() if self.is_in_domain(c)]
        if pooled:
            loss = sum(s for s, _ in pooled) / sum(n for _, n in pooled)
            self.log("val/loss", loss, prog_bar=True)
            self.log("val/ppl", math.exp(min(loss, 50.0)))
