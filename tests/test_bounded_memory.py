"""Bounded memory: `succu.evaluate --text` streams its windows (read and tokenised in pieces, the
scores exactly those of scoring the whole text at once), endless or oversized inputs are refused in
one line, and the sweeps refuse grids and sample counts above their caps."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from succu import evaluate, sweep
from succu.generate import resolve_unknown
from succu.modules.base import IGNORE_INDEX
from succu.modules.gpt import GPTModule
from succu.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
from tests.refusals import refused
from tests.tiny import tiny_module, write_checkpoint

BLOCK = 16
# Every boundary the pieces could get wrong: CRLF and lone CR newlines, runs of spaces and blank
# lines, punctuation opening a line, curly quotes and dashes (fold_ascii), a Greek final sigma
# (lowercasing looks at its neighbours), digits, an emoji.
TEXT = ("First Citizen:\r\nBefore we proceed any further, hear me speak.\r\n\r\nAll:\rSpeak, speak.\n"
        "  \u201cYou are all resolved rather to die than to famish?\u201d \u2014 he said\u2026\n"
        ".and ,so on;   with   spaces\t\tand tabs  \n\n\nΟΔΟΣ ΣΟΦΟΣ σοφός. 42 cacti, 7 🌵 in the sand.\n")


def reference_score(module, text: str, stride: int, batch_size: int, drop: bool) -> evaluate.Score:
    """Scoring as evaluate did before it streamed: the whole text read, checked, encoded, and
    every window built as Python lists up front."""
    tok = module.tokenizer
    text, counts = resolve_unknown(tok, text, "text", drop)
    unk_chars = 0
    if counts and tok.unk_id is not None:
        unk_chars = sum((len(word) - len(tok.vocab[tok.unk_id])) * n for word, n in counts.items())
    ids = ([] if tok.bos_id is None else [tok.bos_id]) + tok.encode(text)
    rows, scored = [], 0
    for start in range(0, len(ids) - 1, stride):
        end = min(start + BLOCK, len(ids) - 1)
        labels = ids[start + 1:end + 1]
        skip = max(0, scored - start)
        rows.append((ids[start:end], [IGNORE_INDEX] * skip + labels[skip:]))
        scored = end
        if end == len(ids) - 1:
            break
    total = evaluate.Score(characters=unk_chars)
    pad = tok.pad_id or 0
    for k in range(0, len(rows), batch_size):
        chunk = rows[k:k + batch_size]
        width = max(len(x) for x, _ in chunk)
        batch = {"input_ids": torch.tensor([x + [pad] * (width - len(x)) for x, _ in chunk]),
                 "labels": torch.tensor([y + [IGNORE_INDEX] * (width - len(y)) for _, y in chunk])}
        total.add(evaluate.score_batch(module, batch, {}))
    return total


def shakespeare(shared_data: Path, chars: int) -> str:
    return (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:chars]


def tokenizers(shared_data: Path) -> dict[str, object]:
    train = shakespeare(shared_data, 20_000)
    chars = CharTokenizer.from_texts([train + TEXT.replace("\r", "\n").replace("🌵", "")],
                                     normalizers=["fold_ascii", "abc_style"])
    words = WordTokenizer.from_words(train.lower().split()[:400])
    bpe = BPETokenizer.train([train, TEXT], 300, ["<EOS>"], ["fold_ascii"])
    return {"char": chars, "word": words, "bpe": bpe}


@pytest.fixture(scope="module")
def modules(shared_data):
    out = {}
    for kind, tok in tokenizers(shared_data).items():
        torch.manual_seed(0)
        module = tiny_module(GPTModule, vocab_size=tok.vocab_size, block_size=BLOCK, n_layer=1, n_head=2,
                             n_embd=16).eval()
        module.tokenizer = tok
        out[kind] = module
    return out


def namespace(path: Path, stride: int | None = None, batch_size: int = 3, drop: bool = False,
              max_bytes: int = evaluate.MAX_BYTES) -> argparse.Namespace:
    return argparse.Namespace(text=str(path), stride=stride, drop_unknown=drop, batch_size=batch_size,
                              max_bytes=max_bytes)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
@pytest.mark.parametrize("stride", [BLOCK, 5, 1])
@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_streamed_scores_equal_whole_text_scores(modules, shared_data, tmp_path, monkeypatch, kind, stride, chunk):
    module = modules[kind]
    text = TEXT + shakespeare(shared_data, 3000) + TEXT
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    drop = kind == "char"  # the emoji is not in the character vocabulary
    expected = reference_score(module, path.read_text(encoding="utf-8"), stride, 3, drop)
    monkeypatch.setattr(evaluate, "CHUNK_BYTES", chunk)  # many pieces, cut in many places
    (got,) = evaluate.evaluate_text(namespace(path, stride, drop=drop), module, {}).values()
    assert (got.nats, got.tokens, got.characters) == (expected.nats, expected.tokens, expected.characters)
    assert got.tokens > 100


def test_pieces_join_to_the_text_as_read(shared_data, tmp_path):
    text = TEXT * 20 + shakespeare(shared_data, 50_000)
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    pieces = list(evaluate.text_pieces(str(path), evaluate.MAX_BYTES, chunk=1000))
    assert "".join(pieces) == path.read_text(encoding="utf-8")
    assert len(pieces) > 40 and max(len(p) for p in pieces) < 2000


def test_windows_are_read_as_they_are_reached():
    """stream_batches pulls a chunk only when a window needs it: an endless source gives its
    first batches at once, holding a few chunks."""
    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield np.arange(1000, dtype=np.int64) % 50

    batches = evaluate.stream_batches(endless(), 10**12, BLOCK, 4, 8, 0)
    for _ in range(500):  # 500 batches of 8 windows, 4 tokens apart: 16,000 tokens
        batch = next(batches)
    assert batch["input_ids"].shape == (8, BLOCK) and len(pulled) == 17


def test_the_batches_match_the_lists_they_replace():
    ids = list(range(3, 40))
    batches = list(evaluate.text_batches(ids, 8, 3, 4, 0))
    first = batches[0]
    assert first["input_ids"][1].tolist() == ids[3:11]
    assert first["labels"][1].tolist() == [IGNORE_INDEX] * 5 + ids[9:12]
    last = [t for t in batches[-1]["labels"][-1].tolist() if t != IGNORE_INDEX]
    assert last[-1] == ids[-1] and first["input_ids"].dtype == torch.int64


@pytest.fixture
def ckpt(modules, tmp_path) -> str:
    return write_checkpoint(tmp_path / "char.ckpt", modules["char"], modules["char"].tokenizer)


def test_endless_inputs_are_refused(ckpt, tmp_path, capsys):
    assert refused(capsys, evaluate.main, ["--ckpt", ckpt, "--text", "/dev/zero"]) == (
        "error: --text /dev/zero is not a regular file (a device, pipe or socket may never end); "
        "give a text file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert refused(capsys, evaluate.main, ["--ckpt", ckpt, "--text", str(fifo)]) == (
        f"error: --text {fifo} is not a regular file (a device, pipe or socket may never end); "
        "give a text file")


def test_a_file_above_max_bytes_is_refused(ckpt, tmp_path, capsys):
    path = tmp_path / "big.txt"
    path.write_text("speak, speak.\n" * 100, encoding="utf-8")
    assert refused(capsys, evaluate.main, ["--ckpt", ckpt, "--text", str(path), "--max_bytes", "1000"]) == (
        f"error: --text {path} has 1,400 bytes, more than --max_bytes 1,000 (give a larger "
        "--max_bytes to score it)")
    assert refused(capsys, evaluate.main, ["--ckpt", ckpt, "--text", str(path), "--max_bytes", "0"]) == (
        "error: --max_bytes must be a positive integer, got 0")
    scores = evaluate.main(["--ckpt", ckpt, "--text", str(path), "--max_bytes", "1400"])
    assert scores[str(path)]["tokens"] == 1599  # abc_style spaces out ", " and "." : 16 a line


def test_a_bad_byte_far_into_the_file_is_named_where_it_is(ckpt, tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.txt"
    raw = ("speak, speak.\n" * 200).encode() + "é".encode()[:1] + b" speak.\n"
    path.write_bytes(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        whole = f"byte {err.start}: {err.reason}"
    monkeypatch.setattr(evaluate, "CHUNK_BYTES", 100)
    assert refused(capsys, evaluate.main, ["--ckpt", ckpt, "--text", str(path)]) == (
        f"error: --text {path} is not UTF-8 text ({whole})")
    assert whole.startswith("byte 2800:")


# ---- sweeps: grids and sample counts capped before anything is built ----------------------------
@pytest.fixture
def gated(tmp_path):
    from succu.modules.gated_gpt import GatedGPTModule

    def make(k: int) -> str:
        tok = CharTokenizer(list("abcdefgh "))
        module = tiny_module(GatedGPTModule, vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1,
                             n_embd=8, n_sources=k, **({} if k == 2 else {"eval_alphas": [[1] + [0] * (k - 1)]}))
        return write_checkpoint(tmp_path / f"gated{k}.ckpt", module, tok, [f"c{i}" for i in range(k)])

    return make


@pytest.mark.parametrize("alphas, count", [("0:1:1e-9", "1,000,000,001"), ("0:1:0.00009", "11,112"),
                                           ("0:inf:0.1", "more than 10,000")])
def test_an_alpha_range_above_the_cap_is_refused(gated, tmp_path, capsys, alphas, count):
    line = refused(capsys, sweep.main, ["alpha", "--ckpt", gated(2), "--alphas", alphas, "--out", str(tmp_path / "out")])
    assert line == (f"error: --alphas {alphas} gives {count} dial positions; a sweep scores at most 10,000 "
                    "(a larger step or a shorter range)")


def test_a_simplex_step_above_the_cap_is_refused(gated, tmp_path, capsys, monkeypatch):
    import succu.checkpoint
    from datamodules.mixture import MixtureDataModule
    from datamodules.tokens import Tokens

    def data(ckpt, module, **kwargs):  # the checkpoint's corpora, never set up: refused before
        names = [f"c{i}" for i in range(module.model.n_sources)]
        return MixtureDataModule(corpora=names, tokens=Tokens(cache_dir=str(tmp_path)))

    monkeypatch.setattr(succu.checkpoint, "load_datamodule", data)
    out = ["--out", str(tmp_path / "out")]
    assert refused(capsys, sweep.main, ["alpha", "--ckpt", gated(3), "--step", "1e-9", *out]) == (
        "error: --step 1e-09 over 3 sources gives more than 10,000 dial positions; a sweep scores at "
        "most 10,000 (a larger step or a shorter range)")
    assert refused(capsys, sweep.main, ["alpha", "--ckpt", gated(4), "--step", "0.01", *out]) == (
        "error: --step 0.01 over 4 sources gives 176,851 dial positions; a sweep scores at most 10,000 "
        "(a larger step or a shorter range)")


def test_voice_samples_above_the_cap_are_refused(gated, tmp_path, capsys):
    assert refused(capsys, sweep.main, ["alpha", "--ckpt", gated(2), "--voice", "100000000"]) == (
        "error: --voice must be 0 (off) or a number of samples per position up to 10,000, got 100,000,000")


def test_tt_samples_and_seeds_above_the_cap_are_refused(tmp_path, capsys):
    ckpt = str(tmp_path / "never-read.ckpt")  # refused before the checkpoint is read
    assert refused(capsys, sweep.main, ["tt", "--ckpt", ckpt, "--samples", "100000000"]) == (
        "error: --samples must be at most 10,000 per probe prompt and seed, got 100,000,000")
    assert refused(capsys, sweep.main, ["tt", "--ckpt", ckpt, "--seeds", ",".join(map(str, range(101)))]) == (
        "error: --seeds wants 1 to 100 seeds, got 101")
    assert refused(capsys, sweep.main, ["tt", "--ckpt", ckpt, "--seeds", "0,x"]) == (
        "error: --seeds wants comma-separated integers like '0,1,2', got '0,x'")


@pytest.mark.parametrize("k, alphas, step", [
    (2, None, 0.1), (2, "0:1:0.25", 0.1), (2, "1:0:0.3", 0.1), (2, "0:0.3:0.1", 0.1), (2, "0,0.5,1", 0.1),
    (2, "0.2:0.2:0.1", 0.1), (3, None, 0.1), (3, None, 0.25), (4, None, 0.2), (3, "1,0,0;0,1,0;;", 0.1),
])
def test_grid_size_counts_what_dial_grid_builds(k, alphas, step):
    from succu.analysis.alpha_sweep import grid_size
    from succu.dial import dial_grid

    assert grid_size(k, alphas, step) == len(dial_grid(k, alphas, step))
