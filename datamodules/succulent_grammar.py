"""The succulent world's grammar and facts, as plain data for the meter (`succu.analysis.meter`).

Every sentence the world's templates make (all normal candidates, not only the kept ones; every
QA cell, trained or held out; the fixed pairs and the probe prompts), a lexicon of slot words and
their classes, the statement of every (relation, entity, value) the world can say, true or not,
and the world's facts. The DataModule hands them over as a `succu.contracts.WorldGrammar`; the
meter itself knows nothing of succulents.
"""

from __future__ import annotations

from collections.abc import Iterable

from datamodules.succulent_tables import (
    FIXED_NORMAL,
    FIXED_QA,
    PROBE_PROMPTS,
    SOPHIA,
    SOPHIA_NORMAL,
)
from datamodules.succulent_world import (
    normal_candidates,
    relation_items,
    story_names,
    world_names,
    world_relations,
)
from succu.tokenizers import split_sentences, split_words

# Slot classes: words that fill a template's slots. "kind" stays itself ("what kind of plant"
# is no adjective slot); colours are adjectives ("red leaves" is English, the facts judge truth).
ADJECTIVES = (
    "red", "green", "brown", "yellow", "white", "blue", "calm", "quiet", "happy", "sleepy", "sad",
    "thirsty", "cold", "warm", "soft", "cool", "gentle", "heavy", "brave", "shy", "small", "tall",
    "round", "long",
)
NOUNS = ("sun", "moon", "sky", "snow", "soil", "rain", "wind", "bird", "pot", "window", "water",
         "light", "air")
TIMES = ("morning", "evening", "night", "spring", "summer", "autumn", "winter")
# Extra statement forms beside each relation's own (the reference's probe sentence).
EXTRA_STATEMENTS = (("gender", "{e} is a {v} succulent plant."),)


def word_classes(names: Iterable[str]) -> dict[str, str]:
    classes = {w: "ADJ" for w in ADJECTIVES} | {w: "NOUN" for w in NOUNS}
    classes |= {w: "TIME" for w in TIMES} | {"two": "NUM", "three": "NUM"}
    classes |= {"he": "PRON", "she": "PRON"} | {n: "NAME" for n in names}
    return classes


def world_sentences(world: str, qa_phrasings: str = "base") -> tuple[tuple[str, ...], ...]:
    """Every sentence the templates of `world` make (its questions in `qa_phrasings`), as word
    tuples, without repeats."""
    names = story_names(world)
    texts = [s for pair in normal_candidates(names) for s in pair]
    texts += [s for pair in FIXED_NORMAL + FIXED_QA for s in pair] + list(PROBE_PROMPTS)
    if SOPHIA in names:
        texts += [s for pair in SOPHIA_NORMAL for s in pair]
    for relation in world_relations(world, qa_phrasings):
        texts += [s for item in relation_items(relation, fact_first=world == "garden")
                  for s in (item.question, item.answer)]
    out: dict[tuple[str, ...], None] = {}
    for text in texts:
        sentences, rest = split_sentences(split_words(text))
        for sentence in (*sentences, *((rest,) if rest else ())):
            out[sentence] = None
    return tuple(out)


def world_statements(world: str) -> dict[tuple[str, ...], tuple[str, str, str]]:
    """Clause words -> (relation, entity, value) for every entity and value the world names."""
    relations = world_relations(world)
    entities = sorted({e for r in relations for e in r.facts} | set(world_names(world)))
    forms = [(r.name, r.statement) for r in relations] + list(EXTRA_STATEMENTS)
    domains = {r.name: sorted(set(r.facts.values()) | set(r.probes)) for r in relations}
    statements: dict[tuple[str, ...], tuple[str, str, str]] = {}
    for relation, form in forms:
        if "{p}" in form or "{o}" in form:
            continue  # a pronoun's clause names no entity ("he sleeps with winy in the pot")
        for entity in entities:
            for value in domains[relation]:
                clause = tuple(w for w in split_words(form.format(e=entity, v=value)) if w != ".")
                if statements.setdefault(clause, (relation, entity, value)) != (
                        relation, entity, value):
                    raise AssertionError(f"world bug: {' '.join(clause)!r} states two facts")
    return statements


def world_facts(world: str) -> dict[tuple[str, str], str]:
    """(relation, entity) -> the world's value, for every fact of `world`."""
    return {(r.name, e): v for r in world_relations(world) for e, v in r.facts.items()}
