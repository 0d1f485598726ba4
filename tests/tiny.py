"""Tiny models for tests: module arguments and model-config fields given in one call."""

from __future__ import annotations

import dataclasses
from typing import Any

from succu.modules.base import LanguageModule


def tiny_module(cls: type[LanguageModule], **kwargs: Any) -> LanguageModule:
    """`cls(model=cls.config_class(**config fields), **the rest)`, e.g.
    tiny_module(GPTModule, vocab_size=40, block_size=16, n_layer=1, warmup_steps=0)."""
    names = {f.name for f in dataclasses.fields(cls.config_class)}
    config = cls.config_class(**{k: v for k, v in kwargs.items() if k in names})
    return cls(model=config, **{k: v for k, v in kwargs.items() if k not in names})
