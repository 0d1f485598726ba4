"""Optimisation: the optimizer every succu module uses unless a config names another (AdamW with
nanoGPT's settings, so a config states only what differs) and the learning-rate schedule.

`AdamW` is torch's AdamW with succu's defaults: lr 1e-3, betas (0.9, 0.99), weight decay 0.1
(applied to matrices only: LanguageModule passes vectors and gains in a group of their own with
weight decay 0) and `fused=True`, one kernel for every parameter instead of a loop of small ones.
Under 16-mixed precision with gradient clipping set `fused: false`: Lightning cannot clip
gradients that the fused step unscales itself (bf16-mixed and 32-bit are fine).

    model:
      init_args:
        optimizer:
          init_args: {lr: 0.003, weight_decay: 0.01}   # the rest as above

The schedule (`warmup_cosine`) warms up linearly to the peak learning rate, then decays it along a
cosine to `min_lr_ratio` of the peak at the last step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW with succu's defaults (nanoGPT's lr, betas and weight decay; fused).

    Args:
        params: parameters or parameter groups (LanguageModule passes decay / no-decay groups).
        lr: peak learning rate (the schedule warms up to it, then decays by a cosine).
        betas: coefficients of the running averages of the gradient and its square.
        eps: added to the denominator for numerical stability.
        weight_decay: decoupled weight decay of the decayed group (matrices).
        fused: one fused kernel for every parameter (False: torch's per-tensor loop).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.1, fused: bool = True):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `min_ratio` at `total` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))
