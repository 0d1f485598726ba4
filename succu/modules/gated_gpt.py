"""GatedGPTModule: GatedGPT in Lightning; the dial arrives in the batch (`alpha`, `source`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.modules.base import LanguageModule
from succu.nn.gates import check_alpha


class GatedGPTModule(LanguageModule):
    """GatedGPT (abcGPT): nanoGPT with frozen unit specialties and an alpha dial.

    Training batches carry `alpha` ((B,), or (1,) for one position per batch) and `source` (B,):
    `callbacks.alpha_sampling.AlphaBetaSampling` installs the draws into the datamodule. Validation
    runs each alpha of `eval_alphas` on every corpus and logs `val/loss/<corpus>@alpha=<a>`;
    `val/loss` is the mean over corpora of each corpus's loss at its own end of the dial (corpus k
    at alpha = k), and `val/ppl` its exponential.

    Args:
        model: the network (GatedGPTConfig: GPT sizes, specialties, tents, routing).
        eval_alphas: dial positions evaluated at every validation.
    """

    config_class = GatedGPTConfig

    def __init__(
        self,
        model: GatedGPTConfig = GatedGPTConfig(),  # noqa: B008
        eval_alphas: tuple[float, ...] = (0.0, 0.5, 1.0),
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        for a in eval_alphas:
            check_alpha(a)
        self.model = GatedGPT(self.model_config)
        self.eval_alphas = [float(a) for a in eval_alphas]

    def model_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        if "alpha" not in batch:
            raise RuntimeError(
                "GatedGPTModule trains with a dial: add callbacks.alpha_sampling.AlphaBetaSampling "
                "to trainer.callbacks, so that training batches carry `alpha` and `source`"
            )
        alpha, source = batch["alpha"], batch["source"]
        if alpha.numel() == 1:  # one position for the batch: the gates fold into the weights
            alpha, source = alpha.reshape(()), source[0]
        return {"alpha": alpha, "source": source}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Validation batches hold one corpus each (fixed windows), named by `source`.
        corpus = int(batch["source"][0]) if "source" in batch else 0
        for a in self.eval_alphas:
            self.accumulate_loss((corpus, a), self(batch["input_ids"], alpha=a), batch["labels"])
        own = float(corpus >= 1)
        if own not in self.eval_alphas:
            self.accumulate_loss((corpus, own), self(batch["input_ids"], alpha=own), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        corpora = self.corpus_indices()
        alphas = sorted({*self.eval_alphas, 0.0, 1.0})
        losses = self.reduced_losses([(c, a) for c in corpora for a in alphas])
        for (corpus, a), (loss, _) in losses.items():
            if a in self.eval_alphas:
                self.log(f"val/loss/{self.corpus_name(corpus)}@alpha={a:g}", loss)
        own = [losses[(c, float(c >= 1))][0] for c in corpora if (c, float(c >= 1)) in losses]
        if own:
            loss = sum(own) / len(own)
            self.log("val/loss", loss, prog_bar=True)
            self.log("val/ppl", math.exp(min(loss, 50.0)))
