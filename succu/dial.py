"""The dial in one place: its positions, how training draws them, and its geometry.

A dial spans K sources (the corpora of a training mixture). Over two sources a position is one
number alpha in [0, 1], the corpus-1 share; over K > 2 it is a point of the simplex, K shares
summing to 1 (`Position`). Everything that reads, checks, shows, draws or lays out positions
lives here, so every tool (fit, generate, evaluate, sweep, serve, the callbacks) means the same
thing by "the middle of the dial" or "corpus k's own end":

    positions   `parse_position` (typed: "0.5", "0.2,0.3,0.5"), `as_position` (configured: a
                number or a list), `position_for` (as a dial over k sources takes it),
                `checked_position` (a module's configured grid), `position_label` (how metric
                names, tables and notes show one), `check_alpha`, `check_simplex`.
    geometry    `centre` (where a dial runs when no position is given), `own_end` (where corpus k
                is scored), `corners`, `simplex_grid`, `parse_alphas` and `dial_grid` (the
                sweep's positions), `sweep_positions` (generate's --alpha_sweep),
                `voice_positions` (the voice meter's default points).
    draws       `DialSampler` (two sources: alpha ~ Beta(a, b), corpus ~ Bernoulli(alpha)),
                `DirichletDialSampler` (K sources: alpha ~ Dirichlet, corpus ~ Categorical(alpha)),
                `sampler_for` (which one a dial over k corpora gets from AlphaBetaSampling's
                settings), `dial_batch_alpha` (a batch's alpha per row).

Pure torch and numpy: models, modules, datamodules and tools may all import it. The gate maths
(tents, routes, gated layers) is `succu.nn.gates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# Dial positions on the simplex must sum to 1 within this (float32 draws and typed decimals).
SIMPLEX_TOLERANCE = 1e-6

Position = float | tuple[float, ...]  # a dial position: one number (two sources) or K shares

# The middle of a two-source dial, where both corpora's units are half open: where a model with a
# dial generates and evaluates when no alpha is given (never the ungated network, which no dial
# position equals). Over K sources the middle is 1/K each.
MIDDLE = 0.5
# Five points along a two-source dial: generate's --alpha_sweep and the voice meter's default.
FIVE_POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)


# ---- positions ------------------------------------------------------------------------------
def check_alpha(alpha: torch.Tensor | float) -> None:
    """alpha (a number, or a tensor of them) in [0, 1]; anything else is one ValueError.

    A Python number is checked as a Python number (rounded to float32, as the tensor it becomes),
    so a forward pass at a fixed position has no data-dependent branch: torch.export traces it."""
    if isinstance(alpha, (int, float)):
        a = float(np.float32(alpha))
        if not 0 <= a <= 1:  # NaN fails too
            raise ValueError(f"alpha must be in [0, 1], got {a:g}")
        return
    a = torch.as_tensor(alpha)
    if not bool(((a >= 0) & (a <= 1)).all()):
        bad = a.flatten()[~((a.flatten() >= 0) & (a.flatten() <= 1))][0].item()
        raise ValueError(f"alpha must be in [0, 1], got {bad:g}")


def check_simplex(alpha: torch.Tensor | Sequence[float], k: int) -> torch.Tensor:
    """A K-source dial position as a float tensor, (k,) or (B, k): non-negative, each row summing
    to 1 within SIMPLEX_TOLERANCE; anything else is one ValueError naming the value. K Python
    numbers are checked as Python numbers, as `check_alpha` does, before they become a tensor."""
    if isinstance(alpha, Sequence) and all(isinstance(x, (int, float)) for x in alpha):
        shares = [float(np.float32(x)) for x in alpha]  # the float32 values the tensor will hold
        if len(shares) != k:
            raise ValueError(f"alpha must be a point of the {k}-source simplex ({k} shares, or "
                             f"(B, {k})), got shape ({len(shares)},)")
        if not (all(x >= 0 for x in shares) and abs(sum(shares) - 1.0) <= SIMPLEX_TOLERANCE):
            raise ValueError(simplex_message(shares, k))
        return torch.tensor(shares, dtype=torch.float32)
    a = torch.as_tensor(alpha, dtype=torch.float32) if not isinstance(alpha, torch.Tensor) else alpha
    if a.dim() not in (1, 2) or a.shape[-1] != k:
        raise ValueError(f"alpha must be a point of the {k}-source simplex ({k} shares, or (B, {k})), "
                         f"got shape {tuple(a.shape)}")
    rows = a.detach().reshape(-1, k).double()
    ok = (rows >= 0).all(-1) & ((rows.sum(-1) - 1.0).abs() <= SIMPLEX_TOLERANCE)  # NaN fails both
    if not bool(ok.all()):
        raise ValueError(simplex_message(rows[int((~ok).nonzero()[0])].tolist(), k))
    return a


def simplex_message(row: list[float], k: int) -> str:
    shown = ",".join(f"{x:g}" for x in row)
    return (f"alpha must be {k} non-negative shares summing to 1 (within {SIMPLEX_TOLERANCE:g}), "
            f"got {shown} (sum {sum(row):g})")


def position_label(alpha: Position) -> str:
    """`0.5`, or `0.2,0.3,0.5` for K shares: how metric names, tables and notes show a position
    (the form `parse_position` reads)."""
    return f"{alpha:g}" if isinstance(alpha, float) else ",".join(f"{a:g}" for a in alpha)


def parse_position(text: str) -> Position:
    """A dial position as typed: one number, the two-source alpha in [0, 1], or K comma-separated
    shares of the sources ("0.2,0.3,0.5": non-negative, summing to 1 within SIMPLEX_TOLERANCE)."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"alpha {text!r} must be a number in [0, 1] or comma-separated shares "
                         "summing to 1 (e.g. 0.2,0.3,0.5)") from None
    return as_position(values[0] if len(values) == 1 else values)


def as_position(value: float | Sequence[float]) -> Position:
    """A dial position as configured (YAML, a callback's arguments): one number, the two-source
    alpha in [0, 1], or a list of K shares (non-negative, summing to 1); checked, as `Position`."""
    if isinstance(value, (int, float)):
        check_alpha(float(value))
        return float(value)
    values = tuple(float(x) for x in value)
    check_simplex(torch.tensor(values, dtype=torch.float64), len(values))
    return values


def position_for(position: Position, k: int) -> Position:
    """`position` as a dial over k sources takes it: a number for two (shares (1 - a, a) become
    a), K shares for K; a position of another length is one ValueError naming both."""
    if isinstance(position, float):
        if k == 2:
            return position
        raise ValueError(f"alpha {position:g} is one number, but this dial spans {k} sources: give "
                         f"{k} comma-separated shares summing to 1 (e.g. {','.join(['1'] + ['0'] * (k - 1))})")
    if len(position) != k:
        shown = ",".join(f"{a:g}" for a in position)
        raise ValueError(f"alpha {shown} has {len(position)} shares, but this dial spans {k} sources: "
                         f"give {'one number in [0, 1] or ' if k == 2 else ''}{k} shares summing to 1")
    return position[1] if k == 2 else position


def checked_position(alpha: float | Sequence[float], k: int) -> Position:
    """A position of a module's configured grid (`eval_alphas`), checked for a dial over k
    sources: a float for two, a K-tuple for K; a number for K or shares for two is refused."""
    number = isinstance(alpha, (int, float))
    if k == 2 and not number:
        raise ValueError(f"a two-source dial takes alpha as one number in [0, 1], got {alpha}")
    if k == 2:
        check_alpha(alpha)
        return float(alpha)
    if number:
        raise ValueError(f"alpha must be a point of the {k}-source simplex "
                         f"({k} shares summing to 1), got the number {alpha:g}")
    point = check_simplex(torch.tensor(list(alpha), dtype=torch.float64), k)
    return tuple(point.tolist())


# ---- geometry -------------------------------------------------------------------------------
def centre(k: int) -> Position:
    """The middle of a dial over k sources: MIDDLE for two, 1/K each for K."""
    return MIDDLE if k == 2 else (1.0 / k,) * k


def own_end(corpus: int, k: int) -> Position:
    """Where corpus `corpus` is scored: alpha = corpus for two sources, the corner e_corpus for K
    (val/loss, fit test and evaluate --corpus all score there)."""
    if k == 2:
        return float(corpus >= 1)
    return tuple(float(j == corpus) for j in range(k))


def corners(k: int) -> list[tuple[float, ...]]:
    """The K corners e_0, ..., e_K-1 of the simplex, as K shares each."""
    return [tuple(float(i == j) for i in range(k)) for j in range(k)]


def simplex_grid(k: int, step: float) -> list[tuple[float, ...]]:
    """Every point of the k-source simplex whose shares are multiples of `step` (1/step whole)."""
    n = round(1.0 / step) if step > 0 else 0
    if n < 1 or abs(n * step - 1.0) > 1e-9:
        raise ValueError(f"--step {step:g}: must divide 1 into a whole number of steps (e.g. 0.1, 0.25)")

    def compositions(total: int, parts: int):
        if parts == 1:
            yield (total,)
            return
        for first in range(total, -1, -1):
            for rest in compositions(total - first, parts - 1):
                yield (first, *rest)

    return [tuple(round(c / n, 10) for c in counts) for counts in compositions(n, k)]


def parse_alphas(text: str) -> list[float]:
    """'0:1:0.1' (start:stop:step, stop included; '1:0:0.25' counts down) or '0,0.25,1'."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            n = int(round(abs(stop - start) / step))
            sign = 1.0 if stop >= start else -1.0
            alphas = [round(start + sign * i * step, 10) for i in range(n + 1)]
        else:
            alphas = [float(x) for x in text.split(",") if x.strip()]
        if not alphas:
            raise ValueError
    except ValueError:
        raise ValueError(f"--alphas {text!r}: expected start:stop:step (e.g. 0:1:0.1) or a comma list") from None
    for a in alphas:
        check_alpha(a)
    return alphas


def dial_grid(k: int, alphas: str | None, step: float) -> list[Position]:
    """The positions to sweep: `alphas` (two sources: start:stop:step or a list; K: points
    separated by ';'), else 0:1:0.1 along a two-source dial, the `step` grid of a K-source one."""
    if k == 2:
        return parse_alphas(alphas or "0:1:0.1")
    if alphas is None:
        return simplex_grid(k, step)
    return [position_for(parse_position(p.strip()), k) for p in alphas.split(";") if p.strip()]


def sweep_positions(k: int) -> list[Position]:
    """generate's --alpha_sweep: five points along a two-source dial; each corner and the centre
    of a K-source one."""
    if k == 2:
        return list(FIVE_POINTS)
    return [*corners(k), centre(k)]


def voice_positions(k: int) -> list[Position]:
    """The voice meter's default points: five along a two-source dial; the corners, edge
    midpoints and centre of a K-source one."""
    if k == 2:
        return list(FIVE_POINTS)
    return [*simplex_grid(k, 0.5), centre(k)]


# ---- training draws -------------------------------------------------------------------------
@dataclass(frozen=True)
class DialSampler:
    """How a dial's training positions and corpora are drawn, row by row, in the data pipeline.

    A dial spans `n_sources` = K corpora. `draw(seed, n)` gives (alpha, source): alpha the dial
    position of each row, source (n,) int64 the corpus each row is cut from, drawn so that
    P(source = k | alpha) = alpha_k, the row's share of corpus k: a corpus tends to come with a
    dial position that leans towards it. Two sources (this class): alpha (n,) float32 is the
    corpus-1 share, alpha ~ Beta(a, b) (or U(0, 1)), source ~ Bernoulli(alpha). K sources
    (`DirichletDialSampler`): alpha (n, K) float32 on the simplex, alpha ~
    Dirichlet(concentration), source ~ Categorical(alpha); the Beta fields are not used.
    `per_sample` False gives the whole batch one alpha and one source. Draws for batch k on rank
    r come from a generator seeded by (seed, r, k): any batch can be recomputed, resume needs only
    the batch index, and ranks differ.
    """

    a: float = 0.5
    b: float = 0.5
    distribution: str = "beta"
    per_sample: bool = False
    n_sources: int = 2

    def __post_init__(self) -> None:
        if self.distribution not in ("beta", "uniform"):
            raise ValueError(f"distribution must be 'beta' or 'uniform', got {self.distribution!r}")
        if not (self.a > 0 and self.b > 0):
            raise ValueError(f"Beta parameters must be positive, got a={self.a}, b={self.b}")
        if self.n_sources != 2:
            raise ValueError(f"the Beta dial spans 2 sources, got n_sources={self.n_sources}")

    def draw(self, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha (n,) float32, source (n,) int64) from the generator seeded by `seed`."""
        rng = np.random.default_rng(seed)
        k = n if self.per_sample else 1
        alpha = rng.random(k) if self.distribution == "uniform" else rng.beta(self.a, self.b, k)
        source = (rng.random(k) < alpha).astype(np.int64)
        alpha, source = torch.from_numpy(alpha).float(), torch.from_numpy(source)
        return alpha.expand(n).clone(), source.expand(n).clone()


@dataclass(frozen=True)
class DirichletDialSampler(DialSampler):
    """The K-source dial: alpha ~ Dirichlet(concentration) per row (or per batch), then the row's
    corpus ~ Categorical(alpha), by the inverse CDF of one uniform draw.

    The draws for batch k on rank r come from numpy's generator seeded by (seed, r, k), like the
    two-source sampler's: recomputable, resumable from the batch index, distinct across ranks.
    `alpha` is (n, K) float32; `n_sources` is set from `concentration`, and the two-source
    fields (a, b, distribution) are not used.
    """

    concentration: tuple[float, ...] = (1.0, 1.0, 1.0)
    distribution: str = "dirichlet"

    def __post_init__(self) -> None:
        c = self.concentration
        if len(c) < 2 or not all(x > 0 for x in c):
            raise ValueError(f"Dirichlet concentration must be at least 2 positive numbers, got {list(c)}")
        object.__setattr__(self, "n_sources", len(c))

    def draw(self, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha (n, K) float32, source (n,) int64) from the generator seeded by `seed`."""
        rng = np.random.default_rng(seed)
        k = n if self.per_sample else 1
        alpha = rng.dirichlet(self.concentration, k)
        u = rng.random(k)
        # Corpus j where u first falls below the cumulative share: P(j) = alpha_j.
        source = (u[:, None] >= np.cumsum(alpha, axis=1)[:, :-1]).sum(axis=1).astype(np.int64)
        alpha, source = torch.from_numpy(alpha).float(), torch.from_numpy(source)
        return alpha.expand(n, -1).clone(), source.expand(n).clone()


Concentration = float | Sequence[float] | None


def check_concentration(concentration: Concentration) -> None:
    """A Dirichlet concentration as configured: None, one positive number or positive numbers."""
    if concentration is None:
        return
    values = [concentration] if isinstance(concentration, (int, float)) else concentration
    if not values or not all(x > 0 for x in values):
        raise ValueError(f"concentration must be positive numbers, got {concentration}")


def sampler_for(k: int, two: DialSampler, concentration: Concentration = None) -> DialSampler:
    """The draws for a dial over k corpora from the settings of the two-source draws (`two`:
    a, b, distribution, per_sample) and a Dirichlet `concentration`: `two` itself for two
    corpora; beyond, Dirichlet(concentration) (one number: symmetric; default `a` when a == b,
    the symmetric Beta's generalisation; uniform: Dirichlet(1, ..., 1))."""
    if k == 2:
        return two
    c = concentration
    if two.distribution == "uniform":
        c = 1.0
    elif c is None and two.a != two.b:
        raise ValueError(f"a dial over {k} corpora needs `concentration` (a={two.a} and b={two.b} "
                         "differ, so they name no symmetric Dirichlet)")
    c = two.a if c is None else c
    values = [float(c)] * k if isinstance(c, (int, float)) else [float(x) for x in c]
    if len(values) != k:
        raise ValueError(f"concentration has {len(values)} values for {k} corpora: {values}")
    return DirichletDialSampler(concentration=tuple(values), per_sample=two.per_sample)


def dial_batch_alpha(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's alpha per row, (B,) (or (B, K) for K corpora), whether it was drawn per row or
    once for the batch."""
    alpha = batch["alpha"]
    n = batch["source"].numel()
    return alpha.expand(n, *alpha.shape[1:]) if alpha.shape[0] == 1 else alpha
