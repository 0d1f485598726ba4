"""NoiseTransformerLM: causal scattershot context, the exact HMM likelihood, the distance-softmax limit, snap
and the key-layer stop rule."""

import itertools
import math

import pytest
import torch

from succu.contracts import KVCacheModel
from succu.models.noise_transformer import NoiseTransformerConfig as NoiseLMConfig
from succu.models.noise_transformer import NoiseTransformerLM as NoiseLM
from succu.modules.noise_transformer import NoiseTransformerModule as NoiseLMModule
from succu.nn.noise import (
    calibrate_tolerance,
    distance_log_softmax,
    hmm_predictive,
    make_codes,
    pair_levels,
    scatter_lags,
    scatter_means,
    stop_mismatch,
    stub_search,
    suffix_code_stats,
)
from succu.tokenizers import WordTokenizer
from tests.tiny import tiny_module

V = 17


def small_cfg(**kw) -> NoiseLMConfig:
    base = dict(
        vocab_size=V,
        block_size=16,
        n_layer=2,
        n_head=2,
        n_embd=16,
        code_dim=8,
        n_levels=3,
        n_scatter=3,
        scatter_window=6,
        scatter_size=3,
        n_noise=3,
    )
    return NoiseLMConfig(**{**base, **kw})


def perturbed(ids: torch.Tensor, s: int) -> torch.Tensor:
    other = ids.clone()
    other[:, s] = (other[:, s] + 1) % V
    return other


# ---- scattershot context -----------------------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2])
def test_every_level_and_subset_is_causal(stride):
    torch.manual_seed(0)
    model = NoiseLM(small_cfg(level_stride=stride, n_levels=4)).eval()
    ids = torch.randint(0, V, (2, 12))
    base = model.features(ids)
    assert len(base) == 1 + 4 + 3
    for s in range(12):
        moved = model.features(perturbed(ids, s))
        for i, (a, b) in enumerate(zip(base, moved)):
            assert torch.equal(a[:, :s], b[:, :s]), f"feature {i} at t < {s} saw token {s}"
            assert not torch.equal(a[:, s], b[:, s]), f"feature {i} ignores the current token"


def test_stride_one_levels_are_the_write_ups_pair_means():
    c = torch.randn(1, 6, 4)
    L = pair_levels(c, 2, stride=1)
    torch.testing.assert_close(L[1][:, 3], (c[:, 2] + c[:, 3]) / 2)  # f = mean(w, x), stored at x
    torch.testing.assert_close(L[2][:, 4], (c[:, 2] + 2 * c[:, 3] + c[:, 4]) / 4)  # mean(f0, f1)
    torch.testing.assert_close(L[1][:, 0], c[:, 0])  # no partner before the first token
    torch.testing.assert_close(L[2][:, 1], (L[1][:, 0] + L[1][:, 1]) / 2)


def test_stride_two_levels_are_dyadic_block_means():
    c = torch.randn(2, 9, 3)
    L = pair_levels(c, 3, stride=2)
    for k in range(4):
        for t in range(2**k - 1, 9):
            torch.testing.assert_close(L[k][:, t], c[:, t - 2**k + 1 : t + 1].mean(1))


def test_scatter_means_equal_brute_force_over_present_lags():
    member = scatter_lags(4, window=5, size=3, seed=3)
    assert torch.all(member[:, 0] == 1) and torch.all(member.sum(1) == 3)
    c = torch.randn(2, 8, 3)
    got = scatter_means(c, member)
    for j, t in itertools.product(range(4), range(8)):
        lags = [o for o in member[j].nonzero().flatten().tolist() if o <= t]
        torch.testing.assert_close(got[:, t, j], torch.stack([c[:, t - o] for o in lags]).mean(0))


def test_whole_model_is_causal():
    torch.manual_seed(1)
    model = NoiseLM(small_cfg()).eval()
    ids = torch.randint(0, V, (2, 10))
    out = model.outputs(ids)
    for s in (1, 4, 9):
        other = model.outputs(perturbed(ids, s))
        torch.testing.assert_close(out.log_probs[:, :s], other.log_probs[:, :s])
        torch.testing.assert_close(out.log_pi[:, :s], other.log_pi[:, :s])
        torch.testing.assert_close(out.stop_mean[:, :s], other.stop_mean[:, :s])


# ---- the HMM over noise states -------------------------------------------------------------------
def brute_force_log_likelihood(log_emit_obs, log_trans, log_init) -> torch.Tensor:
    """log sum over every state path z_0..z_(L-1) of P(z) prod_t e_t(z_t, y_t), one sequence."""
    L, K = log_emit_obs.shape
    total = []
    for path in itertools.product(range(K), repeat=L):
        lp = log_init[path[0]] + sum(log_trans[a, b] for a, b in zip(path, path[1:]))
        total.append(lp + sum(log_emit_obs[t, z] for t, z in enumerate(path)))
    return torch.logsumexp(torch.stack(total), 0)


def test_forward_recursion_equals_path_enumeration():
    torch.manual_seed(2)
    K, T = 3, 6
    log_emit_obs = torch.randn(1, T - 1, K).log_softmax(-1) - 1.0
    log_trans = torch.randn(K, K).log_softmax(-1)
    log_init = torch.randn(K).log_softmax(-1)
    log_pi = hmm_predictive(log_emit_obs, log_trans, log_init)
    assert log_pi.shape == (1, T, K)
    torch.testing.assert_close(log_pi.logsumexp(-1), torch.zeros(1, T))
    chain = torch.logsumexp(log_pi[:, :-1] + log_emit_obs, -1)[0]  # log p(y_t | y_<t)
    for L in range(1, T):
        expected = brute_force_log_likelihood(log_emit_obs[0, :L], log_trans, log_init)
        torch.testing.assert_close(chain[:L].sum(), expected, atol=1e-5, rtol=1e-5)


def test_model_log_probs_are_the_exact_hmm_likelihood():
    torch.manual_seed(3)
    model = NoiseLM(small_cfg(n_noise=2)).eval()
    ids = torch.randint(0, V, (1, 7))
    out = model.outputs(ids)
    torch.testing.assert_close(out.log_probs.logsumexp(-1), torch.zeros(1, 7))  # normalised
    y = ids[0, 1:]
    obs = out.log_emit[0, :-1].gather(-1, y.view(-1, 1, 1).expand(-1, 2, 1)).squeeze(-1)
    expected = brute_force_log_likelihood(obs, *model.transition())
    got = out.log_probs[0, :-1].gather(-1, y.view(-1, 1)).sum()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The base module's cross-entropy of these "logits" is this exact NLL.
    nll = torch.nn.functional.cross_entropy(out.log_probs[0, :-1], y, reduction="sum")
    torch.testing.assert_close(nll, -expected, atol=1e-5, rtol=1e-5)


def test_one_state_and_no_hierarchy_is_a_distance_softmax_lm():
    torch.manual_seed(4)
    model = NoiseLM(small_cfg(n_noise=1, n_levels=0, n_scatter=0)).eval()
    assert model.w_in.in_features == model.cfg.code_dim  # reads c_(x_t) alone
    ids = torch.randint(0, V, (2, 9))
    h, _ = model.encode(ids)
    q = model.proj(h) - model.noise[0]
    sigma2 = torch.exp(2 * model.log_sigma)
    ref = (-(torch.cdist(q, model.codes.expand(2, -1, -1)) ** 2) / (2 * sigma2)).log_softmax(-1)
    torch.testing.assert_close(model(ids), ref, atol=1e-4, rtol=1e-4)
    # With one state, greedy decoding of p is exactly snapping the candidate to its nearest code.
    assert torch.equal(model.snap_decode(ids), model(ids)[:, -1].argmax(-1))


def test_distance_log_softmax_by_matmul_equals_cdist():
    torch.manual_seed(5)
    q, noise, codes = torch.randn(2, 3, 6), torch.randn(4, 6), torch.rand(11, 6)
    log_sigma = torch.tensor(0.3)
    got = distance_log_softmax(q, noise, codes, log_sigma)
    mu = q.unsqueeze(2) - noise  # (2, 3, 4, 6)
    dist = ((mu.unsqueeze(-2) - codes) ** 2).sum(-1)
    torch.testing.assert_close(
        got, (-dist / (2 * math.exp(0.6))).log_softmax(-1), atol=1e-5, rtol=1e-5
    )


def test_snap_is_the_exact_nearest_code():
    torch.manual_seed(6)
    model = NoiseLM(small_cfg())
    queries = torch.rand(5, 4, 8)
    expected = ((queries.unsqueeze(-2) - model.codes) ** 2).sum(-1).argmin(-1)
    assert torch.equal(model.snap(queries), expected)
    assert model.snap(queries, "digit_hash").shape == expected.shape  # any backend, one interface


def test_codes_options():
    assert make_codes(5, 3, seed=1).min() >= 0 and make_codes(5, 3, seed=1).max() <= 1
    centred = make_codes(50, 3, seed=1, centred=True)
    assert centred.min() >= -0.5 and centred.max() <= 0.5
    torch.testing.assert_close(centred, make_codes(50, 3, seed=1) - 0.5)
    fixed, trained = NoiseLM(small_cfg()), NoiseLM(small_cfg(trainable_codes=True))
    assert "codes" in dict(fixed.named_buffers()) and "codes" not in dict(fixed.named_parameters())
    assert "codes" in dict(trained.named_parameters())
    with pytest.raises(ValueError, match="level_stride must be 1 or 2"):
        small_cfg(level_stride=3)
    with pytest.raises(ValueError, match="exceeds block_size=16"):
        fixed(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="kv_cache"):  # no cache declared, none taken
        fixed(torch.zeros(1, 3, dtype=torch.long), kv_cache=object())


# ---- the stop rule ---------------------------------------------------------------------------
def test_suffix_code_stats_until_the_next_eos():
    codes = torch.randn(10, 4)
    eos = 9
    labels = torch.tensor([[3, 4, 5, eos, 6, 7, eos, -100], [1, 2, 2, 2, 2, 2, 2, 2]])
    mean, var, mask = suffix_code_stats(labels, codes, eos)
    assert mask.tolist() == [[True, True, True, False, True, True, False, False], [False] * 8]
    torch.testing.assert_close(mean[0, 1], codes[[4, 5]].mean(0))
    torch.testing.assert_close(var[0, 1], codes[[4, 5]].var(0, unbiased=False))
    torch.testing.assert_close(mean[0, 4], codes[[6, 7]].mean(0))
    torch.testing.assert_close(var[0, 5], torch.zeros(4))


def stub_model(preferred: list[int], vocab: int = 12):
    """next_log_probs that always prefers preferred[j] at output step j (then token 0)."""

    def next_log_probs(rows: torch.Tensor) -> torch.Tensor:
        j = rows.size(1) - 2  # the prompt has two tokens
        lp = torch.full((rows.size(0), vocab), -5.0)
        lp[:, preferred[j] if j < len(preferred) else 0] = -0.1
        return lp.log_softmax(-1)

    return next_log_probs


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("length", [2, 5])
def test_stop_rule_stops_at_the_target_length(beams, length):
    codes = make_codes(12, 16, seed=7)
    sequence = [4, 8, 1, 6, 10, 3, 5, 2, 9]
    target = codes[sequence[:length]]
    result = stub_search(
        stub_model(sequence),
        [1, 2],
        codes,
        target.mean(0),
        target.var(0, unbiased=False),
        beams=beams,
        max_new_tokens=9,
        tol=1e-6,
        weight=0.0,
    )
    assert result.stopped and result.tokens == sequence[:length]
    assert result.mismatch <= 1e-6


def test_stop_rule_runs_to_the_budget_when_nothing_matches():
    codes = make_codes(12, 16, seed=7)
    result = stub_search(
        stub_model([4, 8, 1]),
        [1, 2],
        codes,
        torch.full((16,), 9.0),
        torch.zeros(16),
        max_new_tokens=4,
        tol=1e-3,
    )
    assert not result.stopped and len(result.tokens) == 4


def test_calibrated_tolerance_separates_true_ends_from_earlier_prefixes():
    end = [0.01, 0.02, 0.05, 0.5]
    before = [0.1, 0.06, 0.2, 0.4]
    tol = calibrate_tolerance(end, before)
    assert tol == 0.05  # stops 3 of 4 exactly; 0.5 would stop the first three too early
    assert stop_mismatch(torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3)) == 2.0


# ---- the Lightning module ----------------------------------------------------------------------
def make_module(**kw) -> NoiseLMModule:
    torch.manual_seed(8)
    module = tiny_module(NoiseLMModule,
        vocab_size=V + 6, block_size=16, n_layer=2, n_head=2, n_embd=16, code_dim=8, n_noise=2, **kw
    )
    module.tokenizer = WordTokenizer.from_words([f"w{i}" for i in range(V)])
    assert len(module.tokenizer) <= V + 6
    return module


def test_module_losses_and_param_groups():
    module = make_module(dist_loss_weight=0.1)
    tok = module.tokenizer
    ids = torch.tensor([[tok.bos_id, 5, 6, 7, 8], [tok.bos_id, 9, 10, 11, tok.pad_id]])
    labels = torch.tensor([[5, 6, 7, 8, tok.eos_id], [9, 10, 11, tok.eos_id, -100]])
    parts = module.losses({"input_ids": ids, "labels": labels})
    assert all(torch.isfinite(v) for v in parts.values()) and float(parts["stop"]) > 0
    torch.testing.assert_close(parts["loss"], parts["nll"] + 0.1 * parts["dist"] + parts["stop"])
    parts["loss"].backward()
    assert module.model.trans_logits.grad is not None and module.model.noise.grad is not None
    decay, no_decay = module.param_groups()
    names = {id(p): n for n, p in module.named_parameters()}
    assert not any(names[id(p)].endswith(("noise", "trans_logits")) for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.parameters()))


def test_module_generates_and_stops_by_either_rule():
    module = make_module().eval()
    assert not isinstance(module.model, KVCacheModel)  # base.generate recomputes
    out = module.generate(torch.tensor([[1, 5, 6]]), 4, greedy=True)
    assert out.shape == (1, 7)
    for rule, beams in (("eos", 1), ("key", 1), ("key", 2)):
        answers = module.answer_ids(["w1 w2", "w3"], rule=rule, beams=beams, max_new_tokens=3)
        assert len(answers) == 2 and all(len(a) <= 3 for a in answers)
    tol = module.calibrate_stop([("w1 w2", "w3 w4"), ("w5", "w6")])
    assert tol == module.stop_tol and tol >= 0
