"""NoiseLM, the write-up's encoder-free model: each switch changes the computation it names, the
context is causal, the likelihood is exact, the hard snap returns a code, and the stub searches."""

import itertools
import math

import pytest
import torch
from torch import nn

from succu.models.noise_lm import (
    NoiseLM,
    NoiseLMConfig,
    all_pair_means,
    levels,
    subset_stats,
)
from succu.modules.noise_lm import NoiseLMModule
from succu.nn.noise import make_codes, tree_search
from succu.tokenizers import WordTokenizer
from tests.tiny import tiny_module

V = 13


def model(**kw) -> NoiseLM:
    torch.manual_seed(3)
    base = dict(vocab_size=V, block_size=12, code_dim=6, n_levels=2, n_scatter=2,
                scatter_window=4, scatter_size=2, all_pairs=3, n_noise=3, c_window=2)
    net = NoiseLM(NoiseLMConfig(**{**base, **kw}))
    with torch.no_grad():  # away from the zero/identity start, so every piece matters
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


MODES = [dict(node_c="transition"), dict(node_c="noise"), dict(node_c="off"),
         dict(node_c="transition", node_b=False)]


# ---- the context ---------------------------------------------------------------------------
def test_all_pairs_are_the_write_ups_full_embedding():
    w, x, y, z = (torch.randn(1, 1, 5) for _ in range(4))
    seq = torch.cat([w, x, y, z], dim=1)  # (1, 4, 5)
    pairs = all_pair_means(seq, 4)[0, 3]  # at z: every pair of the last four tokens
    mean = lambda a, b: ((a + b) / 2)[0, 0]  # noqa: E731
    expected = [mean(w, x), mean(w, y), mean(w, z), mean(x, y), mean(x, z), mean(y, z)]
    torch.testing.assert_close(pairs, torch.stack(expected))


def test_levels_are_the_write_ups_pyramid_and_absdiff_is_its_formula():
    w, x, y, z = torch.randn(4, 3)
    seq = torch.stack([w, x, y, z])[None]
    L = levels(seq, 3, 1, "mean")
    f0, f1, f2 = (w + x) / 2, (x + y) / 2, (y + z) / 2
    g0, g1 = (f0 + f1) / 2, (f1 + f2) / 2
    torch.testing.assert_close(L[1][0, 1:], torch.stack([f0, f1, f2]))  # L0 of the post
    torch.testing.assert_close(L[2][0, 2:], torch.stack([g0, g1]))  # L1
    torch.testing.assert_close(L[3][0, 3], (g0 + g1) / 2)  # L2
    A = levels(seq, 1, 1, "absdiff")
    torch.testing.assert_close(A[1][0, 1:], torch.stack([(w - x).abs(), (x - y).abs(),
                                                         (y - z).abs()]) / 2)
    torch.testing.assert_close(A[1][0, 0], w)  # no partner before the first token


def test_scattershot_mean_and_variance_over_present_members():
    e = torch.randn(2, 7, 3)
    member = torch.tensor([[1.0, 0, 1, 1], [1.0, 1, 0, 0]])
    means, variances = subset_stats(e, member)
    for j, lags in enumerate([[0, 2, 3], [0, 1]]):
        for t in range(7):
            rows = e[:, [t - o for o in lags if o <= t]]
            torch.testing.assert_close(means[j][:, t], rows.mean(1))
            torch.testing.assert_close(variances[j][:, t], rows.var(1, unbiased=False),
                                       atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kw", MODES, ids=str)
def test_model_is_causal_and_normalised(kw):
    net = model(**kw)
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % V
    lp, lp2 = net(ids), net(changed)
    torch.testing.assert_close(lp[:, :7], lp2[:, :7])
    assert (lp[:, 7:] - lp2[:, 7:]).abs().max() > 1e-4
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, 12))


def test_switches_change_what_they_name():
    ids = torch.randint(0, V, (2, 10), generator=torch.Generator().manual_seed(1))
    full = model()
    plain = model(token_noise=False)
    assert plain.token_noise is None
    torch.testing.assert_close(plain.embed(ids), plain.codes[ids])
    torch.testing.assert_close(full.embed(ids), full.codes[ids] - full.token_noise[ids])
    hard = model(level=2)
    means, _ = hard.features(ids)
    base, _ = hard.context(ids)
    torch.testing.assert_close(base, means[:, :, 2])
    assert hard.best_level() == 2
    soft_means, stats = full.features(ids)
    assert soft_means.size(2) == full.cfg.n_means == 1 + 2 + 2 + 3
    assert stats.size(2) == full.cfg.n_stats == full.cfg.n_means + 2 * 2  # std and var
    assert model(scatter_stats=False).cfg.n_stats == full.cfg.n_means
    assert model(node_c="off").c_states is None
    assert model(c_features=False).c_stats is None


def test_c_transitions_depend_on_the_nodes_prior_states():
    net = model(node_c="transition")
    B, K = 2, net.cfg.n_noise
    move = net.moves(B, 5, None)
    phi = torch.full((B, K), 1 / K)
    a = torch.zeros(B, 2 * K)
    a[:, 0] = 1.0  # the node was in state 0 two steps ago
    b = torch.zeros(B, 2 * K)
    b[:, K - 1] = 1.0  # ... or in state K - 1
    assert (move(phi, a, 0) - move(phi, b, 0)).abs().max() > 1e-3
    only_b = model(node_c="off").moves(B, 5, None)
    torch.testing.assert_close(only_b(phi, a, 0), only_b(phi, b, 0))


def test_noise_mode_c_is_a_noise_embedding_on_the_candidates():
    net = model(node_c="noise")
    out = net.outputs(torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(2)))
    K = net.cfg.n_noise
    assert out.mu.shape == (2, 8, 2 * K, 6) and out.path_b.shape == (2, 7)
    assert ((out.path_b > 0) & (out.path_b < 1)).all()
    # Path B's candidates are b_t - N_k; path C's differ from them by the same Delta_t for every k.
    diff = out.mu[:, :, 1::2] - out.mu[:, :, 0::2]
    torch.testing.assert_close(diff, diff[:, :, :1].expand_as(diff))
    assert diff.abs().max() > 1e-4


def brute_force(net: NoiseLM, ids: torch.Tensor) -> torch.Tensor:
    """log p(y_0..y_(T-2)) by summing over every state path (node_c="off": B only)."""
    out = net.outputs(ids)
    log_emit = out.log_emit[0]  # (T, K, V)
    K, T = net.cfg.n_noise, ids.size(1)
    log_b = net.trans_logits.log_softmax(-1)
    log_init = net.init_logits.log_softmax(-1)
    total = []
    for path in itertools.product(range(K), repeat=T - 1):
        s = log_init[path[0]] + sum(log_emit[t, path[t], ids[0, t + 1]] for t in range(T - 1))
        total.append(s + sum(log_b[path[t], path[t + 1]] for t in range(T - 2)))
    return torch.logsumexp(torch.stack(total), 0)


def test_forward_recursion_is_the_exact_likelihood():
    net = model(node_c="off")
    ids = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(4))
    lp = net(ids)[0, :-1].gather(-1, ids[0, 1:, None]).sum()
    torch.testing.assert_close(lp, brute_force(net, ids), atol=1e-4, rtol=1e-5)


def test_encoder_free_no_attention_or_mlp_over_the_sequence():
    net = model()
    from succu.models import gpt

    kinds = {type(m) for m in net.modules()}
    assert not kinds & {gpt.Block, gpt.CausalSelfAttention, gpt.MLP, nn.MultiheadAttention}
    linears = {n for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    # C's two maps and the key layer's (the stop head's) two: nothing else is a learned map.
    assert linears == {"c_states", "c_stats", "stop_head.net.1", "stop_head.net.3"}
    assert {n for n, _ in net.named_parameters() if "." not in n} == {
        "token_noise", "noise", "level_logits", "trans_logits", "init_logits", "path_logit",
        "log_sigma",
    }


# ---- the snap and decoding ---------------------------------------------------------------------
def test_hard_snap_returns_exactly_a_code():
    net = model()
    noisy = net.codes + 0.01 * torch.randn_like(net.codes)
    assert net.snap(noisy).tolist() == list(range(V))
    assert net.snap(noisy, "digit_hash").tolist() == list(range(V))
    ids = torch.randint(0, V, (3, 9), generator=torch.Generator().manual_seed(5))
    nxt = net.snap_decode(ids)
    out = net.outputs(ids)
    best = out.log_pi[:, -1].argmax(-1)
    mu = out.mu[torch.arange(3), -1, best]  # the most probable candidate
    dist = torch.cdist(mu, net.codes)
    assert nxt.tolist() == dist.argmin(-1).tolist()


def make_module(**kw) -> NoiseLMModule:
    torch.manual_seed(8)
    module = tiny_module(NoiseLMModule, vocab_size=V + 6, block_size=12, code_dim=6, n_noise=2,
                         n_scatter=2, scatter_window=4, scatter_size=2, all_pairs=3, **kw)
    module.tokenizer = WordTokenizer.from_words([f"w{i}" for i in range(V)])
    return module


def test_greedy_generation_is_the_hard_snap():
    module = make_module().eval()
    prompt = torch.tensor([[1, 5, 6]])
    out = module.generate(prompt, 4, greedy=True)
    seq = prompt
    for _ in range(4):
        seq = torch.cat([seq, module.model.snap_decode(seq)[:, None]], 1)
    assert out.tolist() == seq.tolist()
    sampled = module.generate(prompt, 4, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (1, 7)


def stub_model(vocab: int = 10):
    """A fixed next-token table: log-probabilities depend on the last token only."""
    table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(9)).mul(2)

    def next_log_probs(rows: torch.Tensor) -> torch.Tensor:
        return table[rows[:, -1]].log_softmax(-1)

    return next_log_probs


@pytest.mark.parametrize("length", [2, 3])
def test_alphabeta_finds_the_minimax_output_with_fewer_expansions(length):
    codes = make_codes(10, 8, seed=2)
    target = codes[[3, 7, 1][:length]]
    args = (stub_model(), [0], codes, target.mean(0), target.var(0, unbiased=False))
    kw = dict(branch=4, budget=10_000, max_new_tokens=4, tol=0.02, weight=1.0)
    full, n_full = tree_search(*args, prune=False, **kw)
    cut, n_cut = tree_search(*args, prune=True, **kw)
    unordered, n_unordered = tree_search(*args, prune=True, order="index", **kw)
    assert full.stopped and cut.tokens == full.tokens == unordered.tokens
    assert math.isclose(cut.log_prob, full.log_prob)
    assert n_cut < n_full and n_cut <= n_unordered
    # Unpruned, every stub below depth 4 that the stop rule did not end is expanded.
    assert 4**2 < n_full <= sum(4**j for j in range(4))


def test_search_budget_is_respected_and_module_exposes_every_search():
    codes = make_codes(10, 8, seed=2)
    _, n = tree_search(stub_model(), [0], codes, torch.full((8,), 9.0), torch.zeros(8),
                       branch=3, budget=7, max_new_tokens=5, tol=1e-6)
    assert n == 7
    module = make_module().eval()
    for search in ("beam", "minimax", "alphabeta"):
        answers = module.answer_ids(["w1 w2"], rule="key", beams=2, max_new_tokens=3,
                                    search=search, budget=20)
        assert len(answers) == 1 and len(answers[0]) <= 3
    with pytest.raises(ValueError, match="search must be one of"):
        module.answer_ids(["w1"], rule="key", search="dfs")


# ---- training -------------------------------------------------------------------------------
def test_fit_checkpoint_round_trip_and_generate_by_the_key_rule(tmp_path, capsys):
    from succu import fit, generate
    from succu.checkpoint import load_module
    from tests.paths import REPO

    cli = fit.main([
        "--config", str(REPO / "configs" / "noiselm_writeup_succulent.yaml"),
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "4",
        "--trainer.limit_val_batches", "2", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
    ])
    path = cli.trainer.checkpoint_callback.best_model_path
    loaded = load_module(path)
    ids = torch.tensor([loaded.prompt_ids("is ruby a boy?")])
    torch.testing.assert_close(loaded(ids), cli.model.eval().cpu()(ids), rtol=0, atol=0)
    capsys.readouterr()
    out = generate.main(["--ckpt", path, "--prompt", "is ruby a boy?", "--stop", "key",
                         "--search", "alphabeta", "--beams", "2", "--budget", "12",
                         "--max_new_tokens", "4"])
    assert len(out) == 1 and "expansions]" in capsys.readouterr().out
def test_clipping_leaves_the_stop_head_out_of_the_lm_norm():
    module = make_module()
    for p in module.parameters():
        p.grad = torch.full_like(p, 1e-4)
    for p in module.model.stop_head.parameters():
        p.grad = torch.full_like(p, 100.0)
    lm_before = module.model.noise.grad.clone()
    module.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    torch.testing.assert_close(module.model.noise.grad, lm_before)  # small LM norm: untouched
    head = torch.cat([p.grad.flatten() for p in module.model.stop_head.parameters()])
    assert math.isclose(float(head.norm()), 1.0, rel_tol=1e-4)


@pytest.mark.parametrize("bad,match", [
    (dict(pair_op="max"), "pair_op must be 'mean' or 'absdiff', got 'max'"),
    (dict(node_c="both"), "node_c must be one of"),
    (dict(node_b=False, node_c="noise"), "node_b=False needs node_c='transition'"),
    (dict(level=99), "level must be None or in"),
    (dict(n_noise=0), "n_noise must be >= 1, got 0"),
])
def test_bad_settings_are_one_line_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        NoiseLMConfig(vocab_size=5, **bad)
