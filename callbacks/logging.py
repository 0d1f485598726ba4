"""Dashboard material: sample generations, the alpha histogram and end-of-fit sweeps.

Every callback here logs through the trainer's loggers, never through wandb: tables and images go
to the loggers that take them (`succu.loggers.takes_media`, e.g. WandbLogger); the same table is
written as markdown and every image as a PNG under the run's folder (`trainer.log_dir`), so a
CSV-only run keeps them too.

    GenerationTable  at every n-th validation, continuations of fixed prompts (the datamodule's
                     probe prompts, else the heads of its first validation windows), at each dial
                     position of a gated model (a number, or K shares shown as "0.2,0.3,0.5"):
                     table `samples/generations` (step, prompt, alpha, text).
    AlphaHistogram   the dial draws of AlphaBetaSampling since the last validation, summed over
                     DDP ranks, split by the corpus drawn: image `train/alpha_hist` (over K
                     corpora one panel per corpus k: the drawn share alpha_k).
    SweepReport      at the end of fit, the alpha sweep (gated models: along the dial, or on a
                     grid of the simplex with ternary plots for K = 3) or the TT corruption sweep
                     (SuccuLM) of the final weights: table `sweep/alpha` or `sweep/tt`, image
                     `sweep/alpha_plot` or `sweep/tt_plot`, plus the CSV/markdown/PNG of
                     `python -m succu.sweep` under `<log_dir>/sweeps/`; with `voice: N` also the
                     voice meter's shares (table `sweep/voice`, image `sweep/voice_plot`,
                     metrics `voice/accuracy...`).

Generation and sweeps run on rank 0 only (they use the bare module, no collectives); the
histogram's all-reduce runs on every rank at the same validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from succu import dial
from succu.analysis.trap import markdown_table
from succu.contracts import NamedCorpora, QAProbes
from succu.dial import Position, as_position, dial_batch_alpha, position_for, position_label
from succu.io import write_outputs
from succu.loggers import log_image, log_metrics, log_table
from succu.nn.utils import eval_mode

GENERATION_COLUMNS = ["step", "prompt", "alpha", "text"]


def run_folder(trainer: L.Trainer) -> Path:
    """`trainer.log_dir` (a collective under DDP: call it on every rank), else default_root_dir."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def alpha_cell(alpha: float | str | None) -> str:
    """A generation table's alpha as markdown shows it (K shares are a string already)."""
    return "" if alpha is None else alpha if isinstance(alpha, str) else f"{alpha:g}"


def corpus_names(datamodule: L.LightningDataModule, default: list[str]) -> list[str]:
    return list(datamodule.corpora) if isinstance(datamodule, NamedCorpora) else default


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
        seed: seed of the sampling generator (the same draws at every validation).
        key: table name.
    """

    def __init__(self, every_n_validations: int = 1, prompts: list[str] | None = None,
                 n_prompts: int = 4, prompt_tokens: int = 16,
                 alphas: list[float | list[float]] | None = None,
                 max_new_tokens: int = 48, temperature: float = 0.8, top_k: int | None = None,
                 seed: int = 0, key: str = "samples/generations"):
        if every_n_validations < 0 or max_new_tokens < 1 or not temperature > 0:
            raise ValueError("every_n_validations >= 0, max_new_tokens >= 1 and temperature > 0 needed")
        self.every_n_validations, self.prompts = every_n_validations, prompts
        # Checked now, so a bad position fails at startup; fitted to the dial's size when sampling.
        self.n_prompts, self.prompt_tokens = n_prompts, prompt_tokens
        self.alphas = None if alphas is None else [as_position(a) for a in alphas]
        self.max_new_tokens, self.temperature, self.top_k = max_new_tokens, temperature, top_k
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
                                       top_k=self.top_k, generator=generator, **kwargs)
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


class AlphaHistogram(L.Callback):
    """Histogram of the alpha draws since the previous validation, by drawn corpus, over all ranks.

    Reads `alpha` and `source` of every training batch (AlphaBetaSampling makes the data carry
    them); for batches without a dial it does nothing. Two sources: one panel, alpha (the
    corpus-1 share) stacked by the corpus drawn. K sources: one panel per corpus k, the drawn
    share alpha_k, stacked by the corpus drawn: the Dirichlet's marginals, and how much more
    often a corpus is drawn where its share is high (P(corpus k | alpha) = alpha_k).

    Args:
        every_n_validations: plot after every n-th validation.
        bins: histogram bins over [0, 1].
        key: image name.
    """

    def __init__(self, every_n_validations: int = 1, bins: int = 20, key: str = "train/alpha_hist"):
        if every_n_validations < 1 or bins < 1:
            raise ValueError("every_n_validations >= 1 and bins >= 1 needed")
        self.every_n_validations, self.bins, self.key = every_n_validations, bins, key
        self.alphas: list[list[float]] = []  # per row: [alpha] (two sources) or K shares
        self.sources: list[int] = []
        self.validations = 0
        self.first_step = 0
        self.folder: Path | None = None
        self.last_counts: np.ndarray | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_folder(trainer) / "alpha"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if "alpha" not in batch:
            return
        alpha = dial_batch_alpha(batch).double().cpu()
        self.alphas += alpha.reshape(alpha.shape[0], -1).tolist()
        self.sources += batch["source"].cpu().tolist()

    def counts(self, trainer: L.Trainer, k: int) -> np.ndarray:
        """(panels, k, bins) draws per bin of a dial over k corpora, split by the corpus drawn,
        summed over ranks: one panel (alpha) for two sources, panel j = the share alpha_j for K."""
        edges = np.linspace(0.0, 1.0, self.bins + 1)
        panels = 1 if k == 2 else k
        alphas = np.asarray(self.alphas, dtype=np.float64).reshape(-1, panels)
        sources = np.asarray(self.sources, dtype=np.int64)
        local = np.stack([np.stack([np.histogram(alphas[sources == c, j], edges)[0] for c in range(k)])
                          for j in range(panels)]).astype(np.float64)
        counts = torch.from_numpy(local)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            counts = counts.to(trainer.strategy.root_device)
            torch.distributed.all_reduce(counts)
        return counts.cpu().numpy()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not pl_module.has_dial:
            return
        self.validations += 1
        if self.validations % self.every_n_validations:
            return
        k = pl_module.model.n_sources
        counts = self.last_counts = self.counts(trainer, k)
        self.alphas, self.sources = [], []
        first, self.first_step = self.first_step, trainer.global_step
        if not trainer.is_global_zero or trainer.fast_dev_run or self.folder is None:
            return
        names = corpus_names(trainer.datamodule, [f"corpus {c}" for c in range(k)])
        path = self.plot(counts, names, first, trainer.global_step)
        log_image(trainer.loggers, self.key, path, trainer.global_step)

    def plot(self, counts: np.ndarray, names: list[str], first: int, last: int) -> Path:
        from succu.analysis.plots import plt, save_figure

        edges = np.linspace(0.0, 1.0, self.bins + 1)
        mids, width = (edges[:-1] + edges[1:]) / 2, 1.0 / self.bins
        panels = counts.shape[0]
        fig, axes = plt.subplots(1, panels, figsize=(5.5 if panels == 1 else 4.2 * panels, 3.4),
                                 squeeze=False)
        for j, ax in enumerate(axes[0]):
            bottom = np.zeros(self.bins)
            for c in range(counts.shape[1]):
                ax.bar(mids, counts[j, c], width=width * 0.95, bottom=bottom, label=f"drew {names[c]}")
                bottom = bottom + counts[j, c]
            ax.set_xlim(0, 1)
            ax.set_xlabel("alpha" if panels == 1 else f"alpha share of {names[j]}")
            ax.set_ylabel("draws (all ranks)")
            ax.legend(fontsize=7)
        draws = int(counts[0].sum())
        fig.suptitle(f"alpha draws, steps {first}-{last} ({draws} draws)", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, self.folder / f"alpha_hist_{last:06d}.png")


class SweepReport(L.Callback):
    """Sweep the final weights at the end of fit and log the table and the plot.

    Args:
        kind: "alpha" (validation loss per corpus along the dial of a gated model) or "tt" (the
            tensor-train corruption study of a SuccuLM-style model).
        alphas: the alpha sweep's positions. Two sources: "start:stop:step" or a comma list
            (default 0:1:0.25); K sources: points of K shares separated by ";" (default: the
            `step` grid of the simplex).
        step: K-source dial: grid step on the simplex (1/step whole, e.g. 0.1 or 0.25).
        max_batches: validation batches per corpus for the alpha sweep (None: all).
        voice: the voice meter (succu/analysis/voice.py) at the end of the alpha sweep: N sampled
            continuations (200 characters, temperature 0.8, fixed prompts, seeded) per dial
            position judged by corpus (64 or more for a reading; 0: off).
        voice_alphas: the voice meter's positions, in the form of `alphas` (default: 0, 0.25,
            0.5, 0.75, 1 for two sources; the corners, edge midpoints and centre for K).
        voice_seed: seed of the voice samples.
        voice_length: characters (tokens) per voice sample; the meter reads 200.
        layers: TT layer sets, blocks by ",", sets by ";" (as `succu.sweep tt --layers`); blocks
            that TensorTrainCompression compressed at the end of fit (it runs first when listed
            first) cannot be swept again.
        bond_dims: TT (out|in) bonds (as `succu.sweep tt --bond_dims`).
        layout: "mps" or "ttm".
        seeds: sampling seeds for the trap rates, comma separated.
        samples: samples per probe prompt and seed.
        temperature: sampling temperature of the trap probes.
        baseline: add the low-rank baseline at equal parameters (TT).
    """

    def __init__(self, kind: str = "alpha", alphas: str | None = None, step: float = 0.25,
                 max_batches: int | None = 4, voice: int = 0, voice_alphas: str | None = None,
                 voice_seed: int = 0, voice_length: int = 200, layers: str = "3", bond_dims: str = "20", layout: str = "mps",
                 seeds: str = "0", samples: int = 1, temperature: float = 0.6, baseline: bool = False):
        if kind not in ("alpha", "tt"):
            raise ValueError(f"kind must be 'alpha' or 'tt', got {kind!r}")
        if voice < 0 or (voice and kind != "alpha") or voice_length < 1:
            raise ValueError(f"voice must be 0 (off) or a number of samples per position, with kind "
                             f"'alpha', and voice_length >= 1; got voice={voice}, kind={kind!r}, "
                             f"voice_length={voice_length}")
        self.kind, self.alphas, self.step, self.max_batches = kind, alphas, step, max_batches
        self.voice, self.voice_alphas, self.voice_seed = voice, voice_alphas, voice_seed
        self.voice_length = voice_length
        self.layers, self.bond_dims, self.layout = layers, bond_dims, layout
        self.seeds, self.samples, self.temperature, self.baseline = seeds, samples, temperature, baseline
        self.folder: Path | None = None
        self.rows: list[dict[str, Any]] = []
        self.voice_rows: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_folder(trainer) / "sweeps"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run or self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with eval_mode(pl_module):
            if self.kind == "alpha":
                self.alpha_sweep(trainer, pl_module)
            else:
                self.tt_sweep(trainer, pl_module)

    def alpha_sweep(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from succu.analysis import alpha_sweep

        if not pl_module.has_dial:
            raise ValueError(f"SweepReport(kind='alpha') needs a gated model, not {type(pl_module).__name__}")
        k = pl_module.model.n_sources
        names = corpus_names(trainer.datamodule, [f"corpus{c}" for c in range(k)])
        positions = dial.dial_grid(k, self.alphas if self.alphas or k > 2 else "0:1:0.25", self.step)
        batches = alpha_sweep.val_batches(trainer.datamodule, self.max_batches)
        rows = self.rows = alpha_sweep.sweep(pl_module, batches, positions, names)
        self.publish(trainer, "alpha", alpha_sweep.outputs(
            "alpha_sweep", rows, names, f"Alpha sweep at step {trainer.global_step} (val loss, nats/token)",
            f"alpha sweep at step {trainer.global_step}", "val loss (nats/token)"), rows, names)
        if self.voice:
            self.voice_sweep(trainer, pl_module, k)

    def voice_positions(self, k: int) -> list[Position]:
        """`voice_alphas`, else the voice meter's default points (`succu.dial.voice_positions`)."""
        if self.voice_alphas is not None:
            return dial.dial_grid(k, self.voice_alphas, self.step)
        return dial.voice_positions(k)

    def voice_sweep(self, trainer: L.Trainer, pl_module: L.LightningModule, k: int) -> None:
        """The voice meter's shares at `voice_positions`, and its accuracy on validation text."""
        from succu.analysis import alpha_sweep

        positions = self.voice_positions(k)
        rows, accuracy, names = alpha_sweep.voice_reading(
            pl_module, trainer.datamodule, positions, self.voice, self.voice_seed, self.voice_length)
        self.voice_rows = rows
        heading = (f"Voice at step {trainer.global_step}: share of {self.voice} samples per position "
                   f"judged to be each corpus (meter accuracy on validation windows: "
                   f"{alpha_sweep.accuracy_text(accuracy)})")
        self.publish(trainer, "voice", alpha_sweep.outputs(
            "voice", rows, names, heading, f"voice at step {trainer.global_step}",
            "share judged this corpus", best=max), rows, names)
        log_metrics(trainer, {"voice/accuracy" if c == "all" else f"voice/accuracy/{c}": v
                              for c, v in accuracy.items()})

    def publish(self, trainer: L.Trainer, what: str, files: dict[str, str | bytes],
                rows: list[dict[str, Any]], names: list[str]) -> None:
        """Write the CSV/markdown/PNG under sweeps/, hand the table (`sweep/<what>`: one column
        per share of a K-source position) and the PNG (`sweep/<what>_plot`) to the loggers."""
        paths = write_outputs(self.folder, files)
        k_source = isinstance(rows[0]["alpha"], tuple)
        shares = [f"alpha_{n}" for n in names] if k_source else ["alpha"]
        table = [[*(r["alpha"] if k_source else [r["alpha"]]), *(r[n] for n in names)] for r in rows]
        log_table(trainer.loggers, f"sweep/{what}", [*shares, *names], table, trainer.global_step)
        for path in paths:
            if path.suffix == ".png":
                log_image(trainer.loggers, f"sweep/{what}_plot", path, trainer.global_step)

    def tt_sweep(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import argparse

        from succu.analysis import tt_sweep

        layer_sets = tt_sweep.parse_layer_sets(self.layers)
        blocks = pl_module.get_submodule("model.blocks")
        done = sorted({b for s in layer_sets for b in s if b < len(blocks)
                       and not isinstance(blocks[b].ffn[0], torch.nn.Linear)})
        if done:
            raise ValueError(f"SweepReport(kind='tt'): blocks {done} are compressed already (by "
                             "TensorTrainCompression at the end of fit); sweep other blocks")
        args = argparse.Namespace(temperature=self.temperature, seeds=self.seeds, samples=self.samples)
        probe = tt_sweep.make_probe(trainer.datamodule, args)
        rows = self.rows = tt_sweep.sweep(
            pl_module, probe, layer_sets,
            tt_sweep.parse_bond_specs(self.bond_dims), self.layout, None, baseline=self.baseline,
            log=lambda *a: None)
        flat = [tt_sweep.flat_row(r, self.layout) for r in rows]
        columns = list(tt_sweep.CSV_COLUMNS)
        log_table(trainer.loggers, "sweep/tt", columns,
                  [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in (f[c] for c in columns)]
                   for f in flat], trainer.global_step)
        tt_sweep.write_csv(rows, self.folder / "tt_sweep.csv", self.layout)
        (self.folder / "tt_sweep.md").write_text(tt_sweep.markdown_rows(rows) + "\n")
        path = self.folder / "tt_sweep.png"
        tt_sweep.plot(rows, path, f"TT corruption study at step {trainer.global_step}")
        log_image(trainer.loggers, "sweep/tt_plot", path, trainer.global_step)
