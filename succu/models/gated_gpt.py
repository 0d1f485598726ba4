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

alpha may be a float (one dial for the batch) or a (B,) tensor (one per row). With `gating` off,
or alpha None, the forward pass is exactly the plain GPT's: same module tree, same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from succu.contracts import DialModel
from succu.models.gpt import GPT, GPTConfig
from succu.nn.attention import KVCache, positions
from succu.nn.gates import (
    Gate,
    apply_gate,
    check_alpha,
    gated_linear,
    route,
    sample_specialties,
    tent,
)


@dataclass
class GatedGPTConfig(GPTConfig):
    """GPTConfig plus the dial: frozen specialties, tent width, gating and routing switches.

    Attributes:
        mask_seed: seed of the frozen specialties m (saved in the checkpoint either way).
        narrowness: tent width factor; < 1 narrows each unit's firing zone on the dial.
        gating: gate units by the dial; off gives the plain GPT.
        routing: straight-through routing of gradients by corpus (m or 1 - m). Off by default:
            abcGPT's own training loop never activates it, and on it costs 0.7-0.9 nats at each
            corpus's own end of the dial (bench/alpha_dial.py, README).
    """

    mask_seed: int = 1337
    narrowness: float = 1.0
    gating: bool = True
    routing: bool = False  # see GatedGPTModule: measured to hurt, and abcGPT never trains with it


class GatedGPT(GPT, DialModel):
    def __init__(self, cfg: GatedGPTConfig):
        super().__init__(cfg)
        if not cfg.narrowness > 0:
            raise ValueError(f"narrowness must be > 0, got {cfg.narrowness}")
        g = torch.Generator().manual_seed(cfg.mask_seed)
        L, C, H = cfg.n_layer, cfg.n_embd, cfg.n_head
        self.register_buffer("m_embd", sample_specialties(C, g))
        self.register_buffer("m_mlp", sample_specialties(L * 4 * C, g).view(L, 4 * C))
        self.register_buffer("m_head", sample_specialties(L * H, g).view(L, H))

    @property
    def n_sources(self) -> int:
        return 2  # the tent dial spans two corpora: m ~ 0 and m ~ 1

    def specialties(self) -> torch.Tensor:
        """Every unit's m in one vector: embd, then mlp by layer, then heads by layer."""
        return torch.cat([self.m_embd, self.m_mlp.flatten(), self.m_head.flatten()])

    def dial(self, alpha: torch.Tensor | float, source: torch.Tensor | int | None) -> dict[str, list[Gate]]:
        """(gate, route) of every gated site, as vectors over its channels.

        Shapes: (n,) for one alpha, (B, 1, n) for one alpha per row (broadcasting against
        (B, T, n) activations). Head gates are repeated over each head's d_head channels, so they
        act on the merged head outputs that enter the attention projection. All tents come from
        one vectorised call over every unit (a few thousand numbers).
        """
        cfg = self.cfg
        m = self.specialties()
        gates = tent(alpha, m, cfg.narrowness)
        routes = route(source, m) if cfg.routing and source is not None else None
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
        check_alpha(alpha)
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
