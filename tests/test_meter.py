"""The grammar and fact meter: it accepts every sentence the world generator makes, rejects
scrambled ones, and knows which stated facts are true in the world."""

from __future__ import annotations

import math
import random

import pytest

from datamodules.succulent import SuccuPairsDataModule, generate_world, left_out_normal_pairs
from datamodules.succulent_grammar import world_grammar
from succu.analysis.meter import Meter, MeterCounts, split_clauses
from succu.tokenizers import split_sentences, split_words


@pytest.fixture(scope="module", params=[("standard", "base"), ("with_sophia", "base"),
                                        ("standard", "extended"), ("with_sophia", "extended")],
                ids=lambda p: "-".join(p))
def world(request):
    return request.param, Meter(world_grammar(*request.param))


def words(text: str) -> list[str]:
    return split_words(text)


def test_every_generated_sentence_is_grammatical(world):
    (name, qa_phrasings), meter = world
    for seed in (0, 42):
        w = generate_world(seed, name, qa_phrasings)
        pairs = w.normal_pairs + w.train_qa + w.heldout_qa + left_out_normal_pairs(w)
        for s1, s2 in pairs:
            for text in (s1, s2, f"{s1} {s2}"):
                judged = meter.judge(words(text))
                assert judged.grammatical and judged.oot_tokens == 0, text
                assert not judged.false_facts, text  # the world never lies about itself


def test_scrambled_sentences_are_rejected(world):
    _, meter = world
    rng = random.Random(0)
    tried = rejected = 0
    for sentence in meter.grammar.sentences:
        body = list(sentence[:-1])
        rng.shuffle(body)
        scrambled = (*body, sentence[-1])
        if meter.pattern(scrambled) == meter.pattern(sentence):
            continue  # a shuffle that only swapped words of one class
        tried += 1
        rejected += not meter.judge(scrambled).grammatical
    assert tried > 1000 and rejected == tried
    # cut off, or never ended: not a sentence
    assert not meter.judge(words("ruby is a boy")).grammatical
    assert not meter.judge([]).grammatical


def test_fact_meter_flags_false_facts_and_accepts_true_ones(world):
    _, meter = world
    judged = meter.judge(words("ruby is a girl."))
    assert judged.grammatical and judged.false_facts == [("gender", "ruby", "girl")]
    for text, fact in (("ruby is a boy.", ("gender", "ruby", "boy")),
                       ("no, winy is green.", ("color", "winy", "green")),
                       ("she sees that the sun is yellow.", ("color", "the sun", "yellow")),
                       ("ruby is red because he likes the sun.", ("color", "ruby", "red")),
                       ("ruby is a boy succulent plant.", ("gender", "ruby", "boy"))):
        judged = meter.judge(words(text))
        assert fact in judged.true_facts and not judged.false_facts, text
    for text in ("winy has round leaves.", "the moon comes in the morning.", "ruby likes the rain."):
        assert meter.judge(words(text)).false_facts, text
    # every fact of the world, stated, is true
    for (relation, entity), value in meter.grammar.facts.items():
        stated = [c for c, f in meter.grammar.statements.items() if f == (relation, entity, value)]
        assert relation == "sleep" or stated, (relation, entity)


def test_sophia_is_out_of_template_only_where_she_is_hidden():
    standard, with_sophia = Meter(world_grammar("standard")), Meter(world_grammar("with_sophia"))
    text = words("sophia is a girl.")
    assert not standard.judge(text).grammatical and standard.judge(text).oot_tokens == 1
    judged = with_sophia.judge(text)
    assert judged.grammatical and judged.oot_tokens == 0
    assert judged.true_facts == [("gender", "sophia", "girl")]
    assert standard.judge(["ruby", "<BOS>", "is", "red", "."]).oot_tokens == 1
    assert standard.judge(["ruby", "<BOS>", "is", "."]).oot_tokens == 2  # "is ." is never said
    # a verb after "is"
    assert standard.judge(words("the sky is sleeps with winy in the pot.")).oot_tokens == 1


def test_extended_phrasings_are_grammatical_only_in_the_extended_grammar():
    base, extended = Meter(world_grammar()), Meter(world_grammar("standard", "extended"))
    for text in ("tell me the color of ruby.", "do you think winy is green?"):
        assert not base.judge(words(text)).grammatical, text
        assert extended.judge(words(text)).grammatical, text
    assert base.grammar.facts == extended.grammar.facts
    assert base.grammar.statements == extended.grammar.statements
    dm = SuccuPairsDataModule(qa_phrasings="extended")
    assert dm.world_grammar().sentences == extended.grammar.sentences


def test_counts_and_rates():
    meter = Meter(world_grammar("standard"))
    counts = meter.count([words("ruby is a girl."), words("winy is green."), words("girl a is")])
    assert (counts.generations, counts.grammatical, counts.true_facts, counts.false_facts) == (
        3, 2, 1, 1)
    rates = counts.rates("x/")
    assert rates["x/grammar_rate"] == pytest.approx(2 / 3) and rates["x/fact_rate"] == 0.5
    assert rates["x/false_fact_rate"] == pytest.approx(1 / 3)
    assert (counts + counts).generations == 6
    assert math.isnan(MeterCounts().rates()["fact_rate"])
    assert split_sentences(words("a. b")) == ([("a", ".")], ("b",))
    assert split_clauses(words("yes, ruby is red and winy is green.")) == [
        ("yes",), ("ruby", "is", "red"), ("winy", "is", "green")]


def test_datamodule_declares_its_world_knowledge():
    from succu.contracts import WorldKnowledge

    dm = SuccuPairsDataModule(world="with_sophia")
    assert isinstance(dm, WorldKnowledge)
    assert ("gender", "sophia") in dm.world_grammar().facts
