"""GPTModule: the plain nanoGPT baseline in Lightning (loss, metrics, optimiser, generation: base)."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import OptimizerCallable

from succu.models.gpt import GPT, GPTConfig
from succu.modules.base import LanguageModule


class GPTModule(LanguageModule):
    """GPT as in nanoGPT: learned positions, pre-LN blocks, GELU MLP (4x), tied lm_head.

    Args:
        vocab_size: vocabulary size (linked from the datamodule).
        block_size: longest sequence (linked from the datamodule).
        n_layer: transformer blocks.
        n_head: attention heads per block.
        n_embd: model width d.
        dropout: dropout on embeddings, attention weights, attention output and MLP output.
        bias: biases in the Linear and LayerNorm layers (nanoGPT trains without).
        optimizer: optimizer factory; parameters arrive as two groups, matrices (decayed with the
            optimizer's own weight_decay) and vectors/gains (weight_decay 0).
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
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ):
        super().__init__(optimizer=optimizer, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio)
        self.save_hyperparameters(ignore=["optimizer"])
        cfg = GPTConfig(
            vocab_size=vocab_size,
            block_size=block_size,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            dropout=dropout,
            bias=bias,
        )
        self.model = GPT(cfg)
