"""GPTModule: the plain nanoGPT baseline in Lightning (loss, metrics, optimiser, generation: base)."""

from __future__ import annotations

from typing import Any

from succu.models.gpt import GPT, GPTConfig
from succu.modules.base import LanguageModule


class GPTModule(LanguageModule):
    """GPT as in nanoGPT: learned positions, pre-LN blocks, GELU MLP (4x), tied lm_head.

    Args:
        model: the network's sizes (GPTConfig).
    """

    config_class = GPTConfig

    def __init__(self, model: GPTConfig = GPTConfig(), **kwargs: Any):  # noqa: B008
        super().__init__(model, **kwargs)
        self.model = GPT(self.model_config)
