"""SuccuLM: a tiny pre-LN transformer for the succulent world.

The model of the article "Growing SuccuLM (2) — Model Compression with Tensor Networks Revisited"
(and its part 1, "Growing a Succulent LM"), made batched and cache-aware:

    x_0 = E[ids] + PE                      E: (V, d) token embedding, PE: sinusoidal positions
    x'  = x + MHA(LN_1(x))                 causal multi-head self-attention, all heads in one matmul
    x'' = x' + W_2 ReLU(W_1 LN_2(x'))      FFN, W_1: (d, e d), W_2: (e d, d), e = ffn_expansion
    logits = LN_f(x_L) E^T                 output tied to the input embedding

Tying matters for the "sophia trap": the hidden word `sophia` has a row in E that training never
targets, so the only way it can be emitted is when a hidden state drifts towards that row, which is
what corrupting (compressing) the last FFN does in the article.

Size profiles mirror the article's presets; `upper_middle` (4 layers, d = 50, FFN 200 wide) is the
one whose 200x50 FFN weights the tensor-train example factors as (5 x 10) x (10 x 20).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from succu.contracts import BlockDiagnostics, KVCacheModel
from succu.models.gpt import check_sizes
from succu.nn.attention import CausalSelfAttention, KVCache, positions

PROFILES: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=1, n_head=1, n_embd=32, ffn_expansion=1),
    "small": dict(n_layer=2, n_head=2, n_embd=32, ffn_expansion=2),
    "middle": dict(n_layer=3, n_head=4, n_embd=48, ffn_expansion=4),
    "upper_middle": dict(n_layer=4, n_head=5, n_embd=50, ffn_expansion=4),
    "large": dict(n_layer=6, n_head=8, n_embd=64, ffn_expansion=4),
}


@dataclass
class SuccuLMConfig:
    """SuccuLM's sizes: a profile, with single fields overriding it.

    Attributes:
        vocab_size: vocabulary size (linked from the datamodule).
        block_size: longest sequence (linked from the datamodule).
        profile: size preset (tiny, small, middle, upper_middle, large); the size fields below
            override single values of it.
        n_layer: transformer blocks (None: from the profile).
        n_head: attention heads (None: from the profile).
        n_embd: model width d (None: from the profile).
        ffn_expansion: FFN hidden width as a multiple of d (None: from the profile).
        dropout: dropout on embeddings, attention output and FFN output.
        bias: biases in the linear layers (the reference code has them).
    """

    vocab_size: int = 0
    block_size: int = 32
    profile: str = "upper_middle"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    ffn_expansion: int | None = None
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown SuccuLM profile {self.profile!r}; choose one of {sorted(PROFILES)}")
        check_sizes(self, "block_size", "n_layer", "n_head", "n_embd", "ffn_expansion")

    def resolved(self) -> SuccuLMConfig:
        """A copy with every size set: the profile's, where this config leaves a field None.

        The config itself keeps its None fields, so a changed profile still applies to them.
        """
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return SuccuLMConfig(**{**PROFILES[self.profile], **given})


def sinusoidal_positions(n_pos: int, d: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same), as in the original transformer."""
    pos = torch.arange(n_pos, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n_pos, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return pe


class Block(nn.Module):
    """Pre-LN block. With `record` set it keeps the article's diagnostics of the last call."""

    def __init__(self, cfg: SuccuLMConfig):
        super().__init__()
        d = cfg.n_embd
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, cfg.n_head, bias=cfg.bias, dropout=cfg.dropout)
        self.ln2 = nn.LayerNorm(d)
        # Kept as Sequential(Linear, ReLU, Linear): the tensor-train tools swap ffn[0] and ffn[2].
        self.ffn = nn.Sequential(
            nn.Linear(d, d * cfg.ffn_expansion, bias=cfg.bias),
            nn.ReLU(),
            nn.Linear(d * cfg.ffn_expansion, d, bias=cfg.bias),
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.record = False
        self.stats: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv_cache=kv_cache, layer=layer)
        ffn_out = self.drop(self.ffn(self.ln2(x)))
        if self.record:
            # How much the FFN moves the residual stream: the article's corruption lens.
            self.stats = {
                "resid_norm": x.detach().norm(dim=-1),
                "ffn_norm": ffn_out.detach().norm(dim=-1),
                "ffn_cos": F.cosine_similarity(x.detach(), (x + ffn_out).detach(), dim=-1),
            }
        return x + ffn_out


class SuccuLM(nn.Module, KVCacheModel, BlockDiagnostics):
    def __init__(self, cfg: SuccuLMConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {cfg.vocab_size}")
        self.cfg = cfg = cfg.resolved()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.register_buffer("pe", sinusoidal_positions(cfg.block_size, cfg.n_embd), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)

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
        x = self.drop(self.embed(input_ids) + self.pe[span.start : span.stop])
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache=kv_cache, layer=i)
        return self.ln_f(x) @ self.embed.weight.t()

    def set_recording(self, on: bool) -> None:
        """Keep attention maps and FFN statistics of the next forward passes (diagnostics)."""
        for block in self.blocks:
            block.record = on
            block.attn.keep_attention = on

    @torch.no_grad()
    def diagnostics(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        """Per-block mean residual norm, FFN-output norm and cos(x, x + ffn(x)), plus attention maps.

        `mask` (B, T) selects the positions averaged over (e.g. non-padding).
        """
        self.set_recording(True)
        try:
            self(input_ids)
        finally:
            self.set_recording(False)
        out: dict = {"attention": []}
        for i, block in enumerate(self.blocks):
            for name, value in block.stats.items():
                out[f"block{i}/{name}"] = value[mask].mean() if mask is not None else value.mean()
            out["attention"].append(block.attn.last_attention)
            block.stats, block.attn.last_attention = {}, None
        return out

    def load_embeddings(self, vectors: dict[str, list[float]], vocab: list[str]) -> int:
        """Copy rows from a {word: vector} table into E for the words it has; returns how many."""
        widths = {len(v) for v in vectors.values()}
        if widths and widths != {self.cfg.n_embd}:
            raise ValueError(
                f"embeddings have width {sorted(widths)} but the model's n_embd is {self.cfg.n_embd}"
            )
        hits = [(i, vectors[w]) for i, w in enumerate(vocab) if w in vectors]
        with torch.no_grad():
            for i, vec in hits:
                self.embed.weight[i] = torch.tensor(vec, dtype=self.embed.weight.dtype)
        return len(hits)
