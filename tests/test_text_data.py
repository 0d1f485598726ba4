"""Text datamodules on the shared corpora (../shared/data or $SUCCU_DATA_DIR), never the network."""

from __future__ import annotations

import dataclasses
import json

import lightning as L
import numpy as np
import pytest
import torch
import yaml

import datamodules.text as text_mod
import datamodules.tokens as tokens_mod
from datamodules.corpora import (
    CorpusError,
    Sources,
    Splits,
    corpus_spec,
    load_documents,
    resolve_source,
    split_corpus,
)
from datamodules.mixture import MixtureDataModule
from datamodules.shakespeare import SHAKESPEARE_URL, ShakespeareDataModule
from datamodules.tinystories import TinyStoriesDataModule
from datamodules.tokens import Tokens, token_dtype
from datamodules.windows import Windows
from succu.tokenizers import BPETokenizer, CharTokenizer, fold_ascii, normalize_text
from tests.paths import REPO
from tests.paths import SHARED_DATA as DATA_DIR
from tests.tiny import tiny_module


@pytest.fixture(autouse=True)
def offline(monkeypatch, shared_data):  # every test here reads the shared corpora
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SUCCU_DATA_DIR", str(shared_data))
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One cache for the module: most tests reuse what the first one tokenised."""
    return str(tmp_path_factory.mktemp("succu-cache"))


def shakespeare_text() -> str:
    return (DATA_DIR / "tinyshakespeare.txt").read_text(encoding="utf-8")


def stories() -> list[str]:
    text = (DATA_DIR / "tinystories.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


def ready(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm


def contains(array: np.ndarray, row: torch.Tensor) -> bool:
    """Whether `row` occurs as a contiguous window of `array` (byte search, aligned)."""
    hay, needle = np.asarray(array).tobytes(), row.numpy().astype(array.dtype).tobytes()
    pos = hay.find(needle)
    while pos != -1 and pos % array.dtype.itemsize:
        pos = hay.find(needle, pos + 1)
    return pos != -1


# ---- splits --------------------------------------------------------------------------------------
def test_shakespeare_split_is_nanogpts_contiguous_tail(cache):
    dm = ready(ShakespeareDataModule(tokens=Tokens(cache_dir=cache)))
    text = shakespeare_text()
    cut = int(len(text) * 0.9)
    assert dm.vocab_size == 65
    # nanoGPT's 90/10 by default; a test share (test_fraction) comes out of the training 90%.
    assert dm.tokenizer.decode(dm.train_arrays[0].tolist()) == text[:cut]
    assert dm.tokenizer.decode(dm.val_arrays[0].tolist()) == text[cut:]
    split = ready(ShakespeareDataModule(tokens=Tokens(cache_dir=cache), splits=Splits(test_fraction=0.05)))
    train_and_test = [split.train_arrays[0], split.load_arrays("test")[0]]
    assert "".join(split.tokenizer.decode(a.tolist()) for a in train_and_test) == text[:cut]
    assert split.tokenizer.decode(split.val_arrays[0].tolist()) == text[cut:]


def test_splits_are_deterministic(tmp_path, cache):
    a = ready(TinyStoriesDataModule(tokens=Tokens(cache_dir=cache)))
    b = ready(TinyStoriesDataModule(tokens=Tokens(cache_dir=str(tmp_path))))  # recomputed from scratch
    assert a.tokenizer == b.tokenizer
    for x, y in zip(a.train_arrays + a.val_arrays, b.train_arrays + b.val_arrays):
        assert np.array_equal(x, y)


def test_no_story_crosses_train_and_val():
    spec = corpus_spec("tinystories")
    docs = load_documents(spec, resolve_source(spec))
    parts = split_corpus(spec, docs, 0.1, 0, [])
    train = {t.strip() for t in parts["train"]["text"]}
    val = {t.strip() for t in parts["val"]["text"]}
    everything = stories()
    assert not train & val
    assert train | val == set(everything)
    assert 0.06 < len(parts["val"]) / len(everything) < 0.14
    # Another salt gives another split, again clean.
    other = split_corpus(spec, docs, 0.1, 1, [])
    other_val = {t.strip() for t in other["val"]["text"]}
    assert other_val != val and not other_val & {t.strip() for t in other["train"]["text"]}


def test_stories_end_with_eos_and_fold_to_ascii(cache):
    dm = ready(TinyStoriesDataModule(tokens=Tokens(cache_dir=cache)))
    tok = dm.tokenizer
    assert tok.vocab[0] == "<EOS>" and all(ord(c) < 128 for c in tok.vocab[1:])
    ids = dm.val_arrays[0].tolist()
    assert ids[-1] == tok.eos_id
    decoded = tok.decode(ids).split("<EOS>")[:-1]
    folded = {fold_ascii(s) for s in stories()}
    assert len(decoded) > 100 and all(s in folded for s in decoded)


# ---- normalisation switches --------------------------------------------------------------------
def test_abc_style_switch_on_shakespeare(cache):
    dm = ready(ShakespeareDataModule(abc_style=True, tokens=Tokens(cache_dir=cache)))
    assert not any(c.isupper() for c in dm.tokenizer.vocab)
    head = dm.tokenizer.decode(dm.train_arrays[0][:80].tolist())
    assert head.startswith("first citizen :\nbefore we proceed any further , hear me speak .\n")
    assert dm.tokenizer.normalizers == ["fold_ascii", "abc_style"]
    assert dm.tokenizer.encode("ROMEO:") == dm.tokenizer.encode("romeo :")


def test_fold_ascii_switch_off_keeps_curly_quotes(cache):
    dm = TinyStoriesDataModule(fold_ascii=False, tokens=Tokens(cache_dir=cache))
    assert {"\u201c", "\u201d", "\u2014"} <= set(dm.tokenizer.vocab)
    assert dm.tokenizer.normalizers == []


# ---- cache ---------------------------------------------------------------------------------------
def test_vocab_size_works_before_setup_and_caches_the_tokenizer(tmp_path):
    dm = ShakespeareDataModule(tokens=Tokens(cache_dir=str(tmp_path)))
    assert dm.vocab_size == 65  # what the CLI links into the model at instantiation
    assert dm.tokenizer_path().is_file()
    assert not (tmp_path / "tokens").exists()  # token ids are written by prepare_data only


def test_second_load_does_no_tokenising(tmp_path, monkeypatch):
    first = ready(TinyStoriesDataModule(tokens=Tokens(cache_dir=str(tmp_path))))

    def forbidden(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(tokens_mod, "tokenize_documents", forbidden)
    monkeypatch.setattr(text_mod, "load_documents", forbidden)
    second = ready(TinyStoriesDataModule(tokens=Tokens(cache_dir=str(tmp_path))))
    assert second.tokenizer == first.tokenizer
    assert np.array_equal(second.train_arrays[0], first.train_arrays[0])
    meta = json.loads((second.token_dir("tinystories") / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["train"] == len(first.train_arrays[0])


def test_cache_is_invalidated_when_the_tokenizer_changes(tmp_path, monkeypatch):
    char = ready(ShakespeareDataModule(tokens=Tokens(cache_dir=str(tmp_path))))
    calls = []
    real = tokens_mod.tokenize_documents
    monkeypatch.setattr(tokens_mod, "tokenize_documents", lambda *a, **k: calls.append(1) or real(*a, **k))
    # Another tokenizer object with a different vocabulary: new key, tokenised again.
    swapped = ShakespeareDataModule(tokens=Tokens(cache_dir=str(tmp_path)))
    swapped._tokenizer = CharTokenizer([*char.tokenizer.vocab, "<EOS>"])
    assert swapped.token_dir("shakespeare") != char.token_dir("shakespeare")
    ready(swapped)
    assert calls == [1, 1]  # train and val (no test split by default: nanoGPT's 90/10)
    # BPE, and BPE of another size, get their own caches too.
    bpe = ready(ShakespeareDataModule(tokens=Tokens(tokenizer_kind="bpe", bpe_vocab_size=300, cache_dir=str(tmp_path))))
    assert isinstance(bpe.tokenizer, BPETokenizer) and bpe.vocab_size == 300
    assert len(calls) == 4
    assert len(bpe.train_arrays[0]) < 0.8 * len(char.train_arrays[0])  # 44 merges already help
    other = ShakespeareDataModule(tokens=Tokens(tokenizer_kind="bpe", bpe_vocab_size=280, cache_dir=str(tmp_path)))
    assert other.token_dir("shakespeare") != bpe.token_dir("shakespeare")


def test_token_dtype():
    assert token_dtype(65) == np.uint16 and token_dtype(2**16) == np.uint16
    assert token_dtype(2**16 + 1) == np.uint32


# ---- training windows ------------------------------------------------------------------------
def first_batches(dm, n=3):
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(n)]


def test_windows_reproducible_from_seed_and_different_across_ranks(cache, monkeypatch):
    a = first_batches(ready(ShakespeareDataModule(windows=Windows(seed=7), tokens=Tokens(cache_dir=cache))))
    b = first_batches(ready(ShakespeareDataModule(windows=Windows(seed=7), tokens=Tokens(cache_dir=cache))))
    for x, y in zip(a, b):
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    assert not torch.equal(a[0]["input_ids"], a[1]["input_ids"])
    other_seed = first_batches(ready(ShakespeareDataModule(windows=Windows(seed=8), tokens=Tokens(cache_dir=cache))), 1)
    assert not torch.equal(a[0]["input_ids"], other_seed[0]["input_ids"])
    monkeypatch.setenv("RANK", "1")
    rank1 = first_batches(ready(ShakespeareDataModule(windows=Windows(seed=7), tokens=Tokens(cache_dir=cache))), 1)
    assert not torch.equal(a[0]["input_ids"], rank1[0]["input_ids"])


def test_windows_are_shifted_slices_of_the_training_split(cache):
    dm = ready(ShakespeareDataModule(windows=Windows(block_size=32, batch_size=5), tokens=Tokens(cache_dir=cache)))
    batch = first_batches(dm, 1)[0]
    assert batch["input_ids"].shape == (5, 32) and batch["input_ids"].dtype == torch.long
    assert set(batch) == {"input_ids", "labels"}
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    for x, y in zip(batch["input_ids"], batch["labels"]):
        assert contains(dm.train_arrays[0], torch.cat([x, y[-1:]]))


def test_global_seed_is_the_default_window_seed(cache, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    implicit = first_batches(ready(ShakespeareDataModule(tokens=Tokens(cache_dir=cache))), 1)[0]
    explicit = first_batches(ready(ShakespeareDataModule(windows=Windows(seed=7), tokens=Tokens(cache_dir=cache))), 1)[0]
    assert torch.equal(implicit["input_ids"], explicit["input_ids"])


class Recorder(L.Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append(batch["input_ids"].clone())


def test_resume_continues_the_window_stream_exactly(cache, tmp_path):
    from succu.modules.gpt import GPTModule

    stream = ready(ShakespeareDataModule(windows=Windows(seed=3, batches_per_epoch=100), tokens=Tokens(cache_dir=cache)))
    reference = [b["input_ids"] for b in first_batches(stream, 7)]
    dm = ShakespeareDataModule(windows=Windows(seed=3, batches_per_epoch=4), tokens=Tokens(cache_dir=cache))
    model = tiny_module(GPTModule, vocab_size=dm.vocab_size, block_size=64, n_layer=1, n_head=1, n_embd=16)
    recorder = Recorder()
    trainer = L.Trainer(
        max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=[recorder], default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    # 6 batches over two epochs of 4: the second epoch continues the stream, nothing repeats.
    assert all(torch.equal(x, y) for x, y in zip(recorder.batches, reference[:6]))
    state = dm.state_dict()
    assert state["train_batches"] == 6  # what the model consumed, not what the loader prefetched
    resumed = ShakespeareDataModule(windows=Windows(seed=3, batches_per_epoch=4), tokens=Tokens(cache_dir=cache))
    resumed.load_state_dict(state)
    assert torch.equal(first_batches(ready(resumed), 1)[0]["input_ids"], reference[6])


def test_validation_windows_are_fixed_and_evenly_spaced(cache):
    dm = ready(ShakespeareDataModule(windows=Windows(val_windows=50, val_batch_size=16), tokens=Tokens(cache_dir=cache)))
    batches = list(dm.val_dataloader())
    again = list(ready(ShakespeareDataModule(windows=Windows(val_windows=50, val_batch_size=16, seed=99), tokens=Tokens(cache_dir=cache))).val_dataloader())
    assert [len(b["input_ids"]) for b in batches] == [16, 16, 16, 2]
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(batches, again))
    val = dm.val_arrays[0]
    first, last = batches[0]["input_ids"][0], batches[-1]["labels"][-1]
    assert torch.equal(first, torch.from_numpy(val[:64].astype(np.int64)))
    assert torch.equal(last, torch.from_numpy(val[-64:].astype(np.int64)))


# ---- mixture ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixture(tmp_path_factory, cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("SUCCU_DATA_DIR", str(DATA_DIR))
        return ready(MixtureDataModule(windows=Windows(seed=5, val_windows=24, batch_size=16), tokens=Tokens(cache_dir=cache)))


def test_mixture_labels_rows_with_their_source(mixture):
    assert mixture.corpora == ["tinystories", "shakespeare"]
    batches = first_batches(mixture, 20)
    sources = torch.cat([b["source"] for b in batches])
    assert sources.dtype == torch.long and set(sources.tolist()) == {0, 1}
    assert 0.35 < sources.float().mean().item() < 0.65  # uniform over two corpora
    for b in batches[:2]:
        for row, label, src in zip(b["input_ids"], b["labels"], b["source"].tolist()):
            assert contains(mixture.train_arrays[src], torch.cat([row, label[-1:]]))


def test_mixture_shares_one_tokenizer_and_applies_abc_to_shakespeare(mixture):
    tok = mixture.tokenizer
    assert tok.eos_id == 0 and "&" in tok.vocab and "A" in tok.vocab  # both corpora's characters
    assert tok.normalizers == ["fold_ascii"]  # abc applies to shakespeare only
    shakespeare = tok.decode(mixture.train_arrays[1][:40].tolist())
    assert shakespeare.startswith("first citizen :\nbefore we proceed")


def test_mixture_validation_batches_are_per_corpus(mixture):
    batches = list(mixture.val_dataloader())
    per_source = [b["source"].unique().tolist() for b in batches]
    assert all(len(s) == 1 for s in per_source)
    assert sum(len(b["source"]) for b in batches if b["source"][0] == 0) == 24
    assert sum(len(b["source"]) for b in batches if b["source"][0] == 1) == 24


# ---- errors and the hub path ---------------------------------------------------------------------
def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(CorpusError, match="data_path") as err:
        _ = ShakespeareDataModule(data_path=str(tmp_path / "nope.txt"), tokens=Tokens(cache_dir=str(tmp_path))).vocab_size
    assert "\n" not in str(err.value) and isinstance(err.value, FileNotFoundError)


def test_offline_hub_without_a_local_file_names_the_setting(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub touched offline"))
    monkeypatch.setenv("SUCCU_DATA_DIR", str(tmp_path))  # an empty folder: no local copy
    for dm, setting, says in (  # local by default: the error offers the hub, which is opt-in
        (TinyStoriesDataModule(tokens=Tokens(cache_dir=str(tmp_path))), "data_path", "or source=hub to download"),
        (TinyStoriesDataModule(tokens=Tokens(cache_dir=str(tmp_path)), sources=Sources(source="hub")), "data_path", "is offline"),
        (MixtureDataModule(tokens=Tokens(cache_dir=str(tmp_path)), sources=Sources(source="auto")), "data_paths.tinystories", "is offline"),
    ):
        with pytest.raises(CorpusError, match=says) as err:
            _ = dm.vocab_size
        message = str(err.value)
        assert setting in message and "roneneldan/TinyStories" in message and "\n" not in message


def test_unknown_names_are_rejected(tmp_path):
    # A name that is not registered is the user's own text: without a file for it, one line that
    # lists every registered corpus.
    dm = MixtureDataModule(corpora=["tinystories", "klingon"], tokens=Tokens(cache_dir=str(tmp_path)))
    with pytest.raises(CorpusError, match=r"klingon: no text for corpus 'klingon': .* not a registered "
                                          r"corpus \(kjv, shakespeare, tinystories\); set sources.data_paths.klingon"):
        _ = dm.vocab_size
    with pytest.raises(ValueError, match="tokenizer_kind"):
        ShakespeareDataModule(tokens=Tokens(tokenizer_kind="sentencepiece"))
    with pytest.raises(ValueError, match="source"):
        resolve_source(corpus_spec("shakespeare"), source="web")


def test_unknown_corpus_lists_every_registered_one_imported_or_not(monkeypatch):
    import sys

    from datamodules.corpora import CORPORA

    monkeypatch.delitem(CORPORA, "kjv", raising=False)  # as in a process that never imported it
    monkeypatch.delitem(sys.modules, "datamodules.kjv", raising=False)
    with pytest.raises(ValueError, match=r"unknown corpus 'klingon'; known corpora: \['kjv', 'shakespeare', 'tinystories'\]"):
        corpus_spec("klingon")
    with pytest.raises(ValueError, match="unknown corpus 'klingon.opera'"):
        corpus_spec("klingon.opera")


@pytest.mark.parametrize("body, cause", [
    ("import succu_no_such_dependency\n", "ModuleNotFoundError: No module named 'succu_no_such_dependency'"),
    ("from succu import no_such_name\n", "ImportError: cannot import name 'no_such_name'"),
])
def test_corpus_module_that_fails_to_import_says_so(tmp_path, monkeypatch, body, cause):
    """A corpus module that exists but cannot be imported is an import failure, not an unknown name."""
    import sys

    import datamodules

    (tmp_path / "brokencorpus.py").write_text(body)
    monkeypatch.setattr(datamodules, "__path__", [*datamodules.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "datamodules.brokencorpus", raising=False)
    with pytest.raises(ImportError, match="importing datamodules.brokencorpus failed") as err:
        corpus_spec("brokencorpus")
    assert cause in str(err.value) and "\n" not in str(err.value)
    sys.modules.pop("datamodules.brokencorpus", None)


def test_hub_path_loads_through_datasets_when_online(tmp_path, monkeypatch):
    """With the network allowed and no local file, the corpus comes from `load_dataset`."""
    import datasets

    calls = []
    tiny = stories()[:300]

    def fake_load(path, *args, **kwargs):
        calls.append((path, kwargs))
        if path == "text":
            return datasets.Dataset.from_dict({"text": [shakespeare_text()[:50000]]})
        return datasets.Dataset.from_dict({"text": tiny, "other": [0] * len(tiny)})

    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("SUCCU_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dm = ready(MixtureDataModule(tokens=Tokens(cache_dir=str(tmp_path)), sources=Sources(source="hub", hub_splits={"tinystories": "train[:300]"})))
    assert calls[0] == ("roneneldan/TinyStories", {"split": "train[:300]"})
    assert calls[1] == ("text", {"data_files": SHAKESPEARE_URL, "sample_by": "document", "split": "train"})
    tok = dm.tokenizer
    expected = normalize_text(shakespeare_text()[: int(50000 * (1.0 - 0.1 - 0.05))], ["fold_ascii", "abc_style"])
    assert tok.decode(dm.train_arrays[1].tolist()) == expected  # the test share follows it
    splits = (dm.train_arrays[0], dm.val_arrays[0], dm.load_arrays("test")[0])
    n_stories = sum(int((a == tok.eos_id).sum()) for a in splits)
    assert n_stories == 300


# ---- settings groups -------------------------------------------------------------------------------
def test_settings_groups_round_trip_through_the_cli(tmp_path, cache, capsys):
    """A group given in part in YAML keeps its other defaults (Shakespeare's own: no test share);
    --print_config shows every group whole, and the printed data section builds the same datamodule."""
    from succu import fit

    config = str(REPO / "configs" / "gpt_shakespeare_char.yaml")
    overlay = tmp_path / "data.yaml"
    overlay.write_text(yaml.safe_dump({"data": {"init_args": {
        "windows": {"block_size": 32}, "splits": {"val_fraction": 0.2}, "tokens": {"cache_dir": cache}}}}))
    with pytest.raises(SystemExit) as exc:
        fit.main(["--config", config, "--config", str(overlay), "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    groups = printed["data"]["init_args"]
    assert groups["windows"] == dataclasses.asdict(Windows(block_size=32, batch_size=12, val_windows=256))
    assert groups["splits"] == dataclasses.asdict(Splits(val_fraction=0.2, test_fraction=0.0))
    assert groups["tokens"] == dataclasses.asdict(Tokens(cache_dir=cache))
    assert groups["sources"] == dataclasses.asdict(Sources())
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump({"data": printed["data"]}))
    built = [fit.SuccuCLI(fit.LanguageModule, L.LightningDataModule, subclass_mode_model=True,
                          subclass_mode_data=True, auto_configure_optimizers=False, run=False,
                          args=args + ["--trainer.logger", "false"]).datamodule
             for args in (["--config", config, "--config", str(overlay)],
                          ["--config", config, "--config", str(tmp_path / "printed.yaml")])]
    for dm in built:
        assert dm.windows == Windows(block_size=32) and dm.splits == Splits(val_fraction=0.2, test_fraction=0.0)
        assert dm.block_size == 32 and dm.hparams["splits"] == groups["splits"]


def test_flat_settings_go_into_their_groups_and_locations_are_dropped():
    """What `load_datamodule` builds from flat recorded settings and the user's own locations."""
    from succu.checkpoint import datamodule_arguments, init_settings

    names, groups = init_settings(ShakespeareDataModule)
    fields = [f.name for cls in groups.values() for f in dataclasses.fields(cls)]
    assert set(groups) == {"windows", "tokens", "splits", "sources"} and len(fields) == len(set(fields))
    recorded = {"_class_path": "datamodules.shakespeare.ShakespeareDataModule", "abc_style": True,
                "block_size": 32, "test_fraction": 0.1, "cache_dir": "/planted", "data_path": "/planted",
                "splits": {"split_seed": 3, "val_fraction": 0.2}, "sources": {"data_dir": "/planted", "source": "hub"}}
    args = datamodule_arguments(ShakespeareDataModule, recorded, {"cache_dir": "/mine", "data_dir": None})
    assert args == {"abc_style": True, "windows": {"block_size": 32}, "sources": {},
                    "splits": {"split_seed": 3, "val_fraction": 0.2, "test_fraction": 0.1},
                    "tokens": {"cache_dir": "/mine"}}
