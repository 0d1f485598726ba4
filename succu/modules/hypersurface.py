"""HypersurfaceModule: HypersurfaceLM in Lightning, with per-corpus val losses and `diag/` geometry."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable

from succu.analysis.latents import validation_diagnostics
from succu.models.hypersurface import HypersurfaceConfig, HypersurfaceLM
from succu.modules.base import IGNORE_INDEX, LanguageModule


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
        vocab_size: vocabulary size (linked from the datamodule).
        block_size: longest sequence (linked from the datamodule).
        n_layer: transformer blocks of the body.
        n_head: attention heads per block.
        n_embd: model width d (and the latents' dimension).
        dropout: dropout on inputs, attention and MLP outputs (body and hypernetwork).
        bias: biases in the blocks' Linear and LayerNorm layers.
        variant: film, lowrank, orthogonal (hypersurface variants) or b0 (trainable tied E),
            b1 (frozen E, trainable head), b2 (frozen E, one learned context-free T).
        rank: r of lowrank (I + U V^T) and orthogonal (Cayley of a rank-2r skew matrix).
        n_hyper_layer: causal blocks of the hypernetwork (variants only; give the baselines as
            many extra body layers to match the parameter count).
        latent_seed: seed of the frozen latents E (b0: of E's initial value).
        diagnostics: log the `diag/` measurements at every validation.
        optimizer: optimizer factory; parameters arrive as two groups, matrices (decayed with the
            optimizer's own weight_decay) and vectors/gains (weight_decay 0).
        warmup_steps: linear learning-rate warmup steps before the cosine decay.
        min_lr_ratio: the cosine ends at this fraction of the peak learning rate.
    """

    def __init__(
        self,
        vocab_size: int = 0,
        block_size: int = 64,
        n_layer: int = 3,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = False,
        variant: str = "film",
        rank: int = 1,
        n_hyper_layer: int = 1,
        latent_seed: int = 0,
        diagnostics: bool = True,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ):
        super().__init__(optimizer=optimizer, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio)
        self.save_hyperparameters(ignore=["optimizer"])
        self.model = HypersurfaceLM(HypersurfaceConfig(
            vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
            n_embd=n_embd, dropout=dropout, bias=bias, variant=variant, rank=rank,
            n_hyper_layer=n_hyper_layer, latent_seed=latent_seed,
        ))
        self.diagnostics = diagnostics
        self.corpus_names: list[str] = []
        self.in_domain: set[int] | None = None  # None: every corpus is in-domain
        self._val_sums: dict[int, list[float]] = {}
        self._diag_done = False

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        self.corpus_names = list(getattr(datamodule, "corpora", []))
        weights = getattr(datamodule, "weights", None)
        if weights is not None and len(weights) > 1:
            self.in_domain = {i for i, w in enumerate(weights.tolist()) if w > 0}

    def corpus_name(self, index: int) -> str:
        return self.corpus_names[index] if index < len(self.corpus_names) else f"corpus{index}"

    def is_in_domain(self, corpus: int) -> bool:
        return self.in_domain is None or corpus in self.in_domain

    def on_validation_epoch_start(self) -> None:
        self._val_sums, self._diag_done = {}, False

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Val batches hold one corpus each (fixed windows), named by `source`.
        corpus = int(batch["source"][0]) if "source" in batch else 0
        logits = self(batch["input_ids"])
        labels = batch["labels"]
        total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        acc = self._val_sums.setdefault(corpus, [0.0, 0.0])
        acc[0] += float(total)
        acc[1] += float((labels != IGNORE_INDEX).sum())
        if self.diagnostics and not self._diag_done and self.is_in_domain(corpus):
            self._diag_done = True
            for name, value in validation_diagnostics(self.model, batch).items():
                self.log(f"diag/{name}", value, batch_size=1)

    def on_validation_epoch_end(self) -> None:
        pooled = torch.zeros(2, dtype=torch.float64, device=self.device)
        # Every rank reduces every corpus of the datamodule, in order, seen here or not.
        corpora = sorted(set(range(len(self.corpus_names))) | set(self._val_sums))
        for corpus in corpora:
            total, count = self._val_sums.get(corpus, (0.0, 0.0))
            sums = torch.tensor([total, count], dtype=torch.float64, device=self.device)
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum") if self._trainer else sums
            if sums[1] == 0:
                continue
            loss = float(sums[0] / sums[1])
            name = self.corpus_name(corpus)
            self.log(f"val/loss/{name}", loss, sync_dist=False)
            self.log(f"val/ppl/{name}", math.exp(min(loss, 50.0)), sync_dist=False)
            if self.is_in_domain(corpus):
                pooled += sums
        if pooled[1] > 0:
            loss = float(pooled[0] / pooled[1])
            self.log("val/loss", loss, prog_bar=True, sync_dist=False)
            self.log("val/ppl", math.exp(min(loss, 50.0)), sync_dist=False)
