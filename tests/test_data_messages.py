"""One line for the data side's bad input: a non-positive batch size in every datamodule, a
tokenizer state whose kind does not match its fields (or a cached one that cannot be read: rebuilt),
an unknown corpus listing every registered one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.corpora import CorpusError, corpus_spec
from datamodules.mixture import MixtureDataModule
from datamodules.own_text import OwnTextDataModule
from datamodules.tokens import Tokens
from datamodules.windows import Windows
from succu import fit
from succu.tokenizers import CharTokenizer, tokenizer_from_state
from tests.refusals import refused

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REGISTERED = "kjv, shakespeare, tinystories"


@pytest.mark.parametrize("config, key, value, message", [
    ("gpt_shakespeare_char.yaml", "windows.batch_size", "0", "windows.batch_size must be a positive integer, got 0"),
    ("gpt_text.yaml", "windows.batch_size", "-3", "windows.batch_size must be a positive integer, got -3"),
    ("abcgpt_char.yaml", "windows.val_batch_size", "0",
     "windows.val_batch_size must be a positive integer, got 0"),
    ("gpt_tinystories_char.yaml", "windows.val_windows", "0", "windows.val_windows must be a positive integer, got 0"),
    ("succulm.yaml", "batch_size", "0", "batch_size must be a positive integer, got 0"),
    ("succulm.yaml", "batch_size", "-1", "batch_size must be a positive integer, got -1"),
])
def test_a_batch_size_below_one_is_one_line(capsys, tmp_path, monkeypatch, shared_data, config, key, value, message):
    monkeypatch.chdir(tmp_path)
    text = ["--data.init_args.data_path", str(shared_data / "kjv.txt")] if config == "gpt_text.yaml" else []
    line = refused(capsys, fit.main, ["--config", str(CONFIGS / config), *text, "--trainer.max_steps", "1",
                                      "--trainer.logger", "false", f"--data.init_args.{key}", value])
    assert message in line and not line.startswith("error: Traceback")


def test_windows_refuse_counts_below_one(tmp_path):
    for field in ("batch_size", "val_windows", "val_batch_size", "batches_per_epoch"):
        with pytest.raises(ValueError, match=f"^windows.{field} must be a positive integer, got 0$"):
            MixtureDataModule(windows=Windows(**{field: 0}), tokens=Tokens(cache_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"^windows.num_workers must be zero or a positive integer, got -1$"):
        OwnTextDataModule(data_path=str(tmp_path), windows={"num_workers": -1})


def test_a_tokenizer_state_of_another_kind_names_what_it_lacks():
    state = {**CharTokenizer(list("ab")).state_dict(), "kind": "bpe"}
    with pytest.raises(ValueError) as err:
        tokenizer_from_state(state)
    assert str(err.value) == ("the saved 'bpe' tokenizer has no 'model' field (its fields: ['kind', "
                              "'normalizers', 'vocab']); the tokenizer state is damaged or its kind was changed")
    with pytest.raises(ValueError, match=r"^the saved 'bpe' tokenizer cannot be rebuilt from its state: "):
        tokenizer_from_state({"kind": "bpe", "model": "{not json"})
    with pytest.raises(ValueError, match=r"^unknown tokenizer kind 'model'; known kinds: \['bpe', 'char', 'word'\]$"):
        tokenizer_from_state({"kind": "model"})


@pytest.mark.parametrize("damage, problem", [
    (b"\x00garbled", "not valid JSON ("),
    (json.dumps({"kind": "bpe", "vocab": ["a"]}).encode(), "the saved 'bpe' tokenizer has no 'model' field"),
])
def test_an_unreadable_cached_tokenizer_is_rebuilt_with_a_note(tmp_path, capsys, damage, problem):
    path = tmp_path / "poem.txt"
    path.write_text("the sand is warm and the cactus is slow.\n" * 200, encoding="utf-8")

    def make():
        return OwnTextDataModule(data_path=str(path), windows={"block_size": 8}, tokens={"cache_dir": str(tmp_path)})

    clean = make().tokenizer
    cached = make().tokenizer_path()
    cached.write_bytes(damage)
    again = make().tokenizer
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"note: tokenizer cache {cached}: {problem}")
    assert err[0].endswith("; rebuilding it from the text")
    assert again == clean and tokenizer_from_state(json.loads(cached.read_text())) == clean


def test_an_unknown_corpus_lists_every_registered_one(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"^unknown corpus 'klingon'; known corpora: \['kjv', 'shakespeare', "
                                         r"'tinystories'\]$"):
        corpus_spec("klingon")
    monkeypatch.setenv("SUCCU_DATA_DIR", str(tmp_path))
    dm = MixtureDataModule(corpora=["klingon", "shakespeare"], tokens=Tokens(cache_dir=str(tmp_path)))
    with pytest.raises(CorpusError, match=rf"it is not a registered corpus \({REGISTERED}\)"):
        dm.setup("fit")
