"""Question answering probes: greedy QA scores and the "talk" session of the SuccuLM articles.

One greedy pass over (question, expected answer) pairs gives four figures (`qa_scores`):

    exact match    the answer equals the expected answer, word for word
    fact accuracy  the answer states the expected fact: its statement, without the verdict, when
                   the question is yes/no (the yes/no word not considered), the whole answer for a
                   wh-question (so a wh-question answered "no, <statement>" is wrong)
    yes/no         over the yes/no questions only, the answer's verdict is the expected one

A yes/no answer gives its verdict first, as the article's ("no, ruby is red."), or after the
fact, as world "garden"'s ("ruby is red, so no."); both forms are read (`verdict`).
    majority       over the yes/no questions, the share of the most common expected word: what
                   always answering that word would score for yes/no

Exact match alone mixes the two skills: a model can state the right fact and still guess yes/no
at chance, or answer "no" to everything and beat a model that reads the question.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from succu.contracts import QAProbes, require
from succu.modules.base import LanguageModule
from succu.tokenizers import split_words

YES_NO = ("yes", "no")


@dataclass
class QAResult:
    exact_match: float
    rows: list[tuple[str, str, str]]  # (question, expected, answer)


@dataclass(frozen=True)
class Share:
    """`hits` out of `total`; the rate is NaN (and the text "-") when there is nothing to count."""

    hits: int
    total: int

    @property
    def rate(self) -> float:
        return self.hits / self.total if self.total else float("nan")

    def __str__(self) -> str:
        return f"{self.rate:.1%} ({self.hits}/{self.total})" if self.total else "-"


@dataclass(frozen=True)
class QAScores:
    """The figures of one greedy pass (see the module docstring); `majority_word` is None without
    yes/no questions."""

    rows: list[tuple[str, str, str]]  # (question, expected, answer)
    exact: Share
    fact: Share
    yes_no: Share
    majority: Share
    majority_word: str | None


def verdict(words: list[str]) -> tuple[str, list[str]] | None:
    """(the yes/no word, the statement's words) of a yes/no answer, verdict first ("no , ruby is
    red .") or after the fact ("ruby is red , so no ."); None for any other answer."""
    if len(words) > 1 and words[0] in YES_NO and words[1] == ",":
        return words[0], words[2:]
    if len(words) > 4 and words[-4:-2] == [",", "so"] and words[-2] in YES_NO and words[-1] == ".":
        return words[-2], [*words[:-4], "."]
    return None


def yes_no_word(words: list[str]) -> str | None:
    """The verdict of a yes/no answer (`verdict`), else None."""
    said = verdict(words)
    return said[0] if said else None


def states_fact(expected: list[str], answer: list[str]) -> bool:
    """Whether the answer states the expected fact (yes/no questions: its statement, verdict left
    out)."""
    wanted = verdict(expected)
    if wanted is None:
        return answer == expected
    # A bare statement states the fact too; the missing yes/no is the yes/no figure's miss.
    said = verdict(answer)
    return (said[1] if said else answer) == wanted[1]


def qa_scores(module: LanguageModule, pairs: Sequence[tuple[str, str]]) -> QAScores:
    """Greedy answers to each question, scored by exact match, fact, yes/no and the majority."""
    pairs = list(pairs)
    answers = module.complete([q for q, _ in pairs], greedy=True) if pairs else []
    rows = [(q, a, got) for (q, a), got in zip(pairs, answers)]
    words = [(split_words(a), split_words(got)) for _, a, got in rows]
    # Yes/no figures count only the questions whose expected answer is a verdict.
    yes_no = [(yes_no_word(a), yes_no_word(got)) for a, got in words if yes_no_word(a)]
    counts = Counter(word for word, _ in yes_no).most_common(1)
    majority_word, majority_hits = counts[0] if counts else (None, 0)
    return QAScores(
        rows=rows,
        exact=Share(sum(a == got for a, got in words), len(words)),
        fact=Share(sum(states_fact(a, got) for a, got in words), len(words)),
        yes_no=Share(sum(said == word for word, said in yes_no), len(yes_no)),
        majority=Share(majority_hits, len(yes_no)),
        majority_word=majority_word,
    )


def qa_exact_match(module: LanguageModule, pairs: list[tuple[str, str]]) -> QAResult:
    """Greedy answers to each question; a hit is a token-for-token match with the expected answer."""
    scores = qa_scores(module, pairs)
    return QAResult(scores.exact.rate, scores.rows)


def qa_sets(datamodule: QAProbes) -> list[tuple[str, list[tuple[str, str]]]]:
    """The data's QA sets by name (train, dev, heldout); empty sets included."""
    return [("train", list(datamodule.train_qa)), ("dev", list(datamodule.dev_qa)),
            ("heldout", list(datamodule.heldout_qa))]


def talk(module: LanguageModule, prompts: list[str], **sampling) -> list[tuple[str, str]]:
    """Continuations of each prompt (greedy unless sampling options say otherwise)."""
    sampling.setdefault("greedy", True)
    return list(zip(prompts, module.complete(prompts, **sampling)))


def score_line(name: str, scores: QAScores) -> str:
    """One report line: exact match and fact, then yes/no beside always answering the majority."""
    line = f"{name} exact match: {scores.exact}; fact {scores.fact}"
    if scores.yes_no.total:
        line += f'; yes/no {scores.yes_no}, always "{scores.majority_word}" {scores.majority.rate:.1%}'
    return line


def report(module: LanguageModule, datamodule) -> str:
    """The end-of-fit talk session: probe prompts, then each non-empty QA set's scores."""
    datamodule = require(datamodule, QAProbes, "the talk session")
    lines = ["", "== talk (greedy) =="]
    for prompt, answer in talk(module, list(datamodule.probe_prompts)):
        lines.append(f"  {prompt!r:45} -> {answer!r}")
    for name, pairs in qa_sets(datamodule):
        if pairs:
            lines.append(score_line(f"{name}_qa", qa_scores(module, pairs)))
    return "\n".join(lines)
