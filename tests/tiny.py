"""Tiny models for tests: module arguments and model-config fields given in one call, and
saving one as `python -m succu.fit` saves a checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from succu.modules.base import LanguageModule


def tiny_module(cls: type[LanguageModule], **kwargs: Any) -> LanguageModule:
    """`cls(model=cls.config_class(**config fields), **the rest)`, e.g.
    tiny_module(GPTModule, vocab_size=40, block_size=16, n_layer=1, warmup_steps=0)."""
    names = {f.name for f in dataclasses.fields(cls.config_class)}
    config = cls.config_class(**{k: v for k, v in kwargs.items() if k in names})
    return cls(model=config, **{k: v for k, v in kwargs.items() if k not in names})


def write_checkpoint(path: Path, module: LanguageModule, tokenizer: Any,
                     corpora: list[str] | None = None) -> str:
    """`module` with `tokenizer` saved as `python -m succu.fit` saves a checkpoint (plus the
    datamodule's corpora, which name the ends of a dial)."""
    module.tokenizer = tokenizer
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    if corpora:
        ckpt["datamodule_hyper_parameters"] = {"corpora": corpora}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return str(path)
