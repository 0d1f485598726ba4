"""NoiseLM's node filter (succu/nn/noise.py: node_filter, one autograd node with its adjoint
written out) against the position-by-position loop it replaced, kept here as the reference: the
same log pi_t and the same gradients, for every node mode, on random inputs of several shapes,
in float32 (atol 1e-5, rtol 1e-4) and float64 (atol 1e-10, rtol 1e-8). The same for the filter
of C as a noise embedding (NoiseLM.recursion_noise), which now assembles its outputs after the
loop: its former loop is the reference."""

import pytest
import torch

from succu.models.noise_lm import NoiseLM, NoiseLMConfig, log_distance_softmax

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-8)}


# ---- the reference: NoiseLM.moves and NoiseLM.recursion as they were, an autograd graph per step
def reference_moves(net: NoiseLM, B: int, T: int, c_stat):
    K = net.cfg.n_noise
    if net.cfg.node_c != "transition":
        move_b = net.trans_logits.softmax(-1)
        return lambda phi, window, t: phi @ move_b
    shift = net.c_states.bias + (c_stat if c_stat is not None else 0.0)
    shift = shift.expand(B, T, K * K).unbind(1)
    weight = net.c_states.weight.t()
    if net.trans_logits is None:
        omega_b, keep = None, None
    else:
        omega = torch.sigmoid(net.path_logit)
        omega_b, keep = omega * net.trans_logits.softmax(-1), 1 - omega

    def step(phi, window, t):
        move = torch.addmm(shift[t + 1], window, weight).view(-1, K, K).softmax(-1)
        if omega_b is not None:
            move = torch.addcmul(omega_b, keep, move)
        return torch.bmm(phi.unsqueeze(1), move).squeeze(1)

    return step


def reference_recursion(net: NoiseLM, input_ids, log_emit, c_stat):
    (B, T), K = input_ids.shape, net.cfg.n_noise
    obs = input_ids[:, 1:, None, None].expand(-1, -1, K, 1)
    log_emit_obs = log_emit[:, :-1].gather(-1, obs).squeeze(-1)
    emit_obs = (log_emit_obs - log_emit_obs.amax(-1, keepdim=True)).exp().clamp(min=1e-30)
    pi = net.init_logits.softmax(-1).expand(B, K)
    window = pi.new_zeros(B, net.cfg.c_window * K)
    out, move = [pi], reference_moves(net, B, T, c_stat)
    for t, emit in enumerate(emit_obs.unbind(1)):
        phi = pi * emit
        phi = phi / phi.sum(-1, keepdim=True)
        window = torch.cat([window[:, K:], phi], dim=1)
        pi = move(phi, window, t)
        out.append(pi)
    return torch.stack(out, dim=1).clamp(min=1e-30).log()


def reference_recursion_noise(net: NoiseLM, input_ids, mu_b, log_emit_b, c_stat):
    (B, T), K = input_ids.shape, net.cfg.n_noise
    log_path = net.log_paths()
    log_pi = net.init_logits.log_softmax(-1).expand(B, K)
    window = log_pi.new_zeros(B, net.cfg.c_window * K)
    move = reference_moves(net, B, T, None)
    pis, emits, mus, path_b = [], [], [], []
    for t in range(T):
        mu_c = mu_b[:, t] - net.c_noise(window, None if c_stat is None else c_stat[:, t]).unsqueeze(1)
        log_emit = torch.stack(
            [log_emit_b[:, t], log_distance_softmax(mu_c, net.codes, net.log_sigma)], 2
        )
        prior = log_pi.unsqueeze(2) + log_path
        pis.append(prior.flatten(1))
        emits.append(log_emit.flatten(1, 2))
        mus.append(torch.stack([mu_b[:, t], mu_c], 2).flatten(1, 2))
        if t == T - 1:
            break
        y = input_ids[:, t + 1].view(B, 1, 1, 1).expand(-1, K, 2, 1)
        joint = prior + log_emit.gather(-1, y).squeeze(-1)
        by_path = joint.logsumexp(1)
        path_b.append((by_path[:, 0] - by_path.logsumexp(-1)).exp())
        phi = joint.logsumexp(-1).softmax(-1)
        window = torch.cat([window[:, K:], phi], dim=1)
        log_pi = move(phi, window, t).clamp(min=1e-30).log()
    return torch.stack(pis, 1), torch.stack(emits, 1), torch.stack(mus, 1), torch.stack(path_b, 1)


# ---- the comparisons -------------------------------------------------------------------------
MODES = {
    "B and C": dict(node_c="transition"),
    "C only": dict(node_c="transition", node_b=False),
    "B only": dict(node_c="off"),
    "C without statistics": dict(node_c="transition", c_features=False),
}
SHAPES = [  # (batch, length, K, c_window, block_size)
    (1, 1, 3, 2, 8), (3, 2, 3, 2, 8), (2, 7, 4, 4, 7), (4, 12, 2, 1, 12), (5, 23, 4, 4, 23),
    (2, 9, 1, 3, 9),
]


def make(dtype, B, T, K, window, block, **kw):
    torch.manual_seed(B * 100 + T * 10 + K)
    cfg = NoiseLMConfig(vocab_size=11, block_size=block, code_dim=5, n_levels=2, n_scatter=2,
                        scatter_window=4, scatter_size=2, all_pairs=3, n_noise=K,
                        c_window=window, **kw)
    net = NoiseLM(cfg).to(dtype)
    with torch.no_grad():  # away from the identity / zero start, so every path carries weight
        for p in net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ids = torch.randint(0, 11, (B, T))
    return net, ids


def inputs(net: NoiseLM, ids, dtype):
    """Leaf log-emissions and C statistics, so their gradients are compared too."""
    base, c_stat = net.context(ids)
    log_emit = log_distance_softmax(base.unsqueeze(2) - net.noise, net.codes, net.log_sigma)
    log_emit = log_emit.detach().requires_grad_()
    c_stat = None if c_stat is None else c_stat.detach().requires_grad_()
    return log_emit, c_stat


def grads(net, out, leaves, upstream):
    params = [p for p in net.parameters()]
    wanted = [x for x in leaves if x is not None] + params
    got = torch.autograd.grad((out * upstream).sum(), wanted, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(wanted, got)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_filter_equals_the_loop_with_gradients(mode, shape, dtype):
    B, T, K, window, block = shape
    if K == 1 and MODES[mode].get("node_b") is False:
        pytest.skip("covered by the other modes")
    net, ids = make(dtype, B, T, K, window, block, **MODES[mode])
    log_emit, c_stat = inputs(net, ids, dtype)
    new = net.recursion(ids, log_emit, c_stat)
    ref = reference_recursion(net, ids, log_emit, c_stat)
    assert new.dtype == dtype and new.shape == (B, T, K)
    torch.testing.assert_close(new, ref, **TOL[dtype])
    upstream = torch.randn(new.shape, dtype=dtype, generator=torch.Generator().manual_seed(T))
    for g_new, g_ref in zip(grads(net, new, [log_emit, c_stat], upstream),
                            grads(net, ref, [log_emit, c_stat], upstream)):
        torch.testing.assert_close(g_new, g_ref, **TOL[dtype])


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_whole_model_loss_and_gradients_unchanged(mode, monkeypatch):
    """A NoiseLM's loss and every parameter's gradient, with the new filter and with the loop."""
    net, ids = make(torch.float32, 4, 16, 4, 4, 16, **MODES[mode])
    labels = torch.randint(0, 11, (4, 16))

    def loss_and_grads():
        net.zero_grad(set_to_none=True)
        lp = net(ids)
        loss = torch.nn.functional.nll_loss(lp.flatten(0, 1), labels.flatten())
        loss.backward()
        return loss.detach(), [p.grad.clone() if p.grad is not None else None
                               for p in net.parameters()]

    loss_new, g_new = loss_and_grads()
    monkeypatch.setattr(net, "recursion", lambda *a: reference_recursion(net, *a))
    loss_ref, g_ref = loss_and_grads()
    torch.testing.assert_close(loss_new, loss_ref, atol=1e-6, rtol=1e-6)
    for a, b in zip(g_new, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_peaked_emissions_stay_finite():
    """Emissions floored at 1e-30 (a state that cannot explain y_t) give finite values and
    gradients equal to the loop's."""
    net, ids = make(torch.float32, 3, 10, 4, 4, 10)
    log_emit, c_stat = inputs(net, ids, torch.float32)
    with torch.no_grad():
        log_emit.mul_(200.0)  # e_t(k, y_t) underflows for all but one state
    new = net.recursion(ids, log_emit, c_stat)
    ref = reference_recursion(net, ids, log_emit, c_stat)
    torch.testing.assert_close(new, ref, atol=1e-4, rtol=1e-4)
    upstream = torch.randn(new.shape, generator=torch.Generator().manual_seed(0))
    for g_new, g_ref in zip(grads(net, new, [log_emit, c_stat], upstream),
                            grads(net, ref, [log_emit, c_stat], upstream)):
        assert torch.isfinite(g_new).all()
        torch.testing.assert_close(g_new, g_ref, atol=1e-4, rtol=1e-4)


def test_filter_runs_in_float32_under_bf16_autocast():
    """Under autocast the filter keeps the emissions' float32: the same log pi and gradients as
    without autocast, where a bf16 filter would round the node's state."""
    net, ids = make(torch.float32, 3, 10, 4, 4, 10)
    log_emit, c_stat = inputs(net, ids, torch.float32)
    upstream = torch.randn(3, 10, 4, generator=torch.Generator().manual_seed(1))
    plain = net.recursion(ids, log_emit, c_stat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = net.recursion(ids, log_emit, c_stat)
    assert cast.dtype == torch.float32
    torch.testing.assert_close(cast, plain, atol=0, rtol=0)
    for g_cast, g_plain in zip(grads(net, cast, [log_emit, c_stat], upstream),
                               grads(net, plain, [log_emit, c_stat], upstream)):
        torch.testing.assert_close(g_cast, g_plain, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[1] > 1], ids=str)
@pytest.mark.parametrize("c_features", [True, False], ids=["stats", "no stats"])
def test_noise_mode_filter_equals_the_loop_with_gradients(shape, dtype, c_features):
    """C as a noise embedding: the priors, emissions, candidates and path posteriors, and the
    gradients of a random combination of all four, against the former loop."""
    B, T, K, window, block = shape
    net, ids = make(dtype, B, T, K, window, block, node_c="noise", c_features=c_features)
    base, c_stat = net.context(ids)
    base = base.detach().requires_grad_()
    c_stat = None if c_stat is None else c_stat.detach().requires_grad_()

    def run(fn):
        mu_b = base.unsqueeze(2) - net.noise
        log_emit_b = log_distance_softmax(mu_b, net.codes, net.log_sigma)
        return fn(ids, mu_b, log_emit_b, c_stat)

    new = run(net.recursion_noise)
    ref = run(lambda *a: reference_recursion_noise(net, *a))
    gen = torch.Generator().manual_seed(T)
    upstream = [torch.randn(r.shape, dtype=dtype, generator=gen) for r in ref]
    for a, b in zip(new, ref):
        assert a.shape == b.shape and a.dtype == dtype
        torch.testing.assert_close(a, b, **TOL[dtype])
    leaves = [base] + ([c_stat] if c_stat is not None else []) + list(net.parameters())

    def grads_of(outs):
        total = sum((o * u).sum() for o, u in zip(outs, upstream))
        got = torch.autograd.grad(total, leaves, allow_unused=True)
        return [torch.zeros_like(w) if g is None else g for w, g in zip(leaves, got)]

    for g_new, g_ref in zip(grads_of(new), grads_of(ref)):
        torch.testing.assert_close(g_new, g_ref, **TOL[dtype])


def test_noise_mode_one_position():
    """A one-token input (a prompt of BOS alone): the priors and emissions of position 0, and no
    path posterior (the former loop could not stack an empty list)."""
    net, ids = make(torch.float32, 2, 1, 3, 2, 8, node_c="noise")
    out = net.outputs(ids)
    assert out.path_b.shape == (2, 0) and out.log_probs.shape == (2, 1, 11)
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2, 1))
