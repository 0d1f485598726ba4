"""The token cache checks itself: a damaged or partial cache is rebuilt from the text with a note
naming it, and the fit reads the same ids as from a clean cache (never the damaged ones)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from datamodules.own_text import OwnTextDataModule
from datamodules.tokens import Tokens, cache_problem, read_token_array
from datamodules.windows import Windows


def text(n: int = 4000, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ("the", "cactus", "grows", "slowly", "in", "moonlight", "and", "sand", "quiet")
    return " ".join(rng.choice(words) for _ in range(n)) + ".\n"


def datamodule(path: Path, cache: Path, kind: str = "char") -> OwnTextDataModule:
    return OwnTextDataModule(data_path=str(path), name="desert",
                             windows=Windows(block_size=16, batch_size=4, val_windows=4),
                             tokens=Tokens(tokenizer_kind=kind, cache_dir=str(cache)))


def first_batches(dm: OwnTextDataModule, n: int = 3) -> list[np.ndarray]:
    batches = iter(dm.train_dataloader())
    return [next(batches)["input_ids"].numpy() for _ in range(n)]


def garble_ids(folder: Path) -> str:
    """Swap two different ids in the middle of train.bin: same size, every id in the vocabulary."""
    raw = np.fromfile(folder / "train.bin", dtype=json.loads((folder / "meta.json").read_text())["dtype"])
    i = len(raw) // 2
    j = next(k for k in range(i + 1, len(raw)) if raw[k] != raw[i])
    raw[i], raw[j] = raw[j], raw[i]
    raw.tofile(folder / "train.bin")
    return "train.bin does not match the checksum meta.json recorded"


def garble_ids_keeping_the_time(folder: Path) -> str:
    """The same, with the file's modification time set back (its change time moves on)."""
    path = folder / "train.bin"
    info = path.stat()
    message = garble_ids(folder)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    return message


def truncate(folder: Path) -> str:
    path = folder / "train.bin"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    return f"train.bin has {size // 2:,} bytes where meta.json counts"


def garble_meta(folder: Path) -> str:
    (folder / "meta.json").write_bytes(b"\x00{garbled" * 5)
    return "meta.json is not valid JSON"


def missing_val(folder: Path) -> str:
    (folder / "val.bin").unlink()
    return "val.bin is missing"


def missing_meta(folder: Path) -> str:
    (folder / "meta.json").unlink()
    return "meta.json is missing"


def written_before_checksums(folder: Path) -> str:
    meta = json.loads((folder / "meta.json").read_text())
    del meta["sha256"]
    (folder / "meta.json").write_text(json.dumps(meta))
    return "meta.json has no checksums (a cache written before they were recorded)"


DAMAGE = [garble_ids, garble_ids_keeping_the_time, truncate, garble_meta, missing_val, missing_meta, written_before_checksums]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "desert.txt"
    path.write_text(text(), encoding="utf-8")
    return path


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_a_damaged_cache_is_rebuilt_with_a_note(damage, corpus, tmp_path, capsys):
    clean = datamodule(corpus, tmp_path)
    clean.setup("fit")
    assert "note:" not in capsys.readouterr().err  # a new cache is written without a note
    folder = clean.token_dir("desert")
    clean_ids = [np.array(a) for a in (clean.train_arrays[0], clean.val_arrays[0])]
    clean_batches = first_batches(clean)
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["sha256"]) == {"train", "val", "test"} and meta["dtype"] == "uint16"
    assert cache_problem(folder, ("train", "val", "test")) is None

    expected = damage(folder)
    again = datamodule(corpus, tmp_path)
    again.setup("fit")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"note: token cache {folder}: {expected}")
    assert err[0].endswith("; rebuilding it from the text")
    assert np.array_equal(again.train_arrays[0], clean_ids[0])
    assert np.array_equal(again.val_arrays[0], clean_ids[1])
    assert all(np.array_equal(a, b) for a, b in zip(first_batches(again), clean_batches))
    assert cache_problem(folder, ("train", "val", "test")) is None

    third = datamodule(corpus, tmp_path)  # intact now: read without a note
    third.setup("fit")
    assert capsys.readouterr().err == ""


def test_an_intact_cache_is_read_without_tokenising_or_hashing(corpus, tmp_path, capsys, monkeypatch):
    import datamodules.tokens as tokens_mod

    datamodule(corpus, tmp_path, "bpe").setup("fit")
    monkeypatch.setattr(tokens_mod, "tokenize_documents", lambda *a, **k: pytest.fail("tokenised again"))
    # Written and hashed in one go: its stamps say so, and unchanged files are not hashed again.
    monkeypatch.setattr(tokens_mod, "file_sha256", lambda *a, **k: pytest.fail("hashed again"))
    dm = datamodule(corpus, tmp_path, "bpe")
    dm.prepare_data()
    dm.setup("fit")  # verified once per datamodule: prepare_data's check serves setup
    assert capsys.readouterr().err == ""
    assert dm.train_arrays[0].dtype == np.uint16


def test_a_cache_damaged_after_the_check_is_refused_naming_it(corpus, tmp_path):
    dm = datamodule(corpus, tmp_path)
    dm.setup("fit")
    folder = dm.token_dir("desert")
    truncate(folder)
    with pytest.raises(ValueError, match=rf"token cache {folder}: train.bin has .* bytes where meta.json "
                                         r"counts .*; delete the folder to rebuild it"):
        read_token_array(folder, "train")


@pytest.mark.parametrize("stamp", [None, b"\x00garbled"])
def test_a_cache_without_its_stamp_is_hashed_once(corpus, tmp_path, monkeypatch, stamp):
    import datamodules.tokens as tokens_mod

    dm = datamodule(corpus, tmp_path)
    dm.setup("fit")
    folder = dm.token_dir("desert")
    if stamp is None:
        (folder / tokens_mod.VERIFIED).unlink()  # e.g. a cache copied from elsewhere
    else:
        (folder / tokens_mod.VERIFIED).write_bytes(stamp)
    hashed = []
    real = tokens_mod.file_sha256
    monkeypatch.setattr(tokens_mod, "file_sha256", lambda path: hashed.append(path.name) or real(path))
    sides = ("train", "val", "test")
    assert cache_problem(folder, sides) is None and sorted(hashed) == ["test.bin", "train.bin", "val.bin"]
    assert cache_problem(folder, sides) is None and len(hashed) == 3  # stamped: not hashed again
