"""Unit silencing: what a gated model loses when chosen units are switched off, no training.

A GatedGPT unit (a residual channel, an MLP inner unit, an attention head) is silenced by holding
its gate at zero (`GatedGPT.silence`, a boolean mask over the units in the order of
`specialties()`), so its contribution vanishes at every dial position while every other unit's
gate, and every weight, is exactly what it was. The question it answers is the write-up's picture
of specialists: if the units with m near 1 carry corpus 1 (alpha = 1 is corpus 1's own end of a
two-source dial), silencing them should hurt corpus 1's loss more than corpus 0's, and more than
silencing as many units chosen at random.

`specialty_masks` picks the sets (two sources: m is each unit's corpus-1 share), `silenced` is the
context manager, `silencing_losses` scores each set with the alpha sweep's token-weighted loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from succu.analysis.alpha_sweep import sweep
from succu.dial import Position
from succu.models.gated_gpt import GatedGPT

FAR = 0.9  # a specialist: m > FAR (corpus 1) or m < 1 - FAR (corpus 0)


@contextmanager
def silenced(model: GatedGPT, mask: torch.Tensor) -> Iterator[GatedGPT]:
    """`model` with the units of `mask` (bool, one per unit) silenced inside the block; restored
    after it, whatever happens inside."""
    model.silence(mask)
    try:
        yield model
    finally:
        model.silence(None)


def set_names(far: float = FAR) -> tuple[str, str, str]:
    """The names of `specialty_masks`'s sets: corpus 1's specialists, random, corpus 0's."""
    return f"m > {far:g}", "random", f"m < {round(1 - far, 6):g}"


def specialty_masks(
    m: torch.Tensor, generator: torch.Generator, far: float = FAR
) -> dict[str, torch.Tensor]:
    """Three unit sets of a two-source model (m: (n,), each unit's corpus-1 share):
    "m > far" (corpus 1's specialists), "random" (as many units as that, drawn uniformly from all
    units by `generator`: the control for silencing that many units at all) and "m < 1 - far"
    (corpus 0's specialists)."""
    if m.dim() != 1:
        raise ValueError(
            f"specialty_masks takes a two-source model's m of shape (n,), got {tuple(m.shape)}"
        )
    high = m > far
    chosen = torch.randperm(m.numel(), generator=generator)[: int(high.sum())]
    random = torch.zeros_like(high).index_fill_(0, chosen.to(m.device), True)
    return dict(zip(set_names(far), (high, random, m < 1 - far)))


def silencing_losses(
    module, batches, alpha: Position, masks: dict[str, torch.Tensor], names: list[str]
) -> dict[str, dict[str, float]]:
    """Token-weighted loss per corpus at `alpha`: {"none": unsilenced, <mask name>: with that
    set silenced}. `batches` hold one corpus each (`source`), as the alpha sweep's."""
    batches = list(batches)
    model = module.model

    def losses() -> dict[str, float]:
        (row,) = sweep(module, batches, [alpha], names)
        return {c: row[c] for c in names}

    out = {"none": losses()}
    for name, mask in masks.items():
        with silenced(model, mask):
            out[name] = losses()
    return out
