"""GenerationTable: sample continuations of fixed prompts at every n-th validation.

The prompts are the datamodule's probe prompts, else the heads of its first validation windows; a
gated model continues them at each dial position (a number, or K shares shown as "0.2,0.3,0.5").
The table `samples/generations` (step, prompt, alpha, text) goes to the loggers that take tables
(`succu.loggers.takes_media`, e.g. WandbLogger) and is written as markdown under the run's folder
(`<log_dir>/samples/step<N>.md`), so a CSV-only run keeps it too. Generation runs on rank 0 only
(the bare module, no collectives).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from succu.contracts import QAProbes
from succu.dial import Position, as_position, position_for, position_label
from succu.loggers import log_table, markdown_table, run_folder
from succu.sampling import check_sampling

GENERATION_COLUMNS = ["step", "prompt", "alpha", "text"]


def alpha_cell(alpha: float | str | None) -> str:
    """A generation table's alpha as markdown shows it (K shares are a string already)."""
    return "" if alpha is None else alpha if isinstance(alpha, str) else f"{alpha:g}"


class GenerationTable(L.Callback):
    """Sample continuations of fixed prompts: a (step, prompt, alpha, text) table per validation.

    Args:
        every_n_validations: sample after every n-th validation (0: only at the end of fit).
        prompts: the prompts (None: the datamodule's `probe_prompts`, else the first
            `prompt_tokens` tokens of its first validation window of each corpus).
        n_prompts: at most this many default prompts.
        prompt_tokens: length of prompts cut from validation windows.
        alphas: dial positions for gated models (None: the module's `eval_alphas`): numbers in
            [0, 1] for two sources, lists of K shares for K (e.g. [[1, 0, 0], [0.2, 0.3, 0.5]]);
            ignored by models without a dial.
        max_new_tokens: tokens generated per prompt.
        temperature: sampling temperature.
        top_k: sample from the k most likely tokens (None: all).
        top_p: nucleus sampling, in (0, 1]: the fewest most likely tokens whose probability
            reaches top_p (None or 1: all; after top_k when both are given).
        seed: seed of the sampling generator (the same draws at every validation).
        key: table name.
    """

    def __init__(self, every_n_validations: int = 1, prompts: list[str] | None = None,
                 n_prompts: int = 4, prompt_tokens: int = 16,
                 alphas: list[float | list[float]] | None = None,
                 max_new_tokens: int = 48, temperature: float = 0.8, top_k: int | None = None,
                 top_p: float | None = None, seed: int = 0, key: str = "samples/generations"):
        if every_n_validations < 0 or max_new_tokens < 1 or not temperature > 0:
            raise ValueError("every_n_validations >= 0, max_new_tokens >= 1 and temperature > 0 needed")
        check_sampling(temperature, top_k, max_new_tokens, top_p)
        self.every_n_validations, self.prompts = every_n_validations, prompts
        # Checked now, so a bad position fails at startup; fitted to the dial's size when sampling.
        self.n_prompts, self.prompt_tokens = n_prompts, prompt_tokens
        self.alphas = None if alphas is None else [as_position(a) for a in alphas]
        self.max_new_tokens, self.temperature, self.top_k = max_new_tokens, temperature, top_k
        self.top_p = top_p
        self.seed, self.key = seed, key
        self.validations = 0
        self.folder: Path | None = None
        self.last_rows: list[list[Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_folder(trainer) / "samples"

    def default_prompts(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[str]:
        datamodule = trainer.datamodule
        if isinstance(datamodule, QAProbes) and datamodule.probe_prompts:
            return list(datamodule.probe_prompts)[: self.n_prompts]
        tok, prompts, seen = pl_module.tokenizer, [], set()
        for batch in datamodule.val_dataloader():
            source = int(batch["source"][0]) if "source" in batch else 0
            if source in seen:
                continue
            seen.add(source)
            ids = [i for i in batch["input_ids"][0, : self.prompt_tokens].tolist()
                   if i not in set(tok.special_ids)]
            prompts.append(tok.decode(ids))
            if len(prompts) >= self.n_prompts:
                break
        return prompts

    def dial_positions(self, pl_module: L.LightningModule) -> list[Position | None]:
        """None for a model without a dial; else `alphas`, or the module's `eval_alphas`."""
        if not pl_module.has_dial:
            return [None]
        if self.alphas is None:
            return list(pl_module.eval_alphas)
        return [position_for(a, pl_module.model.n_sources) for a in self.alphas]

    @torch.no_grad()
    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[list[Any]]:
        if self.prompts is None:
            self.prompts = self.default_prompts(trainer, pl_module)
        rows = []
        for alpha in self.dial_positions(pl_module):
            generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
            kwargs = {} if alpha is None else {"alpha": alpha}
            texts = pl_module.complete(self.prompts, self.max_new_tokens, temperature=self.temperature,
                                       top_k=self.top_k, top_p=self.top_p, generator=generator,
                                       **kwargs)
            # Two sources keep the number; K shares are shown as "0.2,0.3,0.5" (one column type).
            shown = alpha if alpha is None or isinstance(alpha, float) else position_label(alpha)
            rows += [[trainer.global_step, p, shown, t] for p, t in zip(self.prompts, texts)]
        return rows

    def report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        rows = self.last_rows = self.sample(trainer, pl_module)
        log_table(trainer.loggers, self.key, GENERATION_COLUMNS, rows, trainer.global_step)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            body = [[s, p, alpha_cell(a), t.replace("\n", " ")] for s, p, a, t in rows]
            path = self.folder / f"step{trainer.global_step:06d}.md"
            path.write_text(markdown_table(GENERATION_COLUMNS, body) + "\n")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_validations == 0 or trainer.state.fn != "fit":
            return
        self.validations += 1
        if self.validations % self.every_n_validations == 0:
            self.report(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_validations == 0:
            self.report(trainer, pl_module)
