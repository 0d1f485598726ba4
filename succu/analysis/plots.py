"""PNG plots written next to a run (`succu.loggers.log_image` hands them to loggers)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def attention_figure(maps: list[torch.Tensor], tokens: list[str]) -> plt.Figure:
    """One row per block, one column per head: attention of one sequence, (T, T) each."""
    n_layer, n_head = len(maps), maps[0].size(0)
    fig, axes = plt.subplots(n_layer, n_head, figsize=(2.2 * n_head + 1, 2.2 * n_layer + 0.5),
                             squeeze=False)
    for layer, heads in enumerate(maps):
        for h in range(n_head):
            ax = axes[layer][h]
            ax.imshow(heads[h].float().cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(f"block {layer}", fontsize=8)
    fig.suptitle(textwrap.fill(" ".join(tokens), width=12 * n_head + 20), fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
