"""Specialty gates of the abcGPT idea: frozen unit specialties m and a dial alpha.

Every gated unit has a specialty m in [0, 1], drawn once from Beta(0.5, 0.5) by the inverse CDF
m = sin^2(pi u / 2), u ~ U(0, 1) (the arcsine law: most units land near 0 or 1). A dial alpha in
[0, 1] scales each unit by a tent peaked at alpha = m:

    g(alpha, m) = cos^2( pi/2 * min(1, |alpha - m| / (max(m, 1 - m) * narrowness)) )

With narrowness 1, g(m, m) = 1; a specialist (m = 0 or 1) ramps from 0 at the far end of the dial
to 1 at its own; a "halfsie" (m = 0.5) is a bell that is exactly 0 at both ends.

Gradient routing (a straight-through estimator): the forward pass multiplies by the smooth g, the
backward pass by the corpus route instead: m for a corpus-1 (Shakespeare) row, 1 - m for a
corpus-0 (TinyStories) row. A unit with m = 1 thus learns only from Shakespeare, whatever alpha
was drawn. Evaluation uses g with no routing.
"""

from __future__ import annotations

import math

import torch


def sample_specialties(n: int, generator: torch.Generator) -> torch.Tensor:
    """n specialties ~ Beta(0.5, 0.5) by the inverse CDF sin^2(pi u / 2)."""
    u = torch.rand(n, generator=generator)
    return torch.sin(0.5 * math.pi * u).pow(2)


def check_alpha(alpha: torch.Tensor | float) -> None:
    a = torch.as_tensor(alpha)
    if not bool(((a >= 0) & (a <= 1)).all()):
        bad = a.flatten()[~((a.flatten() >= 0) & (a.flatten() <= 1))][0].item()
        raise ValueError(f"alpha must be in [0, 1], got {bad:g}")


def tent(alpha: torch.Tensor | float, m: torch.Tensor, narrowness: float = 1.0) -> torch.Tensor:
    """g(alpha, m): shape (n,) for a scalar alpha, (B, n) for alpha of shape (B,)."""
    alpha = torch.as_tensor(alpha, dtype=m.dtype, device=m.device)
    if alpha.dim() == 1:
        alpha = alpha[:, None]
    span = torch.maximum(m, 1.0 - m) * narrowness
    rel = ((alpha - m).abs() / span).clamp(max=1.0)
    # cos(pi/2) is 6e-17 in floating point, not 0: switch units outside their span fully off.
    return torch.cos(0.5 * math.pi * rel).pow(2).masked_fill(rel >= 1.0, 0.0)


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
