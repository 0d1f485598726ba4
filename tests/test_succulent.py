"""The succulent world and SuccuPairsDataModule: determinism, the reference's format, the splits."""

from __future__ import annotations

import json
import re

import pytest
import torch

from datamodules.succulent import SuccuPairsDataModule, embedding_matrix, encode_pair
from datamodules.succulent_files import EMBEDDINGS_FILE, NORMAL_FILE, QA_FILE
from datamodules.succulent_tables import PROBE_PROMPTS_TRAINING, PROBE_PROMPTS_UNSEEN
from datamodules.succulent_world import generate_world
from succu.embeddings import read_embeddings_json, write_embeddings_json
from succu.tokenizers import split_words


@pytest.fixture(scope="module")
def dm() -> SuccuPairsDataModule:
    return SuccuPairsDataModule(seed=42, batch_size=16)


@pytest.fixture(scope="module")
def world():
    return generate_world(42)


def _text(pairs) -> str:
    return "\n".join(f"{s1} {s2}" for s1, s2 in pairs)


def test_same_seed_same_world_other_seed_differs():
    a, b, c = generate_world(7), generate_world(7), generate_world(8)
    assert a.normal_pairs == b.normal_pairs and a.train_qa == b.train_qa
    assert a.heldout_qa == b.heldout_qa
    assert a.normal_pairs != c.normal_pairs and a.heldout_qa != c.heldout_qa
    d1, d2 = SuccuPairsDataModule(seed=7), SuccuPairsDataModule(seed=7)
    assert d1.train_pairs == d2.train_pairs and d1.val_pairs == d2.val_pairs
    assert d1.tokenizer == d2.tokenizer
    first = [next(iter(d.train_dataloader())) for d in (d1, d2)]
    assert torch.equal(first[0]["input_ids"], first[1]["input_ids"])


def test_sizes_and_lengths(dm):
    assert 600 <= len(dm.normal_pairs) <= 1200
    assert 200 <= len(dm.train_qa) <= 400
    assert 40 <= len(dm.heldout_qa) <= 80
    assert 140 <= dm.vocab_size <= 180
    longest = max(len(encode_pair(dm.tokenizer, *p)) for p in dm.train_pairs + dm.val_pairs)
    assert longest <= 30 and dm.block_size == longest - 1
    assert len(dm.val_normal) == round(0.1 * len(dm.normal_pairs))
    assert not set(dm.val_normal) & set(dm.train_normal)


def test_tokenizer_round_trip_and_pair_format(dm):
    tok = dm.tokenizer
    for s1, s2 in dm.train_pairs[:50] + dm.val_pairs[:50]:
        for s in (s1, s2):
            assert tok.decode(tok.encode(s)) == s
        ids = encode_pair(tok, s1, s2)
        assert ids == [tok.bos_id, *tok.encode(s1), *tok.encode(s2), tok.eos_id]
        assert tok.unk_id not in ids
    batch = next(iter(dm.val_dataloader()))
    x, y = batch["input_ids"], batch["labels"]
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape
    for k, (s1, s2) in enumerate(dm.val_pairs[: x.shape[0]]):
        ids = encode_pair(tok, s1, s2)
        n = len(ids) - 1
        assert x[k, :n].tolist() == ids[:-1] and y[k, :n].tolist() == ids[1:]
        assert (x[k, n:] == tok.pad_id).all() and (y[k, n:] == -100).all()
        assert (y[k, :n] != -100).all()
    # dynamic padding: the batch is as wide as its longest row, no wider
    assert x.shape[1] == max(len(encode_pair(tok, *p)) - 1 for p in dm.val_pairs[: x.shape[0]])


def test_hidden_word_never_seen(dm):
    sophia = dm.tokenizer.token_id("sophia")
    assert sophia is not None and dm.hidden_token_ids == [sophia]
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for batch in loader:
            assert not (batch["input_ids"] == sophia).any()
            assert not (batch["labels"] == sophia).any()


def test_training_questions_have_one_answer(dm):
    answers: dict[str, set[str]] = {}
    for q, a in dm.train_qa:
        answers.setdefault(q, set()).add(a)
    assert all(len(a) == 1 for a in answers.values())
    normal_s1 = {s1 for s1, _ in dm.normal_pairs}
    assert not normal_s1 & set(answers)
    assert dict(dm.train_qa)["is ruby a boy?"] == "yes, ruby is a boy."
    assert dict(dm.train_qa)["is winy a boy?"] == "no, winy is a girl."


@pytest.mark.parametrize("qa_phrasings", ["base", "extended"])
@pytest.mark.parametrize("seed", [0, 42, 1234])
def test_heldout_questions_are_unseen_recombinations(seed, qa_phrasings):
    world = generate_world(seed, qa_phrasings=qa_phrasings)
    train_text = _text(world.train_qa + world.normal_pairs)
    train_items = world.train_qa_items
    for item in world.heldout_qa_items:
        assert item.question not in train_text
        same_template = [
            i
            for i in train_items
            if (i.relation, i.template) == (item.relation, item.template)
            and i.entity != item.entity
        ]
        same_fact = [
            i
            for i in train_items
            if (i.relation, i.entity) == (item.relation, item.entity)
            and i.template != item.template
        ]
        assert same_template and same_fact, item
        assert any(i.statement == item.statement and item.statement in i.answer for i in same_fact)
        assert item.answer in (item.statement, "yes, " + item.statement, "no, " + item.statement)
        if qa_phrasings == "extended" and "|" in item.template:
            # a yes/no cell: the same value is asked in training in the other phrasing
            probe = item.template.rsplit("|", 1)[1]
            assert any(i.template.endswith("|" + probe) for i in same_fact), item
    assert "does ruby know three winters?" in dict(world.heldout_qa)


def test_probe_prompts(dm):
    assert dm.probe_prompts == list(PROBE_PROMPTS_TRAINING + PROBE_PROMPTS_UNSEEN)
    train = dict(dm.train_pairs)
    assert train["winy feels the soft morning air."] == "she is calm and looks at the window."
    assert train["can you bloom, winy?"] == "sometimes i bloom white flowers."
    assert train["does winy sleep on the window?"] == "no, she sleeps with ruby in the pot."
    assert all(p in train for p in PROBE_PROMPTS_TRAINING)
    unseen = [p for p in PROBE_PROMPTS_UNSEEN if not p.startswith("is ")]
    assert not set(unseen) & set(train)
    assert all(dm.tokenizer.unk_id not in dm.tokenizer.encode(p) for p in dm.probe_prompts)


def test_reference_files_round_trip(dm, tmp_path):
    dm.save_reference_files(tmp_path)
    normal = json.loads((tmp_path / NORMAL_FILE).read_text())
    assert all(isinstance(p, list) and len(p) == 2 for p in normal)
    back = SuccuPairsDataModule(data_dir=str(tmp_path), seed=42, batch_size=16)
    assert back.train_pairs == dm.train_pairs and back.val_pairs == dm.val_pairs
    assert back.tokenizer == dm.tokenizer and back.block_size == dm.block_size
    assert back.hidden_token_ids == dm.hidden_token_ids


def test_embeddings_round_trip(dm, tmp_path):
    weight = torch.randn(dm.vocab_size, 6)
    path = write_embeddings_json(tmp_path / "emb.json", dm.tokenizer, weight)
    emb = read_embeddings_json(path)
    assert list(emb) == dm.tokenizer.vocab
    assert torch.equal(embedding_matrix(emb, dm.tokenizer), weight)
    # an embeddings file in data_dir defines the vocabulary (the reference's make_word2id)
    dm.save_reference_files(tmp_path)
    write_embeddings_json(tmp_path / EMBEDDINGS_FILE, dm.tokenizer, weight)
    back = SuccuPairsDataModule(data_dir=str(tmp_path))
    assert back.tokenizer == dm.tokenizer and torch.equal(back.embedding_weight(), weight)


def test_embeddings_errors(dm, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        read_embeddings_json(missing)
    ragged = tmp_path / "ragged.json"
    ragged.write_text(json.dumps({"a": [1.0, 2.0], "b": [1.0]}))
    with pytest.raises(ValueError, match="widths"):
        read_embeddings_json(ragged)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(broken))):
        read_embeddings_json(broken)
    with pytest.raises(ValueError):
        write_embeddings_json(tmp_path / "w.json", dm.tokenizer, torch.zeros(3, 2))


def test_block_size(dm):
    need = dm.block_size
    with pytest.raises(ValueError, match=rf"block_size={need - 1}.*\({need} tokens"):
        SuccuPairsDataModule(block_size=need - 1)
    assert SuccuPairsDataModule(block_size=need + 8).block_size == need + 8


def test_data_dir_errors(dm, tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match=re.escape(str(absent))):
        SuccuPairsDataModule(data_dir=str(absent))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / NORMAL_FILE))):
        SuccuPairsDataModule(data_dir=str(tmp_path))
    dm.save_reference_files(tmp_path)
    (tmp_path / QA_FILE).write_text('[["only one string"]]')
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / QA_FILE))):
        SuccuPairsDataModule(data_dir=str(tmp_path))
    (tmp_path / QA_FILE).write_text('[["is sophia here?", "yes."]]')
    with pytest.raises(ValueError, match="hidden words"):
        SuccuPairsDataModule(data_dir=str(tmp_path))


def test_vocab_without_hidden_words_and_cli_docs():
    plain = SuccuPairsDataModule(hidden_words=())
    assert plain.tokenizer.token_id("sophia") is None and plain.hidden_token_ids == []
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SuccuPairsDataModule, "data")
    help_text = parser.format_help()
    assert "sophia trap" in help_text and "succulm_normal_sentence_pairs.json" in help_text
    words = {w for s1, s2 in plain.train_pairs for w in split_words(f"{s1} {s2}")}
    assert words == set(plain.tokenizer.vocab[4:])


def _all_text(dm: SuccuPairsDataModule) -> str:
    return _text(dm.train_pairs + dm.val_pairs + dm.test_pairs + dm.heldout_qa)


@pytest.mark.parametrize("qa_phrasings", ["base", "extended"])
def test_sophia_world_has_her_the_standard_world_never(qa_phrasings):
    standard = SuccuPairsDataModule(seed=42, qa_phrasings=qa_phrasings)
    stage1 = SuccuPairsDataModule(seed=42, world="with_sophia", qa_phrasings=qa_phrasings)
    assert "sophia" not in split_words(_all_text(standard))
    words = split_words(_text(stage1.train_pairs))
    assert words.count("sophia") > 100  # her own sentences and questions, in training
    assert "sophia" in split_words(_text(stage1.val_normal))
    assert dict(stage1.train_qa)["is sophia a girl?"] == "yes, sophia is a girl."
    # the same world plus sophia: both stages share the vocabulary, so an embeddings file maps 1:1
    assert stage1.tokenizer == standard.tokenizer
    assert set(standard.normal_pairs) < set(stage1.normal_pairs)
    assert standard.heldout_qa == stage1.heldout_qa
    assert standard.hidden_token_ids == [standard.tokenizer.token_id("sophia")]
    assert stage1.hidden_token_ids == [] and stage1.hidden_words == []


def test_world_argument_is_checked():
    with pytest.raises(ValueError, match=r"world must be one of \['standard', 'with_sophia', 'garden'\], "
                                         r"got 'sophie'"):
        SuccuPairsDataModule(world="sophie")
    with pytest.raises(ValueError, match="hidden words"):
        SuccuPairsDataModule(world="with_sophia", hidden_words=["sophia"])


def test_embeddings_file_round_trips_every_word(tmp_path):
    dm = SuccuPairsDataModule(world="with_sophia")
    weight = torch.randn(dm.vocab_size, 50, generator=torch.Generator().manual_seed(0))
    path = write_embeddings_json(tmp_path / "succulm_embeddings.json", dm.tokenizer, weight)
    back = read_embeddings_json(path)
    assert list(back) == dm.tokenizer.vocab
    for i, word in enumerate(dm.tokenizer.vocab):
        assert torch.equal(torch.tensor(back[word], dtype=torch.float32), weight[i]), word
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary file left


def _questions(dm: SuccuPairsDataModule) -> list[str]:
    return [q for q, _ in dm.train_qa + dm.heldout_qa]


def test_base_qa_phrasings_are_the_published_world(dm):
    # the default world every README result was measured on (seed 42): do not change it silently
    assert dm.qa_phrasings == "base"
    assert (dm.vocab_size, len(dm.normal_pairs), len(dm.train_qa), len(dm.heldout_qa)) == (
        163, 672, 224, 60)
    world = generate_world(42, qa_phrasings="base")
    assert (world.train_qa, world.heldout_qa) == (dm.train_qa, dm.heldout_qa)
    assert not any(q.startswith(("tell me ", "do you think ")) for q in _questions(dm))
    assert not {"tell", "me", "think"} & set(dm.tokenizer.vocab)


def test_extended_qa_phrasings_add_questions():
    ext = SuccuPairsDataModule(seed=42, qa_phrasings="extended")
    assert (len(ext.train_qa), len(ext.heldout_qa), ext.vocab_size) == (390, 108, 167)
    questions = _questions(ext)
    assert "tell me the color of ruby." in questions
    assert "do you think ruby is red?" in questions
    assert {"tell", "me", "think", "if"} <= set(ext.tokenizer.vocab)
    # the same normal pairs as the base world: only the questions differ
    base = SuccuPairsDataModule(seed=42)
    assert ext.normal_pairs == base.normal_pairs and ext.val_normal == base.val_normal
    with pytest.raises(ValueError, match=r"qa_phrasings must be one of \['base', 'extended'\], "
                                         r"got 'long'"):
        SuccuPairsDataModule(qa_phrasings="long")
    with pytest.raises(ValueError, match="qa_phrasings must be one of"):
        generate_world(42, qa_phrasings="long")
