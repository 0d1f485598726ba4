"""Checkpoints: atomic writes, and loading any succu checkpoint back into its module.

A checkpoint written by Lightning is a dict with `state_dict` and `hyper_parameters`; succu adds
`checkpoint["succu"] = {"module": "<import path of the LightningModule>", "tokenizer": {...}}`
(see `LanguageModule.on_save_checkpoint`), which is what makes a checkpoint alone enough to talk to,
evaluate or compress a model.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from succu.io import atomic_write
from succu.modules.base import CHECKPOINT_KEY, LanguageModule


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, corrupt, or not written by succu."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the target folder, fsync, then rename over the target.

    `os.replace` is atomic on POSIX, so a run killed at any instant leaves either the previous
    complete file or the new complete file at `path`, never a truncated one (`succu.io.atomic_write`).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict, turning every failure into one clear line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # weights_only=False: the checkpoint holds hyperparameters and the tokenizer state too.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"corrupt checkpoint {path}: {type(err).__name__}: {err}") from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a succu checkpoint (expected a Lightning checkpoint with a '{CHECKPOINT_KEY}' entry)"
        )
    return ckpt


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> LanguageModule:
    """Rebuild the LightningModule of a succu checkpoint, with its weights and tokenizer, in eval mode."""
    ckpt = read_checkpoint(path)
    target = ckpt[CHECKPOINT_KEY].get("module", "")
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError):
        raise CheckpointError(f"{path} names an unknown module class {target!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, LanguageModule)):
        raise CheckpointError(f"{path} names {target!r}, which is not a succu LanguageModule")
    # LightningCLI stores bookkeeping entries such as `_class_path` beside the real arguments.
    hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if not k.startswith("_")}
    if not isinstance(hparams.get("model"), dict):
        raise CheckpointError(f"{path} has no model config (written before configs were objects?)")
    try:
        module = cls(**hparams)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its hyperparameters do not build {target}: {err}") from None
    module.on_load_checkpoint(ckpt)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not match {target}: {first}") from None
    return module.to(map_location).eval()


def load_datamodule(path: str | Path, module: LanguageModule | None = None):
    """Rebuild the datamodule a checkpoint was trained on (LightningCLI saves its class and args).

    With `module`, the rebuilt tokenizer must equal the checkpoint's: evaluating on differently
    tokenised data would give meaningless numbers.
    """
    hparams = dict(read_checkpoint(path).get("datamodule_hyper_parameters") or {})
    target = hparams.get("_class_path", "")
    if not target:
        raise CheckpointError(f"{path} records no datamodule; write it with `python -m succu.fit`")
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError):
        raise CheckpointError(f"{path} names an unknown datamodule class {target!r}") from None
    datamodule = cls(**{k: v for k, v in hparams.items() if not k.startswith("_")})
    if module is not None and module.tokenizer is not None and datamodule.tokenizer != module.tokenizer:
        raise CheckpointError(f"the datamodule rebuilt from {path} has a different tokenizer")
    return datamodule
