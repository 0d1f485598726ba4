"""Measurements of latent geometry and of what context-dependent transforms add (HypersurfaceLM).

Geometry of a latent table R (V, d), on the cosine (normalised Gram) matrix G = D^-1/2 R R^T D^-1/2:

    coherence     max_{u != v} |G_uv|, the worst pair's |cos|. For V random Gaussian rows it is
                  about sqrt(4 ln V / d): random latents are only *near*-orthogonal at small d.
    gram distance ||G - I||_F / sqrt(V (V - 1)), the RMS off-diagonal cosine: 0 for orthogonal
                  rows, ~1/sqrt(d) for random ones, 1 when every row points the same way.

Each is reported for E (the model's token table: frozen, or trained for b0) and for the table
the logits are read against at a context, T_t E (row v = T_t e_v), averaged over sampled val
positions (for b2 one static T E, for b1 its head W, for b0 E itself). FiLM's shift b_t is left
out: it is the same vector for every row (the same q . b_t on every logit) and would only make
the rows look alike without changing which token the readout prefers.

Context-average ablation: T_bar = mean over in-domain val positions of T_t (the matrix mean, and
of the shift), then the val loss with T_bar in place of every T_t. loss(T_bar) - loss(T_t) is
what the context dependence of the transform buys; ~0 means a context-free T would do. For the
orthogonal variant T_bar is the plain mean (not re-orthogonalised): the question is what the
context average of the map does, not the nearest rotation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from succu.contracts import IGNORE_INDEX
from succu.models.hypersurface import HypersurfaceLM, Transform
from succu.nn.utils import eval_mode


def cosine_matrix(rows: torch.Tensor) -> torch.Tensor:
    """G = cos(r_u, r_v) for rows (..., V, d): (..., V, V)."""
    unit = F.normalize(rows.float(), dim=-1)
    return unit @ unit.transpose(-1, -2)


def coherence(rows: torch.Tensor) -> torch.Tensor:
    """max_{u != v} |cos(r_u, r_v)| per table, (...)."""
    g = cosine_matrix(rows).abs()
    eye = torch.eye(g.size(-1), dtype=torch.bool, device=g.device)
    return g.masked_fill(eye, 0.0).amax(dim=(-1, -2))


def gram_distance(rows: torch.Tensor) -> torch.Tensor:
    """||G - I||_F / sqrt(V (V - 1)): the RMS off-diagonal cosine, per table (...)."""
    g = cosine_matrix(rows)
    v = g.size(-1)
    eye = torch.eye(v, dtype=g.dtype, device=g.device)
    return ((g - eye) ** 2).sum(dim=(-1, -2)).div(v * (v - 1)).sqrt()


def sample_positions(mask: torch.Tensor, max_contexts: int, seed: int = 0) -> torch.Tensor:
    """Up to max_contexts flat indices of set positions of mask (B, T), evenly from a seeded draw."""
    flat = mask.flatten().nonzero().squeeze(1)
    if len(flat) <= max_contexts:
        return flat
    g = torch.Generator().manual_seed(seed)
    return flat[torch.randperm(len(flat), generator=g)[:max_contexts].sort().values.to(flat.device)]


@torch.no_grad()
def latent_geometry(
    model: HypersurfaceLM, input_ids: torch.Tensor, mask: torch.Tensor | None = None, max_contexts: int = 256
) -> dict[str, float]:
    """Coherence and gram distance of E and of the readout table T_t E (mean over contexts)."""
    out = {"coherence/E": float(coherence(model.latents)), "gram/E": float(gram_distance(model.latents))}
    transform = model.transform(input_ids)
    if transform is not None and model.cfg.context_dependent:
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask
        transform = transform.select(sample_positions(mask, max_contexts))
    table = model.readout_table(transform)  # (N, V, d) or (V, d)
    out["coherence/TE"] = float(coherence(table).mean())
    out["gram/TE"] = float(gram_distance(table).mean())
    return out


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(summed next-token loss, counted tokens) of one batch."""
    total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return float(total), int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def mean_transform(model: HypersurfaceLM, batches: Iterable[dict[str, torch.Tensor]]) -> Transform | None:
    """T_bar: the context-free mean of T_t (and of b_t) over the scored positions of batches."""
    d = model.cfg.n_embd
    total, shift, count = None, None, 0
    for batch in batches:
        transform = model.transform(batch["input_ids"])
        if transform is None:
            return None
        t, b, n = transform.summed(batch["labels"] != IGNORE_INDEX, d)
        total = t if total is None else total + t
        shift = b if shift is None else shift + b
        count += n
    if total is None or count == 0:
        return None
    return Transform(matrix=total / count, shift=shift / count)


@torch.no_grad()
def context_average_ablation(model: HypersurfaceLM, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Loss with T_t and with its context average T_bar, and the change (nats per token).

    Models without a context-dependent transform (b0, b1, b2) give a change of exactly 0.
    """
    with eval_mode(model):
        t_bar = mean_transform(model, batches) if model.cfg.context_dependent else None
        sums = {"loss": [0.0, 0], "loss_ctx_avg": [0.0, 0]}
        for batch in batches:
            for key, override in (("loss", None), ("loss_ctx_avg", t_bar)):
                if key == "loss_ctx_avg" and t_bar is None:
                    continue
                s, n = token_loss_sum(model(batch["input_ids"], transform=override), batch["labels"])
                sums[key][0] += s
                sums[key][1] += n
    loss = sums["loss"][0] / max(1, sums["loss"][1])
    avg = sums["loss_ctx_avg"][0] / sums["loss_ctx_avg"][1] if t_bar is not None else loss
    return {"loss": loss, "loss_ctx_avg": avg, "delta": avg - loss}


@torch.no_grad()
def corpus_losses(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[int, float]:
    """Mean next-token loss per corpus index (rows' `source`, 0 when unlabelled), token-weighted."""
    sums: dict[int, list[float]] = {}
    with eval_mode(model):
        for batch in batches:
            corpus = int(batch["source"][0]) if "source" in batch else 0
            s, n = token_loss_sum(model(batch["input_ids"]), batch["labels"])
            acc = sums.setdefault(corpus, [0.0, 0])
            acc[0] += s
            acc[1] += n
    return {k: s / n for k, (s, n) in sorted(sums.items())}


@torch.no_grad()
def validation_diagnostics(model: HypersurfaceLM, batch: dict[str, torch.Tensor], max_contexts: int = 64) -> dict[str, float]:
    """The `diag/` numbers of one in-domain val batch: geometry and the context-average ablation."""
    with eval_mode(model):
        mask = batch["labels"] != IGNORE_INDEX
        out = latent_geometry(model, batch["input_ids"], mask, max_contexts)
        ablation = context_average_ablation(model, [batch])
    out["ctx_avg/loss_delta"] = ablation["delta"]
    return out
