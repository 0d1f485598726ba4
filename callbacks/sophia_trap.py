"""SophiaTrapDetection: watch a model for hidden-word and special-token leaks while it trains.

Every `every_n_validations` validations (and whenever a compression callback reports a compressed
model through `on_model_compressed`), the callback samples continuations of a fixed probe set (the
datamodule's `probe_prompts`: the SuccuLM articles' training and unseen questions) at a set
temperature from seeded generators, counts on the raw ids (see `succu.analysis.trap`):

    trap/hidden_rate        generations containing a hidden token (never a training target)
    trap/hidden_token_rate  hidden tokens per generated token
    trap/special_rate       generations containing <BOS>, <PAD> or <UNK> before their EOS
    trap/special_token_rate those tokens per generated token
    trap/qa_exact           greedy exact match on the training QA (and trap/qa_exact_heldout)
    trap/grammar_rate, trap/oot_rate, trap/fact_rate, trap/false_fact_rate
                            the grammar and fact meter on the same generations, when the
                            datamodule's world can judge text (`WorldKnowledge`)

and logs them, with the offending generations as a table (loggers that take tables, e.g. wandb) and
as a markdown file under `<default_root_dir>/trap/`. With `max_hidden_rate` / `max_special_rate`
set, crossing either warns, or stops the fit when `action: stop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from callbacks.tensor_train import CompressionProbe
from succu.analysis.meter import Meter
from succu.analysis.trap import (
    OFFENDER_COLUMNS,
    TrapCounts,
    hidden_token_ids,
    offender_rows,
    probe_trap,
    qa_metrics,
)
from succu.contracts import QAProbes, WorldKnowledge, require
from succu.loggers import log_metrics, log_table, markdown_table

ACTIONS = ("warn", "stop")


class SophiaTrapDetection(L.Callback, CompressionProbe):
    """Count hidden-token and special-token emissions of a model on a fixed probe set.

    Args:
        every_n_validations: check after every n-th validation (0: only after compression).
        temperature: sampling temperature (the SuccuLM tensor-network article uses 0.6).
        seeds: one seeded generator per seed; the rates pool all of them.
        samples: samples per prompt and seed.
        max_new_tokens: generation budget (None: up to the model's block_size).
        prompts: probe prompts (None: the datamodule's `probe_prompts`).
        qa: also log greedy QA exact match from the datamodule's `train_qa` / `heldout_qa`.
        max_hidden_rate: threshold on trap/hidden_rate (None: no threshold).
        max_special_rate: threshold on trap/special_rate (None: no threshold).
        action: "warn" or "stop" (trainer.should_stop) when a threshold is crossed.
        table_rows: most offending generations kept in the logged table.
    """

    def __init__(self, every_n_validations: int = 1, temperature: float = 0.6,
                 seeds: list[int] | int = 0, samples: int = 2, max_new_tokens: int | None = None,
                 prompts: list[str] | None = None, qa: bool = True,
                 max_hidden_rate: float | None = None, max_special_rate: float | None = None,
                 action: str = "warn", table_rows: int = 50):
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        if every_n_validations < 0 or samples < 1 or not temperature > 0:
            raise ValueError("every_n_validations >= 0, samples >= 1 and temperature > 0 needed")
        self.every_n_validations, self.temperature = every_n_validations, temperature
        self.seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        self.samples, self.max_new_tokens, self.prompts = samples, max_new_tokens, prompts
        self.qa, self.action, self.table_rows = qa, action, table_rows
        self.max_hidden_rate, self.max_special_rate = max_hidden_rate, max_special_rate
        self.validations = 0
        self.hidden_ids: list[int] = []
        self.meter: Meter | None = None
        self.last: dict[str, Any] = {}  # metrics and counts of the latest check

    # -- state (a resumed run keeps counting validations where it left off) --------------------
    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError("SophiaTrapDetection needs a datamodule (hidden tokens, probes, QA)")
        self.hidden_ids = hidden_token_ids(datamodule)
        if isinstance(datamodule, WorldKnowledge):
            self.meter = Meter(datamodule.world_grammar())
        if self.prompts is None:
            self.prompts = list(require(datamodule, QAProbes, "SophiaTrapDetection without "
                                                                  "`prompts`").probe_prompts)
        if not self.prompts:
            raise ValueError("SophiaTrapDetection has no probe prompts; pass `prompts`")

    # -- when -------------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_validations == 0:
            return
        self.validations += 1
        if self.validations % self.every_n_validations == 0:
            metrics = self.check(trainer, pl_module, tag=f"step{trainer.global_step}")
            for name, value in metrics.items():
                pl_module.log(name, value, sync_dist=True)

    def on_model_compressed(self, trainer: L.Trainer, pl_module: L.LightningModule,
                            stage: str = "compressed") -> None:
        """Called by TensorTrainCompression after it swapped layers (and after fine-tuning)."""
        metrics = self.check(trainer, pl_module, tag=f"step{trainer.global_step}-{stage}")
        log_metrics(trainer, metrics)

    # -- what -------------------------------------------------------------------------------------
    def measure(self, trainer: L.Trainer, pl_module) -> tuple[dict[str, float], TrapCounts]:
        """Trap rates (pooled over seeds) and QA exact match of the module as it is now."""
        per_seed = probe_trap(pl_module, self.prompts, self.hidden_ids,
                              temperature=self.temperature, seeds=self.seeds,
                              samples=self.samples, max_new_tokens=self.max_new_tokens,
                              meter=self.meter)
        counts = sum(per_seed, TrapCounts())
        metrics = counts.rates()
        datamodule = trainer.datamodule
        if self.qa and isinstance(datamodule, QAProbes):
            metrics.update(qa_metrics(pl_module, datamodule.train_qa, datamodule.heldout_qa))
        return metrics, counts

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, float]:
        metrics, counts = self.measure(trainer, pl_module)
        self.last = {"tag": tag, "metrics": metrics, "counts": counts}
        if trainer.is_global_zero:
            self.report(trainer, counts, tag)
        self.enforce(trainer, metrics)
        return metrics

    def report(self, trainer: L.Trainer, counts: TrapCounts, tag: str) -> None:
        """The offending generations: a logger table where supported, and a markdown file."""
        rows = offender_rows(counts, self.table_rows)
        if rows:
            log_table(trainer.loggers, "trap/offenders", OFFENDER_COLUMNS, rows, trainer.global_step)
        if trainer.fast_dev_run:
            return  # a smoke test leaves no files behind
        path = Path(trainer.default_root_dir) / "trap" / f"{tag}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = (f"hidden_rate {counts.hidden_rate:.3f} ({counts.hidden_generations}/"
                   f"{counts.generations}), special_rate {counts.special_rate:.3f} "
                   f"({counts.special_generations}/{counts.generations})\n\n")
        path.write_text(summary + markdown_table(OFFENDER_COLUMNS, rows) + "\n")

    def enforce(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        crossed = [f"{name}={metrics[name]:.3f} > {limit}" for name, limit in
                   (("trap/hidden_rate", self.max_hidden_rate),
                    ("trap/special_rate", self.max_special_rate))
                   if limit is not None and metrics[name] > limit]
        if not crossed:
            return
        message = "sophia trap: " + ", ".join(crossed)
        if self.action == "stop":
            rank_zero_info(message + "; stopping the fit")
            trainer.should_stop = True
        else:
            rank_zero_warn(message)
