import math

import pytest
import torch

from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.models.gpt import GPT
from succu.nn.gates import apply_gate, route, sample_specialties, tent


def cfg(**kw) -> GatedGPTConfig:
    return GatedGPTConfig(**{**dict(vocab_size=31, block_size=16, n_layer=2, n_head=4, n_embd=16), **kw})


def test_gate_is_one_at_its_own_specialty_and_zero_at_the_far_end():
    m = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0])
    torch.testing.assert_close(torch.stack([tent(float(v), m)[i] for i, v in enumerate(m)]), torch.ones(5))
    # Specialists: 0 at the far end, 1 at their own; halfsies 0 at both ends.
    assert tent(1.0, m)[0] == 0 and tent(0.0, m)[0] == 1
    assert tent(0.0, m)[4] == 0 and tent(1.0, m)[4] == 1
    assert tent(0.0, m)[2] == 0 and tent(1.0, m)[2] == 0 and tent(0.5, m)[2] == 1
    # m = 0.2: span 0.8, so alpha = 0.6 is half way down: cos^2(pi/4) = 0.5; alpha = 1 is off.
    assert tent(0.6, m)[1].item() == pytest.approx(0.5, abs=1e-6)
    assert tent(1.0, m)[1] == 0


def test_narrowness_shrinks_the_firing_zone():
    m = torch.tensor([1.0])
    assert tent(0.5, m, 1.0).item() == pytest.approx(math.cos(math.pi / 4) ** 2)
    assert tent(0.5, m, 0.25).item() == 0.0
    assert tent(0.9, m, 0.25).item() == pytest.approx(math.cos(math.pi / 2 * 0.4) ** 2)


def test_per_row_alpha_gives_per_row_gates():
    m = torch.rand(7)
    rows = tent(torch.tensor([0.1, 0.8]), m)
    assert rows.shape == (2, 7)
    torch.testing.assert_close(rows[1], tent(0.8, m))


def test_specialties_follow_beta_half_half():
    m = sample_specialties(200_000, torch.Generator().manual_seed(0))
    assert 0 <= m.min() and m.max() <= 1
    # Beta(0.5, 0.5): mean 1/2, variance 1/8, P(m < 0.1) = (2/pi) asin(sqrt(0.1)).
    assert m.mean().item() == pytest.approx(0.5, abs=0.005)
    assert m.var().item() == pytest.approx(1 / 8, abs=0.002)
    assert (m < 0.1).float().mean().item() == pytest.approx(2 / math.pi * math.asin(math.sqrt(0.1)), abs=0.005)


def test_routed_gate_forward_uses_gate_backward_uses_route():
    x = torch.randn(3, 4, requires_grad=True)
    m = torch.tensor([0.0, 0.3, 0.6, 1.0])
    g, r = tent(0.4, m), route(1, m)
    y = apply_gate(x, g, r)
    torch.testing.assert_close(y, x * g)
    y.sum().backward()
    torch.testing.assert_close(x.grad, r.expand(3, 4))
    torch.testing.assert_close(route(0, m), 1 - m)


def test_an_m1_unit_gets_no_gradient_from_a_tinystories_batch():
    torch.manual_seed(0)
    model = GatedGPT(cfg(routing=True)).train()
    model.m_mlp[0, :] = 0.5
    model.m_mlp[0, 5] = 1.0  # unit 5 of layer 0's MLP: a pure Shakespeare specialist
    ids = torch.randint(0, 31, (2, 8))
    loss = model(ids, alpha=0.3, source=0).logsumexp(-1).mean()  # corpus 0 = TinyStories
    loss.backward()
    c_fc = model.transformer.h[0].mlp.c_fc.weight.grad
    assert torch.all(c_fc[5] == 0)
    assert c_fc[4].abs().sum() > 0
    model.zero_grad()
    model(ids, alpha=0.3, source=1).logsumexp(-1).mean().backward()  # Shakespeare does reach it
    assert model.transformer.h[0].mlp.c_fc.weight.grad[5].abs().sum() > 0


def test_routing_is_off_by_default_and_then_gradients_follow_the_gate():
    torch.manual_seed(5)
    model = GatedGPT(cfg()).train()
    assert not model.cfg.routing
    model.m_mlp[0, 5] = 1.0
    model(torch.randint(0, 31, (2, 8)), alpha=1.0, source=0).logsumexp(-1).mean().backward()
    # At alpha = 1 an m = 1 unit is fully on; unrouted, a TinyStories batch trains it (routed, it
    # would get nothing: see the test above).
    assert model.transformer.h[0].mlp.c_fc.weight.grad[5].abs().sum() > 0


def test_gating_off_equals_the_plain_gpt():
    torch.manual_seed(1)
    gated = GatedGPT(cfg(gating=False)).eval()
    plain = GPT(cfg())
    missing = plain.load_state_dict(gated.state_dict(), strict=False)
    assert set(missing.unexpected_keys) == {"m_embd", "m_mlp", "m_head"} and not missing.missing_keys
    ids = torch.randint(0, 31, (2, 10))
    torch.testing.assert_close(gated(ids, alpha=0.3), plain.eval()(ids), rtol=0, atol=0)
    on = GatedGPT(cfg()).eval()
    on.load_state_dict(gated.state_dict())
    torch.testing.assert_close(on(ids), plain(ids), rtol=0, atol=0)  # no alpha: ungated


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval_is_refused(alpha):
    model = GatedGPT(cfg()).eval()
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        model(torch.zeros(1, 3, dtype=torch.long), alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        model(torch.zeros(2, 3, dtype=torch.long), alpha=torch.tensor([0.5, alpha]))


def test_dial_changes_the_output_and_per_row_alpha_matches_single_rows():
    torch.manual_seed(2)
    model = GatedGPT(cfg()).eval()
    ids = torch.randint(0, 31, (2, 9))
    assert not torch.allclose(model(ids, alpha=0.0), model(ids, alpha=1.0))
    both = model(ids, alpha=torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(both[0], model(ids[:1], alpha=0.0)[0])
    torch.testing.assert_close(both[1], model(ids[1:], alpha=1.0)[0])


def test_gated_causality_and_kv_cache():
    torch.manual_seed(3)
    model = GatedGPT(cfg()).eval()
    ids = torch.randint(0, 31, (1, 12))
    full = model(ids, alpha=0.7)
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 31
    torch.testing.assert_close(model(changed, alpha=0.7)[:, :6], full[:, :6], rtol=0, atol=0)
    cache = model.new_kv_cache()
    steps = [model(ids[:, :5], alpha=0.7, kv_cache=cache)]
    steps += [model(ids[:, t : t + 1], alpha=0.7, kv_cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_masks_are_seeded_buffers_saved_with_the_weights():
    a, b = GatedGPT(cfg(mask_seed=5)), GatedGPT(cfg(mask_seed=5))
    assert torch.equal(a.m_mlp, b.m_mlp) and not torch.equal(a.m_mlp, GatedGPT(cfg(mask_seed=6)).m_mlp)
    assert {"m_embd", "m_mlp", "m_head"} <= set(a.state_dict())
    assert a.m_mlp.shape == (2, 64) and a.m_head.shape == (2, 4) and a.m_embd.shape == (16,)


@pytest.mark.parametrize("routing", [True, False])
def test_folded_gates_equal_activation_gates_forward_and_backward(routing):
    """One alpha for the batch folds gates into weights; per-row alphas gate activations.

    Given the same alpha and corpus on every row, both paths must agree in logits and in every
    parameter's (routed) gradient.
    """
    torch.manual_seed(4)
    model = GatedGPT(cfg(bias=True, routing=routing)).train()
    ids = torch.randint(0, 31, (3, 10))
    grads = []
    for alpha, source in ((0.35, 1), (torch.full((3,), 0.35), torch.ones(3, dtype=torch.long))):
        model.zero_grad()
        logits = model(ids, alpha=alpha, source=source)
        (logits.sin().sum()).backward()
        grads.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (folded, g1), (rowwise, g2) = grads
    torch.testing.assert_close(folded, rowwise, atol=1e-5, rtol=1e-5)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-5, rtol=1e-4, msg=name)
