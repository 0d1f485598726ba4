"""succu.dial: the geometry every tool uses (centre, own ends, corners, grids, sweep and voice
positions) and the training draws, pinned to the values the tools used before the dial had one
home (same numpy generator calls in the same order)."""

from __future__ import annotations

import pytest
import torch

from callbacks.alpha_sampling import AlphaBetaSampling
from succu import dial
from succu.dial import DialSampler, DirichletDialSampler
from succu.models.gated_gpt import GatedGPTConfig
from succu.models.gpt import GPTConfig
from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule

THIRD = 1.0 / 3.0


def test_centre_and_own_ends():
    assert dial.centre(2) == 0.5 == dial.MIDDLE
    assert dial.centre(3) == (THIRD, THIRD, THIRD) and dial.centre(4) == (0.25,) * 4
    assert [dial.own_end(c, 2) for c in (0, 1)] == [0.0, 1.0]
    assert [dial.own_end(c, 3) for c in range(3)] == dial.corners(3) == [
        (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    # What the CLIs print and accept: "1,0,0" for a corner (evaluate, serve --compare).
    assert [dial.position_label(dial.own_end(c, k)) for k, c in ((2, 0), (2, 1), (3, 0), (3, 2))] == [
        "0", "1", "1,0,0", "0,0,1"]


def test_the_dial_module_asks_succu_dial_and_the_base_holds_no_dial():
    two = GatedGPTModule(GatedGPTConfig(vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    three = GatedGPTModule(GatedGPTConfig(vocab_size=11, n_layer=1, n_head=1, n_embd=8, n_sources=3),
                           eval_alphas=[[1, 0, 0], [0.5, 0.5, 0]])
    assert two.dial_kwargs({}) == {"alpha": 0.5} and three.dial_kwargs({}) == {"alpha": dial.centre(3)}
    assert two.dial_kwargs({"alpha": 0.2}) == {"alpha": 0.2}
    source = {"source": torch.tensor([1, 1])}
    assert two.eval_kwargs(source) == {"alpha": 1.0} and two.eval_kwargs({}) == {"alpha": 0.0}
    assert three.eval_kwargs(source) == {"alpha": (0.0, 1.0, 0.0)}
    assert two.eval_alphas == [0.0, 0.5, 1.0] and three.eval_alphas == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0)]
    assert three.positions_of(2) == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.0, 0.0, 1.0)]
    gpt = GPTModule(GPTConfig(vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    assert gpt.dial_kwargs({}) == {} and gpt.eval_kwargs(source) == {}
    with pytest.raises(ValueError, match="a two-source dial takes alpha as one number"):
        dial.checked_position([0.5, 0.5], 2)
    with pytest.raises(ValueError, match="got the number 0.5"):
        dial.checked_position(0.5, 3)


def test_generate_sweep_and_voice_positions():
    assert dial.sweep_positions(2) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert dial.sweep_positions(3) == [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
                                       (THIRD, THIRD, THIRD)]
    assert dial.voice_positions(2) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert dial.voice_positions(3) == [
        (1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 1.0, 0.0), (0.0, 0.5, 0.5),
        (0.0, 0.0, 1.0), (THIRD, THIRD, THIRD)]


def test_grids():
    assert [len(dial.simplex_grid(k, step)) for k, step in ((2, 0.25), (3, 0.5), (3, 0.1), (4, 0.25))] == [
        5, 6, 66, 35]
    assert dial.simplex_grid(3, 0.5)[:2] == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0)]
    assert all(abs(sum(p) - 1) < 1e-9 for p in dial.simplex_grid(3, 0.1))
    with pytest.raises(ValueError, match="--step 0.3"):
        dial.simplex_grid(3, 0.3)
    assert dial.parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert dial.parse_alphas("0,0.5") == [0.0, 0.5]
    assert dial.dial_grid(2, None, 0.1) == [round(0.1 * i, 10) for i in range(11)]
    assert dial.dial_grid(3, None, 0.5) == dial.simplex_grid(3, 0.5)
    assert dial.dial_grid(3, "1,0,0; 0.5,0.5,0", 0.1) == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0)]
    with pytest.raises(ValueError, match="this dial spans 3 sources"):
        dial.dial_grid(3, "0.5", 0.1)


def tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# Draws of the samplers as they were in succu.contracts and callbacks.alpha_sampling, pinned.
PINNED = [
    (DialSampler(per_sample=True), (7, 4),
     [0.9222596883773804, 0.10560277104377747, 4.1105620766757056e-05, 0.7436878085136414], [1, 0, 0, 1]),
    (DialSampler(a=0.2, b=0.2, per_sample=True), (11, 4),
     [0.001131093711592257, 0.9999997615814209, 0.00010278874106006697, 0.04493583366274834], [0, 1, 0, 0]),
    (DialSampler(distribution="uniform", per_sample=True), (3, 4),
     [0.08564916998147964, 0.23681050539016724, 0.8012744784355164, 0.5821620225906372], [0, 0, 1, 1]),
    (DialSampler(), (5, 3), [0.7647686004638672] * 3, [1, 1, 1]),
    (DirichletDialSampler(concentration=(0.5, 1.0, 2.0), per_sample=True), (3, 3),
     [[0.0030030710622668266, 0.5729344487190247, 0.42406246066093445],
      [0.17519131302833557, 0.09580784291028976, 0.7290008664131165],
      [0.11221188306808472, 0.19540107250213623, 0.692387044429779]], [2, 2, 2]),
    (AlphaBetaSampling(concentration=0.1, per_sample=True).sampler_for(3), (13, 3),
     [[0.3727683126926422, 1.1979447815668731e-11, 0.6272317171096802],
      [2.7681518986355513e-05, 1.0807338357565754e-10, 0.9999723434448242],
      [0.01072100643068552, 0.9892721176147461, 6.893506906635594e-06]], [2, 2, 1]),
]


@pytest.mark.parametrize("sampler,args,alpha,source", PINNED, ids=lambda x: repr(x)[:40])
def test_draws_are_bit_for_bit_the_pinned_ones(sampler, args, alpha, source):
    got_alpha, got_source = sampler.draw(*args)
    assert torch.equal(got_alpha, tensor(alpha)) and got_source.tolist() == source
    assert got_alpha.dtype == torch.float32 and got_source.dtype == torch.int64


def test_sampler_for_k_corpora():
    two = DialSampler(a=0.3, b=0.3, per_sample=True)
    assert dial.sampler_for(2, two, 0.7) is two
    assert dial.sampler_for(3, two) == DirichletDialSampler(concentration=(0.3, 0.3, 0.3), per_sample=True)
    assert dial.sampler_for(3, two, [0.1, 0.2, 0.3]).concentration == (0.1, 0.2, 0.3)
    uniform = DialSampler(distribution="uniform")
    assert dial.sampler_for(4, uniform, 0.2).concentration == (1.0,) * 4
    with pytest.raises(ValueError, match="concentration has 2 values for 3 corpora"):
        dial.sampler_for(3, two, [0.1, 0.2])
    with pytest.raises(ValueError, match="concentration must be positive numbers"):
        AlphaBetaSampling(concentration=[0.5, -1.0])
    batch = {"alpha": torch.tensor([0.25]), "source": torch.tensor([1, 1, 1])}
    assert dial.dial_batch_alpha(batch).tolist() == [0.25, 0.25, 0.25]
    per_row = {"alpha": torch.rand(3, 3), "source": torch.tensor([0, 1, 2])}
    assert dial.dial_batch_alpha(per_row) is per_row["alpha"]
