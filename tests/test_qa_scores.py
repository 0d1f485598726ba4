"""QA scores beyond exact match: fact, yes/no and the always-the-same-word baseline, from canned
answers counted by hand; the callback logs them and the talk prints them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from callbacks.qa import QAExactMatch
from succu.analysis.qa import Share, qa_exact_match, qa_scores, report
from succu.contracts import QAProbes

# (question, expected answer, canned greedy answer)
MIXED = [
    ("is ruby blue?", "no, ruby is red.", "yes, ruby is red."),  # fact hit, yes/no miss
    ("is ruby red?", "yes, ruby is red.", "yes, ruby is red."),  # exact
    ("is winy red?", "no, winy is green.", "no, winy is red."),  # wrong fact, right yes/no
    ("is winy green?", "yes, winy is green.", "winy is green."),  # the fact with no yes/no
    ("is ruby green?", "no, ruby is red.", "no, ruby is red."),  # exact
    ("what color is ruby?", "ruby is red.", "no, ruby is red."),  # wh answered yes/no: fact miss
    ("what color is winy?", "winy is green.", "Winy is green ."),  # exact, as split_words reads it
]
WH_ONLY = MIXED[5:]


class Canned:
    """A module whose greedy completions come from a table; it records each call and each log."""

    def __init__(self, rows):
        self.answers = {q: got for q, _, got in rows}
        self.calls: list[list[str]] = []
        self.logged: dict[str, float] = {}

    def complete(self, questions, greedy=False):
        assert greedy
        self.calls.append(list(questions))
        return [self.answers[q] for q in questions]

    def log(self, name, value, **kwargs):
        self.logged[name] = value


class Data(QAProbes):
    def __init__(self, train, dev, heldout):
        self.probe_prompts, self.hidden_token_ids = [], []
        self.train_qa, self.dev_qa, self.heldout_qa = train, dev, heldout


def pairs(rows):
    return [(q, a) for q, a, _ in rows]


def test_each_figure_counts_its_own_hits():
    scores = qa_scores(Canned(MIXED), pairs(MIXED))
    assert scores.exact == Share(3, 7)
    assert scores.fact == Share(5, 7)
    assert scores.yes_no == Share(3, 5)
    assert (scores.majority, scores.majority_word) == (Share(3, 5), "no")  # 3 "no" of 5
    assert str(scores.fact) == "71.4% (5/7)" and scores.yes_no.rate == pytest.approx(0.6)
    assert scores.rows == MIXED
    assert qa_exact_match(Canned(MIXED), pairs(MIXED)).exact_match == pytest.approx(3 / 7)


# The same figures when the expected answers give the verdict after the fact (world "garden"),
# read in either form from the model.
FACT_FIRST = [
    ("is ruby blue?", "ruby is red, so no.", "ruby is red, so yes."),  # fact hit, yes/no miss
    ("is ruby red?", "ruby is red, so yes.", "ruby is red, so yes."),  # exact
    ("is winy red?", "winy is green, so no.", "no, winy is red."),  # wrong fact, right yes/no
    ("is winy green?", "winy is green, so yes.", "winy is green."),  # the fact with no verdict
    ("what color is ruby?", "ruby is red.", "ruby is red, so no."),  # wh answered yes/no
]


def test_a_verdict_after_the_fact_is_read_as_well():
    scores = qa_scores(Canned(FACT_FIRST), pairs(FACT_FIRST))
    assert (scores.exact, scores.fact, scores.yes_no) == (Share(1, 5), Share(3, 5), Share(2, 4))
    assert (scores.majority, scores.majority_word) == (Share(2, 4), "no")


def test_a_set_without_yes_no_questions_has_no_yes_no_figures():
    scores = qa_scores(Canned(WH_ONLY), pairs(WH_ONLY))
    assert (scores.exact, scores.fact) == (Share(1, 2), Share(1, 2))
    assert scores.yes_no == scores.majority == Share(0, 0) and scores.majority_word is None
    assert math.isnan(scores.yes_no.rate) and str(scores.yes_no) == "-"
    empty = Canned([])
    assert math.isnan(qa_scores(empty, []).exact.rate) and empty.calls == []


def test_the_callback_logs_every_figure_from_one_pass_per_set():
    module, data = Canned(MIXED), Data(pairs(MIXED), [], pairs(WH_ONLY))
    QAExactMatch().on_validation_epoch_end(SimpleNamespace(sanity_checking=True, datamodule=data), module)
    assert module.logged == {} and module.calls == []
    QAExactMatch().on_validation_epoch_end(SimpleNamespace(sanity_checking=False, datamodule=data), module)
    assert module.logged == pytest.approx({
        "qa/train_exact_match": 3 / 7, "qa/train_fact_accuracy": 5 / 7,
        "qa/train_yes_no_accuracy": 3 / 5, "qa/train_yes_no_majority": 3 / 5,
        "qa/heldout_exact_match": 1 / 2, "qa/heldout_fact_accuracy": 1 / 2,
    })  # no dev figures: the dev set is empty
    assert module.calls == [[q for q, _, _ in MIXED], [q for q, _, _ in WH_ONLY]]


def test_the_talk_prints_one_line_per_set():
    module = Canned(MIXED)
    lines = report(module, Data(pairs(MIXED), pairs(WH_ONLY), [])).splitlines()
    assert lines[-2:] == [
        'train_qa exact match: 42.9% (3/7); fact 71.4% (5/7); yes/no 60.0% (3/5), always "no" 60.0%',
        "dev_qa exact match: 50.0% (1/2); fact 50.0% (1/2)",
    ]
