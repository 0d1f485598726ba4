"""Your own text as a corpus: files, folders, separators and three tokenizers; a GPT trained on it
through the CLI; evaluate / fit validate / fit test that score it and refuse any other text."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.corpora import CorpusError, Sources
from datamodules.mixture import MixtureDataModule
from datamodules.own_text import OwnTextDataModule, default_name
from datamodules.shakespeare import ShakespeareDataModule
from datamodules.text import TextDataModule
from datamodules.tokens import Tokens
from datamodules.windows import Windows
from succu import evaluate, fit
from succu.tokenizers import split_words
from tests.refusals import refused
from tests.test_trust import rewrite

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
TINY = ["--model.init_args.model.n_layer", "1", "--model.init_args.model.n_embd", "16",
        "--model.init_args.model.n_head", "2", "--data.init_args.windows.block_size", "16",
        "--data.init_args.windows.val_windows", "8", "--data.init_args.windows.batch_size", "4"]
GPT_TEXT = ["--config", str(CONFIGS / "gpt_text.yaml"), *QUIET, *TINY]
WORDS = ("Bäume", "rauschen", "über", "dem", "Fluß", "и", "снег", "падает", "αλλά", "θάλασσα",
         "café", "señor", "🌵", "wächst", "leise", "im", "Mondlicht")


def verses(n: int, seed: int = 0) -> list[str]:
    """n short verses of mixed scripts (German, Russian, Greek, accents, an emoji)."""
    rng = random.Random(seed)
    return ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + rng.choice(".,!?")
                      for _ in range(rng.randint(2, 4))) for _ in range(n)]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def sha256(*paths: Path) -> tuple[int, str]:
    raw = b"".join(p.read_bytes() for p in paths)
    return len(raw), hashlib.sha256(raw).hexdigest()


def ready(dm):
    dm.setup("fit")
    return dm


def sides(dm) -> list[np.ndarray]:
    """The corpus's train, test and val ids, in the order running text is cut."""
    return [dm.train_arrays[0], dm.load_arrays("test")[0], dm.val_arrays[0]]


def tokens(kind: str, tmp_path: Path) -> Tokens:
    return Tokens(tokenizer_kind=kind, bpe_vocab_size=300, cache_dir=str(tmp_path / "cache"))


# ---- corpora from files, folders and separators ---------------------------------------------------
@pytest.mark.parametrize("kind", ["char", "bpe", "word"])
def test_a_file_is_running_text_split_85_5_10(tmp_path, kind):
    path = write(tmp_path / "meine lieder.txt", "\n\n".join(verses(150)) + "\n")
    text = path.read_text(encoding="utf-8")
    dm = ready(OwnTextDataModule(data_path=str(path), tokens=tokens(kind, tmp_path), windows=Windows(block_size=8)))
    assert dm.corpora == ["meine_lieder"] and default_name(str(path)) == "meine_lieder"
    n = len(text)
    parts = [text[:int(n * 0.85)], text[int(n * 0.85):int(n * 0.9)], text[int(n * 0.9):]]
    tok = dm.tokenizer
    for ids, part in zip(sides(dm), parts):
        if kind == "word":  # words of the training split; lowercased, signs apart, others <UNK>
            assert [tok.vocab[i] for i in ids] == [w if w in tok.stoi else "<UNK>" for w in split_words(part)]
        else:
            assert tok.decode(ids.tolist()) == part
    size, digest = sha256(path)
    assert [t.record() for t in dm.corpus_texts()] == [
        {"name": "meine_lieder", "size": size, "sha256": digest, "files": 1}]
    assert dm.corpus_texts()[0].origin == str(path.resolve())


def test_several_files_and_a_folder_are_read_in_order(tmp_path):
    a = write(tmp_path / "poems" / "a.txt", "\n".join(verses(60, 1)) + "\n")
    b = write(tmp_path / "poems" / "b.txt", "\n".join(verses(60, 2)))  # no final newline
    c = write(tmp_path / "poems" / "later" / "c.txt", "\n".join(verses(60, 3)) + "\n")
    write(tmp_path / "poems" / ".hidden" / "d.txt", "never read")
    write(tmp_path / "poems" / "notes.md", "never read")
    joined = a.read_text() + b.read_text() + "\n" + c.read_text()
    folder = ready(OwnTextDataModule(data_path=str(tmp_path / "poems"), tokens=tokens("char", tmp_path)))
    listed = ready(OwnTextDataModule(data_path=[str(a), str(tmp_path / "poems" / "b.txt"), str(tmp_path / "poems" / "later")],
                                     name="poems", tokens=tokens("char", tmp_path)))
    for dm in (folder, listed):
        assert dm.corpora == ["poems"]
        assert "".join(dm.tokenizer.decode(ids.tolist()) for ids in sides(dm)) == joined
        size, digest = sha256(a, b, c)
        assert dm.corpus_texts()[0].record() == {"name": "poems", "size": size, "sha256": digest, "files": 3}
    assert folder.corpus_texts()[0].origin == f"{(tmp_path / 'poems').resolve()} (3 files)"
    assert folder.token_dir("poems") == listed.token_dir("poems")  # the same files: one cache


@pytest.mark.parametrize("kind", ["char", "word"])
def test_a_separator_cuts_documents_and_every_file_ends_one(tmp_path, kind):
    docs = verses(120, 4)
    write(tmp_path / "songs" / "1.txt", "\n<song>\n".join(docs[:70]))
    write(tmp_path / "songs" / "2.txt", "\n<song>\n".join(docs[70:]))
    dm = ready(OwnTextDataModule(data_path=str(tmp_path / "songs"), separator="<song>",
                                 tokens=tokens(kind, tmp_path), windows=Windows(block_size=8)))
    tok = dm.tokenizer
    # Each song whole on one side (a hash of its text decides), ended by <EOS>: 70 + 50 songs.
    songs = [piece for ids in sides(dm) for piece in np.split(ids, np.flatnonzero(ids == tok.eos_id) + 1)[:-1]]
    assert len(songs) == 120 and all(song[-1] == tok.eos_id for song in songs)
    if kind == "char":
        assert sorted(tok.decode(song[:-1].tolist()) for song in songs) == sorted(docs)
    else:  # every word of every song, signs apart
        assert sum(len(song) - 1 for song in songs) == sum(len(split_words(d)) for d in docs)
    assert all(len(ids) > 8 for ids in sides(dm))


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_an_empty_separator_makes_each_file_a_document(tmp_path, kind):
    for k in range(12):
        write(tmp_path / "letters" / f"{k:02d}.txt", "\n".join(verses(6, 10 + k)))
    def make(separator):
        return OwnTextDataModule(data_path=str(tmp_path / "letters"), separator=separator, tokens=tokens(kind, tmp_path),
                                 splits={"val_fraction": 0.3, "test_fraction": 0.0}, windows=Windows(block_size=8))
    dm = ready(make(""))
    eos = [int((ids == dm.tokenizer.eos_id).sum()) for ids in (dm.train_arrays[0], dm.val_arrays[0])]
    assert sum(eos) == 12 and min(eos) > 0
    assert dm.token_dir("letters") != make(None).token_dir("letters")  # the rule is in the cache key


def test_the_obvious_attempt_makes_a_corpus_of_that_name(tmp_path, shared_data):
    """TextDataModule and the mixture take any name given a file; registered ones keep theirs."""
    mine = write(tmp_path / "mine.txt", "\n".join(verses(80, 5)))
    one = ready(TextDataModule(corpora=["mytext"], sources=Sources(data_paths={"mytext": str(mine)}),
                               tokens=tokens("char", tmp_path)))
    assert one.splits.test_fraction == 0.05 and len(one.load_arrays("test")[0]) > 0
    mixed = MixtureDataModule(corpora=["mytext", "shakespeare"], sources=Sources(data_paths={"mytext": str(mine)}),
                              tokens=tokens("char", tmp_path))
    assert [t.name for t in mixed.corpus_texts()] == ["mytext", "shakespeare"]
    assert mixed.corpus_texts()[1].origin == str((shared_data / "tinyshakespeare.txt").resolve())
    with pytest.raises(ValueError, match="separators: shakespeare is a registered corpus"):
        ShakespeareDataModule(sources=Sources(separators={"shakespeare": "\n\n"}))


@pytest.mark.parametrize("make, message", [
    (lambda d: OwnTextDataModule(), "OwnTextDataModule needs your text: data_path"),
    (lambda d: OwnTextDataModule(data_path=str(d / "x.txt"), name="../up"), "corpus name '../up': use letters"),
    (lambda d: OwnTextDataModule(data_path=str(d / "nope.txt")).vocab_size,
     "nope: data_path .*nope.txt does not exist; set data_path to a UTF-8 text file, a folder"),
    (lambda d: OwnTextDataModule(data_path=str(d)).vocab_size, "is a folder without .txt files"),
    (lambda d: OwnTextDataModule(data_path=str(write(d / "e.txt", " \n"))).vocab_size, r"e: .*e\.txt is empty"),
    (lambda d: OwnTextDataModule(data_path=str(write(d / "s.txt", "ab" * 20))).setup(), "s train split has 34 tokens, too few for "
     r"block_size=64 \(text: .*s.txt\): a longer text or a smaller block_size"),
])
def test_bad_own_text_is_one_line_naming_the_file(tmp_path, monkeypatch, make, message):
    monkeypatch.setenv("SUCCU_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises((ValueError, CorpusError), match=message) as err:
        make(tmp_path)
    assert "\n" not in str(err.value) and "shakespeare" not in str(err.value)


def test_a_default_name_is_the_files_stem_made_safe(tmp_path):
    assert default_name(str(tmp_path / "My Poems (2).txt")) == "My_Poems__2_"
    (tmp_path / "essays.v2").mkdir()
    assert default_name([str(tmp_path / "essays.v2"), "b.txt"]) == "essays.v2"


# ---- trained through the CLI, evaluated, tested, refused --------------------------------------------

@pytest.fixture(scope="module")
def lieder(tmp_path_factory, cache) -> dict:
    """A char GPT fitted for a few steps on a non-ASCII text under the name `lieder`."""
    root = tmp_path_factory.mktemp("lieder")
    path = write(root / "texts" / "meine_lieder.txt", "\n\n".join(verses(120, 7)) + "\n")
    cli = fit.main([*GPT_TEXT, "--data.init_args.data_path", str(path), "--data.init_args.name", "lieder",
                    "--data.init_args.tokens.cache_dir", cache, "--trainer.max_steps", "4",
                    "--trainer.val_check_interval", "4", "--trainer.default_root_dir", str(root / "runs")])
    return {"path": path, "ckpt": cli.trainer.checkpoint_callback.best_model_path,
            "val": float(cli.trainer.callback_metrics["val/loss"]), "vocab": cli.datamodule.vocab_size}


def data_args(path: Path, cache: str) -> list[str]:
    return ["--data.init_args.data_path", str(path), "--data.init_args.name", "lieder",
            "--data.init_args.tokens.cache_dir", cache]


def reading(path: Path) -> str:
    size, digest = sha256(path)
    return f"lieder: reading {path.resolve()} ({size:,} bytes, sha256 {digest[:12]}), the text the checkpoint trained on"


@pytest.mark.usefixtures("isolated")
def test_the_checkpoint_records_the_texts_fingerprint_and_no_path(lieder):
    ckpt = torch.load(lieder["ckpt"], weights_only=True)
    size, digest = sha256(lieder["path"])
    assert ckpt["succu"]["corpora"] == [{"name": "lieder", "size": size, "sha256": digest, "files": 1}]
    assert ckpt["datamodule_hyper_parameters"]["name"] == "lieder"
    assert "\u00fc" in ckpt["succu"]["tokenizer"]["vocab"] and "🌵" in ckpt["succu"]["tokenizer"]["vocab"]


@pytest.mark.usefixtures("isolated")
def test_evaluate_names_the_file_and_gives_the_fits_val_loss(lieder, capsys):
    scores = evaluate.main(["--ckpt", lieder["ckpt"], "--corpus", "--split", "val",
                            "--data_path", f"lieder={lieder['path']}"])
    assert scores["lieder (val)"]["loss"] == pytest.approx(lieder["val"], rel=1e-6)
    assert reading(lieder["path"]) in capsys.readouterr().err


@pytest.mark.usefixtures("isolated")
def test_evaluate_finds_the_text_at_the_default_location_or_refuses_another(lieder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUCCU_DATA_DIR", str(tmp_path / "data"))
    line = refused(capsys, evaluate.main, ["--ckpt", lieder["ckpt"], "--corpus"])
    assert line.startswith(f"error: lieder: no text for corpus 'lieder': no path given for it, no lieder.txt "
                           f"or folder lieder in {tmp_path / 'data'}")
    assert line.endswith("name the text it trained on with --data_path lieder=PATH")
    other = write(tmp_path / "data" / "lieder.txt", "\n\n".join(verses(120, 8)) + "\n")
    size, digest = sha256(other)
    trained, trained_digest = sha256(lieder["path"])
    line = refused(capsys, evaluate.main, ["--ckpt", lieder["ckpt"], "--corpus"])
    assert line == (f"error: lieder: {other.resolve()} ({size:,} bytes, sha256 {digest[:12]}) is not the text "
                    f"{lieder['ckpt']} trained on ({trained:,} bytes, sha256 {trained_digest[:12]}); name the "
                    "text it trained on with --data_path lieder=PATH")
    named = refused(capsys, evaluate.main, ["--ckpt", lieder["ckpt"], "--corpus", "--data_path", f"lieder={other}"])
    assert named == line
    shutil.copy(lieder["path"], other)
    test = evaluate.main(["--ckpt", lieder["ckpt"], "--corpus"])
    assert reading(other) in capsys.readouterr().err and test["lieder (test)"]["tokens"] > 0


@pytest.mark.usefixtures("isolated")
def test_fit_test_names_the_file_and_scores_what_evaluate_scores(lieder, cache, capsys):
    cli = fit.main(["test", *GPT_TEXT, *data_args(lieder["path"], cache), "--ckpt_path", lieder["ckpt"]])
    assert reading(lieder["path"]) in capsys.readouterr().err
    scores = evaluate.main(["--ckpt", lieder["ckpt"], "--corpus", "--data_path", f"lieder={lieder['path']}"])
    assert scores["lieder (test)"]["loss"] == pytest.approx(float(cli.trainer.callback_metrics["test/loss"]), rel=1e-6)


@pytest.mark.usefixtures("isolated")
def test_fit_validate_refuses_another_text_before_scoring(lieder, cache, tmp_path, capsys):
    other = write(tmp_path / "other.txt", lieder["path"].read_text(encoding="utf-8").replace("Fluß", "Fluss"))
    line = refused(capsys, fit.main, ["validate", *GPT_TEXT, *data_args(other, cache), "--ckpt_path", lieder["ckpt"]])
    assert line.startswith(f"error: lieder: {other.resolve()} (") and " is not the text " in line
    assert line.endswith("give the text it trained on with --data.init_args.data_path PATH")
    line = refused(capsys, fit.main, ["validate", *GPT_TEXT, "--data.init_args.data_path", str(lieder["path"]),
                              "--data.init_args.tokens.cache_dir", cache, "--ckpt_path", lieder["ckpt"]])
    assert line.startswith(f"error: {lieder['ckpt']} did not train on a corpus named meine_lieder (it trained on lieder)")


@pytest.mark.usefixtures("isolated")
def test_a_checkpoint_without_fingerprints_evaluates_with_a_note(lieder, tmp_path, capsys):
    old = rewrite(lieder["ckpt"], tmp_path / "old.ckpt", lambda c: c["succu"].pop("corpora"))
    argv = ["--corpus", "--split", "val", "--data_path", f"lieder={lieder['path']}"]
    scores = evaluate.main(["--ckpt", old, *argv])
    err = capsys.readouterr().err
    assert f"note: {old} records no fingerprint of its text (written before checkpoints had them)" in err
    assert f"lieder: reading {lieder['path'].resolve()} (" in err
    assert scores == evaluate.main(["--ckpt", lieder["ckpt"], *argv])


@pytest.mark.usefixtures("isolated")
def test_bad_data_path_flags_are_one_line(lieder, capsys):
    ckpt = lieder["ckpt"]
    assert "give NAME=PATH" in refused(capsys, evaluate.main, ["--ckpt", ckpt, "--corpus", "--data_path", "x.txt"])
    assert "data_paths names corpora not in use: ['songs']" in refused(capsys,
        evaluate.main, ["--ckpt", ckpt, "--corpus", "--data_path", "songs=x.txt"])
    assert "--data_path names a corpus's text for --corpus" in refused(capsys,
        evaluate.main, ["--ckpt", ckpt, "--text", str(lieder["path"]), "--data_path", "lieder=x.txt"])


@pytest.mark.usefixtures("isolated")
def test_data_path_is_refused_for_data_without_text_corpora(tmp_path, capsys):
    cli = fit.main(["--config", str(CONFIGS / "succulm.yaml"), *QUIET, "--model.init_args.model.profile", "tiny",
                    "--data.init_args.batch_size", "8", "--trainer.fast_dev_run", "1"])
    ckpt = str(tmp_path / "world.ckpt")
    cli.trainer.save_checkpoint(ckpt)
    line = refused(capsys, evaluate.main, ["--ckpt", ckpt, "--corpus", "--data_path", "world=x.txt"])
    assert line == (f"error: --data_path names a corpus's text, but the data of {ckpt} (SuccuPairsDataModule) "
                    "reads no text corpora")


@pytest.mark.usefixtures("isolated")
def test_the_shakespeare_config_pointed_at_a_file_keeps_to_that_file(lieder, cache, capsys):
    """Posing as Shakespeare: the default location holds tinyshakespeare.txt, which is refused."""
    cli = fit.main(["--config", str(CONFIGS / "gpt_shakespeare_char.yaml"), *QUIET, *TINY,
                    "--data.init_args.data_path", str(lieder["path"]), "--data.init_args.tokens.cache_dir", cache,
                    "--trainer.fast_dev_run", "1"])
    assert cli.datamodule.corpus_texts()[0].origin == str(lieder["path"].resolve())
    ckpt = str(Path("posing.ckpt").resolve())
    cli.trainer.save_checkpoint(ckpt)
    line = refused(capsys, evaluate.main, ["--ckpt", ckpt, "--corpus", "--split", "val"])
    assert "tinyshakespeare.txt (" in line and "is not the text" in line
    assert line.endswith("name the text it trained on with --data_path shakespeare=PATH")
