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

A resumed fit trains with the settings its config gives, not those restored with the checkpoint's
optimizer (`optimizer_settings` as built, `apply_settings` over the restored optimizer and its
schedule; `LanguageModule.on_train_start`).
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


def optimizer_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's numeric settings (lr, weight_decay, betas, eps, momentum, ...) as
    the optimizer was built, before a schedule scales the learning rate; switches (fused,
    foreach, amsgrad, ...) are left out: they decide what state the optimizer keeps."""
    def setting(value: Any) -> bool:
        if isinstance(value, (tuple, list)):
            return all(setting(v) for v in value)
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    return [{k: tuple(v) if isinstance(v, list) else v for k, v in group.items()
             if k not in ("params", "initial_lr") and setting(v)} for group in optimizer.param_groups]


def apply_settings(optimizer: torch.optim.Optimizer, settings: list[dict[str, Any]],
                   schedule: torch.optim.lr_scheduler.LRScheduler | None) -> dict[str, tuple[Any, Any]]:
    """Put `settings` (`optimizer_settings` of the optimizer the config builds) over a restored
    optimizer; returns {setting: (the checkpoint's, the config's)} of those that differed. The
    learning rate becomes the schedule's peak (`base_lrs`): the current rate is the new peak times
    the schedule's factor at its step (a LambdaLR's, exactly), else scaled by new / old peak."""
    changed: dict[str, tuple[Any, Any]] = {}
    for i, (group, wanted) in enumerate(zip(optimizer.param_groups, settings)):
        for key, value in wanted.items():
            old = schedule.base_lrs[i] if key == "lr" and schedule is not None else group.get(key)
            old = tuple(old) if isinstance(old, list) else old  # betas may come back as a list
            if old == value or isinstance(old, bool):
                continue
            changed.setdefault(key, (old, value))
            if key != "lr":
                group[key] = value
            elif schedule is None:
                group["lr"] = value
            else:
                schedule.base_lrs[i] = group["initial_lr"] = value
                if isinstance(schedule, torch.optim.lr_scheduler.LambdaLR):
                    group["lr"] = value * schedule.lr_lambdas[i](schedule.last_epoch)
                else:
                    group["lr"] = group["lr"] * value / old if old else value
    if changed and schedule is not None:
        schedule._last_lr = [group["lr"] for group in optimizer.param_groups]
    return changed
