"""HypersurfaceLM: frozen random token latents, adapted per context by a generated transform.

The idea of the "Adaptive Latent Hypersurfaces" post, made measurable. The token latents are never
trained:

    E      (V, d) ~ N(0, 1/d), drawn once from `latent_seed`, a buffer (no gradient, in the
           checkpoint). Rows have norm ~1 and are nearly orthogonal: |cos| ~ 1/sqrt(d).

A hypernetwork reads the context causally and emits one transform per position,

    c_t    = LN_h(hyper_blocks(E[ids] + W_pe[pos]))_t     own causal blocks: positions <= t only
    T_t    = emit(c_t)                                    a (d, d) map, never formed in the model

and the transform is applied to the current token's latent on the way in and to the readout on the
way out, around an ordinary causal transformer body (nanoGPT's blocks, succu.models.gpt.Block):

    x_0    = T_t(E[id_t]) + W_pe[t]
    q_t    = LN_f(body(x_0))_t
    logit_{t,v} = q_t . T_t(e_v) = e_v . (T_t^T q_t) + q_t . b_t

so the logits are E (T_t^T q_t) in O(V d) per position (plus O(d r) for the transform), never the
O(V d^2) product T_t E. The hypernetwork has its own causal attention layers, so with a KV cache it
keeps its own keys and values (cache layers n_layer, n_layer + 1, ...) and cached generation equals
full recomputation, exactly as the body does.

Variants (`variant`), each the identity map at init, so the model starts as baseline B1 with E as
its head:

    film        T_t x = (1 + s_t) * x + b_t                   s_t, b_t zero at init
    lowrank     T_t = I + U_t V_t^T, U_t, V_t (d, r)          U_t zero at init
    orthogonal  T_t = (I + A_t)^-1 (I - A_t), the Cayley transform of the skew-symmetric
                A_t = U_t P_t^T - P_t U_t^T (rank 2r), U_t zero at init. With M = [U P] (d, 2r) and
                J = [[0, I], [-I, 0]], A = M J M^T and the Woodbury identity give
                T_t = I - 2 M (M^T M - J)^-1 M^T: exactly orthogonal, applied in O(d r + r^3).
                (M^T M - J is always invertible: (S - J) x = 0 gives x^T S x = 0, so S x = 0 and
                J x = 0.) Orthogonal T_t keep every inner product, so T_t E has E's Gram matrix.

Baselines of the same family (`variant` b0, b1, b2), with no hypernetwork; give them the
hypernetwork's blocks as extra body layers (n_layer + n_hyper_layer) to match the parameter count:

    b0          E trainable and tied (plain GPT), initialised like the frozen E so that only
                trainability differs
    b1          E frozen on input, a trainable output head W (V, d) initialised to E
    b2          E frozen, one learned context-free T = I + D (D zero at init, decayed towards I)

The commenter's smaller test (`input_only`, any variant): T_t on the context's lookups only,
x_0 = T_t(E[id_t]) + W_pe[t], and logits W q_t from a trained head W (V, d) initialised to E, as
b1's. It is b1 plus a context-dependent input transform, so b1 is its matched baseline (at init,
with T_t the identity, it is b1).

A per-token output bias (`output_bias`, any variant or baseline): logits + c, c (V,) trained and
zero at init. Read against a frozen E, every logit vector E (T_t^T q) lies in E's d-dimensional
column space, whatever T_t is, so at V >> d the frozen readout alone bounds the loss, with or
without a hypernetwork; c shifts that subspace by one trained context-free logit per token (room
for the unigram log-frequencies) while E stays frozen, so that comparing a variant with b2, both with c, measures the
hypernetwork rather than the readout. At zero the logits are exactly the model's without it.

A context-free transform can replace the hypernetwork's at any call (`transform=`): that is how
the context-average ablation (succu.analysis.latents) measures what the context dependence adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from succu.contracts import KVCacheModel, LatentReadout
from succu.models.gpt import INIT_STD, Block, GPTConfig, check_sizes
from succu.nn.attention import KVCache, positions

VARIANTS = ("film", "lowrank", "orthogonal")
BASELINES = ("b0", "b1", "b2")


@dataclass
class HypersurfaceConfig(GPTConfig):
    """GPTConfig's sizes (n_layer: blocks of the body; n_embd: also the latents' dimension), the
    variant and the hypernetwork's shape.

    Attributes:
        variant: film, lowrank, orthogonal (hypersurface variants) or b0 (trainable tied E),
            b1 (frozen E, trainable head), b2 (frozen E, one learned context-free T).
        rank: r of lowrank (I + U V^T) and orthogonal (Cayley of a rank-2r skew matrix).
        n_hyper_layer: causal blocks of the hypernetwork (variants only; give the baselines as
            many extra body layers to match the parameter count).
        latent_seed: seed of the frozen latents E (b0: of E's initial value).
        input_only: the commenter's smaller test: T_t transforms only the context's lookups and
            the readout is a trained head W (V, d) initialised to E, as in b1 (variants only).
        mlp_hidden: inner width of every block's MLP, body and hypernetwork (None: 4 n_embd);
            the knob that matches parameter counts across variants whose emitters differ.
        output_bias: a trained per-token bias c (V,) added to the logits, zero at init (any
            variant or baseline): the logits leave the frozen E's column space, E stays frozen.
    """

    variant: str = "film"
    rank: int = 1
    n_hyper_layer: int = 1
    latent_seed: int = 0
    input_only: bool = False
    mlp_hidden: int | None = None
    output_bias: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS + BASELINES:
            raise ValueError(f"variant must be one of {VARIANTS + BASELINES}, got {self.variant!r}")
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.context_dependent and self.n_hyper_layer < 1:
            raise ValueError(f"variant {self.variant!r} needs n_hyper_layer >= 1")
        if self.input_only and not self.context_dependent:
            raise ValueError(f"input_only applies to the variants {VARIANTS}, got variant {self.variant!r}")
        check_sizes(self, "mlp_hidden")

    @property
    def context_dependent(self) -> bool:
        return self.variant in VARIANTS

    @property
    def frozen_readout(self) -> bool:
        """The logits are read against the frozen E alone (no trained head, no output bias), so
        they lie in E's n_embd-dimensional column space whatever the transform."""
        return self.variant not in ("b0", "b1") and not self.input_only and not self.output_bias

    @property
    def n_cache_layers(self) -> int:
        return self.n_layer + (self.n_hyper_layer if self.context_dependent else 0)


def random_latents(vocab_size: int, n_embd: int, seed: int) -> torch.Tensor:
    """E ~ N(0, 1/d): rows of norm ~1, pairwise cosines ~ N(0, 1/d) (near-orthogonal)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(vocab_size, n_embd, generator=g) / math.sqrt(n_embd)


def _matvec(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """matrix x for one (d, d) matrix or one per position (..., d, d)."""
    if matrix.dim() == 2:
        return x @ matrix.t()
    return torch.einsum("...ij,...j->...i", matrix, x)


@dataclass
class Transform:
    """x -> T x + b with T = diag(scale) + left right^T (factored), or T = matrix (dense).

    Fields hold one value per position (leading dims (B, T)) or one context-free value (no
    leading dims); None means "absent" (scale: ones, shift: zero, left/right: no low-rank term).
    """

    scale: torch.Tensor | None = None  # (..., d)
    shift: torch.Tensor | None = None  # (..., d)
    left: torch.Tensor | None = None  # (..., d, k)
    right: torch.Tensor | None = None  # (..., d, k)
    matrix: torch.Tensor | None = None  # (d, d) or (..., d, d); replaces scale/left/right

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """T x + b for x (..., d)."""
        if self.matrix is not None:
            y = _matvec(self.matrix, x)
        else:
            y = x if self.scale is None else self.scale * x
            if self.left is not None:
                coef = (self.right * x.unsqueeze(-1)).sum(-2)  # right^T x: (..., k)
                y = y + (self.left * coef.unsqueeze(-2)).sum(-1)
        return y if self.shift is None else y + self.shift

    def apply_t(self, q: torch.Tensor) -> torch.Tensor:
        """T^T q (the shift plays no part: it adds q . b to every logit alike)."""
        if self.matrix is not None:
            return _matvec(self.matrix.transpose(-1, -2), q)
        y = q if self.scale is None else self.scale * q
        if self.left is not None:
            coef = (self.left * q.unsqueeze(-1)).sum(-2)  # left^T q
            y = y + (self.right * coef.unsqueeze(-2)).sum(-1)
        return y

    def offset(self, q: torch.Tensor) -> torch.Tensor | None:
        """q . b per position, or None without a shift."""
        return None if self.shift is None else (q * self.shift).sum(-1)

    def dense(self, d: int) -> torch.Tensor:
        """The explicit matrix T, (..., d, d) (analysis and tests; the model never forms it)."""
        if self.matrix is not None:
            return self.matrix
        like = self.left if self.left is not None else self.scale
        eye = torch.eye(d, dtype=like.dtype, device=like.device)
        out = eye if self.scale is None else torch.diag_embed(self.scale)
        if self.left is not None:
            out = out + self.left @ self.right.transpose(-1, -2)
        return out

    def rows(self, latents: torch.Tensor, shift: bool = True) -> torch.Tensor:
        """The transformed latent table, row v = T e_v + b (or T e_v without the shift): (..., V, d)."""
        d = latents.size(-1)
        out = torch.einsum("...ij,vj->...vi", self.dense(d), latents)
        return out if self.shift is None or not shift else out + self.shift.unsqueeze(-2)

    def select(self, index: torch.Tensor, n_lead: int = 2) -> Transform:
        """The transforms at flat positions `index` of the first n_lead dims (per-position fields)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            tail = {"scale": 1, "shift": 1, "left": 2, "right": 2, "matrix": 2}[f.name]
            if v is not None and v.dim() > tail:
                v = v.reshape(-1, *v.shape[n_lead:])[index]
            out[f.name] = v
        return Transform(**out)

    def summed(self, mask: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(sum of T, sum of b, count) over positions where mask (B, T) is set, without forming
        a (d, d) matrix per position: sum_t U_t V_t^T is one (d, N k) x (N k, d) product."""
        n = int(mask.sum())
        pick = lambda v: v[mask]  # noqa: E731  (..., *tail) -> (n, *tail)
        ref = next(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)
        total = torch.zeros(d, d, dtype=ref.dtype, device=ref.device)
        if self.matrix is not None:
            total = total + (pick(self.matrix).sum(0) if self.matrix.dim() > 2 else n * self.matrix)
        else:
            total = total + (torch.diag(pick(self.scale).sum(0)) if self.scale is not None
                             else n * torch.eye(d, dtype=ref.dtype, device=ref.device))
            if self.left is not None:
                total = total + torch.einsum("ndk,nek->de", pick(self.left), pick(self.right))
        shift = torch.zeros(d, dtype=ref.dtype, device=ref.device)
        if self.shift is not None:
            shift = shift + (pick(self.shift).sum(0) if self.shift.dim() > 1 else n * self.shift)
        return total, shift, n


def skew_unit(r: int, device=None, dtype=None) -> torch.Tensor:
    """J = [[0, I_r], [-I_r, 0]]: U P^T - P U^T = [U P] J [U P]^T."""
    eye = torch.eye(r, device=device, dtype=dtype)
    zero = torch.zeros(r, r, device=device, dtype=dtype)
    return torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)


def emitted_transform(variant: str, raw: torch.Tensor, d: int, r: int) -> Transform:
    """The hypernetwork's raw output (..., n_out) read as the variant's transform."""
    if variant == "film":
        ds, b = raw.chunk(2, dim=-1)
        return Transform(scale=1.0 + ds, shift=b)
    u, v = (t.unflatten(-1, (d, r)) for t in raw.chunk(2, dim=-1))
    if variant == "lowrank":
        return Transform(left=u, right=v)
    # Cayley transform of A = U P^T - P U^T: T = I - 2 M K M^T, K = (M^T M - J)^-1.
    m = torch.cat([u, v], dim=-1)  # (..., d, 2r)
    j = skew_unit(r, device=raw.device, dtype=raw.dtype)
    k = torch.linalg.inv(m.transpose(-1, -2) @ m - j)
    return Transform(left=m, right=-2.0 * m @ k.transpose(-1, -2))


def n_emitted(cfg: HypersurfaceConfig) -> int:
    """Numbers the hypernetwork emits per position: 2d (film) or 2 d r (lowrank, orthogonal)."""
    return 2 * cfg.n_embd if cfg.variant == "film" else 2 * cfg.n_embd * cfg.rank


class HyperNetwork(nn.Module):
    """Causal context reader (its own pre-LN blocks) and a linear emitter of transform parameters."""

    def __init__(self, cfg: HypersurfaceConfig):
        super().__init__()
        self.cfg = cfg
        self.h = nn.ModuleList(Block(cfg, cfg.mlp_hidden) for _ in range(cfg.n_hyper_layer))
        self.ln = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # A bias on the emitter: the context-free part of T_t (what B2 learns) comes for free.
        self.emit = nn.Linear(cfg.n_embd, n_emitted(cfg), bias=True)

    def reset_identity(self) -> None:
        """Zero the outputs that move T_t away from the identity (film: all; else U)."""
        with torch.no_grad():
            n_zero = self.emit.out_features if self.cfg.variant == "film" else self.emit.out_features // 2
            self.emit.weight[:n_zero].zero_()
            self.emit.bias.zero_()

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None, first_layer: int) -> Transform:
        for i, block in enumerate(self.h):
            x = block(x, kv_cache=kv_cache, layer=first_layer + i)
        raw = self.emit(self.ln(x))
        return emitted_transform(self.cfg.variant, raw, self.cfg.n_embd, self.cfg.rank)


class HypersurfaceLM(nn.Module, KVCacheModel, LatentReadout):
    def __init__(self, cfg: HypersurfaceConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {cfg.vocab_size}")
        self.cfg = cfg
        latents = random_latents(cfg.vocab_size, cfg.n_embd, cfg.latent_seed)
        if cfg.variant == "b0":
            self.latents = nn.Parameter(latents)
        else:
            self.register_buffer("latents", latents)  # frozen, and saved in the checkpoint
        self.transformer = nn.ModuleDict(
            dict(
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg, cfg.mlp_hidden) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.hyper = HyperNetwork(cfg) if cfg.context_dependent else None
        self.static_delta = nn.Parameter(torch.zeros(cfg.n_embd, cfg.n_embd)) if cfg.variant == "b2" else None
        trained_head = cfg.variant == "b1" or cfg.input_only
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False) if trained_head else None
        self.output_bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.output_bias else None
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2's init for the body and the hypernetwork's blocks; identity transforms; W = E;
        a zero output bias."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        residual_std = INIT_STD / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.c_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=residual_std)
        if self.hyper is not None:
            self.hyper.reset_identity()
        if self.lm_head is not None:
            with torch.no_grad():
                self.lm_head.weight.copy_(self.latents)
        if self.output_bias is not None:
            nn.init.zeros_(self.output_bias)

    def num_params(self) -> int:
        """Trainable parameters (the frozen E is a buffer and does not count; b0's E and the
        output bias do)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def new_kv_cache(self) -> KVCache:
        return KVCache(self.cfg.n_cache_layers)

    def static_transform(self) -> Transform | None:
        if self.static_delta is None:
            return None
        eye = torch.eye(self.cfg.n_embd, dtype=self.static_delta.dtype, device=self.static_delta.device)
        return Transform(matrix=eye + self.static_delta)

    def context_transform(
        self, latent_in: torch.Tensor, pos_emb: torch.Tensor, kv_cache: KVCache | None = None
    ) -> Transform | None:
        """T_t for every position of the chunk (the hypernetwork's, b2's static T, or None)."""
        if self.hyper is None:
            return self.static_transform()
        x = self.transformer.drop(latent_in + pos_emb)
        return self.hyper(x, kv_cache, first_layer=self.cfg.n_layer)

    def positions(self, input_ids: torch.Tensor, kv_cache: KVCache | None) -> torch.Tensor:
        span = positions(input_ids, kv_cache, self.cfg.block_size)
        return torch.arange(span.start, span.stop, device=input_ids.device)

    def transform(self, input_ids: torch.Tensor) -> Transform | None:
        """T_t of every position of input_ids (B, T), without running the body (analysis)."""
        pos = self.positions(input_ids, None)
        return self.context_transform(F.embedding(input_ids, self.latents), self.transformer.wpe(pos))

    def features(
        self, input_ids: torch.Tensor, kv_cache: KVCache | None = None, transform: Transform | None = None
    ) -> tuple[torch.Tensor, Transform | None]:
        """(q, T): the body's final normalised states (B, T, d) and the transforms used."""
        pos_emb = self.transformer.wpe(self.positions(input_ids, kv_cache))
        latent_in = F.embedding(input_ids, self.latents)
        if transform is None:
            transform = self.context_transform(latent_in, pos_emb, kv_cache)
        x = latent_in if transform is None else transform.apply(latent_in)
        x = self.transformer.drop(x + pos_emb)
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache=kv_cache, layer=i)
        return self.transformer.ln_f(x), transform

    def readout(self, q: torch.Tensor, transform: Transform | None) -> torch.Tensor:
        """Logits E (T^T q) + q . b (W q with a trained head), plus the output bias c if any."""
        logits = self.table_logits(q, transform)
        return logits if self.output_bias is None else logits + self.output_bias

    def table_logits(self, q: torch.Tensor, transform: Transform | None) -> torch.Tensor:
        """q read against the readout table: O(V d) per position, T E is never formed."""
        if self.lm_head is not None:
            return self.lm_head(q)
        if transform is None:
            return q @ self.latents.t()
        logits = transform.apply_t(q) @ self.latents.t()
        # q . b is the same for every token (softmax ignores it); kept so the logits are exactly
        # those of the explicit table T E + b.
        offset = transform.offset(q)
        return logits if offset is None else logits + offset.unsqueeze(-1)

    def readout_table(self, transform: Transform | None) -> torch.Tensor:
        """The latent rows the logits are read against: T_t E (..., V, d), W (b1) or E (the
        output bias, when there is one, is added to the logits apart from any row).

        FiLM's shift b_t is left out: it is common to every row, adds the same q . b_t to every
        logit (softmax ignores it) and would only make all rows look alike.
        """
        if self.lm_head is not None:
            return self.lm_head.weight
        return self.latents if transform is None else transform.rows(self.latents, shift=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        kv_cache: KVCache | None = None,
        transform: Transform | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for ids (B, T); with a cache, ids continue the cached prefix.

        `transform`, when given, replaces T_t at every position (a context-free Transform for the
        context-average ablation).
        """
        q, transform = self.features(input_ids, kv_cache, transform)
        return self.readout(q, transform)
