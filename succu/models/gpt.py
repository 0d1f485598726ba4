"""GPT: nanoGPT's decoder-only transformer, the plain baseline every other succu model is held to.

    x_0    = drop(W_te[ids] + W_pe[pos])          learned token and position embeddings
    x'     = x + attn(LN_1(x))                     pre-LN causal self-attention (SDPA, fused qkv)
    x''    = x' + drop(W_2 GELU(W_1 LN_2(x')))     MLP, W_1: (d, 4d), W_2: (4d, d)
    logits = LN_f(x_L) W_te^T                      lm_head tied to the token embedding

Initialisation is GPT-2's: every Linear and Embedding ~ N(0, 0.02), biases zero, and the two
projections that write into the residual stream (attn.proj, mlp.c_proj) ~ N(0, 0.02 / sqrt(2 L)),
so the variance the residual stream accumulates over 2L additions stays O(1) at init. `bias`
switches the biases of every Linear and LayerNorm (nanoGPT trains without them).

The module tree is nanoGPT's: transformer.{wte, wpe, drop, h[i].{ln_1, attn, ln_2, mlp}, ln_f} and
lm_head, with attn = succu.nn.attention.CausalSelfAttention (qkv, proj) and mlp.{c_fc, c_proj}.
GatedGPT keeps this layout, so weights move between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from succu.contracts import KVCacheModel
from succu.nn.attention import CausalSelfAttention, KVCache, positions

INIT_STD = 0.02


@dataclass
class GPTConfig:
    """The GPT's sizes; the names every succu model shares.

    Attributes:
        vocab_size: vocabulary size (linked from the datamodule).
        block_size: context length (linked from the datamodule).
        n_layer: transformer blocks.
        n_head: attention heads per block.
        n_embd: model width d.
        dropout: dropout on embeddings, attention weights, attention output and MLP output.
        bias: biases in the Linear and LayerNorm layers (nanoGPT trains without).
    """

    vocab_size: int = 0
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        check_sizes(self, "block_size", "n_layer", "n_head", "n_embd")


def check_sizes(cfg, *names: str) -> None:
    """Refuse sizes that cannot train (a 0-token context trains to nan, 0 layers to nothing), in
    one line naming the field; None is a size still to come (a profile's)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, hidden: int | None = None):
        """hidden: the inner width (GPT-2's 4 d when None)."""
        super().__init__()
        hidden = hidden or 4 * cfg.n_embd
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, mlp_hidden: int | None = None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg.n_embd, cfg.n_head, bias=cfg.bias, dropout=cfg.dropout)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg, mlp_hidden)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache=kv_cache, layer=layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module, KVCacheModel):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {cfg.vocab_size}")
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(self._init_weights)
        residual_std = INIT_STD / math.sqrt(2 * cfg.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.c_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without position embeddings (tied wte counts once), as
        nanoGPT reports it."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def new_kv_cache(self) -> KVCache:
        return KVCache(self.cfg.n_layer)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for ids (B, T); with a cache, ids continue the cached prefix."""
        span = positions(input_ids, kv_cache, self.cfg.block_size)
        pos = torch.arange(span.start, span.stop, device=input_ids.device)
        t = self.transformer
        x = t.drop(t.wte(input_ids) + t.wpe(pos))
        for i, block in enumerate(t.h):
            x = block(x, kv_cache=kv_cache, layer=i)
        return self.lm_head(t.ln_f(x))
