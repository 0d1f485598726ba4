"""Sampling: temperature, top-k and top-p (nucleus) against a brute force, seeded draws, and
top_p = 1 drawing exactly what sampling without it draws."""

from __future__ import annotations

import math

import pytest
import torch

from succu.modules.base import LanguageModule
from succu.modules.gpt import GPTModule
from succu.sampling import check_sampling, nucleus, sampling_probs
from tests.tiny import tiny_module


def reference_probs(row: list[float], temperature: float, top_k: int | None,
                    top_p: float | None) -> tuple[set[int], list[float]]:
    """(kept tokens, distribution) of one row of logits in float64, by the definition: the k most
    likely tokens, renormalised; then the most likely tokens one by one until their mass reaches
    p (the one that crosses p kept), renormalised."""
    weights = [math.exp(x / temperature) for x in row]
    order = sorted(range(len(row)), key=lambda i: -row[i])
    kept = order[:top_k] if top_k is not None else order
    if top_p is not None and top_p < 1:  # p = 1 needs every token (rounding may reach 1 sooner)
        total = sum(weights[i] for i in kept)
        mass, nucleus_ = 0.0, []
        for i in kept:
            nucleus_.append(i)
            mass += weights[i] / total
            if mass >= top_p:
                break
        kept = nucleus_
    total = sum(weights[i] for i in kept)
    return set(kept), [weights[i] / total if i in kept else 0.0 for i in range(len(row))]


def old_pick(logits, temperature, top_k, generator):
    """`LanguageModule.pick` as it was before top_p: what top_p None and 1 must still draw."""
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


@pytest.mark.parametrize("top_k", [None, 1, 4, 17])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_the_kept_set_and_distribution_match_the_brute_force(temperature, top_k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 30, generator=g) * 3
    for top_p in (1e-6, 0.1, 0.5, 0.9, 0.99, 1.0):
        probs = sampling_probs(logits, temperature, top_k, top_p)
        for row, got in zip(logits.double().tolist(), probs.tolist()):
            kept, expected = reference_probs(row, temperature, top_k, top_p)
            assert {i for i, q in enumerate(got) if q > 0} == kept, (top_p, top_k)
            assert got == pytest.approx(expected, abs=1e-6)


def test_a_tiny_p_keeps_the_most_likely_token_and_p_one_keeps_all():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 5.5, -1.0, 0.0]])
    assert torch.isfinite(nucleus(logits, 1e-9)).tolist() == [[False, True, False, False],
                                                               [False, True, False, False]]
    assert torch.isfinite(nucleus(logits, 1.0)).all()
    # The token that crosses p is kept: softmax([0, 3, 1, 2]) is about 0.03, 0.64, 0.09, 0.24.
    assert torch.isfinite(nucleus(logits[:1], 0.65)).tolist() == [[False, True, False, True]]


def test_draws_stay_in_the_nucleus_and_are_seeded():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    draws = [int(LanguageModule.pick(logits, 1.0, None, False, torch.Generator().manual_seed(s),
                                     top_p=0.8)) for s in range(200)]
    assert set(draws) == {1, 3}  # 0.64 + 0.24 reaches 0.8
    again = [int(LanguageModule.pick(logits, 1.0, None, False, torch.Generator().manual_seed(s),
                                     top_p=0.8)) for s in range(200)]
    assert draws == again
    share = draws.count(1) / len(draws)
    assert abs(share - 0.6439 / (0.6439 + 0.2369)) < 0.1


@pytest.mark.parametrize("top_k", [None, 3])
def test_top_p_one_or_none_draws_what_sampling_drew_before(top_k):
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(1))
    for seed in range(5):
        before = old_pick(logits, 0.8, top_k, torch.Generator().manual_seed(seed))
        for top_p in (None, 1.0):
            now = LanguageModule.pick(logits, 0.8, top_k, False, torch.Generator().manual_seed(seed),
                                      top_p=top_p)
            assert torch.equal(now, before)


def test_generation_with_top_p_is_seeded_and_one_changes_nothing():
    torch.manual_seed(0)
    module = tiny_module(GPTModule, vocab_size=40, block_size=16, n_layer=1, n_head=2,
                         n_embd=16).eval()
    prompt = torch.tensor([[1, 5, 7], [2, 3, 4]])

    def run(**kw):
        return module.generate(prompt, 20, generator=torch.Generator().manual_seed(3), **kw)

    assert torch.equal(run(top_p=1.0), run())
    assert torch.equal(run(top_p=0.5, top_k=10), run(top_p=0.5, top_k=10))
    assert torch.equal(run(top_p=0.5, use_cache=False), run(top_p=0.5))
    assert torch.equal(run(top_p=1e-6), run(greedy=True))  # only the most likely token is left


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5, float("nan")])
def test_top_p_outside_zero_one_is_refused(top_p):
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        check_sampling(1.0, None, 5, top_p)
    module = tiny_module(GPTModule, vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
    with pytest.raises(ValueError, match="top_p"):
        module.generate(torch.tensor([[1]]), 3, top_p=top_p)


def test_complete_and_stream_take_top_p():
    from succu.tokenizers import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(["the cat sat on the mat.\n"])
    module = tiny_module(GPTModule, vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                         n_embd=16).eval()
    module.tokenizer = tok
    streamed = "".join(module.stream("the ", 12, top_p=0.7, generator=torch.Generator().manual_seed(2)))
    (completed,) = module.complete(["the "], 12, top_p=0.7, generator=torch.Generator().manual_seed(2))
    assert streamed == completed
    (greedy,) = module.complete(["the "], 12, greedy=True)
    assert module.complete(["the "], 12, top_p=1e-6, generator=torch.Generator())[0] == greedy
