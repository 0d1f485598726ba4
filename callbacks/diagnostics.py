"""Diagnostics: a look inside the model at every validation, through the capability it declares.

    per-block statistics  a model that declares `succu.contracts.BlockDiagnostics` (SuccuLM): on
                          the first validation batch, each block's mean residual norm, FFN-output
                          norm and cos(x, x + ffn(x)) (`diag/block<i>/resid_norm`, `.../ffn_norm`,
                          `.../ffn_cos`), and the attention maps of its first sequence, every block
                          and head, as `<run>/diag/attention_<step>.png` (image `diag/attention`).
    latent geometry       a model that declares `succu.contracts.LatentReadout` (HypersurfaceLM):
                          on the first validation batch of a corpus the model trains on, the
                          coherence and gram distance of the token latents E and of the readout
                          table T_t E, and what the context average of T_t costs
                          (`diag/coherence/E`, `diag/gram/E`, `diag/coherence/TE`, `diag/gram/TE`,
                          `diag/ctx_avg/loss_delta`; `succu.analysis.latents`).

A model that declares neither is refused in one line at setup. The measurements are deterministic
forward passes in eval mode: they draw nothing and change nothing the training sees.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from succu.contracts import BlockDiagnostics, CapabilityError, LatentReadout, in_domain_corpora
from succu.loggers import log_image, run_folder
from succu.modules.base import IGNORE_INDEX, LanguageModule


class Diagnostics(L.Callback):
    """Log `diag/` measurements of the model at every validation (see the module docstring)."""

    def __init__(self) -> None:
        self.in_domain: set[int] | None = None  # None: every corpus is in domain
        self.latents_done = False

    @staticmethod
    def network(pl_module: L.LightningModule) -> Any:
        """The pure-torch model inside a succu module (else the module itself)."""
        return pl_module.model if isinstance(pl_module, LanguageModule) else pl_module

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        model = self.network(pl_module)
        if not isinstance(model, (BlockDiagnostics, LatentReadout)):
            raise CapabilityError(
                "Diagnostics needs a model that reports per-block statistics or reads its logits "
                f"against token latents; {type(model).__name__} does neither")
        self.in_domain = in_domain_corpora(trainer.datamodule)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.latents_done = False

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        model = self.network(pl_module)
        if isinstance(model, BlockDiagnostics) and batch_idx == 0:
            self.block_statistics(trainer, pl_module, model, batch)
        if isinstance(model, LatentReadout) and not self.latents_done:
            corpus = int(batch["source"][0]) if "source" in batch else 0
            if self.in_domain is None or corpus in self.in_domain:
                self.latents_done = True
                self.latent_geometry(pl_module, model, batch)

    def block_statistics(self, trainer: L.Trainer, pl_module: L.LightningModule,
                         model: BlockDiagnostics, batch: dict[str, torch.Tensor]) -> None:
        stats = model.diagnostics(batch["input_ids"], batch["labels"] != IGNORE_INDEX)
        for name, value in stats.items():
            if name != "attention":
                pl_module.log(f"diag/{name}", value, batch_size=1, sync_dist=True)
        self.save_attention(trainer, pl_module, batch["input_ids"][0], [a[0] for a in stats["attention"]])

    @staticmethod
    def latent_geometry(pl_module: L.LightningModule, model: LatentReadout,
                        batch: dict[str, torch.Tensor]) -> None:
        from succu.analysis.latents import validation_diagnostics

        for name, value in validation_diagnostics(model, batch).items():
            pl_module.log(f"diag/{name}", value, batch_size=1, sync_dist=True)

    @staticmethod
    def save_attention(trainer: L.Trainer, pl_module: L.LightningModule, ids: torch.Tensor,
                       maps: list[torch.Tensor]) -> None:
        """Attention maps of the first validation sequence, as a PNG in the run's folder."""
        if trainer.sanity_checking:
            return
        from succu.analysis.plots import attention_figure, save_figure

        run_dir = run_folder(trainer)  # a collective under DDP: every rank asks, rank 0 writes
        if not trainer.is_global_zero:
            return
        tok = pl_module.tokenizer
        n = int((ids != tok.pad_id).sum()) if tok else ids.numel()
        tokens = [tok.vocab[i] for i in ids[:n].tolist()] if tok else []
        fig = attention_figure([m[:, :n, :n] for m in maps], tokens)
        step = trainer.global_step
        path = save_figure(fig, run_dir / "diag" / f"attention_{step:06d}.png")
        log_image(trainer.loggers, "diag/attention", path, step)
