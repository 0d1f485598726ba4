"""Question answering probes: greedy QA scores and the "talk" session of the SuccuLM articles.

One greedy pass over (question, expected answer) pairs gives four figures (`qa_scores`):

    exact match    the answer equals the expected answer, word for word
    fact accuracy  the answer states the expected fact: after a leading "yes,"/"no," when the
                   question is yes/no (the yes/no word not considered), the whole answer for a
                   wh-question (so a wh-question answered "no, <statement>" is wrong)
    yes/no         over the yes/no questions only, the answer's first word is the expected one
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


def yes_no_word(words: list[str]) -> str | None:
    """The yes/no word when the words open with "yes"/"no" and a comma ("no , ruby is red ."), else None."""
    return words[0] if len(words) > 1 and words[0] in YES_NO and words[1] == "," else None


def states_fact(expected: list[str], answer: list[str]) -> bool:
    """Whether the answer states the expected fact (yes/no questions: the words after "yes,"/"no,")."""
    if yes_no_word(expected) is None:
        return answer == expected
    # A bare statement states the fact too; the missing yes/no is the yes/no figure's miss.
    statement = answer[2:] if yes_no_word(answer) else answer
    return statement == expected[2:]


def qa_scores(module: LanguageModule, pairs: Sequence[tuple[str, str]]) -> QAScores:
    """Greedy answers to each question, scored by exact match, fact, yes/no and the majority."""
    pairs = list(pairs)
    answers = module.complete([q for q, _ in pairs], greedy=True) if pairs else []
    rows = [(q, a, got) for (q, a), got in zip(pairs, answers)]
    words = [(split_words(a), split_words(got)) for _, a, got in rows]
    # Yes/no figures count only the questions whose expected answer opens with "yes,"/"no,".
    yes_no = [(yes_no_word(a), got[:1]) for a, got in words if yes_no_word(a)]
    counts = Counter(word for word, _ in yes_no).most_common(1)
    majority_word, majority_hits = counts[0] if counts else (None, 0)
    return QAScores(
        rows=rows,
        exact=Share(sum(a == got for a, got in words), len(words)),
        fact=Share(sum(states_fact(a, got) for a, got in words), len(words)),
        yes_no=Share(sum(first == [word] for word, first in yes_no), len(yes_no)),
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
