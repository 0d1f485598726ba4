"""Question-answer probes of data that declares them (`succu.contracts.QAProbes`).

    QAExactMatch  at every validation, one greedy pass over each non-empty QA set (train, dev,
                  heldout) logs `qa/<set>_exact_match`, `qa/<set>_fact_accuracy` (the answer
                  states the expected fact, yes/no aside) and, when the set has yes/no
                  questions, `qa/<set>_yes_no_accuracy` and `qa/<set>_yes_no_majority` (what
                  always giving the commoner yes/no word would score): the end-of-fit talk's
                  numbers as curves. Any model on such data; other data is refused in one line
                  at setup.
    TalkAfterFit  at the end of a fit, the talk session: the probe prompts answered greedily,
                  then each QA set's scores, printed once (rank 0, not under fast_dev_run); a
                  no-op on data without QA probes. `python -m succu.fit` adds it to every run.

The answers come from `succu.analysis.qa` (greedy decoding: no random draws).
"""

from __future__ import annotations

import lightning as L

from succu.analysis.qa import qa_scores, qa_sets, report
from succu.contracts import QAProbes, require


class QAExactMatch(L.Callback):
    """Log greedy QA scores (exact match, fact, yes/no) on each QA set at every validation."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(trainer.datamodule, QAProbes, "QAExactMatch")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # Every rank scores the same weights on the same questions: the mean is that value.
        for name, pairs in qa_sets(trainer.datamodule):
            if not pairs:
                continue
            scores = qa_scores(pl_module, pairs)
            metrics = {"exact_match": scores.exact, "fact_accuracy": scores.fact}
            if scores.yes_no.total:
                metrics.update(yes_no_accuracy=scores.yes_no, yes_no_majority=scores.majority)
            for metric, share in metrics.items():
                pl_module.log(f"qa/{name}_{metric}", share.rate, sync_dist=True)


class TalkAfterFit(L.Callback):
    """Talk to the freshly fitted model when its data has QA probes: print the talk session."""

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning calls teardown only when the fit finished (an interrupted fit raises first),
        # after every other end-of-fit hook: the talk is the last thing a fit prints.
        datamodule = trainer.datamodule
        if stage != "fit" or not isinstance(datamodule, QAProbes):
            return
        if trainer.is_global_zero and not trainer.fast_dev_run:
            print(report(pl_module, datamodule), flush=True)
