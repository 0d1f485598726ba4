"""TensorTrainCompression: swap chosen FFN Linears for TTLinears during or after a fit.

What is compressed (YAML-expressible)
    blocks + bond_dims: ffn[0] and ffn[2] of those blocks of a SuccuLM-style model
        (`model.blocks[i].ffn`), with modes from `modes` ({features: [modes]}) or two near-square
        factors (50 -> 5 x 10, 200 -> 10 x 20). `bond_dims` is the (out | in) bond, the matrix rank
        the layer keeps (layout "mps"; the other bonds exact) or every bond (layout "ttm"): one int
        for all blocks, one per block, or None (exact).
    layers: explicit specs instead, for any model: a list of
        {name: "model.blocks.3.ffn.0", in_modes: [5, 10], out_modes: [10, 20],
         bond_dims: [10, 27, 10], layout: mps}.

When
    at_epoch: None compresses at the end of fit, then fine-tunes the TT parameters (cores and
        biases of the new layers only) for `finetune_epochs` epochs of the training data with
        AdamW(finetune_lr), and writes the compressed checkpoint (`save_path`, default
        `<checkpoint dir>/tt.ckpt`). An int compresses at the start of that training epoch; the
        run's remaining epochs then train the whole model, TT cores included (the optimizer and
        LR schedule are rebuilt around the new parameters), and the run's own checkpoints are
        compressed ones.

Logged under tt/: params and FFN params before and after, the compression ratio of the swapped
layers, their relative weight error ||W - W_tt||_F / ||W||_F, val loss before and after (and after
fine-tuning). Callbacks with an `on_model_compressed(trainer, pl_module, stage)` method (SophiaTrapDetection)
are called right after the swap (stage "compressed") and after fine-tuning ("finetuned"), so the trap is probed on the compressed model.

Checkpoints of a compressed module record its TT structure (`LanguageModule.on_save_checkpoint`),
so `succu.checkpoint.load_module` and Lightning's resume rebuild it before loading the weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from succu.analysis.compression import evaluate_loss, ffn_specs
from succu.loggers import log_metrics
from succu.nn.tt import TTLinear, compress_linears


class CompressionProbe:
    """A callback that looks at the model each time TensorTrainCompression has changed it."""

    def on_model_compressed(self, trainer: L.Trainer, pl_module: L.LightningModule,
                            stage: str = "compressed") -> None:
        raise NotImplementedError


class TensorTrainCompression(L.Callback):
    """Compress FFN Linears into tensor trains; see the module docstring.

    Args:
        blocks: blocks whose ffn[0] and ffn[2] are compressed (None: every block).
        bond_dims: (out|in) bond per block (a list) or for all (an int); None is exact.
        layout: "mps" (the SuccuLM tensor-network article's) or "ttm".
        modes: {feature count: modes}, e.g. {50: [5, 10], 200: [10, 20]} (None: automatic).
        layers: explicit per-Linear specs (overrides blocks/bond_dims/modes).
        at_epoch: compress at the start of this epoch (None: at the end of fit).
        finetune_epochs: epochs of core fine-tuning after an end-of-fit compression.
        finetune_lr: AdamW learning rate of that fine-tuning.
        save_path: where the end-of-fit compressed checkpoint goes (None: <ckpt dir>/tt.ckpt).
    """

    def __init__(self, blocks: list[int] | None = None, bond_dims: int | list[int] | None = None,
                 layout: str = "mps", modes: dict[int, list[int]] | None = None,
                 layers: list[dict[str, Any]] | None = None, at_epoch: int | None = None,
                 finetune_epochs: int = 0, finetune_lr: float = 1e-3, save_path: str | None = None):
        if layout not in ("mps", "ttm"):
            raise ValueError(f"layout must be 'mps' or 'ttm', got {layout!r}")
        if finetune_epochs < 0 or (at_epoch is not None and at_epoch < 0):
            raise ValueError("finetune_epochs and at_epoch must be >= 0")
        self.blocks, self.bond_dims, self.layout = blocks, bond_dims, layout
        self.modes = {int(k): list(v) for k, v in (modes or {}).items()}
        self.layers = layers
        self.at_epoch, self.finetune_epochs, self.finetune_lr = at_epoch, finetune_epochs, finetune_lr
        self.save_path = save_path
        self.compressed = False
        self.results: dict[str, float] = {}
        self.saved_path: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"compressed": self.compressed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.compressed = bool(state_dict.get("compressed", False))

    # -- what -------------------------------------------------------------------------------------
    def specs(self, pl_module: L.LightningModule) -> dict[str, dict[str, Any]]:
        """{dotted name under the LightningModule: TTLinear.from_linear keyword arguments}."""
        if self.layers is not None:
            specs = {}
            for layer in self.layers:
                spec = dict(layer)
                name = spec.pop("name")
                spec.setdefault("layout", self.layout)
                specs[name] = spec
            return specs
        n_blocks = len(pl_module.get_submodule("model.blocks"))
        blocks = list(range(n_blocks)) if self.blocks is None else list(self.blocks)
        return ffn_specs(pl_module, blocks, self.bond_dims, self.layout, self.modes)

    # -- when -------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_epoch is None or self.compressed or trainer.current_epoch != self.at_epoch:
            return
        self.compress(trainer, pl_module)
        # The old optimizer holds the replaced Linears' tensors; rebuild it (and its schedule).
        trainer.strategy.setup_optimizers(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_epoch is not None or self.compressed:
            return
        layers = self.compress(trainer, pl_module)
        if self.finetune_epochs:
            self.finetune(trainer, pl_module, layers)
        # A fresh optimizer over the TT parameters, so the saved optimizer state matches the
        # compressed model and Lightning can resume from tt.ckpt.
        trainer.strategy.setup_optimizers(trainer)
        if not trainer.fast_dev_run:
            self.save(trainer)

    # -- how --------------------------------------------------------------------------------------
    def compress(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, TTLinear]:
        loader = self._val_loader(trainer)
        specs = self.specs(pl_module)
        dense = {name: pl_module.get_submodule(name) for name in specs}
        before = {"tt/params_before": _count(pl_module),
                  "tt/ffn_params_before": sum(_count(m) for m in dense.values()),
                  "tt/val_loss_before": evaluate_loss(pl_module, loader)}
        w_sq = sum(float(m.weight.detach().double().pow(2).sum()) for m in dense.values())
        layers = compress_linears(pl_module, specs)
        self.compressed = True
        after = {"tt/params_after": _count(pl_module),
                 "tt/ffn_params_after": sum(t.num_params() for t in layers.values()),
                 "tt/val_loss_after": evaluate_loss(pl_module, loader),
                 "tt/rel_error": math.sqrt(sum(t.discarded_sq_sum() for t in layers.values()) / w_sq)}
        after["tt/compression_ratio"] = before["tt/ffn_params_before"] / after["tt/ffn_params_after"]
        self.results = {**before, **after}
        log_metrics(trainer, self.results)
        rank_zero_info(
            f"TensorTrainCompression: {len(layers)} Linears -> TTLinear, params "
            f"{before['tt/params_before']} -> {after['tt/params_after']}, val loss "
            f"{before['tt/val_loss_before']:.4f} -> {after['tt/val_loss_after']:.4f}")
        self._notify(trainer, pl_module, "compressed")
        return layers

    def finetune(self, trainer: L.Trainer, pl_module: L.LightningModule,
                 layers: dict[str, TTLinear]) -> None:
        """A plain loop over the training data updating only the new TT layers' parameters."""
        params = [p for layer in layers.values() for p in layer.parameters()]
        optimizer = torch.optim.AdamW(params, lr=self.finetune_lr, weight_decay=0.0)
        tuned = {id(p) for p in params}
        frozen = [p for p in pl_module.parameters() if p.requires_grad and id(p) not in tuned]
        for p in frozen:
            p.requires_grad_(False)  # no gradients wasted on what is not being tuned
        pl_module.train()
        try:
            with torch.enable_grad():
                for _ in range(self.finetune_epochs):
                    for step, batch in enumerate(self._train_loader(trainer)):
                        if trainer.fast_dev_run and step >= 1:
                            break  # a smoke test tunes on one batch
                        batch = {k: v.to(pl_module.device) for k, v in batch.items()}
                        logits = pl_module(batch["input_ids"], **pl_module.model_kwargs(batch))
                        loss = pl_module.loss(logits, batch["labels"])
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
        finally:
            for p in frozen:
                p.requires_grad_(True)
            pl_module.zero_grad(set_to_none=True)
            pl_module.eval()
        self.results["tt/val_loss_finetuned"] = evaluate_loss(pl_module, self._val_loader(trainer))
        log_metrics(trainer, {"tt/val_loss_finetuned": self.results["tt/val_loss_finetuned"]})
        self._notify(trainer, pl_module, "finetuned")

    def _notify(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Let probing callbacks (SophiaTrapDetection) look at the model as it is now."""
        for callback in trainer.callbacks:
            if callback is not self and isinstance(callback, CompressionProbe):
                callback.on_model_compressed(trainer, pl_module, stage=stage)

    def save(self, trainer: L.Trainer) -> None:
        if self.save_path is not None:
            path = Path(self.save_path)
        else:
            ckpt_cb = trainer.checkpoint_callback
            folder = (ckpt_cb.dirpath if isinstance(ckpt_cb, ModelCheckpoint) else None) or (
                Path(trainer.default_root_dir) / "checkpoints")
            path = Path(folder) / "tt.ckpt"
        trainer.save_checkpoint(path)
        self.saved_path = str(path)
        rank_zero_info(f"TensorTrainCompression: compressed checkpoint written to {path}")

    @staticmethod
    def _val_loader(trainer: L.Trainer):
        datamodule = trainer.datamodule
        return datamodule.val_dataloader() if datamodule is not None else trainer.val_dataloaders

    @staticmethod
    def _train_loader(trainer: L.Trainer):
        datamodule = trainer.datamodule
        return datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
