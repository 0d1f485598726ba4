"""TTLinear: TT-SVD error identity, exactness, the rank view of "mps", forward, counts, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from succu.nn.tt import (
    TTLinear,
    apply_tt_structure,
    clip_bonds,
    compress_linears,
    max_bonds,
    tt_structure,
)

torch.set_num_threads(1)

# (in_modes, out_modes, layout, bond_dims) over a few shapes, truncated and not.
CASES = [
    ((5, 10), (10, 20), "mps", [10, 20, 10]),
    ((5, 10), (10, 20), "mps", [3, 7, 4]),
    ((10, 20), (5, 10), "mps", [5, 12, 20]),
    ((2, 5, 5), (4, 5, 10), "mps", 6),
    ((5, 10), (10, 20), "ttm", [13]),
    ((2, 5, 5), (4, 5, 10), "ttm", [7, 9]),
]


def linear(in_f: int, out_f: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f)
    with torch.no_grad():  # a spectrum that decays, like a trained layer's, not a flat one
        u, s, vh = torch.linalg.svd(layer.weight, full_matrices=False)
        layer.weight.copy_((u * (s * torch.linspace(1, 0.05, len(s)))) @ vh)
    return layer


@pytest.mark.parametrize("in_modes, out_modes, layout, bonds", CASES)
def test_squared_error_is_the_sum_of_discarded_squared_singular_values(in_modes, out_modes, layout, bonds):
    lin = linear(math.prod(in_modes), math.prod(out_modes))
    tt = TTLinear.from_linear(lin, in_modes, out_modes, bonds, layout)
    err = (tt.to_dense().double() - lin.weight.double()).pow(2).sum().item()
    assert err > 1e-3  # really truncated
    assert err == pytest.approx(tt.discarded_sq_sum(), rel=1e-4)


@pytest.mark.parametrize("layout", ["mps", "ttm"])
@pytest.mark.parametrize("bonds", [None, [1000, 1000, 1000]])
def test_exact_bonds_reproduce_the_weight(layout, bonds):
    lin = linear(50, 200)
    bonds = bonds if layout == "mps" or bonds is None else [1000]
    tt = TTLinear.from_linear(lin, (5, 10), (10, 20), bonds, layout)
    torch.testing.assert_close(tt.to_dense(), lin.weight, atol=1e-5, rtol=1e-5)
    assert tt.discarded_sq_sum() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("mid", [1, 12, 39, 50])
def test_mps_with_exact_outer_bonds_is_the_best_rank_mid_approximation(mid):
    for in_f, out_f, in_m, out_m, outer in [(50, 200, (5, 10), (10, 20), (10, 10)),
                                            (200, 50, (10, 20), (5, 10), (5, 20))]:
        lin = linear(in_f, out_f, seed=mid)
        tt = TTLinear.from_linear_layer(in_m, out_m, lin, [outer[0], mid, outer[1]])
        u, s, vh = torch.linalg.svd(lin.weight.double(), full_matrices=False)
        best = (u[:, :mid] * s[:mid]) @ vh[:mid]
        torch.testing.assert_close(tt.to_dense().double(), best, atol=1e-5, rtol=1e-4)
        # the derived discarded values are the matrix's tail at the middle bond, none elsewhere
        assert [len(d) for d in tt.discarded] == [0, min(in_f, out_f) - mid, 0]
        torch.testing.assert_close(tt.discarded[1], s[mid:], atol=1e-6, rtol=1e-5)


def test_reference_example_core_shapes_and_param_formula():
    lin = linear(50, 200)
    for mid in (20, 39, 40):
        tt = TTLinear.from_linear_layer([5, 10], [10, 20], lin, bond_dims=[10, mid, 10])
        assert [tuple(w.shape) for w in tt.tt_W] == [(10, 10), (10, 20, mid), (mid, 5, 10), (10, 10)]
        assert tt.num_params() == 200 + 250 * mid + 200  # cores + bias
        assert sum(w.numel() for w in tt.tt_W) == 200 + 250 * mid
    # the SuccuLM tensor-network article's break-even: below the dense 10,000 weights up to mid = 39
    assert (200 + 250 * 39 < 10_000) and (200 + 250 * 40 > 10_000)
    tt = TTLinear.from_linear(lin, (5, 10), (10, 20), [10, 39, 10])
    assert tt.compression_ratio() == pytest.approx((10_000 + 200) / (200 + 250 * 39 + 200))


@pytest.mark.parametrize("in_modes, out_modes, layout, bonds", CASES)
def test_param_count_matches_the_core_shapes(in_modes, out_modes, layout, bonds):
    tt = TTLinear(in_modes, out_modes, bonds, layout)
    ranks = [1, *tt.bond_dims, 1]
    if layout == "mps":
        dims = [*out_modes, *in_modes]
        expected = sum(ranks[k] * d * ranks[k + 1] for k, d in enumerate(dims))
    else:
        expected = sum(ranks[k] * m * n * ranks[k + 1]
                       for k, (m, n) in enumerate(zip(out_modes, in_modes)))
    assert tt.num_params() == expected + math.prod(out_modes)
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in tt.cores)


@pytest.mark.parametrize("impl", ["factorized", "dense", "auto"])
@pytest.mark.parametrize("in_modes, out_modes, layout, bonds", CASES)
def test_forward_equals_dense_matmul_with_the_rebuilt_weight(in_modes, out_modes, layout, bonds, impl):
    lin = linear(math.prod(in_modes), math.prod(out_modes))
    tt = TTLinear.from_linear(lin, in_modes, out_modes, bonds, layout, impl=impl)
    x = torch.randn(3, 4, lin.in_features)
    expected = F.linear(x, tt.to_dense(), tt.bias)
    torch.testing.assert_close(tt(x), expected, atol=1e-5, rtol=1e-4)
    assert tt(x[0, 0]).shape == (lin.out_features,)  # (in,) -> (out,)


def test_gradients_reach_every_core_and_the_bias():
    tt = TTLinear.from_linear(linear(50, 200), (5, 10), (10, 20), [10, 8, 10], impl="factorized")
    tt(torch.randn(6, 50)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tt.parameters())


def test_flops_and_auto_choice():
    tt = TTLinear((5, 10), (10, 20), [10, 20, 10])
    # input cores 50*10 + 5*20*10, output cores 10*20*20 + 10*200 MACs per row
    assert tt.flops(1, "factorized") == 2 * (500 + 1000 + 4000 + 2000)
    assert tt.flops(7, "dense") == 2 * (tt._rebuild_macs() + 7 * 10_000)
    for rows in (1, 10, 10_000):
        assert tt.flops(rows) == min(tt.flops(rows, "factorized"), tt.flops(rows, "dense"))


def test_bond_clipping_keeps_the_callers_list_and_accepts_tuples():
    requested = [100, 100, 100]
    tt = TTLinear((5, 10), (10, 20), requested)
    assert requested == [100, 100, 100]
    assert tt.bond_dims == [10, 50, 10] == max_bonds((10, 20, 5, 10))
    assert TTLinear((5, 10), (10, 20), (100, 100, 100)).bond_dims == tt.bond_dims
    assert TTLinear((5, 10), (10, 20), None).bond_dims == tt.bond_dims
    # a small early bond limits the next one, as TT-SVD realises it: r_2 <= r_1 d_2
    assert clip_bonds((10, 20, 5, 10), [2, 50, None]) == [2, 40, 10]
    lin = linear(50, 200)
    assert TTLinear.from_linear(lin, (5, 10), (10, 20), [2, 50, None]).bond_dims == [2, 40, 10]


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_modes=(5, 9), out_modes=(10, 20)), "multiply to 45"),
    (dict(in_modes=(5, 10), out_modes=(10, 21)), "multiply to 210"),
    (dict(in_modes=(), out_modes=(10, 20)), "positive integers"),
    (dict(in_modes=(0, 50), out_modes=(10, 20)), "positive integers"),
    (dict(in_modes=(5, 10), out_modes=(200,), layout="ttm"), "as many of each"),
    (dict(in_modes=(5, 10), out_modes=(10, 20), layout="tucker"), "unknown layout"),
    (dict(in_modes=(5, 10), out_modes=(10, 20), bond_dims=[10, 10]), "needs 3 entries"),
    (dict(in_modes=(5, 10), out_modes=(10, 20), bond_dims=[10, 0, 10]), "bond_dims[1]"),
    (dict(in_modes=(5, 10), out_modes=(10, 20), bond_dims=[10, -3, 10]), "bond_dims[1]"),
    (dict(in_modes=(5, 10), out_modes=(10, 20), bond_dims=[10, 2.5, 10]), "bond_dims[1]"),
    (dict(in_modes=(5, 10), out_modes=(10, 20), impl="fast"), "unknown impl"),
])
def test_bad_modes_and_bonds_are_value_errors(kwargs, message):
    kwargs = {"bond_dims": None, "layout": "mps", "impl": "auto", **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TTLinear.from_linear(linear(50, 200), **kwargs)


def test_structure_round_trip_through_a_state_dict():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(50, 200), nn.ReLU(), nn.Linear(200, 50))
    compress_linears(net, {"0": dict(in_modes=(5, 10), out_modes=(10, 20), bond_dims=[10, 9, 10]),
                           "2": dict(in_modes=(10, 20), out_modes=(5, 10), layout="ttm",
                                     bond_dims=[6])})
    structure = tt_structure(net)
    assert set(structure) == {"0", "2"} and structure["0"]["bond_dims"] == [10, 9, 10]
    fresh = nn.Sequential(nn.Linear(50, 200), nn.ReLU(), nn.Linear(200, 50))
    apply_tt_structure(fresh, structure)
    fresh.load_state_dict(net.state_dict())
    x = torch.randn(4, 50)
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)
    apply_tt_structure(fresh, structure)  # idempotent: the loaded cores stay
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)
