"""FFN compression helpers shared by the TT corruption study (`succu.analysis.tt_sweep`) and the
TensorTrainCompression callback: which Linears of a SuccuLM-style model become tensor trains and
with which modes and bonds (`ffn_specs`), the truncated-SVD baseline (`low_rank_`), and the
teacher-forced validation pass that scores a (compressed) model (`val_metrics`, `evaluate_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from succu.modules.base import IGNORE_INDEX, LanguageModule
from succu.nn.tt import tt_dims
from succu.nn.utils import eval_mode


def auto_modes(n: int) -> tuple[int, int]:
    """Two factors of n, the smaller as close to sqrt(n) as possible: 50 -> (5, 10), 200 -> (10, 20)."""
    small = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return small, n // small


def mid_bonds(in_modes: Sequence[int], out_modes: Sequence[int], mid: int | None,
              layout: str) -> list[int | None]:
    """Bond list with only the (out | in) bond set ("mps"; others exact), or every bond ("ttm")."""
    n = len(tt_dims(in_modes, out_modes, layout)) - 1
    if layout == "ttm":
        return [mid] * n
    bonds: list[int | None] = [None] * n
    bonds[len(out_modes) - 1] = mid
    return bonds


def clamp_bonds(module: nn.Module, blocks: Sequence[int], bonds: Sequence[int],
                prefix: str = "model.") -> list[int]:
    """Each block's (out | in) bond, at most the full rank min(in, out) of its FFN Linears."""
    model_blocks = module.get_submodule(prefix + "blocks")
    out = []
    for block, bond in zip(blocks, bonds):
        if not 0 <= block < len(model_blocks):
            raise ValueError(f"block {block} does not exist; the model has {len(model_blocks)}")
        ffn = model_blocks[block].ffn
        full = min(min(ffn[i].in_features, ffn[i].out_features) for i in (0, 2))
        out.append(min(bond, full))
    return out


def ffn_specs(module: nn.Module, blocks: Sequence[int], bonds: int | Sequence[int | None] | None,
              layout: str = "mps", modes: dict[int, Sequence[int]] | None = None,
              prefix: str = "model.") -> dict[str, dict[str, Any]]:
    """TTLinear specs for ffn[0] and ffn[2] of the given blocks of a SuccuLM-style model.

    `bonds`: one (out | in) bond for every block, or one per block; None is exact. `modes` maps a
    feature count to its modes (default `auto_modes`).
    """
    model_blocks = module.get_submodule(prefix + "blocks")
    per_block = list(bonds) if isinstance(bonds, (list, tuple)) else [bonds] * len(blocks)
    if len(per_block) != len(blocks):
        raise ValueError(f"{len(per_block)} bond dims for {len(blocks)} blocks {list(blocks)}")
    specs = {}
    for block, mid in zip(blocks, per_block):
        if not 0 <= block < len(model_blocks):
            raise ValueError(f"block {block} does not exist; the model has {len(model_blocks)}")
        for idx in (0, 2):
            linear = model_blocks[block].ffn[idx]
            in_m = tuple((modes or {}).get(linear.in_features) or auto_modes(linear.in_features))
            out_m = tuple((modes or {}).get(linear.out_features) or auto_modes(linear.out_features))
            specs[f"{prefix}blocks.{block}.ffn.{idx}"] = {
                "in_modes": in_m, "out_modes": out_m, "layout": layout,
                "bond_dims": mid_bonds(in_m, out_m, mid, layout),
            }
    return specs


@torch.no_grad()
def val_metrics(module: LanguageModule, loader, hidden_ids: Sequence[int] = (),
                leak_ids: Sequence[int] = ()) -> dict[str, float]:
    """Teacher-forced pass over a dataloader: per-token loss, and the mean probability (T = 1)
    the model puts on hidden tokens and on <BOS>/<PAD>/<UNK> at every labelled position.

    The masses are the seedless, continuous side of the trap: sampled rates stay 0 until a
    token's probability is large enough to be drawn from a few hundred samples.
    """
    total = hidden = leak = 0.0
    tokens = 0
    with eval_mode(module):
        for batch in loader:
            batch = {k: v.to(module.device) for k, v in batch.items()}
            logits = module(batch["input_ids"], **module.model_kwargs(batch))
            mask = batch["labels"] != IGNORE_INDEX
            n = int(mask.sum())
            total += float(module.loss(logits, batch["labels"])) * n
            probs = logits.float().softmax(-1)[mask]
            hidden += float(probs[:, list(hidden_ids)].sum()) if hidden_ids else 0.0
            leak += float(probs[:, list(leak_ids)].sum()) if leak_ids else 0.0
            tokens += n
    tokens = max(tokens, 1)
    return {"val_loss": total / tokens, "hidden_mass": hidden / tokens, "special_mass": leak / tokens}


def evaluate_loss(module: LanguageModule, loader) -> float:
    """Mean per-token cross-entropy over a dataloader (token-weighted, as val/loss)."""
    return val_metrics(module, loader)["val_loss"]


def low_rank_(linear: nn.Linear, rank: int) -> float:
    """Replace W by its best rank-`rank` approximation in place; returns ||W - W_k||_F^2."""
    w = linear.weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    approx = (u[:, :rank] * s[:rank]) @ vh[:rank]
    with torch.no_grad():
        linear.weight.copy_(approx.to(linear.weight.dtype))
    return float((s[rank:] ** 2).sum())
