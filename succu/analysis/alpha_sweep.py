"""The alpha sweep: validation loss of each corpus at each position of a gated model's dial.

    python -m succu.sweep alpha --ckpt runs/abcgpt_char/version_0/checkpoints/last.ckpt \\
        --alphas 0:1:0.1 --out runs/alpha_sweep

Writes alpha_sweep.csv (one row per alpha, one column per corpus), alpha_sweep.md and
alpha_sweep.png (one panel per corpus, loss against alpha). --out is checked (created, writable)
before the sweep starts; the three files are built in memory, then each is written atomically
(temporary file + rename), so a failure leaves the old files whole. A working dial puts each corpus's
minimum at its own end (TinyStories, corpus 0, at alpha = 0; Shakespeare, corpus 1, at alpha = 1).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import torch

from succu.contracts import NamedCorpora
from succu.io import atomic_write, figure_bytes, remove_orphans, writable_folder, write_outputs
from succu.modules.base import LanguageModule, token_count
from succu.nn.gates import check_alpha
from succu.nn.utils import eval_mode

HELP = "validation loss per corpus across the alpha dial of a gated model (CSV, markdown, PNG)"


def parse_alphas(text: str) -> list[float]:
    """'0:1:0.1' (start:stop:step, stop included; '1:0:0.25' counts down) or '0,0.25,1'."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            n = int(round(abs(stop - start) / step))
            sign = 1.0 if stop >= start else -1.0
            alphas = [round(start + sign * i * step, 10) for i in range(n + 1)]
        else:
            alphas = [float(x) for x in text.split(",") if x.strip()]
        if not alphas:
            raise ValueError
    except ValueError:
        raise ValueError(f"--alphas {text!r}: expected start:stop:step (e.g. 0:1:0.1) or a comma list") from None
    for a in alphas:
        check_alpha(a)
    return alphas


def val_batches(datamodule, max_batches: int | None = None) -> list[dict]:
    """The datamodule's validation batches, at most `max_batches` of each corpus (`source`)."""
    kept, seen = [], {}
    for batch in datamodule.val_dataloader():
        corpus = int(batch["source"][0]) if "source" in batch else 0
        seen[corpus] = seen.get(corpus, 0) + 1
        if max_batches is None or seen[corpus] <= max_batches:
            kept.append(batch)
    return kept


@torch.no_grad()
def sweep(module: LanguageModule, batches, alphas: list[float], names: list[str]) -> list[dict]:
    """Token-weighted validation loss per corpus at each alpha; batches hold one corpus each."""
    rows = []
    with eval_mode(module):
        for alpha in alphas:
            totals: dict[str, list[float]] = {}
            for batch in batches:
                corpus = names[int(batch["source"][0])] if "source" in batch else names[0]
                logits = module(batch["input_ids"].to(module.device), alpha=alpha)
                labels = batch["labels"].to(module.device)
                n = token_count(labels)
                acc = totals.setdefault(corpus, [0.0, 0])
                acc[0] += float(module.loss(logits, labels)) * n
                acc[1] += n
            rows.append({"alpha": alpha, **{c: t / n for c, (t, n) in totals.items()}})
    return rows


def markdown(rows: list[dict], names: list[str]) -> str:
    lines = ["| alpha | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    best = {c: min(r[c] for r in rows) for c in names}
    for r in rows:
        cells = [f"**{r[c]:.3f}**" if r[c] == best[c] else f"{r[c]:.3f}" for c in names]
        lines.append(f"| {r['alpha']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(rows: list[dict], names: list[str]) -> str:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["alpha", *names])
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def plot(rows: list[dict], names: list[str], path: Path, title: str) -> None:
    """alpha_sweep.png at `path`, written atomically."""
    atomic_write(path, plot_png(rows, names, title))


def plot_png(rows: list[dict], names: list[str], title: str) -> bytes:
    from succu.analysis.plots import plt

    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    alphas = [r["alpha"] for r in rows]
    for ax, name in zip(axes[0], names):
        ax.plot(alphas, [r[name] for r in rows], marker="o")
        ax.set_title(name)
        ax.set_xlabel("alpha")
        ax.set_ylabel("val loss (nats/token)")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_bytes(fig, dpi=100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="a checkpoint of a gated model (GatedGPT)")
    parser.add_argument("--alphas", default="0:1:0.1", help="start:stop:step or a comma list")
    parser.add_argument("--out", default="runs/alpha_sweep", help="folder for the CSV, markdown, PNG")
    parser.add_argument("--max_batches", type=int, default=None, help="validation batches per corpus")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def run(args: argparse.Namespace) -> list[dict]:
    from succu.checkpoint import load_datamodule, load_module

    torch.set_num_threads(args.threads)
    alphas = parse_alphas(args.alphas)
    out = writable_folder(args.out)  # before any work: a bad --out must not cost the sweep
    remove_orphans([out])
    module = load_module(args.ckpt)
    if not module.has_dial:
        raise ValueError(f"{args.ckpt} holds {type(module.model).__name__}, which has no alpha dial")
    datamodule = load_datamodule(args.ckpt, module, data_dir=args.data_dir, cache_dir=args.cache_dir)
    datamodule.setup("validate")
    names = list(datamodule.corpora) if isinstance(datamodule, NamedCorpora) else ["data"]
    batches = val_batches(datamodule, args.max_batches)
    rows = sweep(module, batches, alphas, names)
    table = markdown(rows, names)
    paths = write_outputs(out, {
        "alpha_sweep.csv": csv_text(rows, names),
        "alpha_sweep.md": f"Alpha sweep of `{args.ckpt}` (val loss, nats/token)\n\n{table}\n",
        "alpha_sweep.png": plot_png(rows, names, f"alpha sweep: {Path(args.ckpt).name}"),
    })
    print(table)
    print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr)
    return rows
