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
