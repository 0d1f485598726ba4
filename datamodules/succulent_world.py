"""The succulent world's generator: sentence pairs and question/answer pairs, deterministic given `seed`.

* normal pairs (s1, s2): a statement and the story step that follows it. s2 is a fixed function of
  s1 (each slot of s1 decides a part of s2), so a tiny model can learn the rules and the validation
  pairs are predictable from the training ones. The seed picks which candidates are kept, so two
  seeds give two different worlds with the same facts.
* question/answer pairs about fixed facts. A fact (entity, relation) is asked through several
  question templates: wh-questions answered by the fact's statement ("what color is ruby?" ->
  "ruby is red.") and yes/no questions answered "yes, <statement>" or "no, <statement>". Every
  question string has exactly one answer, so greedy answers can match exactly.
* a held-out QA set, split compositionally: some (fact, template) cells are held out, chosen so
  that each held-out question's template is still asked in training about another entity, and its
  fact is still asked in training through another template. A held-out question thus tests
  recombination, never a missing fact ("does ruby know three winters?" is one).
* with qa_phrasings "extended" (opt-in; "base" is the default world): every relation is also asked
  "tell me ..." (EXTENDED_WH), every fact with values also "do you think <statement>?"
  (THINK_TEMPLATE), and a yes/no question is held out only while the same value is asked in
  training in the other phrasing.
* world "with_sophia" (the first stage of prepared embeddings): the same world plus sophia, a third
  plant (SOPHIA_FACTS, her own sentences by the same templates, every question about her in
  training). Her facts use only words the standard world says, so both worlds have one vocabulary;
  in the standard world `sophia` is a hidden word.
* world "garden" (`make fit`'s): the standard world's stories, with ruby and winy asked about among
  six more plants whose facts overlap theirs (GARDEN_FACTS), so that every held-out question is
  answerable from what training teaches (`split_garden`). A yes/no answer states the fact first
  and the verdict after it ("is ruby blue?" -> "ruby is red, so no."): the verdict then compares
  the value just said with the one asked, one rule for every entity, where "no, ruby is red."
  must decide before recalling the fact. Each yes/no template is asked once with the true value
  ("yes") and once with a false one ("no") per entity, so "yes" and "no" are as common; a question is held out only while its template is still asked of two other entities in
  training, at least half its fact's questions stay in training (its statement is taught), and, for
  a yes/no question, its value is answered both "yes" and "no" in training. A development split,
  drawn by the same rule, chooses checkpoints without touching the held-out questions.

The reference's probe sentences are training pairs; its "unseen" probes stay out of training.
Plain Python: the DataModule (`datamodules.succulent`) tokenises and batches what this makes.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from datamodules.succulent_tables import (
    DAY_TIMES,
    EXTENDED_WH,
    FAVOURITE,
    FIXED_NORMAL,
    FIXED_QA,
    FRIEND_ACTS,
    GARDEN,
    GARDEN_FACTS,
    GARDEN_RELATIONS,
    GARDEN_WH,
    MOODS,
    NAMES,
    NEEDS,
    OTHER,
    PROBE_PROMPTS_TRAINING,
    PRONOUN,
    QA_PHRASINGS,
    RELATIONS,
    SEASONS,
    SEEN,
    SENSATIONS,
    SOPHIA,
    SOPHIA_FACTS,
    SOPHIA_NORMAL,
    THINK_TEMPLATE,
    TIME_ACTS,
    WEATHER,
    WHENS,
    WHERES,
    WORLDS,
    Pair,
    Relation,
)

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
# World "garden" asks "who is {e}?" and "how calm is {e}?" of every plant: the reference's unseen
# probes stay held out.
GARDEN_HELDOUT_QUESTIONS = FORCED_HELDOUT_QUESTIONS | {"who is winy?", "how calm is winy?"}
GARDEN_DEV_RATE = 0.1  # share of each relation's cells in the garden's development split
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
    names: tuple[str, ...] = NAMES  # the plants whose stories it tells (sophia in "with_sophia")
    dev_qa_items: list[QAItem] = field(default_factory=list)  # "garden": chooses checkpoints

    @property
    def train_qa(self) -> list[Pair]:
        return list(self.fixed_qa) + [(q.question, q.answer) for q in self.train_qa_items]

    @property
    def heldout_qa(self) -> list[Pair]:
        return [(q.question, q.answer) for q in self.heldout_qa_items]

    @property
    def dev_qa(self) -> list[Pair]:
        return [(q.question, q.answer) for q in self.dev_qa_items]


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
    """The plants of a world: ruby and winy, sophia in "with_sophia", GARDEN's in "garden"."""
    if world not in WORLDS:
        raise ValueError(f"world must be one of {list(WORLDS)}, got {world!r}")
    return NAMES + {"with_sophia": (SOPHIA,), "garden": GARDEN}.get(world, ())


def story_names(world: str) -> tuple[str, ...]:
    """The plants whose stories (normal pairs) a world tells: the garden's only ruby and winy."""
    return NAMES if world == "garden" else world_names(world)


def check_qa_phrasings(qa_phrasings: str) -> str:
    """`qa_phrasings` if it is one of QA_PHRASINGS, else ValueError."""
    if qa_phrasings not in QA_PHRASINGS:
        raise ValueError(f"qa_phrasings must be one of {list(QA_PHRASINGS)}, got {qa_phrasings!r}")
    return qa_phrasings


def _thinking(relation: Relation) -> Relation:
    """`relation` with THINK_TEMPLATE after its yes/no questions, where its statement names a
    value (and it is not among them already)."""
    if not (relation.probes and "{v}" in relation.statement):
        return relation
    think = THINK_TEMPLATE.format(statement=relation.statement.rstrip("."))
    return dataclasses.replace(relation, yes_no=tuple(dict.fromkeys((*relation.yes_no, think))))


def _extended(relation: Relation) -> Relation:
    """`relation` with the "extended" phrasings: EXTENDED_WH after its wh-questions, and
    THINK_TEMPLATE after its yes/no questions where its statement names a value."""
    return dataclasses.replace(_thinking(relation), wh=relation.wh + EXTENDED_WH.get(relation.name, ()))


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
    if world == "garden":
        relations = tuple(
            dataclasses.replace(r, facts={**r.facts, **GARDEN_FACTS.get(r.name, {})},
                                wh=r.wh + GARDEN_WH.get(r.name, ()))
            for r in relations
        ) + GARDEN_RELATIONS
    if check_qa_phrasings(qa_phrasings) == "extended":
        relations = tuple(_extended(r) for r in relations)
    return relations


# ----------------------------------------------------------------------------- question answering


def yes_no_answer(statement: str, yes: bool, fact_first: bool = False) -> str:
    """The reference's form, "yes, winy is green." / "no, ..."; with `fact_first` (world
    "garden") the fact, then the verdict: "winy is green, so yes." / "..., so no."."""
    if fact_first:
        return f"{statement.removesuffix('.')}, so {'yes' if yes else 'no'}."
    return ("yes, " if yes else "no, ") + statement


def says_yes(item: QAItem) -> bool:
    """Whether a yes/no cell's answer is "yes", in either form."""
    return item.answer.startswith("yes, ") or item.answer.endswith(", so yes.")


def relation_items(relation: Relation, fact_first: bool = False) -> list[QAItem]:
    """All (fact, template) cells of one relation as question/answer items (yes/no answers in
    the fact-first form with `fact_first`: `yes_no_answer`)."""
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
                answer = yes_no_answer(statement, probe == value, fact_first)
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
        items = relation_items(relation)
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


def _template(item: QAItem) -> str:
    """The question template of a cell, without the value a yes/no cell probes."""
    return item.template.split("|", 1)[0]


def balanced_cells(items: list[QAItem], rng: random.Random) -> list[QAItem]:
    """Of each entity's yes/no questions, those about its true value ("yes") and about as many
    false values ("no", drawn with `rng`, one where no probe is the entity's value, as "is aloe
    a succulent?" of a cactus), asked through every yes/no phrasing; the probes of forced
    questions are always kept. "Yes" and "no" are about as common."""
    forced = FORCED_TRAIN_QUESTIONS | GARDEN_HELDOUT_QUESTIONS
    keep = [i for i in items if _probe(i) is None]
    by_entity: dict[str, list[QAItem]] = {}
    for item in items:
        if _probe(item) is not None:
            by_entity.setdefault(item.entity, []).append(item)
    for cells in by_entity.values():
        yes = {_probe(i) for i in cells if says_yes(i)}
        fixed = {_probe(i) for i in cells if i.question in forced} - yes
        rest = sorted({_probe(i) for i in cells} - yes - fixed)
        extra = max(0, max(len(yes), 1) - len(fixed))
        probes = yes | fixed | set(rng.sample(rest, min(extra, len(rest))))
        keep += [i for i in cells if _probe(i) in probes]
    order = {id(i): k for k, i in enumerate(items)}
    return sorted(keep, key=lambda i: order[id(i)])


def _garden_can_hold_out(item: QAItem, items: list[QAItem], out: set[str]) -> bool:
    """The garden's rule: the template is still asked of two other entities in training, at
    least half of the fact's questions stay in training, and a yes/no question's value is
    answered both "yes" and "no" in training, and the same question is trained in the other
    phrasing (a held-out yes/no question is a new phrasing; `out`: the questions already taken
    out)."""
    if item.question in FORCED_TRAIN_QUESTIONS:
        return False
    train = [i for i in items if i.question not in out and i is not item]
    fact = [i for i in items if i.entity == item.entity]
    fact_train = [i for i in train if i.entity == item.entity]
    others = {i.entity for i in train if _template(i) == _template(item) and i.entity != item.entity}
    probe = _probe(item)
    answers = {says_yes(i) for i in train if _probe(i) == probe}
    twin = any(i.entity == item.entity and _probe(i) == probe for i in train)
    taught = probe is None or (answers == {True, False} and twin)
    return 2 * len(fact_train) >= len(fact) and len(others) >= 2 and taught


def _take_out(items: list[QAItem], out: set[str], budget: int, rng: random.Random) -> set[str]:
    """Cells taken out of training, in `rng`'s order while `_garden_can_hold_out` allows, until
    `budget` are; `out` holds those already taken (returned with the new ones)."""
    taken = set(out)
    for item in rng.sample(items, len(items)):
        if len(taken) - len(out) >= budget:
            break
        if item.question not in taken and _garden_can_hold_out(item, items, taken):
            taken.add(item.question)
    return taken


def split_garden(seed: int, qa_phrasings: str = "base"
                 ) -> tuple[list[QAItem], list[QAItem], list[QAItem]]:
    """(training, development, held-out) cells of the garden world (see the module doc)."""
    rng = random.Random(f"succulent-garden-qa-{seed}")
    train, dev, heldout = [], [], []
    for relation in world_relations("garden", qa_phrasings):
        # every value asked in a second yes/no phrasing: a held-out one is trained in the other
        items = balanced_cells(relation_items(_thinking(relation), fact_first=True), rng)
        forced = {i.question for i in items if i.question in GARDEN_HELDOUT_QUESTIONS}
        held = _take_out(items, forced, max(0, round(HELDOUT_RATE * len(items)) - len(forced)), rng)
        both = _take_out(items, held, round(GARDEN_DEV_RATE * len(items)), rng)
        train += [i for i in items if i.question not in both]
        dev += [i for i in items if i.question in both - held]
        heldout += [i for i in items if i.question in held]
    return train, dev, heldout


def _sophia_additions(seed: int, qa_phrasings: str = "base") -> tuple[list[Pair], list[QAItem]]:
    """What "with_sophia" adds to the standard world of `seed`: sophia's own normal pairs (kept
    with the same share, from a generator of their own) and every QA cell about her (training
    only: the held-out QA stays the standard world's, so both stages are scored alike)."""
    rng = random.Random(f"succulent-sophia-{seed}")
    standard = {s1 for s1, _ in normal_candidates()}
    fixed = {s1 for s1, _ in SOPHIA_NORMAL}
    normal = [p for p in normal_candidates(world_names("with_sophia"))
              if p[0] not in standard and (p[0] in fixed or rng.random() < KEEP_NORMAL)]
    items = [i for r in world_relations("with_sophia", qa_phrasings) for i in relation_items(r)
             if i.entity == SOPHIA]
    return normal, items


def generate_world(
    seed: int = 42, world: str = "standard", qa_phrasings: str = "base"
) -> SuccuWorld:
    """The succulent world for `seed`: normal pairs, training QA and held-out QA.

    world "with_sophia" is the standard world of the same seed (the same kept pairs, the same
    QA split) plus sophia's sentences and questions; "garden" tells the standard world's stories
    and asks its own questions (`split_garden`). qa_phrasings "extended" asks every fact in
    the extra phrasings too (EXTENDED_WH, THINK_TEMPLATE); "base" is RELATIONS' own."""
    names = world_names(world)
    check_qa_phrasings(qa_phrasings)
    rng = random.Random(f"succulent-normal-{seed}")
    fixed = {s1 for s1, _ in FIXED_NORMAL}
    normal = [p for p in normal_candidates() if p[0] in fixed or rng.random() < KEEP_NORMAL]
    dev_items: list[QAItem] = []
    if world == "garden":
        train_items, dev_items, heldout_items = split_garden(seed, qa_phrasings)
    else:
        train_items, heldout_items = split_qa(seed, qa_phrasings)
    if SOPHIA in names:
        extra_normal, extra_items = _sophia_additions(seed, qa_phrasings)
        normal, train_items = normal + extra_normal, train_items + extra_items
    world = SuccuWorld(normal, train_items, heldout_items, names=story_names(world),
                       dev_qa_items=dev_items)
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

