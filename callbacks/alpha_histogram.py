"""AlphaHistogram: the dial draws of AlphaBetaSampling since the last validation, as a picture.

Summed over DDP ranks (an all-reduce at the same validation on every rank) and split by the corpus
drawn: image `train/alpha_hist` (over K corpora one panel per corpus k: the drawn share alpha_k),
handed to the loggers that take images (`succu.loggers.takes_media`, e.g. WandbLogger) and written
as a PNG under the run's folder (`<log_dir>/alpha/`), so a CSV-only run keeps it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from succu.contracts import NamedCorpora
from succu.dial import dial_batch_alpha
from succu.loggers import log_image, run_folder


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
        data = trainer.datamodule
        names = list(data.corpora) if isinstance(data, NamedCorpora) else [f"corpus {c}" for c in range(k)]
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
