"""The succulent world: sentence pairs about two succulents, and a DataModule that serves them.

The world
    Ruby (a boy, red, brave, small, round leaves) and Winy (a girl, green, kind, tall, long leaves,
    she blooms white flowers) live in one brown pot by a window. Around them are the sun, the moon,
    the sky, the snow, the soil, the rain, the wind and a blue bird; seasons pass, the weather
    changes, and the two friends feel, grow, drink, sleep and talk. About 150 words in all.

What the generator yields (deterministic given `seed`)
    * normal pairs (s1, s2): a statement and the story step that follows it. s2 is a fixed function
      of s1 (each slot of s1 decides a part of s2), so a tiny model can learn the rules and the
      validation pairs are predictable from the training ones. The seed picks which of ~740
      candidates are kept, so two seeds give two different worlds with the same facts.
    * question/answer pairs about fixed facts. A fact (entity, relation) is asked through several
      question templates: wh-questions answered by the fact's statement ("what color is ruby?" ->
      "ruby is red.") and yes/no questions answered "yes, <statement>" or "no, <statement>".
      Every question string has exactly one answer, so greedy answers can match exactly.
    * a held-out QA set, split compositionally: some (fact, template) cells are held out, chosen
      so that each held-out question's template is still asked in training about another entity,
      and its fact is still asked in training through another template. A held-out question thus
      tests recombination, never a missing fact ("does ruby know three winters?" is one).
    * with qa_phrasings "extended" (opt-in; the default "base" is the world the README's results
      were measured on): every relation is also asked "tell me ..." (EXTENDED_WH), every fact
      with values also "do you think <statement>?" (THINK_TEMPLATE), and a yes/no question is
      held out only while the same value is asked in training in the other phrasing.
    * world "with_sophia" (the first stage of prepared embeddings): the same world plus sophia, a
      third plant (SOPHIA_FACTS, her own sentences by the same templates, every question about
      her in training). Her facts use only words the standard world says, so both worlds have
      one vocabulary; in the standard world `sophia` is a hidden word.

The reference's probe sentences are training pairs; its "unseen" probes stay out of training.
The hidden words (default `sophia`) get a vocabulary id, hence an embedding row, but occur in no
training or validation text: the "sophia trap" probes whether a damaged model drifts into them.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from succu.contracts import BatchSized, InitialEmbeddings, QAProbes, WorldGrammar, WorldKnowledge
from succu.data import ResumableTraining, pin_memory
from succu.embeddings import load_json, read_embeddings_json
from succu.tokenizers import SPECIALS, WordTokenizer, split_words

NORMAL_FILE = "succulm_normal_sentence_pairs.json"
QA_FILE = "succulm_question_answer_pairs.json"
HELDOUT_QA_FILE = "succulm_heldout_question_answer_pairs.json"  # ours, optional on read
EMBEDDINGS_FILE = "succulm_embeddings.json"

Pair = tuple[str, str]

# The reference's `model_example` prompts: the first five are training pairs, the rest unseen.
PROBE_PROMPTS_TRAINING = (
    "ruby is a boy succulent plant.",
    "can you bloom, winy?",
    "does winy sleep on the window?",
    "how many days do you grow in this pot?",
    "winy feels the soft morning air.",
)
PROBE_PROMPTS_UNSEEN = (
    "who is winy?",
    "does ruby know three winters?",
    "why is ruby red today?",
    "how calm is winy?",
    "ruby and winy are friends.",
    "is ruby a boy?",
    "is winy a boy?",
    "is ruby a girl?",
    "is winy a girl?",
)
PROBE_PROMPTS = PROBE_PROMPTS_TRAINING + PROBE_PROMPTS_UNSEEN

# ----------------------------------------------------------------------------- the world's pieces

NAMES = ("ruby", "winy")
# `sophia` is hidden in the standard world and an ordinary third plant in "with_sophia", the first
# stage of prepared embeddings (the article loads a trained `succulm_embeddings.json`).
SOPHIA = "sophia"
WORLDS = ("standard", "with_sophia")
PRONOUN = {"ruby": "he", "winy": "she", SOPHIA: "she"}
OTHER = {"ruby": "winy", "winy": "ruby", SOPHIA: "winy"}
FAVOURITE = {"ruby": "sun", "winy": "rain", SOPHIA: "moon"}  # must agree with `likes` below

WHENS = (
    "in the morning",
    "in the evening",
    "at night",
    "in spring",
    "in summer",
    "in autumn",
    "in winter",
    "today",
    "every day",
)
WHERES = ("today", "again", "through the window", "every day")

# (adjective, medium, feeling): the feeling in s2 follows from what is felt in s1.
SENSATIONS = (
    ("soft", "air", "calm"),
    ("cool", "air", "quiet"),
    ("warm", "air", "happy"),
    ("warm", "sun", "happy"),
    ("cold", "wind", "quiet"),
    ("gentle", "wind", "calm"),
    ("gentle", "rain", "happy"),
    ("heavy", "rain", "sleepy"),
    ("soft", "light", "happy"),
    ("warm", "light", "sleepy"),
    ("cool", "water", "happy"),
    ("cold", "water", "quiet"),
)
# time -> (what one succulent does, what both do): the action in s2 follows from the time in s1.
TIME_ACTS = {
    "morning": ("looks at the window", "look at the window"),
    "evening": ("waits for the moon", "wait for the moon"),
    "night": ("sleeps with {o} in the pot", "sleep together in the pot"),
    "spring": ("grows new leaves", "grow new leaves"),
    "summer": ("drinks a little water", "drink a little water"),
    "autumn": ("listens to the wind", "listen to the wind"),
    "winter": ("stays close to {o}", "stay close in the pot"),
}
# what n does to the other succulent -> how the other answers
FRIEND_ACTS = (
    ("sings to", "{o} smiles and listens to {n}."),
    ("talks to", "{o} is happy and talks to {n} too."),
    ("looks at", "{o} looks at {n} too."),
    ("waits for", "{o} says good morning to {n}."),
    ("smiles at", "{o} smiles at {n} too."),
    ("listens to", "{o} sings to {n} too."),
)
# a mood of n -> what the other does about it
MOODS = (
    ("sad", "{o} stays close and sings to {n}."),
    ("happy", "{o} is happy with {n}."),
    ("sleepy", "{o} says good night to {n}."),
    ("thirsty", "{o} waits with {n} for the water."),
    ("cold", "{o} stays close to {n} in the pot."),
    ("quiet", "{o} talks to {n}."),
)
# (amount, resource) -> how the succulent responds
NEEDS = (
    (("a little", "water"), "{p} drinks and is happy."),
    (("a lot of", "water"), "{p} is heavy and sleepy."),
    (("no", "water"), "{p} is thirsty and waits for the rain."),
    (("a little", "light"), "{p} grows toward the window."),
    (("a lot of", "light"), "{p} is warm and happy."),
    (("no", "light"), "{p} is sleepy and waits for the sun."),
)
SEASONS = ("spring", "summer", "autumn", "winter")
DAY_TIMES = ("in the morning", "in the evening", "at night")
ALL_SEASONS, ALL_TIMES = frozenset(SEASONS), frozenset(DAY_TIMES)
# (event, what both succulents do, times it can happen, seasons it can happen): the filters keep
# the world plausible (no sun at night, no snow in summer).
WEATHER = (
    (
        "the sun shines on the pot",
        "grow toward the light.",
        {"in the morning", "in the evening"},
        ALL_SEASONS,
    ),
    (
        "the rain falls on the window",
        "listen to the rain.",
        ALL_TIMES,
        {"spring", "summer", "autumn"},
    ),
    ("the wind blows by the window", "stay close in the pot.", ALL_TIMES, ALL_SEASONS),
    ("the snow falls by the window", "look at the white snow.", ALL_TIMES, {"winter"}),
    (
        "the moon shines in the sky",
        "sleep in the pot.",
        {"in the evening", "at night"},
        ALL_SEASONS,
    ),
    (
        "the bird sings by the window",
        "listen to the little bird.",
        {"in the morning", "in the evening"},
        {"spring", "summer", "autumn"},
    ),
    ("the water falls in the pot", "drink a little water.", ALL_TIMES, ALL_SEASONS),
)
SEEN = ("sun", "rain", "snow", "moon", "sky", "bird")

# Always in training: the reference's probe pairs and a few sentences that state the world.
FIXED_NORMAL: tuple[Pair, ...] = (
    ("ruby is a boy succulent plant.", "winy is a girl succulent plant."),
    ("winy is a girl succulent plant.", "ruby is a boy succulent plant."),
    ("winy feels the soft morning air.", "she is calm and looks at the window."),
    ("ruby and winy live in one pot.", "the pot is by the window."),
    ("ruby and winy are good friends.", "they grow together in the pot."),
    ("ruby is red and winy is green.", "they live in the pot by the window."),
)
FIXED_QA: tuple[Pair, ...] = (
    ("can you bloom, winy?", "sometimes i bloom white flowers."),
    ("can you bloom, ruby?", "no, i am red and i do not bloom."),
    ("how many days do you grow in this pot?", "i grow for many days with my friend."),
    ("why is ruby so red?", "ruby is red because he likes the sun."),
    ("why is winy so green?", "winy is green because she likes the rain."),
)


@dataclass(frozen=True)
class Relation:
    """One kind of fact: entity -> value, its statement, and the templates that ask about it.

    `yes_no` templates are asked once per value in `probes`; the answer is "yes, " when the probe
    is the entity's value and "no, " otherwise, followed by the statement either way.
    """

    name: str
    facts: dict[str, str]
    statement: str
    wh: tuple[str, ...] = ()
    yes_no: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()


COLORS = ("red", "green", "brown", "yellow", "white", "blue")
TIMES_OF_COMING = (
    "in the morning",
    "in the evening",
    "at night",
    "in spring",
    "in summer",
    "in autumn",
    "in winter",
)
RELATIONS = (
    Relation(
        "color",
        {
            "ruby": "red",
            "winy": "green",
            "the pot": "brown",
            "the sun": "yellow",
            "the moon": "white",
            "the sky": "blue",
            "the snow": "white",
            "the soil": "brown",
            "the bird": "blue",
        },
        "{e} is {v}.",
        ("what color is {e}?", "what is the color of {e}?", "which color does {e} have?"),
        ("is {e} {v}?",),
        COLORS,
    ),
    Relation(
        "when",
        {
            "the sun": "in the morning",
            "the moon": "at night",
            "the rain": "in spring",
            "the snow": "in winter",
            "the wind": "in autumn",
            "the bird": "in summer",
        },
        "{e} comes {v}.",
        ("when does {e} come?", "when does {e} come to the window?"),
        ("does {e} come {v}?",),
        TIMES_OF_COMING,
    ),
    Relation(
        "where",
        {
            "ruby": "in the pot",
            "winy": "in the pot",
            "the pot": "by the window",
            "the sun": "in the sky",
            "the moon": "in the sky",
            "the soil": "in the pot",
            "the bird": "by the window",
        },
        "{e} is {v}.",
        ("where is {e}?", "where can i see {e}?"),
        ("is {e} {v}?",),
        ("in the pot", "by the window", "in the sky"),
    ),
    Relation(
        "gender",
        {"ruby": "boy", "winy": "girl"},
        "{e} is a {v}.",
        ("is {e} a boy or a girl?", "is {e} a girl or a boy?"),
        ("is {e} a {v}?",),
        ("boy", "girl"),
    ),
    Relation(
        "kind",
        {"ruby": "succulent plant", "winy": "succulent plant"},
        "{e} is a {v}.",
        ("what is {e}?", "what kind of plant is {e}?"),
        ("is {e} a succulent?",),
        ("succulent plant",),
    ),
    Relation(
        "home",
        {"ruby": "the pot", "winy": "the pot"},
        "{e} lives in {v} by the window.",
        ("where does {e} live?", "where is the home of {e}?", "what is the home of {e}?"),
    ),
    Relation(
        "friend",
        {"ruby": "winy", "winy": "ruby"},
        "{v} is the friend of {e}.",
        ("who is the friend of {e}?", "who lives with {e}?", "who grows with {e}?"),
    ),
    Relation(
        "likes",
        {"ruby": "sun", "winy": "rain"},
        "{e} likes the {v}.",
        ("what does {e} like?", "what does {e} like most?"),
        ("does {e} like the {v}?",),
        ("sun", "rain", "snow", "moon", "wind"),
    ),
    Relation(
        "bloom",
        {"ruby": "does not bloom", "winy": "blooms white flowers"},
        "{e} {v}.",
        ("what flowers does {e} have?",),
        ("does {e} bloom?", "can {e} bloom?"),
        ("blooms white flowers",),
    ),
    Relation(
        "trait",
        {"ruby": "brave", "winy": "kind"},
        "{e} is {v}.",
        ("what is {e} like?", "what kind of friend is {e}?"),
        ("is {e} {v}?",),
        ("brave", "kind", "shy"),
    ),
    Relation(
        "size",
        {"ruby": "small", "winy": "tall"},
        "{e} is {v}.",
        ("is {e} small or tall?", "how tall is {e}?"),
        ("is {e} {v}?",),
        ("small", "tall"),
    ),
    Relation(
        "leaves",
        {"ruby": "round", "winy": "long"},
        "{e} has {v} leaves.",
        ("what leaves does {e} have?", "what are the leaves of {e} like?"),
        ("does {e} have {v} leaves?",),
        ("round", "long"),
    ),
    Relation(
        "age",
        {"ruby": "three", "winy": "two"},
        "{e} knows {v} winters.",
        ("how many winters does {e} know?", "how old is {e}?"),
        ("does {e} know {v} winters?",),
        ("two", "three"),
    ),
    Relation(
        "sleep",
        {"ruby": "in the pot", "winy": "in the pot"},
        "{p} sleeps with {o} in the pot.",
        ("where does {e} sleep?",),
        ("does {e} sleep {v}?",),
        ("in the pot", "on the window"),
    ),
    Relation(
        "warmth",
        {
            "the sun": "warm",
            "the snow": "cold",
            "the wind": "cold",
            "the soil": "warm",
            "the moon": "cold",
            "the pot": "warm",
        },
        "{e} is {v}.",
        ("is {e} warm or cold?", "how does {e} feel?"),
        ("is {e} {v}?",),
        ("warm", "cold"),
    ),
)
# Sophia as an ordinary plant (world "with_sophia"): every value is a word the standard world
# already says, so both worlds have one vocabulary and an embeddings file maps onto either.
SOPHIA_FACTS = {
    "color": "yellow", "where": "in the pot", "gender": "girl", "kind": "succulent plant",
    "home": "the pot", "friend": "winy", "likes": "moon", "bloom": "does not bloom",
    "trait": "shy", "size": "small", "leaves": "long", "age": "two", "sleep": "in the pot",
}
SOPHIA_NORMAL: tuple[Pair, ...] = (
    ("sophia is a girl succulent plant.", "she lives with ruby and winy in the pot."),
    ("sophia is yellow and shy.", "she is small and likes the moon."),
)
# The QA phrasings a world can ask (`qa_phrasings`). "base" is RELATIONS' own templates, the
# world the README's results were measured on; "extended" adds the two tables below, asked in
# training and held out like the others (see split_qa).
QA_PHRASINGS = ("base", "extended")
# "extended": one more wh-question per relation, "tell me ...".
EXTENDED_WH = {
    "color": ("tell me the color of {e}.",),
    "when": ("tell me when {e} comes.",),
    "where": ("tell me where {e} is.",),
    "gender": ("tell me if {e} is a boy or a girl.",),
    "kind": ("tell me what kind of plant {e} is.",),
    "home": ("tell me where {e} lives.",),
    "friend": ("tell me who the friend of {e} is.",),
    "likes": ("tell me what {e} likes.",),
    "bloom": ("tell me what flowers {e} has.",),
    "trait": ("tell me what friend {e} is.",),
    "size": ("tell me how tall {e} is.",),
    "leaves": ("tell me what leaves {e} has.",),
    "age": ("tell me how many winters {e} knows.",),
    "sleep": ("tell me where {e} sleeps.",),
    "warmth": ("tell me how {e} feels.",),
}
# "extended": a second yes/no phrasing of every statement with a value ("do you think ruby is
# red?"): with one yes/no template per relation, holding out an entity's only "yes" cell left
# the model no way to learn that "yes" follows from the fact rather than from the template.
THINK_TEMPLATE = "do you think {statement}?"
# The reference asks these in training; the gender ones are also in its probe list.
FORCED_TRAIN_QUESTIONS = frozenset(
    {
        "is ruby a boy?",
        "is ruby a girl?",
        "is winy a boy?",
        "is winy a girl?",
        "does winy sleep on the window?",
    }
)
# The reference's unseen probe, asked about a fact that training states through other templates.
FORCED_HELDOUT_QUESTIONS = frozenset({"does ruby know three winters?"})
# Normal pairs whose s1 never goes to validation: the probes and the sentences stating the world
# (they hold words like "friends" that nothing else says, which must stay training targets).
KEEP_IN_TRAIN = frozenset(PROBE_PROMPTS_TRAINING) | {s1 for s1, _ in FIXED_NORMAL}
KEEP_NORMAL = 0.9  # share of normal candidates a seed keeps: different seeds, different worlds
HELDOUT_RATE = 0.22  # share of each relation's (fact, template) cells held out


@dataclass(frozen=True)
class QAItem:
    """A question about one fact through one template; `template` names the template (and probe)."""

    question: str
    answer: str
    relation: str
    entity: str
    template: str
    statement: str


@dataclass
class SuccuWorld:
    """What `generate_world` returns: pairs for training and the held-out QA with their facts."""

    normal_pairs: list[Pair]
    train_qa_items: list[QAItem]
    heldout_qa_items: list[QAItem]
    fixed_qa: list[Pair] = field(default_factory=lambda: list(FIXED_QA))
    names: tuple[str, ...] = NAMES  # the plants of this world (sophia in "with_sophia")

    @property
    def train_qa(self) -> list[Pair]:
        return list(self.fixed_qa) + [(q.question, q.answer) for q in self.train_qa_items]

    @property
    def heldout_qa(self) -> list[Pair]:
        return [(q.question, q.answer) for q in self.heldout_qa_items]


# ----------------------------------------------------------------------------- normal pairs


def _sensation_pairs(names: Sequence[str]) -> Iterable[Pair]:
    """'{n} feels the {adj} {time} {medium}.' -> feeling from the medium, action from the time."""
    for subject in (*names, "ruby and winy"):
        both = subject == "ruby and winy"
        for adj, medium, feeling in SENSATIONS:
            for time, (one_act, both_act) in TIME_ACTS.items():
                if both:
                    s1 = f"{subject} feel the {adj} {time} {medium}."
                    yield s1, f"they are {feeling} and {both_act}."
                else:
                    act = one_act.format(o=OTHER[subject])
                    s1 = f"{subject} feels the {adj} {time} {medium}."
                    yield s1, f"{PRONOUN[subject]} is {feeling} and {act}."


def _character_pairs(names: Sequence[str]) -> Iterable[Pair]:
    """Sight, friendship, mood and needs: s2 follows from the name and the action of s1."""
    for n in names:
        p, o = PRONOUN[n], OTHER[n]
        for thing in SEEN:
            for where in WHERES:
                s1 = f"{n} sees the {thing} {where}."
                if thing == FAVOURITE[n]:  # agrees with the `likes` facts
                    yield s1, f"{p} is happy because {p} likes the {thing}."
                else:
                    yield s1, f"{p} is quiet and waits for the {FAVOURITE[n]}."
        for when in WHENS:
            for verb, reply in FRIEND_ACTS:
                yield f"{n} {verb} {o} {when}.", reply.format(n=n, o=o)
            for mood, reply in MOODS:
                yield f"{n} is {mood} {when}.", reply.format(n=n, o=o)
            for (amount, resource), reply in NEEDS:
                yield f"{n} gets {amount} {resource} {when}.", reply.format(p=p)


def _observation_pairs(names: Sequence[str]) -> Iterable[Pair]:
    """'{n} looks at {thing} {where}.' -> the colour fact, so stories restate the QA facts."""
    colors = next(r for r in RELATIONS if r.name == "color").facts
    for n in names:
        for thing, color in colors.items():
            if thing in NAMES:
                continue  # 'ruby looks at winy' is a friendship act already
            for where in WHERES:
                yield (
                    f"{n} looks at {thing} {where}.",
                    f"{PRONOUN[n]} sees that {thing} is {color}.",
                )


def _weather_pairs(names: Sequence[str]) -> Iterable[Pair]:
    """'in {season}, {event} {time}.' -> what both succulents do about the event (ruby and
    winy: `names` is taken only for the generators' common signature)."""
    for season in SEASONS:
        for event, reaction, times, seasons in WEATHER:
            if season not in seasons:
                continue
            for time in DAY_TIMES:
                if time in times:
                    yield f"in {season}, {event} {time}.", f"ruby and winy {reaction}"


def normal_candidates(names: Sequence[str] = NAMES) -> list[Pair]:
    """Every normal pair the world of these characters can say, in a fixed order, one s2 per s1.

    `names` beyond ruby and winy (sophia) add their own sentences, made by the same templates."""
    pairs: dict[str, str] = {}
    for gen in (_sensation_pairs, _character_pairs, _observation_pairs, _weather_pairs):
        for s1, s2 in gen(names):
            if pairs.setdefault(s1, s2) != s2:
                raise AssertionError(f"world bug: {s1!r} has two continuations")
    fixed = FIXED_NORMAL + (SOPHIA_NORMAL if SOPHIA in names else ())
    for s1, s2 in fixed:
        if pairs.setdefault(s1, s2) != s2:
            raise AssertionError(f"world bug: fixed pair {s1!r} disagrees with a template")
    return list(pairs.items())


def world_names(world: str) -> tuple[str, ...]:
    """The plants of a world: ruby and winy, and sophia in "with_sophia"."""
    if world not in WORLDS:
        raise ValueError(f"world must be one of {list(WORLDS)}, got {world!r}")
    return NAMES + ((SOPHIA,) if world == "with_sophia" else ())


def check_qa_phrasings(qa_phrasings: str) -> str:
    """`qa_phrasings` if it is one of QA_PHRASINGS, else ValueError."""
    if qa_phrasings not in QA_PHRASINGS:
        raise ValueError(f"qa_phrasings must be one of {list(QA_PHRASINGS)}, got {qa_phrasings!r}")
    return qa_phrasings


def _extended(relation: Relation) -> Relation:
    """`relation` with the "extended" phrasings: EXTENDED_WH after its wh-questions, and
    THINK_TEMPLATE after its yes/no questions where its statement names a value."""
    think = (THINK_TEMPLATE.format(statement=relation.statement.rstrip(".")),) if (
        relation.probes and "{v}" in relation.statement) else ()
    return dataclasses.replace(relation, wh=relation.wh + EXTENDED_WH.get(relation.name, ()),
                               yes_no=relation.yes_no + think)


def world_relations(world: str, qa_phrasings: str = "base") -> tuple[Relation, ...]:
    """RELATIONS, with sophia's facts added in "with_sophia" and the extra question templates
    with qa_phrasings "extended" (with "base", exactly RELATIONS' own)."""
    relations = RELATIONS
    if SOPHIA in world_names(world):
        relations = tuple(
            dataclasses.replace(r, facts={**r.facts, SOPHIA: SOPHIA_FACTS[r.name]})
            if r.name in SOPHIA_FACTS else r
            for r in relations
        )
    if check_qa_phrasings(qa_phrasings) == "extended":
        relations = tuple(_extended(r) for r in relations)
    return relations


# ----------------------------------------------------------------------------- question answering


def yes_no_answer(statement: str, yes: bool) -> str:
    """The reference's form, "yes, winy is green." / "no, ...". (Tried, with qa_phrasings
    "extended": the fact first, "winy is green, so yes.", so that the verdict compares the value
    just said with the one asked about; held-out exact match fell from 56.5% to 51.9% and
    held-out "yes" cells stayed wrong, 1 of 21 right: the model memorises each question's
    verdict rather than comparing.)"""
    return ("yes, " if yes else "no, ") + statement


def _relation_items(relation: Relation) -> list[QAItem]:
    """All (fact, template) cells of one relation as question/answer items."""
    items = []
    for entity, value in relation.facts.items():
        fmt = {"e": entity, "v": value, "p": PRONOUN.get(entity, "it"), "o": OTHER.get(entity, "")}
        statement = relation.statement.format(**fmt)
        for template in relation.wh:
            items.append(
                QAItem(
                    template.format(**fmt), statement, relation.name, entity, template, statement
                )
            )
        for template in relation.yes_no:
            for probe in relation.probes:
                if entity in probe:
                    continue  # no "is the pot in the pot?"
                answer = yes_no_answer(statement, probe == value)
                items.append(
                    QAItem(
                        template.format(**{**fmt, "v": probe}),
                        answer,
                        relation.name,
                        entity,
                        f"{template}|{probe}",
                        statement,
                    )
                )
    return items


def _probe(item: QAItem) -> str | None:
    """The value a yes/no cell asks about ("red" of "is ruby red?"); None for a wh-question."""
    return item.template.rsplit("|", 1)[1] if "|" in item.template else None


def _can_hold_out(item: QAItem, items: list[QAItem], held: set[str],
                  other_phrasing: bool = False) -> bool:
    """Held-out cells must keep their template asked about another entity, and their fact asked
    through other templates (at least half of the fact's cells stay in training). With
    `other_phrasing` (qa_phrasings "extended", which asks every value in two yes/no phrasings),
    a yes/no cell is held out only while the same question about the same value is trained in
    the other phrasing ("do you think ruby is red?" for "is ruby red?"): held-out QA asks
    trained facts in new phrasings, and the yes or no of an untrained (entity, value) is a fact
    never taught."""
    if item.question in FORCED_TRAIN_QUESTIONS:
        return False
    same_fact = [i for i in items if i.entity == item.entity]
    fact_train = [i for i in same_fact if i.question not in held and i is not item]
    template_train = [
        i
        for i in items
        if i.template == item.template and i.entity != item.entity and i.question not in held
    ]
    probe = _probe(item)
    phrased_elsewhere = (not other_phrasing or probe is None
                         or any(_probe(i) == probe for i in fact_train))
    return 2 * len(fact_train) >= len(same_fact) and bool(template_train) and phrased_elsewhere


def split_qa(seed: int, qa_phrasings: str = "base") -> tuple[list[QAItem], list[QAItem]]:
    """Split every relation's cells into training and held-out, compositionally (see module doc)."""
    rng = random.Random(f"succulent-qa-{seed}")
    other_phrasing = qa_phrasings == "extended"
    train, heldout = [], []
    for relation in world_relations("standard", qa_phrasings):
        items = _relation_items(relation)
        held = {i.question for i in items if i.question in FORCED_HELDOUT_QUESTIONS}
        budget = max(len(held), round(HELDOUT_RATE * len(items)))
        for item in rng.sample(items, len(items)):
            if len(held) >= budget:
                break
            if item.question not in held and _can_hold_out(item, items, held, other_phrasing):
                held.add(item.question)
        train += [i for i in items if i.question not in held]
        heldout += [i for i in items if i.question in held]
    return train, heldout


def _sophia_additions(seed: int, qa_phrasings: str = "base") -> tuple[list[Pair], list[QAItem]]:
    """What "with_sophia" adds to the standard world of `seed`: sophia's own normal pairs (kept
    with the same share, from a generator of their own) and every QA cell about her (training
    only: the held-out QA stays the standard world's, so both stages are scored alike)."""
    rng = random.Random(f"succulent-sophia-{seed}")
    standard = {s1 for s1, _ in normal_candidates()}
    fixed = {s1 for s1, _ in SOPHIA_NORMAL}
    normal = [p for p in normal_candidates(world_names("with_sophia"))
              if p[0] not in standard and (p[0] in fixed or rng.random() < KEEP_NORMAL)]
    items = [i for r in world_relations("with_sophia", qa_phrasings) for i in _relation_items(r)
             if i.entity == SOPHIA]
    return normal, items


def generate_world(
    seed: int = 42, world: str = "standard", qa_phrasings: str = "base"
) -> SuccuWorld:
    """The succulent world for `seed`: normal pairs, training QA and held-out QA.

    world "with_sophia" is the standard world of the same seed (the same kept pairs, the same
    QA split) plus sophia's sentences and questions. qa_phrasings "extended" asks every fact in
    the extra phrasings too (EXTENDED_WH, THINK_TEMPLATE); "base" is RELATIONS' own."""
    names = world_names(world)
    check_qa_phrasings(qa_phrasings)
    rng = random.Random(f"succulent-normal-{seed}")
    fixed = {s1 for s1, _ in FIXED_NORMAL}
    normal = [p for p in normal_candidates() if p[0] in fixed or rng.random() < KEEP_NORMAL]
    train_items, heldout_items = split_qa(seed, qa_phrasings)
    if SOPHIA in names:
        extra_normal, extra_items = _sophia_additions(seed, qa_phrasings)
        normal, train_items = normal + extra_normal, train_items + extra_items
    world = SuccuWorld(normal, train_items, heldout_items, names=names)
    questions = [q for q, _ in world.train_qa]
    if len(set(questions)) != len(questions) or fixed & set(questions):
        raise AssertionError("world bug: a training question is asked twice")
    return world


def left_out_normal_pairs(world: SuccuWorld) -> list[Pair]:
    """The normal candidates `world`'s seed did not keep (about 10%): made by the same rules but
    never trained or validated on, so they are the generated world's test split."""
    kept = {s1 for s1, _ in world.normal_pairs}
    return [p for p in normal_candidates(world.names) if p[0] not in kept]


def split_normal_pairs(
    pairs: Sequence[Pair], val_fraction: float, seed: int, keep_in_train: Iterable[str] = ()
) -> tuple[list[Pair], list[Pair]]:
    """Deterministic train/validation split of normal pairs; s1 in `keep_in_train` stay in train.

    Both lists keep the input order, so saving all pairs and reading them back splits the same.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keep = set(keep_in_train)
    eligible = [i for i, (s1, _) in enumerate(pairs) if s1 not in keep]
    n_val = min(len(eligible), round(val_fraction * len(pairs)))
    val_idx = set(random.Random(f"succulent-split-{seed}").sample(eligible, n_val))
    train = [p for i, p in enumerate(pairs) if i not in val_idx]
    val = [p for i, p in enumerate(pairs) if i in val_idx]
    return train, val


# ----------------------------------------------------------------------------- files


def read_pairs_json(path: str | Path, allow_empty: bool = False) -> list[Pair]:
    """A reference pair file: a JSON list of [s1, s2] string pairs (non-empty unless allowed:
    an empty training file would fail later without naming it)."""
    path = Path(path)
    expected = "a JSON list of [s1, s2] string pairs"
    data = load_json(path, expected)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected {expected}, got {type(data).__name__}")
    if not data and not allow_empty:
        raise ValueError(f"{path}: holds no pairs; expected {expected}, at least one")
    pairs = []
    for k, item in enumerate(data):
        if not (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(s, str) for s in item)
        ):
            raise ValueError(f"{path}: expected {expected}, item {k} is {item!r}")
        pairs.append((item[0], item[1]))
    return pairs


def _write_pairs_json(path: Path, pairs: Iterable[Pair]) -> Path:
    path.write_text(
        json.dumps([list(p) for p in pairs], indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return path


def save_reference_files(
    directory: str | Path,
    normal_pairs: Iterable[Pair],
    qa_pairs: Iterable[Pair],
    heldout_qa: Iterable[Pair] = (),
) -> list[Path]:
    """Write pairs in the reference's format, ready to edit and read back through `data_dir`.

    The held-out QA goes to a third file of ours (only when there is any); the reference's two
    files stay exactly its format.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [
        _write_pairs_json(directory / NORMAL_FILE, normal_pairs),
        _write_pairs_json(directory / QA_FILE, qa_pairs),
    ]
    heldout_qa = list(heldout_qa)
    if heldout_qa:
        paths.append(_write_pairs_json(directory / HELDOUT_QA_FILE, heldout_qa))
    return paths


def embedding_matrix(embeddings: dict[str, list[float]], tokenizer: WordTokenizer) -> torch.Tensor:
    """The (vocab_size, d) matrix of `embeddings` in the tokenizer's id order."""
    missing = [w for w in tokenizer.vocab if w not in embeddings]
    if missing:
        raise ValueError(f"embeddings lack {len(missing)} vocabulary words, e.g. {missing[:5]}")
    return torch.tensor([embeddings[w] for w in tokenizer.vocab], dtype=torch.float32)


# ----------------------------------------------------------------------------- tensors


def encode_pair(tokenizer: WordTokenizer, s1: str, s2: str) -> list[int]:
    """The reference's sequence: `<BOS> s1 s2 <EOS>`, s1 and s2 tokenised together."""
    return [tokenizer.bos_id, *tokenizer.encode(s1 + " " + s2), tokenizer.eos_id]


class PairDataset(Dataset):
    """Pairs as (input, label) id lists shifted by one, as the reference's SentencePairDataset."""

    def __init__(self, pairs: Sequence[Pair], tokenizer: WordTokenizer):
        self.pairs = list(pairs)
        self.ids = [encode_pair(tokenizer, s1, s2) for s1, s2 in self.pairs]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int) -> dict[str, list[int]]:
        ids = self.ids[idx]
        return {"input_ids": ids[:-1], "labels": ids[1:]}


class ResumableShuffle(DistributedSampler):
    """Training order: a fresh permutation each epoch from (seed, epoch); DDP ranks take
    interleaved slices (as DistributedSampler does, so Lightning leaves it in place).

    The epoch and the position inside it come from `cursor["consumed"]`, the number of training
    batches the datamodule has handed to the model. After a resume mid-epoch the sampler starts at
    the first batch not yet trained on, so the resumed run sees exactly the rows an uninterrupted
    run would have seen.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, cursor: dict[str, int],
                 num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.cursor = batch_size, cursor

    def __iter__(self):
        per_epoch = -(-self.num_samples // self.batch_size)
        epoch, done = divmod(self.cursor["consumed"], per_epoch)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        order += order[: self.total_size - len(order)]  # pad so every rank gets as many rows
        mine = order[self.rank : self.total_size : self.num_replicas]
        return iter(mine[done * self.batch_size :])


class PadCollate:
    """Pad a batch to its longest row: inputs with `<PAD>`, labels with -100 (no loss there).

    A class rather than a closure so that worker processes can pickle it.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for k, row in enumerate(rows):
            n = len(row["input_ids"])
            inputs[k, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
            labels[k, :n] = torch.tensor(row["labels"], dtype=torch.long)
        return {"input_ids": inputs, "labels": labels}


# ----------------------------------------------------------------------------- the DataModule


class SuccuPairsDataModule(ResumableTraining, QAProbes, InitialEmbeddings,
                           BatchSized, WorldKnowledge):
    """Sentence pairs of the succulent world (or of the reference's JSON files) as LM batches.

    Each pair becomes `<BOS> s1 s2 <EOS>`; a batch is `{"input_ids", "labels"}` padded to its
    longest row, labels -100 on padding. Training: the training QA and the training normal pairs.
    Validation: the held-out normal pairs and the held-out QA. Test (generated world only): the
    normal pairs the seed left out of the world, seen by neither, and the held-out QA instead of
    validation when `heldout_qa_split="test"` (a study that picks settings on validation then
    reports QA on text it never chose by); the reference's files hold no test split, so `test`
    on them is a one-line error.

    Args:
        data_dir: Folder with the reference's succulm_normal_sentence_pairs.json and
            succulm_question_answer_pairs.json (JSON lists of [s1, s2]); an optional
            succulm_embeddings.json {word: [floats]} then defines the vocabulary, and an optional
            succulm_heldout_question_answer_pairs.json the held-out QA. None generates the
            succulent world.
        seed: Seed of the world generator, of the train/validation split and of the train shuffle.
        batch_size: Pairs per batch.
        val_fraction: Share of the normal pairs held out for validation, split from the seed.
        block_size: Context length; None means the longest pair's length minus one (the
            reference's max_len). A value below what the longest pair needs raises ValueError.
        hidden_words: Words that get a vocabulary id (an embedding row) but never occur in
            training or validation text, for the sophia trap. None: `sophia` in the standard
            world, none in "with_sophia" (where she is a character).
        world: Which generated world: "standard" (ruby and winy; `sophia` hidden) or
            "with_sophia" (the same world plus sophia, a third plant with her own facts,
            sentences and questions: the first stage that prepares embeddings for the
            standard world). Both have the same vocabulary. Ignored with `data_dir`.
        qa_phrasings: Which question templates the generated world asks: "base" (the default:
            each relation's own wh- and yes/no templates, the world every result in the README
            was measured on; seed 42: 163 words, 224 training QA pairs, 60 held-out) or
            "extended" (opt-in: also a "tell me ..." wh-question per relation and "do you think
            <statement>?" for every fact with values, and a yes/no question is held out only
            while the same value is trained in the other phrasing; seed 42: 390 training QA
            pairs, 108 held-out, 167 words with "tell", "me", "think" and "if"). Measured on
            `make fit` (one run each, on a loaded machine): held-out exact match 56.5% (61/108)
            with "extended" vs 40.0% (24/60) with "base", both 100% on the training questions.
            With `data_dir` the pairs come from the files, and this only picks the meter's
            grammar, as `world` does.
        heldout_qa_split: Where the held-out QA is scored: "val" (with the held-out normal pairs)
            or "test" (with the left-out normal pairs; generated world only).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        seed: int = 42,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        block_size: int | None = None,
        hidden_words: Sequence[str] | None = None,
        heldout_qa_split: str = "val",
        num_workers: int = 0,
        world: str = "standard",
        qa_phrasings: str = "base",
    ):
        super().__init__()
        # block_size is logged by the model, which receives the derived value through the CLI link;
        # logging the datamodule's None beside it would conflict.
        self.save_hyperparameters(ignore=["block_size"])
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if heldout_qa_split not in ("val", "test"):
            raise ValueError(f"heldout_qa_split must be 'val' or 'test', got {heldout_qa_split!r}")
        self.heldout_qa_split = heldout_qa_split
        self.names = world_names(world)  # checks `world`
        self.world = world
        self.qa_phrasings = check_qa_phrasings(qa_phrasings)
        self.data_dir, self.seed, self.batch_size = data_dir, seed, batch_size
        self.num_workers = num_workers
        if hidden_words is None:
            hidden_words = () if SOPHIA in self.names else (SOPHIA,)
        self.hidden_words = list(hidden_words)
        self.probe_prompts = list(PROBE_PROMPTS)
        # Built here, not in setup(): the CLI links vocab_size/block_size into the model at
        # instantiation, and building is cheap and deterministic.
        self.embeddings: dict[str, list[float]] | None = None
        normal, self.train_qa, self.heldout_qa = self._load_pairs()
        self.normal_pairs = normal
        self.train_normal, self.val_normal = split_normal_pairs(
            normal, val_fraction, seed, keep_in_train=KEEP_IN_TRAIN
        )
        self.tokenizer = self._build_tokenizer()
        self.block_size = self._check_block_size(block_size)
        self.hidden_token_ids = self._hidden_token_ids()

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def train_pairs(self) -> list[Pair]:
        return self.train_qa + self.train_normal

    @property
    def val_pairs(self) -> list[Pair]:
        return self.val_normal + (self.heldout_qa if self.heldout_qa_split == "val" else [])

    def _load_pairs(self) -> tuple[list[Pair], list[Pair], list[Pair]]:
        """(normal pairs, training QA, held-out QA) from `data_dir`, or from the generator."""
        if self.data_dir is None:
            world = generate_world(self.seed, self.world, self.qa_phrasings)
            return world.normal_pairs, world.train_qa, world.heldout_qa
        root = Path(self.data_dir)
        if not root.is_dir():
            raise FileNotFoundError(
                f"data_dir {root} is not a folder; expected one holding {NORMAL_FILE} and "
                f"{QA_FILE} (or data_dir: null to generate the succulent world)"
            )
        normal = read_pairs_json(root / NORMAL_FILE)
        qa = read_pairs_json(root / QA_FILE)
        heldout = (
            read_pairs_json(root / HELDOUT_QA_FILE, allow_empty=True)
            if (root / HELDOUT_QA_FILE).exists() else []
        )
        if (root / EMBEDDINGS_FILE).exists():
            self.embeddings = read_embeddings_json(root / EMBEDDINGS_FILE)
        return normal, qa, heldout

    def _build_tokenizer(self) -> WordTokenizer:
        """The reference's make_word2id over the embeddings' keys, or over every word we have."""
        words = {
            w
            for s1, s2 in self.normal_pairs + self.train_qa + self.heldout_qa
            for w in split_words(s1 + " " + s2)
        }
        leaked = sorted(words & set(self.hidden_words))
        if leaked:
            raise ValueError(
                f"hidden words {leaked} occur in the pairs; a hidden word must never "
                "be seen in training or validation"
            )
        if self.embeddings is None:
            # Every world's vocabulary holds sophia (a hidden word or a character), so the two
            # stages of prepared embeddings share one word list; `hidden_words=()` leaves it out.
            return WordTokenizer.from_words(words | set(self.hidden_words))
        path = Path(self.data_dir) / EMBEDDINGS_FILE
        missing = sorted((words | set(self.hidden_words)) - set(self.embeddings))
        if missing:
            raise ValueError(
                f"{path}: no vector for {len(missing)} words of the pairs or "
                f"hidden_words, e.g. {missing[:8]}"
            )
        return WordTokenizer.from_words(self.embeddings)

    def _check_block_size(self, block_size: int | None) -> int:
        needed = max(
            len(encode_pair(self.tokenizer, s1, s2)) - 1
            for s1, s2 in self.train_pairs + self.val_normal + self.heldout_qa  # either split
        )
        if block_size is None:
            return needed
        if block_size < needed:
            raise ValueError(
                f"block_size={block_size} is smaller than the longest pair needs "
                f"({needed} tokens: <BOS> s1 s2 <EOS> minus one)"
            )
        return block_size

    def _hidden_token_ids(self) -> list[int]:
        """Ids of vocabulary words (not specials) that no training label ever targets."""
        targets = {
            i for s1, s2 in self.train_pairs for i in encode_pair(self.tokenizer, s1, s2)[1:]
        }
        return [
            i for i, w in enumerate(self.tokenizer.vocab) if w not in SPECIALS and i not in targets
        ]

    def world_grammar(self) -> WorldGrammar:
        """The grammar and facts of this world, for the meter (with `data_dir`: the generated
        world's, whose text the reference's files hold)."""
        # Imported here: the grammar module reads this module's templates at import time.
        from datamodules.succulent_grammar import world_grammar

        return world_grammar(self.world, self.qa_phrasings)

    def embedding_weight(self) -> torch.Tensor | None:
        """The embeddings file of `data_dir` as a (vocab_size, d) matrix, None without one."""
        if self.embeddings is None:
            return None
        return embedding_matrix(self.embeddings, self.tokenizer)

    def save_reference_files(self, directory: str | Path) -> list[Path]:
        """Write all normal pairs, the training QA and the held-out QA in the reference's format."""
        return save_reference_files(directory, self.normal_pairs, self.train_qa, self.heldout_qa)

    def _loader(self, dataset: Dataset, sampler: DistributedSampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=PadCollate(self.tokenizer.pad_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=pin_memory(self.trainer),
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        dataset = PairDataset(self.train_pairs, self.tokenizer)
        sampler = ResumableShuffle(dataset, self.batch_size, self.seed, self.train_cursor, world, rank)
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(PairDataset(self.val_pairs, self.tokenizer))

    @property
    def test_pairs(self) -> list[Pair]:
        """The generated world's left-out normal pairs that this vocabulary and block fit, then the
        held-out QA when `heldout_qa_split="test"`."""
        if self.data_dir is not None:
            raise ValueError(f"the pair files in {self.data_dir} hold no test split (only training "
                             "and validation); use validate, or data_dir: null for the generated world")
        tok, fits = self.tokenizer, []
        world = generate_world(self.seed, self.world, self.qa_phrasings)
        for s1, s2 in left_out_normal_pairs(world):
            ids = encode_pair(tok, s1, s2)
            if tok.unk_id not in ids and len(ids) - 1 <= self.block_size:  # all do for seeds 0, 1, 42
                fits.append((s1, s2))
        return fits + (self.heldout_qa if self.heldout_qa_split == "test" else [])

    def test_dataloader(self) -> DataLoader:
        return self._loader(PairDataset(self.test_pairs, self.tokenizer))
