"""GatedGPT: nanoGPT whose units have frozen corpus specialties and a dial alpha (abcGPT).

Three groups of units get a specialty m ~ Beta(0.5, 0.5), drawn once from `mask_seed` and kept as
buffers (so they travel in the checkpoint):

    m_embd (n_embd,)            one global mask of residual-stream channels, applied to everything
                                that writes the stream: the embedding output, every attention
                                output projection, every MLP output projection, and ln_f's output
                                before the LM head
    m_mlp  (n_layer, 4 n_embd)  the MLP inner units of each block, after the GELU
    m_head (n_layer, n_head)    each attention head's output, before the output projection

At a dial position alpha in [0, 1] each unit is scaled by the tent g(alpha, m) of
`succu.nn.gates` (1 at alpha = m, falling to exactly 0 at the far end for its span). LayerNorms
are not gated: LN's renormalisation would undo a gate in front of it. Training draws alpha ~
Beta(0.5, 0.5) and the corpus ~ Bernoulli(alpha) (callbacks/alpha_sampling.py). With `routing`
(off by default) each unit gets the gradient of its own corpus only (m for corpus 1, 1 - m for 0).

`silence(mask)` holds chosen units' gates at zero at every dial position (a unit ablation for
analysis: `succu.analysis.silence`); the weights and the specialties are untouched.

alpha may be a float (one dial for the batch) or a (B,) tensor (one per row). With `gating` off,
or alpha None, the forward pass is exactly the plain GPT's: same module tree, same weights.

K sources (`n_sources` > 2): every specialty is a point of the simplex ~ Dirichlet(c, ..., c),
kept as buffers with a trailing axis of K, and alpha is a point of the simplex too, (K,) or
(B, K); the gate is `succu.nn.gates.simplex_tent` (which is the tent for K = 2) and a corpus-k
row routes by m_k. Two-source models keep their scalar specialties, tents and draws unchanged.

`dial: control_code` is the baseline the gates are held to: no gates at all, but one learned
style vector s_k per source added to the token embeddings, dialled by interpolation,
sum_k alpha_k s_k ((1 - alpha) s_0 + alpha s_1 for two sources). It trains with the same draws,
module, sampler and sweeps as the gated model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from succu.contracts import DialModel
from succu.dial import Position, check_alpha, check_simplex
from succu.models.gpt import GPT, INIT_STD, GPTConfig
from succu.nn.attention import KVCache, positions
from succu.nn.gates import (
    Gate,
    apply_gate,
    gated_linear,
    route,
    sample_simplex_specialties,
    sample_specialties,
    simplex_route,
    simplex_tent,
    tent,
)

DIALS = ("gates", "control_code")


@dataclass
class GatedGPTConfig(GPTConfig):
    """GPTConfig plus the dial: frozen specialties, tent width, gating and routing switches.

    Attributes:
        mask_seed: seed of the frozen specialties m (saved in the checkpoint either way).
        narrowness: tent width factor; < 1 narrows each unit's firing zone on the dial.
        gating: gate units by the dial; off gives the plain GPT.
        routing: straight-through routing of gradients by corpus (m or 1 - m). Off by default:
            abcGPT's own training loop never activates it, and it costs loss at each corpus's own
            end of the dial (studies/results/dial.md).
        n_sources: corpora the dial spans (the data's corpora, in order). 2: alpha is a number in
            [0, 1] (abcGPT's dial); K > 2: alpha is a point of the simplex, K shares summing to 1.
        specialty_concentration: specialties m ~ Dirichlet(c, ..., c) on the simplex; for two
            sources 0.5 is abcGPT's Beta(0.5, 0.5) draw, kept bit for bit.
        dial: "gates" (abcGPT's specialty gates) or "control_code" (the baseline: no gates, a
            learned style vector per source added to the token embeddings, interpolated by alpha).
    """

    mask_seed: int = 1337
    narrowness: float = 1.0
    gating: bool = True
    routing: bool = False  # see GatedGPTModule: measured to hurt, and abcGPT never trains with it
    n_sources: int = 2
    specialty_concentration: float = 0.5
    dial: str = "gates"

MAX_SOURCES = 1024


def check_dial_config(cfg: GatedGPTConfig) -> None:
    """The dial's settings, each refused in one line naming it."""
    if not cfg.narrowness > 0:
        raise ValueError(f"narrowness must be > 0, got {cfg.narrowness}")
    if not 2 <= cfg.n_sources <= MAX_SOURCES:
        # The specialties are drawn (in numpy, before any size check could see them) as one
        # simplex point of n_sources shares per unit: a bound keeps a setting from asking for
        # gigabytes.
        raise ValueError(f"n_sources must be between 2 and {MAX_SOURCES:,} corpora, got {cfg.n_sources:,}")
    if not cfg.specialty_concentration > 0:
        raise ValueError(f"specialty_concentration must be > 0, got {cfg.specialty_concentration}")
    if cfg.dial not in DIALS:
        raise ValueError(f"dial must be one of {DIALS}, got {cfg.dial!r}")


def draw_specialties(cfg: GatedGPTConfig, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """m of each group of units, in order, from one generator seeded by `mask_seed`.

    Two sources at c = 0.5 keep abcGPT's draw bit for bit (torch's generator, the arcsine inverse
    CDF), one number per unit: the corpus-1 share m (the corpus-0 share is 1 - m). Otherwise
    Dirichlet(c, ..., c) points of shape (*shape, K) from numpy's generator; two sources again
    keep only the corpus-1 share.
    """
    if cfg.n_sources == 2 and cfg.specialty_concentration == 0.5:
        g = torch.Generator().manual_seed(cfg.mask_seed)
        return [sample_specialties(math.prod(shape), g).view(*shape) for shape in shapes]
    rng = np.random.default_rng(cfg.mask_seed)
    ms = [sample_simplex_specialties(s, cfg.n_sources, cfg.specialty_concentration, rng) for s in shapes]
    return [m[..., 1].contiguous() for m in ms] if cfg.n_sources == 2 else ms


class GatedGPT(GPT, DialModel):
    def __init__(self, cfg: GatedGPTConfig):
        super().__init__(cfg)
        check_dial_config(cfg)
        L, C, H, K = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_sources
        m_embd, m_mlp, m_head = draw_specialties(cfg, [(C,), (L, 4 * C), (L, H)])
        self.register_buffer("m_embd", m_embd)
        self.register_buffer("m_mlp", m_mlp)
        self.register_buffer("m_head", m_head)
        if cfg.dial == "control_code":
            self.style = nn.Parameter(torch.empty(K, C).normal_(0.0, INIT_STD))
        self.silenced: torch.Tensor | None = None  # see `silence`

    def silence(self, mask: torch.Tensor | None) -> None:
        """Hold the gates of the units `mask` selects at zero in every gated forward pass, at any
        dial position, until `silence(None)`: a unit ablation for analysis, not a trained setting
        (a plain attribute, so it never enters the state dict or a checkpoint).

        mask: bool, one entry per unit in the order of `specialties()` (embd, mlp by layer, heads
        by layer). Only gated specialty dials have units to silence; anything else is a ValueError.
        """
        if mask is not None:
            units = self.specialties().shape[0]
            if not self.cfg.gating or self.cfg.dial != "gates":
                raise ValueError(f"silence needs a gated model with dial 'gates', got gating "
                                 f"{self.cfg.gating}, dial {self.cfg.dial!r}")
            if mask.dtype != torch.bool or tuple(mask.shape) != (units,):
                raise ValueError(f"silence takes a bool mask of shape ({units},), one per unit, got "
                                 f"{mask.dtype} of shape {tuple(mask.shape)}")
            mask = mask.to(self.m_embd.device)
        self.silenced = mask

    @property
    def n_sources(self) -> int:
        return self.cfg.n_sources

    def specialties(self) -> torch.Tensor:
        """Every unit's m in one tensor, (n,) for two sources, (n, K) for K: embd, then mlp by
        layer, then heads by layer."""
        return torch.cat([self.m_embd, self.m_mlp.flatten(0, 1), self.m_head.flatten(0, 1)])

    def dial_position(self, alpha: torch.Tensor | float | list[float]) -> torch.Tensor | float:
        """alpha checked for this dial: a number in [0, 1] (or (B,)) for two sources, a point of
        the simplex ((K,) or (B, K), as a tensor here) for K; anything else is one ValueError."""
        if self.n_sources == 2:
            check_alpha(alpha)
            return alpha
        return check_simplex(alpha, self.n_sources).to(self.m_embd.device)

    def dial(self, alpha: torch.Tensor | float, source: torch.Tensor | int | None) -> dict[str, list[Gate]]:
        """(gate, route) of every gated site, as vectors over its channels.

        Shapes: (n,) for one alpha, (B, 1, n) for one alpha per row (broadcasting against
        (B, T, n) activations). Head gates are repeated over each head's d_head channels, so they
        act on the merged head outputs that enter the attention projection. All tents come from
        one vectorised call over every unit (a few thousand numbers, times K).
        """
        cfg = self.cfg
        m = self.specialties()
        two = self.n_sources == 2
        gates = tent(alpha, m, cfg.narrowness) if two else simplex_tent(alpha, m, cfg.narrowness)
        if self.silenced is not None:  # a zero gate, not a smaller one: every other unit is untouched
            gates = gates.masked_fill(self.silenced, 0.0)
        routes = None
        if cfg.routing and source is not None:
            routes = route(source, m) if two else simplex_route(source, m)
        L, C, H = cfg.n_layer, cfg.n_embd, cfg.n_head

        def sites(v: torch.Tensor | None) -> dict[str, list[torch.Tensor | None]]:
            if v is None:
                return {"embd": [None], "mlp": [None] * L, "head": [None] * L}
            rows = v.shape[:-1]  # () or (B,)
            embd, mlp, head = v.split([C, L * 4 * C, L * H], dim=-1)
            head = head.reshape(*rows, L, H).repeat_interleave(C // H, dim=-1)
            mlp = mlp.reshape(*rows, L, 4 * C)
            lift = (lambda t: t[:, None, :]) if rows else (lambda t: t)
            return {
                "embd": [lift(embd)],
                "mlp": [lift(t) for t in mlp.unbind(-2)],
                "head": [lift(t) for t in head.unbind(-2)],
            }

        g, r = sites(gates), sites(routes)
        return {k: list(zip(g[k], r[k])) for k in g}

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        alpha: torch.Tensor | float | None = None,
        source: torch.Tensor | int | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        if not self.cfg.gating or alpha is None:
            return super().forward(input_ids, kv_cache=kv_cache)
        alpha = self.dial_position(alpha)
        if self.cfg.dial == "control_code":
            return self.control_code_forward(input_ids, alpha, kv_cache)
        span = positions(input_ids, kv_cache, self.cfg.block_size)
        sites = self.dial(alpha, source if self.training else None)
        embd = sites["embd"][0]
        t = self.transformer
        pos = torch.arange(span.start, span.stop, device=input_ids.device)
        x = t.drop(apply_gate(t.wte(input_ids) + t.wpe(pos), *embd, inplace=True))
        for i, block in enumerate(t.h):
            # Heads gate the projection's input, the residual mask its output.
            # Not consumed: SDPA's output can already be laid out (B, T, H, d), so the merged
            # heads may be a view of a tensor its backward needs.
            project = partial(gated_linear, block.attn.proj, g_in=sites["head"][i], g_out=embd)
            x = x + block.attn(block.ln_1(x), kv_cache=kv_cache, layer=i, project=project)
            mlp = block.mlp
            h = mlp.gelu(mlp.c_fc(block.ln_2(x)))
            x = x + mlp.dropout(gated_linear(mlp.c_proj, h, sites["mlp"][i], embd, consume=True))
        return gated_linear(self.lm_head, t.ln_f(x), g_in=embd, g_out=None, consume=True)

    def style_vector(self, alpha: torch.Tensor | float) -> torch.Tensor:
        """The control code at a dial position: sum_k alpha_k s_k, (C,) or (B, C).

        Two sources read alpha as the corpus-1 share, (1 - alpha) s_0 + alpha s_1."""
        shares = torch.as_tensor(alpha, dtype=self.style.dtype, device=self.style.device)
        if self.n_sources == 2:
            shares = torch.stack([1.0 - shares, shares], dim=-1)
        return (shares.unsqueeze(-1) * self.style).sum(-2)

    def control_code_forward(
        self, input_ids: torch.Tensor, alpha: torch.Tensor | float, kv_cache: KVCache | None
    ) -> torch.Tensor:
        """The plain GPT with the style vector added to every position's embedding; no gates."""
        span = positions(input_ids, kv_cache, self.cfg.block_size)
        pos = torch.arange(span.start, span.stop, device=input_ids.device)
        code = self.style_vector(alpha)
        t = self.transformer
        x = t.drop(t.wte(input_ids) + t.wpe(pos) + (code[:, None, :] if code.dim() == 2 else code))
        for i, block in enumerate(t.h):
            x = block(x, kv_cache=kv_cache, layer=i)
        return self.lm_head(t.ln_f(x))


class AtPosition(nn.Module):
    """A dial model at one fixed position: `forward(input_ids)` -> logits (B, T, V), no cache.

    The position is checked once, here, and kept as Python numbers: the forward pass then has no
    branch on a tensor's value, so `torch.export.export(AtPosition(model, 0.3), (ids,))` traces it
    (gates and style vectors become constants of the graph).
    """

    def __init__(self, model: GatedGPT, alpha: Position):
        super().__init__()
        model.dial_position(alpha)  # a position off this dial is one ValueError now
        self.model, self.alpha = model, alpha

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, alpha=self.alpha)
