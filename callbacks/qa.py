"""Question-answer probes of data that declares them (`succu.contracts.QAProbes`).

    QAExactMatch  at every validation, greedy exact match on the data's training and held-out
                  questions: `qa/train_exact_match`, `qa/heldout_exact_match` (the end-of-fit
                  talk's numbers as curves). Any model on such data; other data is refused in
                  one line at setup.
    TalkAfterFit  at the end of a fit, the talk session: the probe prompts answered greedily,
                  then both exact matches, printed once (rank 0, not under fast_dev_run); a no-op
                  on data without QA probes. `python -m succu.fit` adds it to every run.

The answers come from `succu.analysis.qa` (greedy decoding: no random draws).
"""

from __future__ import annotations

import lightning as L

from succu.analysis.qa import qa_exact_match, report
from succu.contracts import QAProbes, require


class QAExactMatch(L.Callback):
    """Log greedy QA exact match on the training and held-out questions at every validation."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(trainer.datamodule, QAProbes, "QAExactMatch")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        datamodule = trainer.datamodule
        # Every rank scores the same weights on the same questions: the mean is that value.
        for name, pairs in (("train", datamodule.train_qa), ("heldout", datamodule.heldout_qa)):
            if pairs:
                score = qa_exact_match(pl_module, list(pairs)).exact_match
                pl_module.log(f"qa/{name}_exact_match", score, sync_dist=True)


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
