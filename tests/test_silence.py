"""Unit silencing (succu/analysis/silence.py): a silenced unit's gate is held at zero, so its
post-gate activation is zero while every other unit's is bitwise what it was; the loss moves;
silencing no unit changes nothing."""

import pytest
import torch

from succu.analysis.silence import set_names, silenced, silencing_losses, specialty_masks
from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.modules.gated_gpt import GatedGPTModule
from tests.tiny import tiny_module

C, H = 16, 2  # one layer: units are C residual channels, 4 C MLP units, H heads


def tiny() -> GatedGPT:
    torch.manual_seed(0)
    cfg = GatedGPTConfig(vocab_size=23, block_size=12, n_layer=1, n_head=H, n_embd=C, mask_seed=3)
    return GatedGPT(cfg).eval()


def mlp_activations(model: GatedGPT, ids: torch.Tensor, alpha) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the MLP's post-gate units as they enter its output projection). A (B,) alpha
    gates the activations themselves (one dial per row), so the projection's input is them."""
    seen = []
    hook = model.transformer.h[0].mlp.c_proj.register_forward_pre_hook(
        lambda _, args: seen.append(args[0].clone())
    )
    try:
        logits = model(ids, alpha=alpha)
    finally:
        hook.remove()
    return logits, seen[0]


def test_silencing_zeroes_exactly_the_chosen_units_and_changes_the_loss():
    model = tiny()
    ids = torch.randint(0, 23, (3, 12), generator=torch.Generator().manual_seed(1))
    alpha = torch.full((3,), 0.5)
    logits, units = mlp_activations(model, ids, alpha)
    assert units.shape[-1] == 4 * C and (units != 0).float().mean() > 0.9  # most units fire at 0.5
    chosen = torch.tensor([0, 5, 17, 40, 63])
    mask = torch.zeros(model.specialties().shape[0], dtype=torch.bool)
    mask[C + chosen] = True  # the MLP units of layer 0 come after the C residual channels
    with silenced(model, mask):
        quiet_logits, quiet = mlp_activations(model, ids, alpha)
    assert (units[..., chosen] != 0).all()  # they fired before
    others = torch.ones(4 * C, dtype=torch.bool).index_fill_(0, chosen, False)
    assert torch.equal(quiet[..., chosen], torch.zeros_like(quiet[..., chosen]))
    assert torch.equal(quiet[..., others], units[..., others])  # bitwise: the same numbers
    labels = ids.roll(-1, dims=1)
    ce = torch.nn.functional.cross_entropy
    assert ce(quiet_logits.flatten(0, 1), labels.flatten()) != ce(
        logits.flatten(0, 1), labels.flatten()
    )
    assert torch.equal(mlp_activations(model, ids, alpha)[0], logits)  # restored after the block


@pytest.mark.parametrize("alpha", [0.5, torch.full((3,), 0.25)])
def test_silencing_no_unit_changes_nothing(alpha):
    model = tiny()
    ids = torch.randint(0, 23, (3, 12), generator=torch.Generator().manual_seed(2))
    reference = model(ids, alpha=alpha)
    with silenced(model, torch.zeros(model.specialties().shape[0], dtype=torch.bool)):
        assert torch.equal(model(ids, alpha=alpha), reference)


def test_silencing_refuses_a_wrong_mask_and_an_ungated_model():
    model = tiny()
    with pytest.raises(ValueError, match="bool mask of shape"):
        model.silence(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool mask of shape"):
        model.silence(torch.zeros(model.specialties().shape[0]))
    plain = GatedGPT(
        GatedGPTConfig(vocab_size=23, block_size=12, n_layer=1, n_head=H, n_embd=C, gating=False)
    )
    with pytest.raises(ValueError, match="gated model"):
        plain.silence(torch.zeros(plain.specialties().shape[0], dtype=torch.bool))


def test_specialty_masks_and_losses():
    m = torch.tensor([0.95, 0.02, 0.5, 0.99, 0.05, 0.3, 0.91, 0.08])
    masks = specialty_masks(m, torch.Generator().manual_seed(0))
    high, random, low = set_names()
    assert list(masks) == [high, random, low] == ["m > 0.9", "random", "m < 0.1"]
    assert masks[high].tolist() == (m > 0.9).tolist() and masks[low].tolist() == (m < 0.1).tolist()
    assert int(masks[random].sum()) == int(masks[high].sum()) == 3
    again = specialty_masks(m, torch.Generator().manual_seed(0))
    assert torch.equal(again[random], masks[random])  # seeded: the same draw
    module = tiny_module(
        GatedGPTModule, vocab_size=23, block_size=12, n_layer=1, n_head=H, n_embd=C
    ).eval()
    ids = torch.randint(0, 23, (2, 13), generator=torch.Generator().manual_seed(3))
    batches = [
        {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "source": torch.tensor([k, k])}
        for k in (0, 1)
    ]
    everything = torch.ones(module.model.specialties().shape[0], dtype=torch.bool)
    out = silencing_losses(
        module, batches, 0.5, {"all": everything, "none of them": ~everything}, ["a", "b"]
    )
    assert out["none of them"] == out["none"] and out["all"] != out["none"]
    assert module.model.silenced is None
