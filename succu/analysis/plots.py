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


# Corners of the ternary plot: source 0 bottom left, source 1 bottom right, source 2 on top.
TERNARY_CORNERS = ((0.0, 0.0), (1.0, 0.0), (0.5, 3**0.5 / 2))


def ternary_xy(points) -> tuple[list[float], list[float]]:
    """Plane coordinates of 3-source dial positions: sum_k alpha_k corner_k."""
    xs = [sum(a * c[0] for a, c in zip(p, TERNARY_CORNERS)) for p in points]
    ys = [sum(a * c[1] for a, c in zip(p, TERNARY_CORNERS)) for p in points]
    return xs, ys


def ternary_figure(points, panels: dict[str, list[float]], corners: list[str], label: str,
                   title: str) -> plt.Figure:
    """One triangle per panel (e.g. per corpus), coloured by its values at the dial `points`
    (3 shares each): filled contours where the grid allows them, the grid points on top."""
    import matplotlib.tri as mtri

    xs, ys = ternary_xy(points)
    cols = min(3, len(panels))  # three to a row: six panels stay readable
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 4.0 * rows), squeeze=False)
    outline = [*TERNARY_CORNERS, TERNARY_CORNERS[0]]
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, values) in zip(axes.flat, panels.items()):
        if len(points) >= 3:
            shading = ax.tricontourf(mtri.Triangulation(xs, ys), values, levels=12, cmap="viridis")
        dots = ax.scatter(xs, ys, c=values, cmap="viridis", edgecolors="white", linewidths=0.4, s=18)
        fig.colorbar(shading if len(points) >= 3 else dots, ax=ax, shrink=0.8, pad=0.12, label=label)
        ax.plot(*zip(*outline), color="black", linewidth=0.8)
        for (cx, cy), corner in zip(TERNARY_CORNERS, corners):  # centred: clear of the colour bar
            ax.annotate(corner, (cx, cy), xytext=(0, 6 if cy > 0 else -12), textcoords="offset points",
                        ha="center", fontsize=8)
        ax.set_title(name, fontsize=9, pad=16)  # above the top corner's label
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
