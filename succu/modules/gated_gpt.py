"""GatedGPTModule: GatedGPT in Lightning; the dial is set per step by AlphaBetaSampling."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable

from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.modules.base import LanguageModule, token_count
from succu.nn.gates import check_alpha


class GatedGPTModule(LanguageModule):
    """GatedGPT (abcGPT): nanoGPT with frozen unit specialties and an alpha dial.

    Training needs the `callbacks.alpha_sampling.AlphaBetaSampling` callback, which draws alpha and
    the corpus before every step and hands them over through `set_dial`. Validation runs each
    alpha of `eval_alphas` on every corpus and logs `val/loss/<corpus>@alpha=<a>`; `val/loss` is
    the mean over corpora of each corpus's loss at its own end of the dial (corpus k at alpha = k).

    Args:
        vocab_size: vocabulary size (linked from the datamodule).
        block_size: context length (linked from the datamodule).
        n_layer: transformer blocks.
        n_head: attention heads per block.
        n_embd: model width d.
        dropout: dropout on embeddings, attention and MLP outputs.
        bias: biases in Linear and LayerNorm layers.
        mask_seed: seed of the frozen specialties m (saved in the checkpoint either way).
        narrowness: tent width factor; < 1 narrows each unit's firing zone on the dial.
        gating: gate units by the dial; off gives the plain GPT.
        routing: straight-through routing of gradients by corpus (m or 1 - m). Off by default:
            abcGPT's own training loop never activates it, and on it costs 0.7-0.9 nats at each
            corpus's own end of the dial (bench/alpha_dial.py, README).
        eval_alphas: dial positions evaluated at every validation.
        optimizer: optimizer factory (decay and no-decay parameter groups).
        warmup_steps: linear learning-rate warmup steps before the cosine decay.
        min_lr_ratio: the cosine ends at this fraction of the peak learning rate.
    """

    def __init__(
        self,
        vocab_size: int = 0,
        block_size: int = 64,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = False,
        mask_seed: int = 1337,
        narrowness: float = 1.0,
        gating: bool = True,
        routing: bool = False,
        eval_alphas: tuple[float, ...] = (0.0, 0.5, 1.0),
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ):
        super().__init__(optimizer=optimizer, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio)
        self.save_hyperparameters(ignore=["optimizer"])
        for a in eval_alphas:
            check_alpha(a)
        self.model = GatedGPT(GatedGPTConfig(
            vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
            n_embd=n_embd, dropout=dropout, bias=bias, mask_seed=mask_seed,
            narrowness=narrowness, gating=gating, routing=routing,
        ))
        self.eval_alphas = [float(a) for a in eval_alphas]
        self.corpus_names: list[str] = []
        self.dial_alpha: torch.Tensor | float | None = None
        self.dial_source: torch.Tensor | int | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        self.corpus_names = list(getattr(datamodule, "corpora", []))

    def set_dial(self, alpha: torch.Tensor | float, source: torch.Tensor | int) -> None:
        """The alpha (float or (B,)) and corpus (int or (B,)) of the next training step."""
        check_alpha(alpha)
        self.dial_alpha, self.dial_source = alpha, source

    def model_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        if self.dial_alpha is None:
            raise RuntimeError(
                "GatedGPTModule trains with a dial: add callbacks.alpha_sampling.AlphaBetaSampling "
                "to trainer.callbacks"
            )
        return {"alpha": self.dial_alpha, "source": self.dial_source}

    def corpus_name(self, index: int) -> str:
        return self.corpus_names[index] if index < len(self.corpus_names) else f"corpus{index}"

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Validation batches hold one corpus each (fixed windows), named by `source`.
        corpus = int(batch["source"][0]) if "source" in batch else 0
        name = self.corpus_name(corpus)
        n_tokens = token_count(batch["labels"])
        for a in self.eval_alphas:
            loss = self.loss(self(batch["input_ids"], alpha=a), batch["labels"])
            self.log(f"val/loss/{name}@alpha={a:g}", loss, batch_size=n_tokens, sync_dist=True)
        own = self.loss(self(batch["input_ids"], alpha=float(corpus >= 1)), batch["labels"])
        total, count = self.own_end.get(corpus, (0.0, 0))
        self.own_end[corpus] = (total + float(own) * n_tokens, count + n_tokens)

    def on_validation_epoch_start(self) -> None:
        self.own_end: dict[int, tuple[float, int]] = {}

    def on_validation_epoch_end(self) -> None:
        if self.own_end:
            per_corpus = [total / count for total, count in self.own_end.values()]
            own = torch.tensor(sum(per_corpus) / len(per_corpus), device=self.device)
            self.log("val/loss", own, prog_bar=True, sync_dist=True)
