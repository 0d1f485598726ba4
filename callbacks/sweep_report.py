"""SweepReport: sweep the final weights at the end of fit and log the table and the plot.

The alpha sweep (gated models: along the dial, or on a grid of the simplex with ternary plots for
K = 3) or the TT corruption sweep (SuccuLM): table `sweep/alpha` or `sweep/tt`, image
`sweep/alpha_plot` or `sweep/tt_plot`, plus the CSV/markdown/PNG of `python -m succu.sweep` under
`<log_dir>/sweeps/`; with `voice: N` also the voice meter's shares (table `sweep/voice`, image
`sweep/voice_plot`, metrics `voice/accuracy...`). Tables and images go to the loggers that take
them (`succu.loggers.takes_media`, e.g. WandbLogger); over two sources W&B also gets a line chart
of each corpus against alpha (`sweep/alpha_chart`, `sweep/voice_chart`); the files stay for every
run. Sweeps run on rank 0 only (the bare module, no collectives).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from succu import dial
from succu.contracts import NamedCorpora
from succu.dial import Position
from succu.io import write_outputs
from succu.loggers import log_image, log_line_chart, log_metrics, log_table, run_folder
from succu.nn.utils import eval_mode


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
        data = trainer.datamodule
        names = list(data.corpora) if isinstance(data, NamedCorpora) else [f"corpus{c}" for c in range(k)]
        positions = dial.dial_grid(k, self.alphas if self.alphas or k > 2 else "0:1:0.25", self.step)
        batches = alpha_sweep.val_batches(trainer.datamodule, self.max_batches)
        rows = self.rows = alpha_sweep.sweep(pl_module, batches, positions, names)
        self.publish(trainer, "alpha", alpha_sweep.outputs(
            "alpha_sweep", rows, names, f"Alpha sweep at step {trainer.global_step} (val loss, nats/token)",
            f"alpha sweep at step {trainer.global_step}", "val loss (nats/token)"), rows, names,
            f"val loss (nats/token) along the dial at step {trainer.global_step}")
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
            "share judged this corpus", best=max), rows, names,
            f"share of samples judged each corpus along the dial at step {trainer.global_step}")
        log_metrics(trainer, {"voice/accuracy" if c == "all" else f"voice/accuracy/{c}": v
                              for c, v in accuracy.items()})

    def publish(self, trainer: L.Trainer, what: str, files: dict[str, str | bytes],
                rows: list[dict[str, Any]], names: list[str], chart_title: str) -> None:
        """Write the CSV/markdown/PNG under sweeps/, hand the table (`sweep/<what>`: one column
        per share of a K-source position), for two sources the line chart of each corpus against
        alpha (`sweep/<what>_chart`), and the PNG (`sweep/<what>_plot`) to the loggers."""
        paths = write_outputs(self.folder, files)
        k_source = isinstance(rows[0]["alpha"], tuple)
        shares = [f"alpha_{n}" for n in names] if k_source else ["alpha"]
        table = [[*(r["alpha"] if k_source else [r["alpha"]]), *(r[n] for n in names)] for r in rows]
        log_table(trainer.loggers, f"sweep/{what}", [*shares, *names], table, trainer.global_step)
        if not k_source:  # a K-source grid has no single axis: its ternary PNG shows it
            log_line_chart(trainer.loggers, f"sweep/{what}_chart", [r["alpha"] for r in rows],
                           {n: [r[n] for r in rows] for n in names}, "alpha", chart_title,
                           trainer.global_step)
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
