"""GatedGPTModule: GatedGPT in Lightning; the dial arrives in the batch (`alpha`, `source`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from succu import dial
from succu.dial import Position, position_label
from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.modules.base import LanguageModule


class GatedGPTModule(LanguageModule):
    """GatedGPT (abcGPT): nanoGPT with frozen unit specialties and an alpha dial.

    Training batches carry `alpha` ((B,), or (1,) for one position per batch; (B, K) or (1, K)
    for a K-source dial) and `source` (B,): `callbacks.alpha_sampling.AlphaBetaSampling` installs
    the draws into the datamodule. With `gating` off the network ignores the dial, so it also
    trains on batches without one (rows drawn by the data's `weights`, e.g. one corpus alone). Validation runs each alpha of `eval_alphas` on every corpus and
    logs `val/loss/<corpus>@alpha=<a>` (K sources: `@alpha=a_0,...,a_K-1`); `val/loss` is the
    mean over corpora of each corpus's loss at its own end of the dial (corpus k at alpha = k for
    two sources, at the corner e_k for K), and `val/ppl` its exponential. Test (`fit test`)
    scores the same grid on the test split: `test/loss/<corpus>@alpha=<a>` for each of
    `eval_alphas`, `test/loss/<corpus>` at the corpus's own end, and `test/loss` pooled over
    tokens at the own ends (as every module's test).

    Args:
        model: the network (GatedGPTConfig: GPT sizes, specialties, tents, routing, sources).
        eval_alphas: dial positions evaluated at every validation: numbers in [0, 1] for two
            sources, lists of K shares summing to 1 for K (e.g. [[1, 0, 0], [0.5, 0.5, 0]]).
    """

    config_class = GatedGPTConfig

    def __init__(
        self,
        model: GatedGPTConfig = GatedGPTConfig(),  # noqa: B008
        eval_alphas: Sequence[float | list[float]] = (0.0, 0.5, 1.0),
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.model = GatedGPT(self.model_config)
        self.eval_alphas = [self.position(a) for a in eval_alphas]
        self._loss_sums: dict[Any, list[float]] = {}  # (corpus, position) -> [nats, tokens]

    @property
    def n_sources(self) -> int:
        return self.model.n_sources

    def position(self, alpha: float | Sequence[float]) -> Position:
        """A configured dial position, checked: a float for two sources, a K-tuple for K."""
        return dial.checked_position(alpha, self.n_sources)

    def own_end(self, corpus: int) -> Position:
        """Where corpus k is scored: alpha = k for two sources, the corner e_k for K."""
        return dial.own_end(corpus, self.n_sources)

    def model_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        if "alpha" not in batch:
            if not self.model.cfg.gating:  # a plain GPT: rows drawn by the data's weights, no dial to read
                return {}
            raise RuntimeError(
                "GatedGPTModule trains with a dial: add callbacks.alpha_sampling.AlphaBetaSampling "
                "to trainer.callbacks, so that training batches carry `alpha` and `source`"
            )
        alpha, source = batch["alpha"], batch["source"]
        if alpha.shape[0] == 1:  # one position for the batch: the gates fold into the weights
            alpha, source = alpha[0], source[0]
        return {"alpha": alpha, "source": source}

    def positions_of(self, corpus: int) -> list[Position]:
        """`eval_alphas`, and the corpus's own end when they lack it."""
        own = self.own_end(corpus)
        return [*self.eval_alphas, *([] if own in self.eval_alphas else [own])]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Validation batches hold one corpus each (fixed windows), named by `source`.
        corpus = int(batch["source"][0]) if "source" in batch else 0
        for a in self.positions_of(corpus):
            self.accumulate_loss((corpus, a), self(batch["input_ids"], alpha=a), batch["labels"])

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate the batch's loss at every position of the grid; the epoch's end logs them
        and `test/loss`: every corpus at its own end, pooled over tokens (as every module's test)."""
        corpus = int(batch["source"][0]) if "source" in batch else 0
        for a in self.positions_of(corpus):
            self.accumulate_loss((corpus, a), self(batch["input_ids"], alpha=a), batch["labels"])

    def grid_losses(self) -> tuple[dict, list[Position]]:
        """({(corpus, position): (loss, tokens)} over the epoch and every rank, each corpus's own
        end in corpus order)."""
        corpora = self.corpus_indices()
        ends = [self.own_end(c) for c in corpora]
        positions = [*self.eval_alphas, *(e for e in dict.fromkeys(ends) if e not in self.eval_alphas)]
        return self.reduced_losses([(c, a) for c in corpora for a in positions]), ends

    def log_grid(self, split: str, losses: dict) -> None:
        for (corpus, a), (loss, _) in losses.items():
            if a in self.eval_alphas:
                self.log(f"{split}/loss/{self.corpus_name(corpus)}@alpha={position_label(a)}", loss)

    def on_test_epoch_end(self) -> None:
        losses, ends = self.grid_losses()
        self.log_grid("test", losses)
        own = [losses[(c, e)] for c, e in enumerate(ends) if (c, e) in losses]
        for corpus, end in enumerate(ends):
            if (corpus, end) in losses:
                self.log(f"test/loss/{self.corpus_name(corpus)}", losses[(corpus, end)][0])
        if own:
            self.log_loss("test", sum(loss * n for loss, n in own) / sum(n for _, n in own))

    def on_validation_epoch_end(self) -> None:
        losses, ends = self.grid_losses()
        self.log_grid("val", losses)
        own = [losses[(c, e)][0] for c, e in enumerate(ends) if (c, e) in losses]
        if own:
            self.log_loss("val", sum(own) / len(own), prog_bar=True)
