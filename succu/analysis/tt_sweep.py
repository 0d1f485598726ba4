"""The corruption study: squeeze FFN layers into tensor trains and watch what breaks.

`python -m succu.sweep tt --ckpt last.ckpt --layers "0;1;2;3;0,1;1,2;2,3;0,1,2,3" \\
    --bond_dims 47,42,39,27,20`

`python -m succu.sweep tt --ckpt last.ckpt --plan article --seeds 0 --samples 20`
(the article's own experiments, 20 samples of each of its 14 prompts at T = 0.6: see ARTICLE_PLAN)

For every layer set L (blocks whose FFN is squeezed) and every bond spec b, both FFN Linears of
each block in L become TTLinears (default layout "mps", the one of the article "Growing SuccuLM
(2) — Model Compression with Tensor Networks Revisited"): W (out, in) is reshaped to
(out modes, in modes), e.g. a 200x50 weight to (10, 20, 5, 10), and decomposed by TT-SVD with the
outer bonds exact and the (out | in) bond set to b. A bond spec is an int (the same b in every
block of L) or a bracketed per-block list `[39,42,46,47]` (used only with layer sets of that size).

Each row records the parameters of the compressed Linears, the relative weight error
||W - W_tt||_F / ||W||_F pooled over them, the validation loss, greedy QA exact match (training and
held-out questions), and the sophia-trap rates (`succu.analysis.trap`) at a temperature over several
seeds (mean and spread across seeds). Where the data's world can judge text (`WorldKnowledge`,
the succulent world) the same samples are also read by the grammar and fact meter
(`succu.analysis.meter`): grammar rate, out-of-template word rate, fact rate, false-fact rate.

Experiments: `--layers` x `--bond_dims` (every layer set at every bond; a per-block list only for
sets of its length), or an explicit list `--experiments "0@27;0,1@30;0,1,2,3@[39,42,46,47]"`, or
`--plan article`, the experiments of the article: each layer alone at bonds 27 and 20, all four
layers at [39, 42, 46, 47] and reversed, the pairs [0, 1], [2, 3], [1, 2] at bond 30.

The low-rank baseline
    Beside each row the same Linears are replaced by their truncated SVD W ~ U_k S_k V_k^T, the
    best rank-k matrix (Eckart-Young), with k chosen per layer as the largest rank whose factors
    (k (in + out) numbers) do not exceed that layer's TT cores. Biases are kept in both. Note that
    an "mps" train whose only truncated bond is the (out | in) one IS the rank-b truncated SVD, plus
    the exact outer cores' overhead: at equal parameters the baseline gets the same or a higher
    rank. Layout "ttm" (Kronecker-structured) is the genuinely different structure to compare.

Outputs in --out: tt_sweep.csv, tt_sweep.md, tt_sweep.png and tt_sweep_offenders.md. --out is
checked (created, writable) before the sweep starts; the four files are built in memory, then each
is written atomically (temporary file + rename), so a failure leaves the old files whole.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from succu.analysis.compression import clamp_bonds, ffn_specs, low_rank_, val_metrics
from succu.analysis.meter import METER_RATES, Meter
from succu.analysis.trap import (
    hidden_token_ids,
    leak_token_ids,
    probe_trap,
    qa_metrics,
)
from succu.contracts import QAProbes, WorldKnowledge, require
from succu.io import atomic_write, figure_bytes, remove_orphans, writable_folder, write_outputs
from succu.loggers import markdown_table
from succu.modules.base import LanguageModule
from succu.nn.tt import TTLinear, compress_linears
from succu.progress import progress

HELP = "tensor-train corruption study of FFN layers, with a low-rank baseline"
MAX_SAMPLES = 10_000  # --samples: per probe prompt and seed
MAX_SEEDS = 100  # --seeds


# ----------------------------------------------------------------------------- evaluation
@dataclass
class Probe:
    """Everything an evaluation needs besides the model."""

    val_loader: Any
    prompts: list[str]
    hidden_ids: list[int]
    train_qa: list[tuple[str, str]]
    heldout_qa: list[tuple[str, str]]
    temperature: float = 0.6
    seeds: tuple[int, ...] = (0, 1, 2)
    samples: int = 4
    meter: Meter | None = None  # the world's grammar and fact meter, when the data has one


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def evaluate(module: LanguageModule, probe: Probe) -> dict[str, float]:
    """val_loss, hidden/special mass, qa_exact(_heldout), trap rates and, with a meter, grammar
    and fact rates (mean, std over sampling seeds)."""
    out = val_metrics(module, probe.val_loader, probe.hidden_ids, leak_token_ids(module.tokenizer))
    out.update(qa_metrics(module, probe.train_qa, probe.heldout_qa, prefix=""))
    per_seed = probe_trap(module, probe.prompts, probe.hidden_ids, temperature=probe.temperature,
                          seeds=probe.seeds, samples=probe.samples, meter=probe.meter)
    for name in ("hidden_rate", "hidden_token_rate", "special_rate", "special_token_rate"):
        out[name], out[name + "_std"] = _mean_std([getattr(c, name) for c in per_seed])
    if probe.meter is not None:
        for name in METER_RATES:
            values = [c.meter.rates()[name] for c in per_seed if c.meter is not None]
            values = [v for v in values if not math.isnan(v)]  # a seed that stated no fact
            out[name], out[name + "_std"] = _mean_std(values) if values else (math.nan, 0.0)
    out["offenders"] = [g for c in per_seed for g in c.offenders]  # type: ignore[assignment]
    return out


def compressed_row(module: LanguageModule, specs: dict[str, dict],
                   probe: Probe) -> tuple[dict[str, Any], dict[str, TTLinear]]:
    """Evaluate a TT copy of `module`: (metrics and parameter bookkeeping, the TT layers)."""
    model = copy.deepcopy(module)
    dense = {name: model.get_submodule(name) for name in specs}
    w_sq = sum(float(lin.weight.detach().double().pow(2).sum()) for lin in dense.values())
    layers = compress_linears(model, specs)
    row = {
        "params": sum(t.num_params() for t in layers.values()),
        "dense_params": sum(t.dense_params() for t in layers.values()),
        "model_params": sum(p.numel() for p in model.parameters()),
        "rel_error": math.sqrt(sum(t.discarded_sq_sum() for t in layers.values()) / w_sq),
        "bond_dims_realised": {n: t.bond_dims for n, t in layers.items()},
    }
    row.update(evaluate(model, probe))
    return row, layers


def low_rank_row(module: LanguageModule, tt_layers: dict[str, TTLinear],
                 probe: Probe) -> dict[str, Any]:
    """Truncated-SVD copy of `module` with, per layer, at most the TT cores' parameter count."""
    model = copy.deepcopy(module)
    err_sq = w_sq = 0.0
    ranks, params = [], 0
    for name, tt in tt_layers.items():
        linear = model.get_submodule(name)
        cores = sum(c.numel() for c in tt.cores)
        rank = max(1, min(cores // (linear.in_features + linear.out_features),
                          linear.in_features, linear.out_features))
        w_sq += float(linear.weight.detach().double().pow(2).sum())
        err_sq += low_rank_(linear, rank)
        ranks.append(rank)
        params += rank * (linear.in_features + linear.out_features) + (
            0 if linear.bias is None else linear.bias.numel())
    row = {"rank": ranks, "params": params, "rel_error": math.sqrt(err_sq / w_sq)}
    row.update(evaluate(model, probe))
    return row


# ----------------------------------------------------------------------------- command line
def parse_layer_sets(text: str) -> list[tuple[int, ...]]:
    """"0;1;0,1" -> [(0,), (1,), (0, 1)]."""
    try:
        sets = [tuple(int(b) for b in part.split(",")) for part in text.split(";") if part.strip()]
    except ValueError:
        raise ValueError(f"--layers wants block lists like '0;1;0,1', got {text!r}") from None
    if not sets:
        raise ValueError("--layers names no layer set")
    return sets


def parse_bond_specs(text: str) -> list[int | tuple[int, ...]]:
    """"47,20,[39,42,46,47]" -> [47, 20, (39, 42, 46, 47)]: ints, or bracketed per-block lists."""
    specs: list[int | tuple[int, ...]] = []
    for token in re.findall(r"\[[^\]]*\]|[^,\s]+", text):
        try:
            if token.startswith("["):
                specs.append(tuple(int(v) for v in token[1:-1].split(",")))
            else:
                specs.append(int(token))
        except ValueError:
            raise ValueError(f"--bond_dims wants ints or [a,b,...] lists, got {token!r}") from None
    if not specs or any(v < 1 for s in specs for v in (s if isinstance(s, tuple) else (s,))):
        raise ValueError(f"--bond_dims wants positive bond dims, got {text!r}")
    return specs


# The article's experiments ("Growing SuccuLM (2)"), in its order: all four layers loosened and
# tightened from the first FFN to the last, each layer alone at 27 then 20, the pairs at 30.
ARTICLE_PLAN = ("0,1,2,3@[39,42,46,47];0,1,2,3@[47,46,42,39];0@27;1@27;2@27;3@27;"
                "0@20;1@20;2@20;3@20;0,1@30;2,3@30;1,2@30")
PLANS = {"article": ARTICLE_PLAN}

Cell = tuple[tuple[int, ...], int | tuple[int, ...]]


def parse_experiments(text: str) -> list[Cell]:
    """"0@27;0,1@30;0,1,2,3@[39,42,46,47]" -> [((0,), 27), ((0, 1), 30), ((0, 1, 2, 3), (39, ...))].

    Each experiment is a layer set, '@', and one bond spec (an int for every block of the set, or
    a bracketed list with one bond per block)."""
    cells: list[Cell] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        layers, at, bonds = part.partition("@")
        if not at:
            raise ValueError(f"--experiments wants 'layers@bond' items like '0,1@30', got {part!r}")
        (blocks,), specs = parse_layer_sets(layers), parse_bond_specs(bonds)
        if len(specs) != 1:
            raise ValueError(f"--experiments wants one bond spec per item, got {bonds!r} in {part!r}")
        if isinstance(specs[0], tuple) and len(specs[0]) != len(blocks):
            raise ValueError(f"--experiments item {part!r} names {len(specs[0])} bonds for "
                             f"{len(blocks)} blocks; give one per block")
        cells.append((blocks, specs[0]))
    if not cells:
        raise ValueError("--experiments names no experiment")
    return cells


def grid_cells(layer_sets, bond_specs) -> list[Cell]:
    """Every layer set at every bond spec; a per-block list only for sets of its length."""
    return [(blocks, bonds) for blocks in layer_sets for bonds in bond_specs
            if not (isinstance(bonds, tuple) and len(bonds) != len(blocks))]


def parse_modes(text: str | None) -> dict[int, tuple[int, ...]]:
    """"50=5x10,200=10x20" -> {50: (5, 10), 200: (10, 20)}."""
    modes = {}
    for item in (text or "").split(","):
        if item.strip():
            size, _, factors = item.partition("=")
            modes[int(size)] = tuple(int(f) for f in factors.split("x"))
    return modes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="a succu checkpoint (e.g. last.ckpt)")
    parser.add_argument("--layers", default="0;1;2;3;0,1;1,2;2,3;0,1,2,3",
                        help="layer sets separated by ';', blocks by ',' (default: those of the "
                             "SuccuLM tensor-network article)")
    parser.add_argument("--bond_dims", default="47,42,39,27,20",
                        help="(out|in) bonds to sweep: ints, or [a,b,..] lists per block of a set")
    parser.add_argument("--experiments", default=None,
                        help="explicit 'layers@bond' items instead of --layers x --bond_dims, e.g. "
                             "'0@27;0,1@30;0,1,2,3@[39,42,46,47]'")
    parser.add_argument("--plan", default=None, choices=sorted(PLANS),
                        help="a named list of experiments: 'article' = each layer alone at 27 and "
                             "20, all four at [39,42,46,47] and reversed, pairs 0,1 2,3 1,2 at 30")
    parser.add_argument("--layout", default="mps", choices=["mps", "ttm"])
    parser.add_argument("--modes", default=None, help="e.g. '50=5x10,200=10x20' (default: auto)")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds for the trap rates")
    parser.add_argument("--samples", type=int, default=4, help="samples per probe prompt and seed")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--no_baseline", action="store_true", help="skip the low-rank baseline")
    parser.add_argument("--out", default="runs/tt_sweep", help="folder for the CSV, markdown, PNG")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def make_probe(datamodule, args: argparse.Namespace) -> Probe:
    datamodule = require(datamodule, QAProbes, "the TT corruption study")
    check_samples(args.samples)
    meter = Meter(datamodule.world_grammar()) if isinstance(datamodule, WorldKnowledge) else None
    return Probe(
        val_loader=datamodule.val_dataloader(), prompts=list(datamodule.probe_prompts),
        hidden_ids=hidden_token_ids(datamodule), train_qa=list(datamodule.train_qa),
        heldout_qa=list(datamodule.heldout_qa), temperature=args.temperature,
        seeds=parse_seeds(args.seeds), samples=args.samples, meter=meter,
    )


def check_samples(samples: int) -> None:
    if samples < 1:
        raise ValueError(f"--samples must be at least 1 (rates need samples), got {samples}")
    if samples > MAX_SAMPLES:
        raise ValueError(f"--samples must be at most {MAX_SAMPLES:,} per probe prompt and seed, got {samples:,}")


def parse_seeds(text: str) -> tuple[int, ...]:
    """"0,1,2" -> (0, 1, 2): at most MAX_SEEDS sampling seeds."""
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds wants comma-separated integers like '0,1,2', got {text!r}") from None
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise ValueError(f"--seeds wants 1 to {MAX_SEEDS} seeds, got {len(seeds):,}")
    return seeds


def experiment_cells(args: argparse.Namespace) -> list[Cell]:
    """The (layer set, bond spec) cells asked for: --plan, else --experiments, else the grid."""
    if args.plan is not None and args.experiments is not None:
        raise ValueError("give --plan or --experiments, not both")
    if args.plan is not None:
        return parse_experiments(PLANS[args.plan])
    if args.experiments is not None:
        return parse_experiments(args.experiments)
    return grid_cells(parse_layer_sets(args.layers), parse_bond_specs(args.bond_dims))


def sweep(module: LanguageModule, probe: Probe, layer_sets, bond_specs=None, layout: str = "mps",
          modes=None, baseline: bool = True, log=print) -> list[dict[str, Any]]:
    """One row per (layer set, bond spec), plus the uncompressed model first.

    `layer_sets` x `bond_specs` is the grid; with `bond_specs` None, `layer_sets` is already a
    list of (layer set, bond spec) cells (`parse_experiments`, the article's plan)."""
    cells = list(layer_sets) if bond_specs is None else grid_cells(layer_sets, bond_specs)
    reference = evaluate(module, probe)
    rows = [{"layers": "-", "bond_dims": "-", "params": 0, "dense_params": 0, "rel_error": 0.0,
             "model_params": sum(p.numel() for p in module.parameters()), **reference}]
    for blocks, bonds in progress(cells, "tt sweep"):
        start = time.perf_counter()
        asked = list(bonds) if isinstance(bonds, tuple) else [bonds] * len(blocks)
        used = clamp_bonds(module, blocks, asked)
        specs = ffn_specs(module, blocks, used, layout, modes)
        row, layers = compressed_row(module, specs, probe)
        row["layers"] = ",".join(map(str, blocks))
        row["bond_dims"] = "/".join(map(str, used)) if isinstance(bonds, tuple) else str(used[0])
        if used != asked:  # a bond past full rank would leave the layer uncompressed
            row["clamped_from"] = "/".join(map(str, asked))
            log(f"layers {row['layers']}: bond {'/'.join(map(str, asked))} exceeds full rank; "
                f"clamped to {'/'.join(map(str, used))}")
        if baseline:
            row["lr"] = low_rank_row(module, layers, probe)
        rows.append(row)
        log(f"layers {row['layers']:8} bonds {row['bond_dims']:12} params {row['params']:6d} "
            f"val {row['val_loss']:.3f} qa {row['qa_exact']:.3f} "
            f"hidden {row['hidden_rate']:.3f} special {row['special_rate']:.3f} "
            f"grammar {row.get('grammar_rate', math.nan):.3f} "
            f"({time.perf_counter() - start:.1f}s)")
    return rows


def compressed_loss(module: LanguageModule, loader, block: int, bond: int, layout: str = "mps",
                    modes=None) -> float:
    """Validation loss of a copy of `module` whose block `block` has its FFN at `bond`."""
    model = copy.deepcopy(module)
    compress_linears(model, ffn_specs(model, [block], [bond], layout, modes))
    return val_metrics(model, loader)["val_loss"]


def bond_for_damage(module: LanguageModule, loader, block: int, target: float, dense_loss: float,
                    layout: str = "mps", modes=None) -> tuple[int, float]:
    """The largest bond at which compressing `block`'s FFN alone raises the validation loss by at
    least `target` nats over `dense_loss`, and the rise it gives: equal damage, not equal bond,
    is what makes layers comparable. Bisection on [1, full rank] (the loss rises as the bond
    falls; at full rank the layer is exact); bond 1 and its rise when even that falls short."""
    rises: dict[int, float] = {}

    def rise(bond: int) -> float:
        if bond not in rises:
            rises[bond] = compressed_loss(module, loader, block, bond, layout, modes) - dense_loss
        return rises[bond]

    low, high = 1, clamp_bonds(module, [block], [sys.maxsize])[0]
    if rise(low) < target:
        return low, rise(low)
    while high - low > 1:  # rise(low) >= target > rise(high)
        mid = (low + high) // 2
        low, high = (mid, high) if rise(mid) >= target else (low, mid)
    return low, rise(low)


# ----------------------------------------------------------------------------- outputs
METRICS = ("val_loss", "qa_exact", "qa_exact_heldout", "hidden_rate", "hidden_rate_std",
           "hidden_token_rate", "special_rate", "special_rate_std", "special_token_rate",
           "hidden_mass", "special_mass", *(f"{m}{s}" for m in METER_RATES for s in ("", "_std")))
CSV_COLUMNS = ("layers", "bond_dims", "layout", "params", "dense_params", "model_params",
               "rel_error", *METRICS, "lr_rank", "lr_params", "lr_rel_error",
               *(f"lr_{m}" for m in METRICS), "clamped_from")


def flat_row(row: dict[str, Any], layout: str) -> dict[str, Any]:
    flat = {k: row.get(k, "") for k in CSV_COLUMNS if not k.startswith("lr_")}
    flat["layout"] = layout if row["layers"] != "-" else "dense"
    lr = row.get("lr", {})
    flat["lr_rank"] = "/".join(map(str, lr["rank"])) if lr else ""
    for key in ("params", "rel_error", *METRICS):
        flat[f"lr_{key}"] = lr.get(key, "")
    return flat


def csv_text(rows: list[dict[str, Any]], layout: str) -> str:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in flat_row(row, layout).items()})
    return text.getvalue()


def write_csv(rows: list[dict[str, Any]], path: Path, layout: str) -> None:
    atomic_write(path, csv_text(rows, layout).encode())


def markdown_rows(rows: list[dict[str, Any]]) -> str:
    """The compact table: each metric as `TT / low-rank`, rates as mean ± std over seeds."""
    def pair(row, key, fmt):
        tt = fmt(row, key)
        return f"{tt} / {fmt(row['lr'], key)}" if "lr" in row else tt

    def num(r, k):
        return f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k])

    def rate(r, k):
        return f"{r[k]:.2f}±{r[k + '_std']:.2f}"

    def mass(r, k):
        return f"{r[k]:.1e}"

    columns = ["layers", "bond", "params TT / LR", "rel. err TT / LR", "val loss TT / LR",
               "QA exact TT / LR", "held-out QA TT / LR", "hidden rate TT / LR",
               "special rate TT / LR", "p(hidden) TT / LR"]
    metered = "grammar_rate" in rows[0]
    if metered:
        columns += ["grammar TT / LR", "out-of-template TT / LR", "fact rate TT / LR"]
    body = []
    for r in rows:
        cells = [r["layers"], r["bond_dims"] + (f" (clamped from {r['clamped_from']})"
                                                if r.get("clamped_from") else ""),
                 "-" if r["layers"] == "-" else pair(r, "params", num), pair(r, "rel_error", num),
                 pair(r, "val_loss", num), pair(r, "qa_exact", num),
                 pair(r, "qa_exact_heldout", num), pair(r, "hidden_rate", rate),
                 pair(r, "special_rate", rate), pair(r, "hidden_mass", mass)]
        if metered:
            cells += [pair(r, "grammar_rate", rate), pair(r, "oot_rate", rate),
                      pair(r, "fact_rate", rate)]
        body.append(cells)
    return markdown_table(columns, body)


def offenders_text(rows: list[dict[str, Any]], per_row: int = 5) -> str:
    lines = ["# Offending generations (hidden or special tokens), first few per row", ""]
    for row in rows:
        for kind, res in (("TT", row), ("low rank", row.get("lr"))):
            if res and res["offenders"]:
                lines.append(f"## layers {row['layers']} bond {row['bond_dims']} ({kind})")
                lines += [f"- `{g.prompt}` (seed {g.seed}) -> `{g.text}`"
                          for g in res["offenders"][:per_row]]
                lines.append("")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """tt_sweep.png at `path`, written atomically."""
    atomic_write(path, plot_png(rows, title))


def plot_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Six panels against the mean (out|in) bond: TT solid, low rank dashed, dense dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("val_loss", "val loss"), ("qa_exact", "QA exact (train)"),
              ("qa_exact_heldout", "QA exact (held-out)"), ("hidden_rate", "hidden-token rate"),
              ("special_rate", "special-token rate"), ("hidden_mass", "p(hidden), val (log)")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharex=True)
    by_set: dict[str, list[dict[str, Any]]] = {}
    for row in rows[1:]:
        by_set.setdefault(row["layers"], []).append(row)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label) in zip(axes.flat, panels):
        ax.axhline(rows[0][key], color="gray", ls=":", label="dense")
        for i, (name, group) in enumerate(by_set.items()):
            group = sorted(group, key=lambda r: statistics.fmean(map(int, r["bond_dims"].split("/"))))
            x = [statistics.fmean(map(int, r["bond_dims"].split("/"))) for r in group]
            color = colors[i % len(colors)]
            ax.plot(x, [r[key] for r in group], "o-", color=color, label=f"TT {name}")
            if all("lr" in r for r in group):
                ax.plot(x, [r["lr"][key] for r in group], "x--", color=color, alpha=0.6)
        ax.set_title(label)
        if key.endswith("_mass"):
            ax.set_yscale("log")
        ax.set_xlabel("(out|in) bond dim (mean over blocks)")
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title + "  (dashed: low rank at equal params)")
    fig.tight_layout()
    return figure_bytes(fig, dpi=110)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from succu.checkpoint import load_datamodule, load_module

    torch.set_num_threads(args.threads)
    cells = experiment_cells(args)
    modes = parse_modes(args.modes)
    check_samples(args.samples)  # before the checkpoint is read
    parse_seeds(args.seeds)
    out = writable_folder(args.out)  # before any work: a bad --out must not cost the sweep
    remove_orphans([out])
    module = load_module(args.ckpt)
    datamodule = load_datamodule(args.ckpt, module, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                 data_paths=args.data_paths)
    probe = make_probe(datamodule, args)
    rows = sweep(module, probe, cells, None, args.layout, modes, baseline=not args.no_baseline)
    table = markdown_rows(rows)
    header = (f"TT corruption study of `{args.ckpt}` (layout {args.layout}; rates at T="
              f"{args.temperature}, seeds {args.seeds}, {args.samples} samples per prompt)\n\n")
    paths = write_outputs(out, {
        "tt_sweep.csv": csv_text(rows, args.layout),
        "tt_sweep.md": header + table + "\n",
        "tt_sweep_offenders.md": offenders_text(rows),
        "tt_sweep.png": plot_png(rows, f"TT corruption study ({args.layout})"),
    })
    print(table)
    print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr)
    return rows
