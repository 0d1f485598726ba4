"""The alpha sweep: validation loss of each corpus at each position of a gated model's dial.

    python -m succu.sweep alpha --ckpt runs/abcgpt_char/version_0/checkpoints/last.ckpt \\
        --alphas 0:1:0.1 --out runs/alpha_sweep

Writes alpha_sweep.csv (one row per alpha, one column per corpus), alpha_sweep.md and
alpha_sweep.png (one panel per corpus, loss against alpha). A dial over K > 2 corpora is swept on
a grid of the simplex (`--step`, default 0.1: every point whose shares are multiples of it; or
`--alphas` as points "1,0,0;0.5,0.5,0"): the CSV has one column alpha_<corpus> per share, and
the PNG (K = 3) is a ternary heat map of each corpus's loss.

`--voice N` adds the voice meter (succu/analysis/voice.py): fitted on the training splits, checked
on validation windows (accuracy printed), then N sampled continuations per dial position, judged
by corpus: voice.csv, voice.md and voice.png (share of each corpus against alpha; K = 3: ternary). --out is checked (created, writable)
before the sweep starts; the three files are built in memory, then each is written atomically
(temporary file + rename), so a failure leaves the old files whole. A working dial puts each corpus's
minimum at its own end (TinyStories, corpus 0, at alpha = 0; Shakespeare, corpus 1, at alpha = 1).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from itertools import product
from pathlib import Path

import torch

from succu.contracts import NamedCorpora
from succu.dial import Position, dial_grid, position_label
from succu.io import atomic_write, figure_bytes, remove_orphans, writable_folder, write_outputs
from succu.modules.base import LanguageModule, token_count
from succu.nn.utils import eval_mode
from succu.progress import progress

HELP = "validation loss per corpus across the alpha dial of a gated model (CSV, markdown, PNG)"
MAX_POSITIONS = 10_000  # dial positions one sweep scores (each a pass over the validation batches)
MAX_VOICE = 10_000  # --voice: sampled continuations per position


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
    """Token-weighted validation loss per corpus at each alpha; batches hold one corpus each.
    Every batch at every alpha, alpha by alpha, with progress on standard error."""
    batches = list(batches)
    totals: list[dict[str, list[float]]] = [{} for _ in alphas]
    work = product(range(len(alphas)), batches)
    with eval_mode(module):
        for i, batch in progress(work, "alpha sweep", len(alphas) * len(batches)):
            corpus = names[int(batch["source"][0])] if "source" in batch else names[0]
            logits = module(batch["input_ids"].to(module.device), alpha=alphas[i])
            labels = batch["labels"].to(module.device)
            n = token_count(labels)
            acc = totals[i].setdefault(corpus, [0.0, 0])
            acc[0] += float(module.loss(logits, labels)) * n
            acc[1] += n
    return [{"alpha": alpha, **{c: t / n for c, (t, n) in total.items()}}
            for alpha, total in zip(alphas, totals)]


def markdown(rows: list[dict], names: list[str], pick=min) -> str:
    """A table over dial positions, each corpus's best value (`pick`: min for losses) in bold."""
    lines = ["| alpha | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    best = {c: pick(r[c] for r in rows) for c in names}
    for r in rows:
        cells = [f"**{r[c]:.3f}**" if r[c] == best[c] else f"{r[c]:.3f}" for c in names]
        lines.append(f"| {position_label(r['alpha'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(rows: list[dict], names: list[str]) -> str:
    """One row per dial position; a K-source position is spread over columns alpha_<corpus>."""
    text = io.StringIO(newline="")
    k_source = bool(rows) and isinstance(rows[0]["alpha"], tuple)
    shares = [f"alpha_{n}" for n in names] if k_source else ["alpha"]
    writer = csv.DictWriter(text, fieldnames=[*shares, *names])
    writer.writeheader()
    for r in rows:
        alpha = dict(zip(shares, r["alpha"])) if k_source else {"alpha": r["alpha"]}
        writer.writerow({**alpha, **{n: r[n] for n in names}})
    return text.getvalue()


def plot(rows: list[dict], names: list[str], path: Path, title: str) -> None:
    """alpha_sweep.png at `path`, written atomically."""
    atomic_write(path, plot_png(rows, names, title))


def plot_png(rows: list[dict], names: list[str], title: str, label: str = "val loss (nats/token)") -> bytes:
    """Each corpus's value against alpha; for three sources, a ternary heat map per corpus."""
    from succu.analysis.plots import plt, ternary_figure

    if isinstance(rows[0]["alpha"], tuple):
        points = [r["alpha"] for r in rows]
        fig = ternary_figure(points, {n: [r[n] for r in rows] for n in names}, names, label, title)
        return figure_bytes(fig, dpi=100)

    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    alphas = [r["alpha"] for r in rows]
    for ax, name in zip(axes[0], names):
        ax.plot(alphas, [r[name] for r in rows], marker="o")
        ax.set_title(name)
        ax.set_xlabel("alpha")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_bytes(fig, dpi=100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="a checkpoint of a gated model (GatedGPT)")
    parser.add_argument("--alphas", default=None,
                        help="two sources: start:stop:step or a comma list (default 0:1:0.1); K "
                             "sources: points of K shares separated by ';' (default: the --step grid)")
    parser.add_argument("--step", type=float, default=0.1,
                        help="K-source dial: grid step on the simplex (1/step whole, e.g. 0.1 or 0.25)")
    parser.add_argument("--out", default="runs/alpha_sweep", help="folder for the CSV, markdown, PNG")
    parser.add_argument("--max_batches", type=int, default=None, help="validation batches per corpus")
    parser.add_argument("--voice", type=int, default=0,
                        help="voice meter: N sampled continuations per dial position (64 or more "
                             "for a reading; 0: off), judged by corpus")
    parser.add_argument("--voice_seed", type=int, default=0, help="seed of the voice samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def run(args: argparse.Namespace) -> list[dict]:
    from succu.checkpoint import load_datamodule, load_module

    torch.set_num_threads(args.threads)
    if not 0 <= args.voice <= MAX_VOICE:
        raise ValueError(f"--voice must be 0 (off) or a number of samples per position up to "
                         f"{MAX_VOICE:,}, got {args.voice:,}")
    if args.max_batches is not None and args.max_batches < 1:
        raise ValueError(f"--max_batches must be a positive integer, got {args.max_batches}")
    if args.alphas is not None and ";" not in args.alphas:  # a two-source range: refused before the load
        check_grid_size(2, args.alphas, args.step)
    out = writable_folder(args.out)  # before any work: a bad --out must not cost the sweep
    remove_orphans([out])
    module = load_module(args.ckpt)
    if not module.has_dial:
        raise ValueError(f"{args.ckpt} holds {type(module.model).__name__}, which has no alpha dial")
    datamodule = load_datamodule(args.ckpt, module, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                 data_paths=args.data_paths)
    names = list(datamodule.corpora) if isinstance(datamodule, NamedCorpora) else ["data"]
    # The dial spans the data's corpora (a model of another size fails at its first forward).
    check_grid_size(max(2, len(names)), args.alphas, args.step)  # before the grid is built
    alphas = dial_grid(max(2, len(names)), args.alphas, args.step)
    datamodule.setup("validate")
    rows = sweep(module, val_batches(datamodule, args.max_batches), alphas, names)
    files = outputs("alpha_sweep", rows, names, f"Alpha sweep of `{args.ckpt}` (val loss, nats/token)",
                    f"alpha sweep: {Path(args.ckpt).name}", "val loss (nats/token)")
    if args.voice:
        files.update(voice_outputs(module, datamodule, alphas, args))
    paths = write_outputs(out, files)
    print(markdown(rows, names))
    print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr)
    return rows


def outputs(stem: str, rows: list[dict], names: list[str], heading: str, title: str,
            label: str, best=min) -> dict[str, str | bytes]:
    """CSV, markdown and (for up to three sources) PNG of a table of rows over dial positions."""
    files: dict[str, str | bytes] = {
        f"{stem}.csv": csv_text(rows, names),
        f"{stem}.md": f"{heading}\n\n{markdown(rows, names, pick=best)}\n",
    }
    k = len(rows[0]["alpha"]) if isinstance(rows[0]["alpha"], tuple) else 2
    if k <= 3:  # a line per corpus for two sources, a triangle for three; no picture beyond
        files[f"{stem}.png"] = plot_png(rows, names, title, label)
    return files


def grid_size(k: int, alphas: str | None, step: float) -> float:
    """How many positions `dial_grid(k, alphas, step)` holds, counted without building it: inf
    when too many to count, 0 when the grid is malformed (dial_grid then says what is wrong)."""
    if alphas is None and k == 2:
        return 11  # 0:1:0.1
    if alphas is None:
        if not (math.isfinite(step) and step > 0):
            return 0
        n = round(1 / step)
        return math.comb(n + k - 1, k - 1) if n <= MAX_POSITIONS else math.inf  # simplex points
    if k > 2:
        return sum(1 for p in alphas.split(";") if p.strip())
    if ":" not in alphas:
        return alphas.count(",") + 1
    try:
        start, stop, step = (float(x) for x in alphas.split(":"))
    except ValueError:
        return 0
    if any(map(math.isnan, (start, stop, step))) or step <= 0:
        return 0
    steps = abs(stop - start) / step
    return round(steps) + 1 if math.isfinite(steps) else math.inf


def check_grid_size(k: int, alphas: str | None, step: float) -> None:
    """Refuse a grid of more than MAX_POSITIONS positions in one line, before it is built."""
    size = grid_size(k, alphas, step)
    if size <= MAX_POSITIONS:
        return
    what = f"--alphas {alphas}" if alphas is not None else f"--step {step:g} over {k} sources"
    count = f"more than {MAX_POSITIONS:,}" if math.isinf(size) else f"{size:,}"
    raise ValueError(f"{what} gives {count} dial positions; a sweep scores at most {MAX_POSITIONS:,} "
                     "(a larger step or a shorter range)")


def voice_reading(module: LanguageModule, datamodule, alphas: list[Position], n: int,
                  seed: int = 0, length: int = 200) -> tuple[list[dict], dict[str, float], list[str]]:
    """The voice meter's reading of the dial: (rows of shares per position, the meter's accuracy
    on validation windows per corpus and "all", the corpus names). The meter is fitted on the
    training splits of the model's own data (succu.contracts.TextSplits); each sample has
    `length` new characters (the meter is read at 200)."""
    from succu.analysis import voice

    meter = voice.VoiceMeter.fit(voice.corpus_texts(datamodule, "train"))
    accuracy = voice.window_accuracy(meter, voice.corpus_texts(datamodule, "val"))
    rows = voice.voice_shares(module, meter, alphas, n=n, length=length, seed=seed)
    return rows, accuracy, meter.names


def accuracy_text(accuracy: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items())


def voice_outputs(module: LanguageModule, datamodule, alphas: list[Position],
                  args: argparse.Namespace) -> dict[str, str | bytes]:
    """The voice meter's reading of the dial: fit, check (printed), sample, judge."""
    from succu.analysis import voice

    rows, accuracy, names = voice_reading(module, datamodule, alphas, args.voice, args.voice_seed)
    shown = accuracy_text(accuracy)
    print(f"voice meter: accuracy on {voice.WINDOW}-character validation windows: {shown}",
          file=sys.stderr)
    heading = (f"Voice of `{args.ckpt}`: share of {args.voice} samples per position judged to be "
               f"each corpus (meter accuracy on validation windows: {shown})")
    return outputs("voice", rows, names, heading, f"voice: {Path(args.ckpt).name}",
                   "share judged this corpus", best=max)
