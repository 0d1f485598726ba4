"""Causal multi-head self-attention with a key/value cache.

All heads run as one batched matmul: q, k, v come from a single (d, 3d) projection and are viewed as
(B, H, T, d/H). During generation a `KVCache` keeps every layer's past keys and values, so each new
token costs O(T) attention instead of a full O(T^2) recompute; the causal mask is aligned to the
bottom-right (query i of a chunk that starts at position P sees keys 0..P+i), which is what makes
cached and uncached logits identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Past keys and values of every layer, each (B, H, T_past, d_head)."""

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def __len__(self) -> int:
        k = self.keys[0]
        return 0 if k is None else k.size(2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


def positions(input_ids: torch.Tensor, kv_cache: KVCache | None, block_size: int) -> range:
    """Absolute positions of `input_ids` (B, T): they continue the cached prefix, if any.

    A model with a fixed position table cannot go past block_size; callers slide the window.
    """
    start = 0 if kv_cache is None else len(kv_cache)
    end = start + input_ids.size(1)
    if end > block_size:
        raise ValueError(f"sequence of {end} tokens exceeds block_size={block_size}")
    return range(start, end)


def causal_mask(t_query: int, t_key: int, device: torch.device) -> torch.Tensor:
    """Boolean (t_query, t_key) mask, True where attention is allowed, bottom-right aligned."""
    past = t_key - t_query
    q = torch.arange(t_query, device=device).unsqueeze(1) + past
    return torch.arange(t_key, device=device).unsqueeze(0) <= q


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused qkv projection, heads batched."""

    def __init__(self, n_embd: int, n_head: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        # Filled with (B, H, T, T_key) maps when `keep_attention` is set (diagnostics only).
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        shape = (B, T, self.n_head, C // self.n_head)
        return tuple(t.view(shape).transpose(1, 2) for t in (q, k, v))  # type: ignore[return-value]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax(q k^T / sqrt(d)) v under the causal mask, (B, H, T, d_head)."""
        t_q, t_k = q.size(2), k.size(2)
        if self.keep_attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
            scores = scores.masked_fill(~causal_mask(t_q, t_k, q.device), float("-inf"))
            att = scores.softmax(dim=-1)
            self.last_attention = att.detach()
            return att @ v
        drop = self.dropout if self.training else 0.0
        if t_q == t_k:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        # A cached chunk: SDPA's is_causal is top-left aligned, so pass the mask explicitly
        # (a single new token may see every key and needs none).
        mask = None if t_q == 1 else causal_mask(t_q, t_k, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`project`, when given, replaces the output projection `self.proj` on the merged head
        outputs (B, T, C), head h in channels [h d_head, (h + 1) d_head) (GatedGPT gates there)."""
        B, T, C = x.shape
        q, k, v = self.split_heads(x)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        y = self.attend(q, k, v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout((project or self.proj)(y))
