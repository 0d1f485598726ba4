"""Character and BPE tokenizers, and the text surface rules (fold_ascii, abc_style)."""

from __future__ import annotations

import pytest

from succu.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    abc_style,
    fold_ascii,
    normalize_text,
    tokenizer_from_state,
)


@pytest.fixture(scope="module")
def shakespeare(shared_data) -> str:
    return (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def stories(shared_data) -> list[str]:
    text = (shared_data / "tinystories.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


# ---- surface rules ---------------------------------------------------------------------------
def test_fold_ascii_maps_quotes_dashes_and_ellipses():
    assert fold_ascii("\u201cHi,\u201d she said \u2018ok\u2019") == "\"Hi,\" she said 'ok'"
    assert fold_ascii("a\u2013b\u2014c\u2212d") == "a-b-c-d"
    assert fold_ascii("wait\u2026") == "wait..."
    plain = "Plain ASCII: it's \"fine\" - really..."
    assert fold_ascii(plain) == plain


def test_abc_style_lowercases_and_spaces_punctuation_keeping_lines():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak!\n"
    assert abc_style(text) == (
        "first citizen :\nbefore we proceed any further , hear me speak .\n\nall :\nspeak , speak !\n"
    )
    # ; and ? are spaced too; apostrophes and dashes stay inside words; tabs and runs collapse.
    assert abc_style("Is't so?\tAy;  we know't -- well") == "is't so ? ay ; we know't -- well"


def test_abc_style_is_idempotent_and_rules_apply_in_canonical_order():
    once = abc_style("Nay, Sir\u2026 What?\n")
    assert abc_style(once) == once
    # fold first, then abc: the folded ellipsis becomes three spaced dots whatever the listed order.
    for order in (["abc_style", "fold_ascii"], ["fold_ascii", "abc_style"]):
        assert normalize_text("Wait\u2026 NO\u2014", order) == "wait . . . no-"
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_text("x", ["lowercase"])


# ---- character tokenizer ------------------------------------------------------------------------
def test_char_round_trip_on_shakespeare_is_nanogpt_vocabulary(shakespeare):
    tok = CharTokenizer.from_texts([shakespeare])
    assert tok.vocab_size == 65 and tok.vocab == sorted(set(shakespeare))
    ids = tok.encode(shakespeare)
    assert len(ids) == len(shakespeare)
    assert tok.decode(ids) == shakespeare
    assert tok.eos_id is None


def test_char_round_trip_on_stories_with_eos_and_folding(stories):
    folded = [fold_ascii(s) for s in stories]
    tok = CharTokenizer.from_texts(folded, specials=["<EOS>"], normalizers=["fold_ascii"])
    assert tok.vocab[0] == "<EOS>" and tok.eos_id == 0
    assert all(ord(c) < 128 for c in tok.vocab[1:])
    for story in folded[:50]:
        assert tok.decode(tok.encode(story)) == story
    # encode applies the tokenizer's own rules, so a raw prompt with curly quotes works.
    assert tok.encode("\u201cHi\u201d") == tok.encode('"Hi"')


def test_char_unknown_character_is_a_clear_error():
    tok = CharTokenizer.from_texts(["abc"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("a\u4e16")  # beyond the lookup table


def test_char_state_round_trip():
    tok = CharTokenizer.from_texts(["hello , world"], specials=["<EOS>"], normalizers=["abc_style"])
    state = tok.state_dict()
    assert state["kind"] == "char" and state["normalizers"] == ["abc_style"]
    again = tokenizer_from_state(state)
    assert isinstance(again, CharTokenizer) and again == tok
    assert again.encode("Hello, World") == tok.encode("hello , world")


# ---- BPE -----------------------------------------------------------------------------------------
def test_bpe_trained_on_train_split_round_trips_val(shakespeare):
    cut = int(len(shakespeare) * 0.9)
    train, val = shakespeare[:cut], shakespeare[cut:]
    tok = BPETokenizer.train([train], vocab_size=400, specials=["<EOS>"])
    assert tok.vocab_size == 400 and tok.eos_id == 0
    ids = tok.encode(val)
    assert tok.decode(ids) == val  # byte-level: exact, even for text it never saw
    assert len(ids) < 0.6 * len(val)  # merges compress
    assert tok.decode(tok.encode("Zebra \u00e9t\u00e9 \u2603")) == "Zebra \u00e9t\u00e9 \u2603"


def test_bpe_state_round_trip_and_determinism():
    texts = ["the cat sat on the mat. the dog sat on the log."] * 20
    tok = BPETokenizer.train(texts, vocab_size=280, normalizers=["fold_ascii"])
    again = tokenizer_from_state(tok.state_dict())
    assert isinstance(again, BPETokenizer) and again == tok
    assert again.encode("the cat\u2014sat") == tok.encode("the cat-sat")
    assert BPETokenizer.train(texts, vocab_size=280, normalizers=["fold_ascii"]) == tok


def test_registry_keeps_existing_kinds():
    assert {"word", "char", "bpe"} <= set(Tokenizer.registry)
    word = WordTokenizer.from_words(["hello", "world"])
    assert tokenizer_from_state(word.state_dict()) == word
    assert word.encode("Hello, world!") == [word.stoi["hello"], word.unk_id, word.stoi["world"], word.unk_id]
