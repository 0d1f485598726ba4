"""HypersurfaceModule: HypersurfaceLM in Lightning, with per-corpus and per-rarity val losses."""

from __future__ import annotations

from typing import Any

import torch

from succu.contracts import TrainingTokenCounts, in_domain_corpora
from succu.models.hypersurface import HypersurfaceConfig, HypersurfaceLM
from succu.modules.base import LanguageModule, perplexity

# Token classes by training-split occurrences: unseen (0), rare (1 .. threshold - 1; as a reported
# class "rare" means fewer than threshold, unseen included), common (threshold or more).
RARITY = ("unseen", "rare", "common")


def rarity_classes(counts: torch.Tensor, threshold: int) -> torch.Tensor:
    """(V,) class index into RARITY of every vocabulary id, from its training-split count."""
    out = torch.full_like(counts, 2)
    out[counts < threshold] = 1
    out[counts == 0] = 0
    return out


class HypersurfaceModule(LanguageModule):
    """Frozen random token latents adapted per context by a hypernetwork's transform, or a baseline.

    Validation logs `val/loss/<corpus>` and `val/ppl/<corpus>` for every corpus of the datamodule
    (rows labelled by `source`), and `val/loss`, `val/ppl` pooled over the in-domain corpora (those
    with a positive training weight), so training on TinyStories with
    MixtureDataModule(corpora=[tinystories, shakespeare], weights=[1, 0]) monitors TinyStories and
    reports Shakespeare as out-of-domain. The latent geometry (`diag/coherence/E`, ...) is the
    `callbacks.diagnostics.Diagnostics` callback's.

    Tokens are split by how often the training text holds them (a datamodule with
    TrainingTokenCounts; `rare_threshold` > 0): validation and test also log
    `<split>/loss/<corpus>/<class>` and `<split>/tokens/<corpus>/<class>` for the classes `rare`
    (fewer than rare_threshold occurrences in the training split of the in-domain corpora, unseen
    ones included), `unseen` (none) and `common` (the rest), by the token being predicted. Test
    logs `test/loss/<corpus>` and the pooled in-domain `test/loss` as validation does.

    Args:
        model: the network (HypersurfaceConfig: sizes, variant, rank, hypernetwork depth).
        rare_threshold: occurrences below which a token is rare (0: no rarity split).
    """

    config_class = HypersurfaceConfig

    def __init__(
        self,
        model: HypersurfaceConfig = HypersurfaceConfig(),  # noqa: B008
        rare_threshold: int = 10,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        if rare_threshold < 0:
            raise ValueError(f"rare_threshold must be >= 0 (0: no rarity split), got {rare_threshold}")
        self.model = HypersurfaceLM(self.model_config)
        self.rare_threshold = rare_threshold
        self.in_domain: set[int] | None = None  # None: every corpus is in-domain
        self.token_class: torch.Tensor | None = None  # (V,) index into RARITY per vocabulary id

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        in_domain = in_domain_corpora(datamodule)
        if in_domain is not None:
            self.in_domain = in_domain
        if self.rare_threshold > 0 and isinstance(datamodule, TrainingTokenCounts):
            counts = datamodule.training_token_counts()
            self.token_class = rarity_classes(counts, self.rare_threshold)

    def is_in_domain(self, corpus: int) -> bool:
        return self.in_domain is None or corpus in self.in_domain

    def score(self, batch: dict[str, torch.Tensor]) -> int:
        """Accumulate a held-out batch's loss under its corpus and each rarity class; the corpus.
        Val and test batches hold one corpus each (fixed windows), named by `source`."""
        corpus = int(batch["source"][0]) if "source" in batch else 0
        logits, labels = self(batch["input_ids"]), batch["labels"]
        groups = {}
        if self.token_class is not None:
            cls = self.token_class.to(labels.device)[labels.clamp(min=0)]  # ignored labels: masked later
            groups = {(corpus, "unseen"): cls == 0, (corpus, "rare"): cls <= 1, (corpus, "common"): cls == 2}
        self.accumulate_loss(corpus, logits, labels, groups)
        return corpus

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.score(batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.score(batch)

    def on_validation_epoch_end(self) -> None:
        self.log_losses("val")

    def on_test_epoch_end(self) -> None:
        self.log_losses("test")

    def log_losses(self, split: str) -> None:
        """Per corpus (and per rarity class), then pooled over the in-domain corpora."""
        corpora = self.corpus_indices()
        keys: list[Any] = list(corpora)
        if self.token_class is not None:
            keys += [(c, name) for c in corpora for name in RARITY]
        losses = self.reduced_losses(keys)
        for key, (loss, n) in losses.items():
            if isinstance(key, tuple):
                name = f"{self.corpus_name(key[0])}/{key[1]}"
                self.log(f"{split}/tokens/{name}", float(n))
            else:
                name = self.corpus_name(key)
                self.log(f"{split}/ppl/{name}", perplexity(loss))
            self.log(f"{split}/loss/{name}", loss)
        # Pooled over the in-domain corpora, token-weighted.
        pooled = [(loss * n, n) for c, (loss, n) in losses.items()
                  if not isinstance(c, tuple) and self.is_in_domain(c)]
        if pooled:
            loss = sum(s for s, _ in pooled) / sum(n for _, n in pooled)
            self.log_loss(split, loss, prog_bar=split == "val")
