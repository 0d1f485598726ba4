"""Specialty gates of the abcGPT idea: frozen unit specialties m and a dial alpha, over K sources.

Two sources (abcGPT). Every gated unit has a specialty m in [0, 1], drawn once from Beta(0.5, 0.5)
by the inverse CDF m = sin^2(pi u / 2), u ~ U(0, 1) (the arcsine law: most units land near 0 or
1). A dial alpha in [0, 1] scales each unit by a tent peaked at alpha = m:

    g(alpha, m) = cos^2( pi/2 * min(1, |alpha - m| / (max(m, 1 - m) * narrowness)) )

With narrowness 1, g(m, m) = 1; a specialist (m = 0 or 1) ramps from 0 at the far end of the dial
to 1 at its own; a "halfsie" (m = 0.5) is a bell that is exactly 0 at both ends.

K sources. A specialty is a point m of the simplex (m_k >= 0, sum_k m_k = 1), drawn once from
Dirichlet(c, ..., c); the dial alpha is a point of the same simplex. The gate is

    g(alpha, m) = cos^2( pi/2 * min(1, ||alpha - m||_1 / (2 * max_k(1 - m_k) * narrowness)) )

Why this one. The denominator is the unit's reach: the largest L1 distance from m to any point
of the simplex. ||alpha - m||_1 is convex in alpha, so its maximum over the simplex is at a
vertex e_j, where ||e_j - m||_1 = (1 - m_j) + sum_{k != j} m_k = 2 (1 - m_j); the farthest vertex
gives 2 max_k(1 - m_k). So, exactly as for the tent, with narrowness 1 every unit is 1 at
alpha = m and falls smoothly to exactly 0 at its farthest corner of the dial: a specialist
(m = e_k) is fully on at its own corner, off at every other corner, and at a quarter at the
centre of a K = 3 dial; the whole dial stays covered whatever K is. The L1 norm keeps the
distance a sum of per-source shares, so it needs no metric choice beyond the simplex's own
(total variation: ||alpha - m||_1 / 2 is the share of probability mass that must move).

Reduction to the tent (K = 2). Write the two-source point as (1 - a, a) and m as (1 - m, m):

    ||alpha - m||_1 = |(1 - a) - (1 - m)| + |a - m| = 2 |a - m|
    max_k(1 - m_k)  = max(1 - (1 - m), 1 - m) = max(m, 1 - m)

so the ratio is |a - m| / (max(m, 1 - m) * narrowness), the tent's. `simplex_tent` on such
points equals `tent` up to floating-point rounding (a test checks it on random m, alpha and
narrowness); two-source models keep calling `tent` itself, so their numbers are unchanged.

Gradient routing (a straight-through estimator): the forward pass multiplies by the smooth g, the
backward pass by the corpus route instead: m_k for a corpus-k row. For two sources that is m for
a corpus-1 (Shakespeare) row and 1 - m for a corpus-0 (TinyStories) row; a unit with m = 1 thus
learns only from Shakespeare, whatever alpha was drawn. Evaluation uses g with no routing.

Dial positions themselves (parsing, checking, labels), the training draws and the dial's geometry
are `succu.dial`.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def sample_specialties(n: int, generator: torch.Generator) -> torch.Tensor:
    """n specialties ~ Beta(0.5, 0.5) by the inverse CDF sin^2(pi u / 2)."""
    u = torch.rand(n, generator=generator)
    return torch.sin(0.5 * math.pi * u).pow(2)


def sample_simplex_specialties(
    shape: tuple[int, ...], k: int, concentration: float, rng: np.random.Generator
) -> torch.Tensor:
    """Specialties of shape (*shape, k) ~ Dirichlet(concentration, ..., concentration), float32."""
    n = int(np.prod(shape))
    m = rng.dirichlet(np.full(k, float(concentration)), n)
    return torch.from_numpy(m).float().view(*shape, k)


def tent(alpha: torch.Tensor | float, m: torch.Tensor, narrowness: float = 1.0) -> torch.Tensor:
    """g(alpha, m): shape (n,) for a scalar alpha, (B, n) for alpha of shape (B,)."""
    alpha = torch.as_tensor(alpha, dtype=m.dtype, device=m.device)
    if alpha.dim() == 1:
        alpha = alpha[:, None]
    span = torch.maximum(m, 1.0 - m) * narrowness
    rel = ((alpha - m).abs() / span).clamp(max=1.0)
    # cos(pi/2) is 6e-17 in floating point, not 0: switch units outside their span fully off.
    return torch.cos(0.5 * math.pi * rel).pow(2).masked_fill(rel >= 1.0, 0.0)


def simplex_tent(alpha: torch.Tensor, m: torch.Tensor, narrowness: float = 1.0) -> torch.Tensor:
    """The K-source gate for m of shape (n, K): (n,) for alpha (K,), (B, n) for alpha (B, K)."""
    alpha = torch.as_tensor(alpha, dtype=m.dtype, device=m.device)
    distance = (alpha.unsqueeze(-2) - m).abs().sum(-1)  # ||alpha - m||_1: (n,) or (B, n)
    reach = 2.0 * (1.0 - m).amax(-1) * narrowness  # the farthest point of the simplex from m
    rel = (distance / reach).clamp(max=1.0)
    # As in `tent`: cos(pi/2) is not 0 in floating point, so units beyond their reach are off.
    return torch.cos(0.5 * math.pi * rel).pow(2).masked_fill(rel >= 1.0, 0.0)


def simplex_route(source: torch.Tensor | int, m: torch.Tensor) -> torch.Tensor:
    """Backward multiplier for m of shape (n, K): m_k for a corpus-k row; (n,) or (B, n)."""
    source = torch.as_tensor(source, device=m.device, dtype=torch.long)
    return m[:, source] if source.dim() == 0 else m[:, source].t()


def route(source: torch.Tensor | int, m: torch.Tensor) -> torch.Tensor:
    """Backward multiplier: m for corpus 1, 1 - m for corpus 0; (n,) or (B, n) like `tent`."""
    source = torch.as_tensor(source, dtype=m.dtype, device=m.device)
    if source.dim() == 1:
        source = source[:, None]
    return source * m + (1.0 - source) * (1.0 - m)


class RoutedGate(torch.autograd.Function):
    """y = x * gate in the forward pass; dL/dx = dL/dy * route in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(route)
        return x * gate

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (route,) = ctx.saved_tensors
        return grad * route, None, None


def apply_gate(
    x: torch.Tensor, gate: torch.Tensor, route: torch.Tensor | None, inplace: bool = False
) -> torch.Tensor:
    """Gate x (broadcasting); with a route and autograd on, through the straight-through path.

    `inplace` is for activations the caller owns (a fresh Linear output): it saves allocating and
    writing a second tensor of the activation's size, which is most of a per-row gate's cost.
    """
    if route is None or not torch.is_grad_enabled():
        return x.mul_(gate) if inplace else x * gate
    return RoutedGate.apply(x, gate, route)


Gate = tuple[torch.Tensor, torch.Tensor | None]  # (gate, route); route None: no routing


class RoutedGatedLinear(torch.autograd.Function):
    """y = g_out * (W (g_in * h) + b), with routes r_in, r_out in place of the gates backwards.

    Straight-through on both sides, as two RoutedGates around the Linear would give:
        dh = r_in * (W^T (r_out * dy)),  dW = (r_out * dy)^T (g_in * h),  db = sum(r_out * dy).
    Every gate and route is a vector over one side of W, so they are folded into W (out x in)
    instead of multiplying activations (tokens x width): at B T >> width that is most of the
    gating cost, and it keeps the dial nearly free.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, g_in, r_in, g_out, r_out):
        ctx.save_for_backward(h, weight, g_in, r_in, g_out, r_out)
        ctx.has_bias = bias is not None
        w_eff = weight * g_out[:, None] * g_in[None, :]
        return torch.nn.functional.linear(h, w_eff, None if bias is None else bias * g_out)

    @staticmethod
    def backward(ctx, dy):
        h, weight, g_in, r_in, g_out, r_out = ctx.saved_tensors
        dh = dw = db = None
        if ctx.needs_input_grad[0]:
            dh = dy @ (weight * r_out[:, None] * r_in[None, :])
        if ctx.needs_input_grad[1]:
            dw = dy.flatten(0, -2).t() @ h.flatten(0, -2) * r_out[:, None] * g_in[None, :]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.flatten(0, -2).sum(0) * r_out
        return dh, dw, db, None, None, None, None


def gated_linear(
    linear: torch.nn.Linear, h: torch.Tensor, g_in: Gate | None, g_out: Gate | None,
    consume: bool = False,
) -> torch.Tensor:
    """`linear` with its input gated by g_in and its output by g_out (either may be None).

    One dial for the batch (vector gates) folds the gates into the weight; per-row gates
    ((B, 1, n)) multiply the activations, in place on `h` when the caller hands it over
    (`consume`: h is a fresh activation nothing else reads).
    """
    def ungated(n: int) -> Gate:  # only built for a missing side (the LM head has no output gate)
        return torch.ones(n, device=h.device, dtype=h.dtype), None

    gi, ri = g_in if g_in is not None else ungated(linear.in_features)
    go, ro = g_out if g_out is not None else ungated(linear.out_features)
    if gi.dim() > 1 or go.dim() > 1:  # per-row dial
        y = linear(apply_gate(h, gi, ri, inplace=consume) if g_in is not None else h)
        return apply_gate(y, go, ro, inplace=True) if g_out is not None else y
    if (ri is None and ro is None) or not torch.is_grad_enabled():
        w_eff = linear.weight * go[:, None] * gi[None, :]
        return torch.nn.functional.linear(h, w_eff, None if linear.bias is None else linear.bias * go)
    ri = gi if ri is None else ri
    ro = go if ro is None else ro
    return RoutedGatedLinear.apply(h, linear.weight, linear.bias, gi, ri, go, ro)
