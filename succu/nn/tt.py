"""TTLinear: a Linear layer whose weight is a tensor train, decomposed by tensorly's TT-SVD.

The weight W (out, in) of a Linear with out = prod(out_modes) = m_1...m_M and
in = prod(in_modes) = n_1...n_N is viewed as a tensor and factored into a chain of small cores.

Layouts
    "mps"  the layout of the SuccuLM tensor-network article's code
           (`ttz.TTLayer.from_linear_layer`): W is reshaped to
           (m_1, ..., m_M, n_1, ..., n_N), output modes first, and split into a plain tensor train
           over all D = M + N modes,
               W[o_1..o_M, i_1..i_N] = G_1[o_1] G_2[o_2] ... G_M[o_M] H_1[i_1] ... H_N[i_N],
           with cores (d_1, r_1), (r_1, d_2, r_2), ..., (r_{D-1}, d_D): D - 1 bonds. The bond
           between the last output mode and the first input mode splits W into its (out | in)
           matrix, so it is the matrix rank: with every other bond exact, the layer IS the best
           rank-r approximation of W (Eckart-Young), plus the cost of the exact outer cores.
    "ttm"  the TT-matrix of Novikov et al. ("Tensorizing neural networks"): needs M = N = K and
           pairs output and input modes, cores (r_{k-1}, m_k, n_k, r_k) with r_0 = r_K = 1,
               W[(o_1, i_1), ..., (o_K, i_K)] = C_1[o_1, i_1] ... C_K[o_K, i_K]
           (`tensorly.decomposition.tensor_train_matrix`). K - 1 bonds.

TT-SVD (Oseledets 2011) and its error
    The sweep goes left to right over the dims d_1..d_D (for "ttm", d_k = m_k n_k). At step k the
    remainder is unfolded into a (r_{k-1} d_k) x (d_{k+1}...d_D) matrix A_k, its SVD is truncated
    to r_k singular values, U becomes core k and S V^T the next remainder. Because every kept U is
    orthonormal the discarded parts at different steps are orthogonal, so

        ||W - W_tt||_F^2 = sum_k sum_{j > r_k} sigma_j(A_k)^2            (exactly, not a bound)

    tensorly does not return the sigma_j; `tt_svd` recomputes them from tensorly's own cores: with
    U_k orthonormal the next remainder is U_k^T A_k, so A_{k+1} is known at each step and its full
    spectrum gives the discarded values. Everything runs in float64 (numpy backend); the cores are
    then cast to the Linear's dtype.

Bonds
    `bond_dims=None` means exact. A bond larger than what the tensor can carry is clipped to
    min(r_{k-1} d_k, d_{k+1}...d_D) (which is at most min(d_1...d_k, d_{k+1}...d_D)), the rank
    TT-SVD actually realises; the caller's list is copied, never changed.

Forward
    (..., in) -> (..., out) either by contracting x with the cores one at a time (input cores from
    the last input mode backwards, then output cores from the last output mode backwards: a fixed
    order, so results are reproducible) or by rebuilding W and doing one matmul. `impl="auto"` picks
    the one with fewer FLOPs for the number of rows in the batch (`flops(rows)`): factorised wins
    for few rows or small bonds, rebuild wins when rows are many and bonds near full.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorly as tl
import torch
import torch.nn.functional as F
from tensorly.decomposition import tensor_train, tensor_train_matrix
from torch import nn

LAYOUTS = ("mps", "ttm")
IMPLS = ("auto", "factorized", "dense")
BondSpec = int | Sequence[int | None] | None


# ----------------------------------------------------------------------------- modes and bonds
def _check_modes(name: str, modes: Sequence[int], size: int | None) -> tuple[int, ...]:
    modes = tuple(modes)
    if not modes or any(not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m < 1
                        for m in modes):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {list(modes)}")
    if size is not None and math.prod(modes) != size:
        raise ValueError(
            f"{name} {list(modes)} multiply to {math.prod(modes)}, but the layer has {size} features"
        )
    return tuple(int(m) for m in modes)


def tt_dims(in_modes: Sequence[int], out_modes: Sequence[int], layout: str) -> tuple[int, ...]:
    """The dims the tensor train runs over: output then input modes, or paired m_k n_k for ttm."""
    if layout == "mps":
        return (*out_modes, *in_modes)
    if layout == "ttm":
        if len(in_modes) != len(out_modes):
            raise ValueError(
                f"layout 'ttm' pairs output and input modes, so it needs as many of each; got "
                f"out_modes {list(out_modes)} and in_modes {list(in_modes)}"
            )
        return tuple(m * n for m, n in zip(out_modes, in_modes))
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


def max_bonds(dims: Sequence[int]) -> list[int]:
    """Largest useful rank at each bond: min(d_1...d_k, d_{k+1}...d_D)."""
    return [min(math.prod(dims[: k + 1]), math.prod(dims[k + 1:])) for k in range(len(dims) - 1)]


def clip_bonds(dims: Sequence[int], bond_dims: BondSpec) -> list[int]:
    """The bonds TT-SVD realises for a request: None = exact, too large = clipped (a new list).

    An int asks the same bond everywhere. The left-to-right clip min(r_{k-1} d_k, ...) is the one
    tensorly's sweep applies, so the cores' shapes can be known without decomposing (loading).
    """
    n = len(dims) - 1
    if bond_dims is None:
        requested: list[int | None] = [None] * n
    elif isinstance(bond_dims, (int, np.integer)) and not isinstance(bond_dims, bool):
        requested = [int(bond_dims)] * n
    else:
        requested = list(bond_dims)
        if len(requested) != n:
            raise ValueError(
                f"bond_dims needs {n} entries for a tensor train over dims {list(dims)}, "
                f"got {len(requested)}: {requested}"
            )
    bonds, left = [], 1
    for k, (req, cap) in enumerate(zip(requested, max_bonds(dims))):
        if req is not None and (not isinstance(req, (int, np.integer)) or isinstance(req, bool)
                                or req < 1):
            raise ValueError(f"bond_dims[{k}] must be a positive integer or None, got {req!r}")
        r = min(cap, left * dims[k]) if req is None else min(int(req), cap, left * dims[k])
        bonds.append(r)
        left = r
    return bonds


def core_shapes(in_modes, out_modes, bonds: Sequence[int], layout: str) -> list[tuple[int, ...]]:
    """Shapes of the parameters: mps ends are 2-D as in the reference, ttm cores 4-D."""
    if layout == "ttm":
        ranks = [1, *bonds, 1]
        return [(ranks[k], m, n, ranks[k + 1]) for k, (m, n) in enumerate(zip(out_modes, in_modes))]
    dims, ranks = tt_dims(in_modes, out_modes, layout), [1, *bonds, 1]
    shapes = [(ranks[k], d, ranks[k + 1]) for k, d in enumerate(dims)]
    shapes[0], shapes[-1] = shapes[0][1:], shapes[-1][:2]
    return shapes


# ----------------------------------------------------------------------------- TT-SVD
def discarded_singular_values(tensor: np.ndarray, factors: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For each bond k, the singular values of the sweep's unfolding A_k that TT-SVD dropped.

    `factors` are tensorly's 3-D cores (r_{k-1}, d_k, r_k) of `tensor`, left orthonormal except
    the last; A_{k+1} = reshape(U_k^T A_k), exactly as tensorly's `S V^T` remainder.
    """
    remainder = tensor.reshape(1, -1)
    dropped = []
    for core in factors[:-1]:
        r_prev, d, r = core.shape
        unfolding = remainder.reshape(r_prev * d, -1)
        sigma = np.linalg.svd(unfolding, compute_uv=False)
        dropped.append(sigma[r:])
        remainder = core.reshape(r_prev * d, r).T @ unfolding
    return dropped


def tt_svd(weight: torch.Tensor, in_modes, out_modes, bond_dims: BondSpec = None, layout: str = "mps"):
    """Decompose W (out, in) with tensorly; returns (cores as float64 arrays, bonds, discarded).

    Cores come in `core_shapes` form; `discarded[k]` are the dropped singular values at bond k.
    """
    dims = tt_dims(in_modes, out_modes, layout)
    bonds = clip_bonds(dims, bond_dims)
    w = weight.detach().to("cpu", torch.float64).numpy()
    tensor = w.reshape(*out_modes, *in_modes)
    with tl.backend_context("numpy"):
        if layout == "mps":
            factors = [np.asarray(f) for f in tensor_train(tensor, rank=[1, *bonds, 1]).factors]
            merged = tensor
        else:
            cores = [np.asarray(f) for f in tensor_train_matrix(tensor, rank=[1, *bonds, 1]).factors]
            factors = [c.reshape(c.shape[0], -1, c.shape[-1]) for c in cores]
            # tensor_train_matrix runs TT-SVD on (o_1 i_1, ..., o_K i_K); redo that view here.
            k = len(out_modes)
            order = [j for pair in zip(range(k), range(k, 2 * k)) for j in pair]
            merged = tensor.transpose(order).reshape(dims)
    realised = [f.shape[2] for f in factors[:-1]]
    if realised != bonds:  # tensorly changed how it clips: the saved structure would not reload
        raise RuntimeError(f"tensorly realised bonds {realised}, expected {bonds}")
    dropped = discarded_singular_values(merged, factors)
    shapes = core_shapes(in_modes, out_modes, bonds, layout)
    if layout == "ttm":
        return [c.reshape(s) for c, s in zip(cores, shapes)], bonds, dropped
    return [f.reshape(s) for f, s in zip(factors, shapes)], bonds, dropped


# ----------------------------------------------------------------------------- the layer
class TTLinear(nn.Module):
    """y = x W^T + b with W held as a tensor train (see the module docstring for the layouts).

    Args:
        in_modes: factorisation of in_features, e.g. (5, 10) for 50.
        out_modes: factorisation of out_features, e.g. (10, 20) for 200.
        bond_dims: None (exact), an int for every bond, or a list with one entry (int or None) per
            bond: M + N - 1 for "mps", K - 1 for "ttm". Too large entries are clipped.
        layout: "mps" or "ttm".
        bias: keep a bias vector.
        impl: "auto", "factorized" or "dense" (rebuild W, then one matmul).

    A fresh layer has random cores; `from_linear` decomposes a trained nn.Linear.
    """

    def __init__(self, in_modes: Sequence[int], out_modes: Sequence[int], bond_dims: BondSpec = None,
                 layout: str = "mps", bias: bool = True, impl: str = "auto"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
        self.in_modes = _check_modes("in_modes", in_modes, None)
        self.out_modes = _check_modes("out_modes", out_modes, None)
        self.layout, self.impl = layout, impl
        self.in_features, self.out_features = math.prod(self.in_modes), math.prod(self.out_modes)
        self.bond_dims = clip_bonds(tt_dims(self.in_modes, self.out_modes, layout), bond_dims)
        shapes = core_shapes(self.in_modes, self.out_modes, self.bond_dims, layout)
        # Var(W) = prod_k Var(core_k) * prod(bonds); aim at 1/in like a fresh nn.Linear. Only a
        # layer that is never decomposed into (or loaded over) keeps these values.
        scale = (self.in_features * math.prod(self.bond_dims)) ** (-0.5 / len(shapes))
        self.cores = nn.ParameterList(nn.Parameter(torch.randn(s) * scale) for s in shapes)
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None
        self.discarded: list[torch.Tensor] = []  # filled by from_linear; not saved in checkpoints
        self._auto: dict[int, str] = {}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: nn.Linear, in_modes: Sequence[int], out_modes: Sequence[int],
                    bond_dims: BondSpec = None, layout: str = "mps", impl: str = "auto") -> TTLinear:
        """Decompose a trained Linear by TT-SVD; cores and bias are copied to its device/dtype."""
        in_modes = _check_modes("in_modes", in_modes, linear.in_features)
        out_modes = _check_modes("out_modes", out_modes, linear.out_features)
        cores, bonds, dropped = tt_svd(linear.weight, in_modes, out_modes, bond_dims, layout)
        layer = cls(in_modes, out_modes, bonds, layout, bias=linear.bias is not None, impl=impl)
        ref = linear.weight
        with torch.no_grad():
            for param, core in zip(layer.cores, cores):
                param.copy_(torch.from_numpy(core))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.discarded = [torch.from_numpy(s.copy()) for s in dropped]
        return layer.to(device=ref.device, dtype=ref.dtype)

    @classmethod
    def from_linear_layer(cls, in_modes, out_modes, linear: nn.Linear, bond_dims: BondSpec = None,
                          layout: str = "mps", impl: str = "auto") -> TTLinear:
        """The reference's `ttz.TTLayer.from_linear_layer(in_modes, out_modes, linear, bond_dims)`."""
        return cls.from_linear(linear, in_modes, out_modes, bond_dims, layout, impl)

    @property
    def tt_W(self) -> list[nn.Parameter]:
        """The cores, in the reference's name."""
        return list(self.cores)

    def spec(self) -> dict[str, Any]:
        """What re-creates this layer's structure (see `tt_structure`)."""
        return {"in_modes": list(self.in_modes), "out_modes": list(self.out_modes),
                "bond_dims": list(self.bond_dims), "layout": self.layout,
                "bias": self.bias is not None, "impl": self.impl}

    # -- diagnostics ----------------------------------------------------------------------------
    def discarded_sq_sum(self) -> float:
        """sum of discarded sigma^2 over all bonds = ||W - W_tt||_F^2 at decomposition time."""
        return float(sum((s.double() ** 2).sum() for s in self.discarded))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def dense_params(self) -> int:
        """Parameters of the nn.Linear this layer stands for (weight and bias)."""
        return self.in_features * self.out_features + (0 if self.bias is None else self.out_features)

    def compression_ratio(self) -> float:
        """Dense Linear parameters over TT parameters (bias counted in both): > 1 means smaller."""
        return self.dense_params() / self.num_params()

    # -- contraction ----------------------------------------------------------------------------
    def flops(self, rows: int, impl: str | None = None) -> int:
        """Multiply-add FLOPs (2 per MAC) of a forward over `rows` rows, bias excluded.

        impl None/"auto": the cheaper of the two, which is what forward uses.
        """
        impl = impl or "auto"
        if impl == "auto":
            return min(self.flops(rows, "factorized"), self.flops(rows, "dense"))
        if impl == "dense":
            return 2 * (self._rebuild_macs() + rows * self.in_features * self.out_features)
        if impl == "factorized":
            return 2 * rows * self._factorized_macs_per_row()
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")

    def auto_impl(self, rows: int) -> str:
        """What impl="auto" runs for `rows` rows: the one with fewer FLOPs (ties: factorized)."""
        if rows not in self._auto:  # memoised: the shapes never change, and this is per call
            cheaper = self.flops(rows, "factorized") <= self.flops(rows, "dense")
            self._auto[rows] = "factorized" if cheaper else "dense"
        return self._auto[rows]

    def _rebuild_macs(self) -> int:
        shapes = [self._core3(k).shape for k in range(len(self.cores))]
        macs, rows = 0, shapes[0][1]  # prefix (d_1...d_k, r_k) times core (r_k, d_{k+1} r_{k+1})
        for r_prev, d, r in shapes[1:]:
            macs += rows * r_prev * d * r
            rows *= d
        return macs

    def _factorized_macs_per_row(self) -> int:
        if self.layout == "ttm":
            ranks, macs = [1, *self.bond_dims, 1], 0
            for k in range(len(self.in_modes) - 1, -1, -1):
                left = math.prod(self.in_modes[:k])
                right = math.prod(self.out_modes[k + 1:])
                macs += left * ranks[k] * self.out_modes[k] * self.in_modes[k] * ranks[k + 1] * right
            return macs
        m, ranks, macs = len(self.out_modes), [1, *self.bond_dims, 1], 0
        for k in range(len(self.in_modes) - 1, -1, -1):  # input cores, last mode first
            macs += math.prod(self.in_modes[:k + 1]) * ranks[m + k] * ranks[m + k + 1]
        for k in range(m - 1, -1, -1):  # output cores, last mode first
            macs += ranks[k] * ranks[k + 1] * math.prod(self.out_modes[k:])
        return macs

    def _core3(self, k: int) -> torch.Tensor:
        """Core k as (r_{k-1}, d_k, r_k); ttm cores merge (m_k, n_k)."""
        core = self.cores[k]
        if self.layout == "ttm":
            return core.reshape(core.shape[0], -1, core.shape[-1])
        if k == 0:
            core = core.unsqueeze(0)
        if k == len(self.cores) - 1:
            core = core.unsqueeze(-1)
        return core

    def to_dense(self) -> torch.Tensor:
        """The full weight W (out, in), contracting the cores left to right."""
        first = self._core3(0)
        full = first.reshape(-1, first.shape[-1])
        for k in range(1, len(self.cores)):
            core = self._core3(k)
            full = (full @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
        if self.layout == "mps":
            return full.reshape(self.out_features, self.in_features)
        k = len(self.out_modes)
        paired = full.reshape(*(d for pair in zip(self.out_modes, self.in_modes) for d in pair))
        order = [*range(0, 2 * k, 2), *range(1, 2 * k, 2)]  # (o1 i1 o2 i2 ..) -> (o.. i..)
        return paired.permute(order).reshape(self.out_features, self.in_features)

    def _contract(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in) -> (B, out) one core at a time, in the fixed order of `flops`.

        Each step is one plain 2-D matmul (rows: batch and untouched modes, columns: the mode and
        bond being contracted); batched matmuls over thousands of tiny matrices would cost far
        more than their FLOPs. The output modes collect in reverse order, fixed by one permute.
        """
        if self.layout == "ttm":
            return self._contract_ttm(x)
        b, m = x.shape[0], len(self.out_modes)
        t = x.reshape(-1, 1)  # rows (B n_1..n_{k-1}), columns (n_k c_k) after each reshape
        for k in range(len(self.cores) - 1, m - 1, -1):
            core = self._core3(k)  # (c_{k-1}, n_k, c_k)
            t = t.reshape(-1, core.shape[1] * core.shape[2]) @ core.reshape(core.shape[0], -1).t()
        for k in range(m - 1, -1, -1):  # t: rows (B o_M..o_{k+1}), columns a_k
            core = self._core3(k)  # (a_{k-1}, o_k, a_k) -> (o_k a_{k-1}, a_k): o_k joins the rows
            t = t.reshape(-1, core.shape[2]) @ core.transpose(0, 1).reshape(-1, core.shape[2]).t()
        return self._unreverse(t, b, self.out_modes)

    def _contract_ttm(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        t = x.reshape(b, 1, self.in_features, 1)  # (B, m_K..m_{k+1} reversed, n_1..n_k, r_k)
        for k in range(len(self.cores) - 1, -1, -1):
            core = self.cores[k]  # (r_{k-1}, m_k, n_k, r_k)
            s, mk, nk, r = core.shape
            q = t.shape[1]
            t = t.reshape(-1, nk * r) @ core.permute(2, 3, 1, 0).reshape(nk * r, mk * s)
            # (B, Q, n_1..n_{k-1}, m_k, r_{k-1}) -> (B, Q, m_k, n_1..n_{k-1}, r_{k-1})
            t = t.reshape(b, q, -1, mk, s).transpose(2, 3).reshape(b, q * mk, -1, s)
        return self._unreverse(t, b, self.out_modes)

    def _unreverse(self, t: torch.Tensor, b: int, out_modes: tuple[int, ...]) -> torch.Tensor:
        """(B, o_M, ..., o_1) -> (B, out) in the row-major (o_1, ..., o_M) order of W."""
        t = t.reshape(b, *reversed(out_modes))
        return t.permute(0, *range(len(out_modes), 0, -1)).reshape(b, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = math.prod(lead)
        impl = self.impl if self.impl != "auto" else self.auto_impl(rows)
        if impl == "dense":
            return F.linear(x, self.to_dense(), self.bias)
        y = self._contract(x.reshape(rows, self.in_features))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_modes={list(self.in_modes)}, out_modes={list(self.out_modes)}, "
                f"bond_dims={self.bond_dims}, layout={self.layout!r}, bias={self.bias is not None}, "
                f"params={self.num_params()} (dense {self.dense_params()})")


# ----------------------------------------------------------------------------- model surgery
def replace_module(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` at the dotted path `name` under `root`; returns what was there."""
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = getattr(parent, attr)
    setattr(parent, attr, new)  # works for Sequential/ModuleList children named "0", "2", ...
    return old


def compress_linears(root: nn.Module, specs: dict[str, dict[str, Any]]) -> dict[str, TTLinear]:
    """Swap each named nn.Linear for `TTLinear.from_linear(linear, **spec)`; returns the new layers."""
    done = {}
    for name, spec in specs.items():
        linear = root.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{name} is a {type(linear).__name__}, not an nn.Linear")
        done[name] = TTLinear.from_linear(linear, **spec)
        replace_module(root, name, done[name])
    return done


def tt_structure(root: nn.Module) -> dict[str, dict[str, Any]]:
    """{dotted name: spec} of every TTLinear under `root`: what a checkpoint must record."""
    return {name: m.spec() for name, m in root.named_modules() if isinstance(m, TTLinear)}


def apply_tt_structure(root: nn.Module, structure: dict[str, dict[str, Any]]) -> None:
    """Re-create recorded TTLinears (random cores) in place, so a state dict can then be loaded.

    Idempotent: a path that already holds a TTLinear of the same spec is left as it is.
    """
    for name, spec in structure.items():
        current = root.get_submodule(name)
        if isinstance(current, TTLinear) and current.spec() == spec:
            continue
        ref = next(current.parameters(), None)
        layer = TTLinear(**spec)
        if ref is not None:
            layer = layer.to(device=ref.device, dtype=ref.dtype)
        replace_module(root, name, layer)
