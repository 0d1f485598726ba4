"""World "garden": held-out questions answerable from what training teaches, and the answer-only
loss masking exactly the question's tokens."""

from __future__ import annotations

from collections import Counter

import pytest

from datamodules.succulent import SuccuPairsDataModule, encode_pair
from datamodules.succulent_tables import GARDEN, NAMES, PROBE_PROMPTS
from datamodules.succulent_world import QAItem, generate_world, world_relations

SEEDS = (42, 0, 1, 7)


def yes_no(item: QAItem) -> str | None:
    """The verdict of a yes/no cell, stated after the fact ("ruby is red, so no.")."""
    if "|" not in item.template:
        return None
    return item.answer.removesuffix(".").rsplit(" ", 1)[1]


def template(item: QAItem) -> str:
    return item.template.split("|", 1)[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_every_held_out_question_is_answerable_from_training(seed):
    """A held-out or development question: not trained; its template asked in training of two
    other entities; at least half of its fact's questions trained; a yes/no question's value
    answered both "yes" and "no" in training, in the same relation."""
    w = generate_world(seed, "garden")
    train = w.train_qa_items
    trained = {q for q, _ in w.train_qa}
    assert not trained & {q for q, _ in w.heldout_qa + w.dev_qa}
    assert not {q for q, _ in w.dev_qa} & {q for q, _ in w.heldout_qa}
    for item in w.heldout_qa_items + w.dev_qa_items:
        same = [i for i in train if i.relation == item.relation]
        assert len({i.entity for i in same if template(i) == template(item)} - {item.entity}) >= 2, item
        fact = [i for i in w.train_qa_items + w.dev_qa_items + w.heldout_qa_items
                if (i.relation, i.entity) == (item.relation, item.entity)]
        assert 2 * sum(i in train for i in fact) >= len(fact), item
        if yes_no(item):
            probe = item.template.split("|", 1)[1]
            asked = [i for i in same if yes_no(i) and i.template.split("|", 1)[1] == probe]
            assert {yes_no(i) for i in asked} == {"yes", "no"}, item
            # a new phrasing: the same question about the same value is trained in the other one
            twins = [i for i in asked if i.entity == item.entity]
            assert twins and all(template(i) != template(item) for i in twins), item


@pytest.mark.parametrize("seed", SEEDS)
def test_yes_and_no_are_equally_common_and_held_out_alike(seed):
    w = generate_world(seed, "garden")
    for items in (w.train_qa_items, w.heldout_qa_items):
        counts = Counter(yes_no(i) for i in items if yes_no(i))
        assert abs(counts["yes"] - counts["no"]) <= 0.25 * (counts["yes"] + counts["no"]), counts
    # every wh-template is asked of more than two entities, and of two at least in training
    every = w.train_qa_items + w.dev_qa_items + w.heldout_qa_items
    for relation in world_relations("garden"):
        for t in relation.wh:
            assert len({i.entity for i in every if i.template == t}) > 2, t
            assert len({i.entity for i in w.train_qa_items if i.template == t}) >= 2, t
    assert len(w.heldout_qa) >= 100 and len(w.dev_qa) >= 40


def test_the_garden_keeps_the_articles_stories_and_probes():
    """The garden tells the standard world's stories; the article's probes keep their place:
    its training probes are trained, "who is winy?" and "does ruby know three winters?" held out."""
    garden, article = generate_world(42, "garden"), generate_world(42, "standard")
    assert garden.normal_pairs == article.normal_pairs and garden.names == NAMES
    asked = {q for q, _ in garden.train_qa}
    held = dict(garden.heldout_qa)
    for q in ("is ruby a boy?", "is winy a girl?", "does winy sleep on the window?", "can you bloom, winy?"):
        assert q in asked
    assert held["who is winy?"] == "winy is a succulent plant."
    assert held["how calm is winy?"] == "winy is calm."
    assert held["does ruby know three winters?"] == "ruby knows three winters, so yes."
    dm = SuccuPairsDataModule(world="garden")
    assert set(GARDEN) <= set(dm.tokenizer.vocab) and list(dm.probe_prompts) == list(PROBE_PROMPTS)
    assert dm.dev_qa == garden.dev_qa and dm.heldout_qa == garden.heldout_qa


def test_the_answer_only_loss_masks_exactly_the_question():
    """With qa_loss "answer" a QA pair's labels are -100 exactly where the next token is a word of
    the question, and the ids everywhere else; normal pairs keep every label."""
    whole = SuccuPairsDataModule(world="garden")
    answer = SuccuPairsDataModule(world="garden", qa_loss="answer")
    tok = answer.tokenizer
    batch = next(iter(answer.train_dataloader()))
    full = next(iter(whole.train_dataloader()))
    assert (batch["input_ids"] == full["input_ids"]).all()  # the same rows, only labels differ
    qa = dict(answer.train_qa)
    data = answer.dataset(answer.train_pairs)
    checked = Counter()
    for (s1, s2), row in zip(data.pairs, data.rows):
        ids = encode_pair(tok, s1, s2)
        n1 = len(tok.encode(s1))
        assert ids[1:1 + n1] == tok.encode(s1)  # the question's words come first
        if s1 in qa:
            assert row[1] == [-100] * n1 + ids[1 + n1:]
            assert [i for i in row[1] if i != -100] == [*tok.encode(s2), tok.eos_id]
            checked["qa"] += 1
        else:
            assert row[1] == ids[1:]
            checked["normal"] += 1
    assert checked["qa"] == len(answer.train_qa) and checked["normal"] == len(answer.train_normal)
    with pytest.raises(ValueError, match="qa_loss must be one of"):
        SuccuPairsDataModule(qa_loss="answers")
