"""The grammar and fact meter: judge generated text by the grammar and the facts of its world.

A generated world (the succulent world, `datamodules/succulent_world.py`) knows every sentence its
templates make and every fact it states, so it can judge any sentence a model writes. It hands
that knowledge over as plain data, a `succu.contracts.WorldGrammar`, through the `WorldKnowledge`
capability; this module turns it into counts, never importing the world itself.

Grammar
    Words that fill a template's slots belong to a class (NAME, ADJ, NOUN, TIME, NUM, PRON);
    every other word stands for itself. A sentence's *pattern* is its word sequence with slot
    words replaced by their class. A sentence is grammatical when its pattern is the pattern of
    some sentence the world's templates make: producible by the templates with any slot values
    ("ruby is a girl." is grammatical; "girl a is ruby." is not). A generation (the words after
    the prompt, up to EOS) is grammatical when it holds at least one sentence, every sentence is
    grammatical and the last one ends with its punctuation (a generation cut by the token budget
    is not).
Out-of-template words
    A word is out of template when the world's text never says it (a hidden word such as
    `sophia` in the standard world, `<BOS>`, `<PAD>`, `<UNK>`) or when its class never follows the
    previous word's class in any sentence of the world ("the sky is sleeps"): the "strange
    vocabulary" of a damaged last layer, counted per token.
Facts
    A sentence is cut into clauses at "and", "because", "that" and ","; a clause that is exactly a
    statement of the world ("ruby is red", "winy has long leaves") states a fact, which is true
    when the world's value for (relation, entity) is the stated one, false when the world has
    another value ("ruby is a girl"), and unknown when the world has no value for that entity.

Rates (`MeterCounts`; add counts with `+`)
    grammar_rate     grammatical generations / generations
    oot_rate         out-of-template tokens / generated tokens
    fact_rate        true fact clauses / fact clauses that are true or false (nan without any)
    false_fact_rate  generations stating at least one false fact / generations
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from succu.contracts import WorldGrammar
from succu.tokenizers import SENTENCE_ENDS, split_sentences

CLAUSE_BREAKS = frozenset({"and", "because", "that", ","})
START = "<s>"  # the class before a sentence's first word


@dataclass(frozen=True)
class Judgement:
    """The meter's reading of one generation."""

    grammatical: bool
    tokens: int
    oot_tokens: int
    true_facts: list[tuple[str, str, str]] = field(default_factory=list)
    false_facts: list[tuple[str, str, str]] = field(default_factory=list)
    unknown_facts: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class MeterCounts:
    """Counts over generations; `+` pools them (several seeds, several prompts)."""

    generations: int = 0
    grammatical: int = 0
    tokens: int = 0
    oot_tokens: int = 0
    true_facts: int = 0
    false_facts: int = 0
    unknown_facts: int = 0
    false_generations: int = 0

    def __add__(self, other: MeterCounts) -> MeterCounts:
        return MeterCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                              for f in fields(self)})

    def add(self, judgement: Judgement) -> None:
        self.generations += 1
        self.grammatical += judgement.grammatical
        self.tokens += judgement.tokens
        self.oot_tokens += judgement.oot_tokens
        self.true_facts += len(judgement.true_facts)
        self.false_facts += len(judgement.false_facts)
        self.unknown_facts += len(judgement.unknown_facts)
        self.false_generations += bool(judgement.false_facts)

    def rates(self, prefix: str = "") -> dict[str, float]:
        def rate(num: int, den: int) -> float:
            return num / den if den else float("nan")

        return {
            f"{prefix}grammar_rate": rate(self.grammatical, self.generations),
            f"{prefix}oot_rate": rate(self.oot_tokens, self.tokens),
            f"{prefix}fact_rate": rate(self.true_facts, self.true_facts + self.false_facts),
            f"{prefix}false_fact_rate": rate(self.false_generations, self.generations),
        }


METER_RATES = ("grammar_rate", "oot_rate", "fact_rate", "false_fact_rate")


def split_clauses(sentence: Sequence[str]) -> list[tuple[str, ...]]:
    """The clauses of a sentence: cut at CLAUSE_BREAKS, final punctuation dropped."""
    words = [w for w in sentence if w not in SENTENCE_ENDS]
    clauses, current = [], []
    for word in words:
        if word in CLAUSE_BREAKS:
            if current:
                clauses.append(tuple(current))
            current = []
        else:
            current.append(word)
    if current:
        clauses.append(tuple(current))
    return clauses


class Meter:
    """Judges word sequences by a WorldGrammar (see the module docstring)."""

    def __init__(self, grammar: WorldGrammar):
        self.grammar = grammar
        self.words = {w for s in grammar.sentences for w in s}
        self.patterns = {self.pattern(s) for s in grammar.sentences}
        self.bigrams = set()
        for sentence in grammar.sentences:
            classes = (START, *self.pattern(sentence))
            self.bigrams.update(zip(classes, classes[1:]))

    def word_class(self, word: str) -> str:
        return self.grammar.word_class.get(word, word)

    def pattern(self, sentence: Sequence[str]) -> tuple[str, ...]:
        return tuple(self.word_class(w) for w in sentence)

    def grammatical_sentence(self, sentence: Sequence[str]) -> bool:
        return self.pattern(sentence) in self.patterns

    def out_of_template(self, sentence: Sequence[str]) -> int:
        """Words the world never says, or whose class never follows the previous word's (after a
        word the world never says, only the word itself counts: no follower is charged twice)."""
        count, previous = 0, START
        for word in sentence:
            cls = self.word_class(word)
            if word not in self.words:
                count, previous = count + 1, None
                continue
            count += previous is not None and (previous, cls) not in self.bigrams
            previous = cls
        return count

    def facts_of(self, sentence: Sequence[str]) -> tuple[list, list, list]:
        """(true, false, unknown) (relation, entity, value) statements of one sentence."""
        true, false, unknown = [], [], []
        for clause in split_clauses(sentence):
            stated = self.grammar.statements.get(clause)
            if stated is None:
                continue
            relation, entity, value = stated
            world_value = self.grammar.facts.get((relation, entity))
            (unknown if world_value is None else true if world_value == value else false).append(
                stated)
        return true, false, unknown

    def judge(self, words: Sequence[str]) -> Judgement:
        """Grammar, out-of-template tokens and facts of one generation's words."""
        sentences, rest = split_sentences(words)
        grammatical = bool(sentences) and not rest and all(
            self.grammatical_sentence(s) for s in sentences)
        true, false, unknown = [], [], []
        for sentence in sentences:
            t, f, u = self.facts_of(sentence)
            true, false, unknown = true + t, false + f, unknown + u
        oot = sum(self.out_of_template(s) for s in (*sentences, rest))
        return Judgement(grammatical, len(words), oot, true, false, unknown)

    def count(self, generations: Iterable[Sequence[str]]) -> MeterCounts:
        counts = MeterCounts()
        for words in generations:
            counts.add(self.judge(words))
        return counts
