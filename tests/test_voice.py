"""The voice meter: character n-gram naive Bayes that tells the corpora apart, and its reading of
a model's dial (share of sampled continuations judged to be each corpus)."""

import numpy as np
import pytest
import torch

from datamodules.mixture import MixtureDataModule
from datamodules.tokens import Tokens
from succu.analysis.voice import (
    VoiceMeter,
    continuations,
    corpus_texts,
    ngram_buckets,
    voice_shares,
    window_accuracy,
    windows,
)
from succu.modules.gated_gpt import GatedGPTModule
from succu.tokenizers import CharTokenizer
from tests.tiny import tiny_module


@pytest.fixture(scope="module")
def texts(cache):
    """Training and validation text of TinyStories and Shakespeare, as the mixture shapes them."""
    dm = MixtureDataModule(tokens=Tokens(cache_dir=cache))
    return corpus_texts(dm, "train"), corpus_texts(dm, "val")


def test_the_meter_tells_tinystories_from_shakespeare(texts):
    train, val = texts
    assert set(train) == {"tinystories", "shakespeare"}
    assert not any(val[n][:2000] in train[n] for n in val)  # validation is held out
    meter = VoiceMeter.fit(train)
    accuracy = window_accuracy(meter, val, length=200, count=256)
    assert accuracy["all"] >= 0.95 and min(accuracy["tinystories"], accuracy["shakespeare"]) >= 0.9, accuracy


def test_the_meter_is_deterministic():
    train = {"a": "the cat sat on the mat. " * 50, "b": "thou art a knave, sirrah ; " * 50}
    one, two = VoiceMeter.fit(train), VoiceMeter.fit(train)
    assert np.array_equal(one.log_probs, two.log_probs)
    probes = ["the cat sat", "thou knave", "sirrah , the mat"]
    assert np.array_equal(one.scores(probes), two.scores(probes))
    assert one.judge(probes).tolist()[:2] == [0, 1]
    assert np.array_equal(ngram_buckets("abcd"), ngram_buckets("abcd")) and len(ngram_buckets("abcd")) == 10
    assert windows("x" * 500, 200, 4) == ["x" * 200] * 4 and windows("abc", 200) == ["abc"]
    with pytest.raises(ValueError, match="at least two non-empty corpora"):
        VoiceMeter.fit({"a": "text"})


def test_voice_shares_of_a_tiny_model_sum_to_one():
    train = {"a": "the cat sat on the mat. " * 40, "b": "thou art a knave, sirrah ; " * 40}
    torch.manual_seed(0)
    module = tiny_module(GatedGPTModule, vocab_size=len(set("".join(train.values()))) + 1,
                         block_size=16, n_layer=1, n_head=2, n_embd=16)
    module.tokenizer = CharTokenizer.from_texts(train.values(), ["<EOS>"])
    assert module.tokenizer.vocab_size == module.model.cfg.vocab_size
    meter = VoiceMeter.fit(train)
    rows = voice_shares(module, meter, [0.0, 0.5, 1.0], n=6, length=40, seed=3)
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    for r in rows:
        assert r["a"] + r["b"] == pytest.approx(1.0) and 0 <= r["a"] <= 1
    again = voice_shares(module, meter, [0.0, 0.5, 1.0], n=6, length=40, seed=3)
    assert again == rows  # seeded
    samples = continuations(module, 0.5, 4, length=40, seed=3)
    assert len(samples) == 4 and all(0 < len(t) <= 40 for t in samples)


def brute_bucket(gram: str, bits: int) -> int:
    """The meter's bucket of one n-gram, in plain Python integers: the order, then FNV's prime
    times the hash plus each code point, wrapping at 2^64; Fibonacci hashing's top bits."""
    h = len(gram)
    for ch in gram:
        h = (h * 0x100000001B3 + ord(ch)) % 2**64
    return (h * 0x9E3779B97F4A7C15 % 2**64) >> (64 - bits)


def test_voice_score_is_the_log_likelihood_ratio_per_character_from_the_counts():
    from collections import Counter
    from math import log

    train = {"ts": "once upon a time a cat sat. ", "sh": "thou art, sirrah ; hark!"}
    bits, orders = 8, (1, 2, 3, 4)
    meter = VoiceMeter.fit(train, orders=orders, bits=bits)
    counts = {name: Counter(brute_bucket(t[i : i + n], bits) for n in orders for i in range(len(t) - n + 1))
              for name, t in train.items()}

    def log_likelihood(text: str, name: str) -> float:
        total = sum(counts[name].values())
        grams = [text[i : i + n] for n in orders for i in range(len(text) - n + 1)]
        return sum(log((counts[name][brute_bucket(g, bits)] + 1) / (total + 2**bits)) for g in grams)

    texts = ["hark, a cat!", "once upon", "thou", "x", ""]
    expected = [(log_likelihood(t, "sh") - log_likelihood(t, "ts")) / max(1, len(t)) for t in texts]
    np.testing.assert_allclose(meter.score(texts), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(meter.score(texts, toward=0, against=1), -np.array(expected), atol=1e-12)
    assert meter.score(["thou art"])[0] > 0 > meter.score(["a cat sat"])[0]  # the side it sounds like


def test_score_spread_tells_a_blend_from_a_switch():
    from succu.analysis.voice import score_spread

    blend = score_spread([-0.1, 0.0, 0.1, 0.05, -0.05], low=-1.0, high=1.0)
    switch = score_spread([-1.0, 1.0, -0.9, 0.9, 1.1, -1.1], low=-1.0, high=1.0)
    assert blend["middle"] == 1.0 and switch["middle"] == 0.0
    assert abs(switch["mean"]) < 0.1 and switch["sd"] > 0.9 and switch["q10"] < -0.9 < 0.9 < switch["q90"]
    assert blend["q50"] == 0.0 and score_spread([0.2], low=1.0, high=-1.0)["middle"] == 1.0  # either order


def test_switch_middle_is_the_middle_share_of_the_ends_pooled_as_often_as_the_weight_says():
    from succu.analysis.voice import score_spread, switch_middle

    low, high = [-1.0, -0.9, 0.1, -1.2], [1.0, 0.2, -0.1, 0.9]  # middle third: (-1/3, 1/3)
    # A switch that takes the corpus-1 end half the time: the two ends' scores pooled, brute force.
    pooled = score_spread(low + high, low=-1.0, high=1.0)["middle"]
    assert switch_middle(low, high, 0.5, low=-1.0, high=1.0) == pooled == 0.375
    assert switch_middle(low, high, 1.0, low=-1.0, high=1.0) == 0.5  # 0.2, -0.1: all corpus-1 scores
    assert switch_middle(low, high, 0.0, low=-1.0, high=1.0) == 0.25  # 0.1 alone
