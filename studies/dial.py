"""What the dial is worth: baselines, a voice meter, the property, and a dial over K corpora.

    python -m studies.dial [--jobs 2] [--steps 3000] [--seeds 1337,1,2] [--voice 64]
                           [--recipes all] [--out runs/bench_alpha_dial]
                           [--report dial.md] [--figures runs/bench_alpha_dial/fig]
    python -m studies.dial --quick     # smoke test: the whole path on a few steps
    python -m studies.dial --variants [--variant reference] [--steps 3000] [--seed 1337]

The study. Every model trains through the product, `succu.fit.main` (what `python -m
succu.fit` runs), from a shipped config plus the command-line overrides that `argv` builds per
recipe (steps, seed, the recipe's fields, and a callbacks list holding only the config's own
AlphaBetaSampling, so the dashboard's sweeps do not run), and is scored by the same Trainer's
`test` on the test split, which no recipe was chosen on (GatedGPTModule logs
`test/loss/<corpus>@alpha=<a>` for each of `eval_alphas`). Recipes, same mixture, steps, schedule:

    abcgpt      abcGPT's recipe: configs/abcgpt_char.yaml with one Beta(0.5, 0.5) alpha per batch
                and narrowness 1 (the `reference` variant below)
    shipped     configs/abcgpt_char.yaml as shipped (Beta(0.2, 0.2) per row, narrowness 1.5)
    narrow1     the shipped recipe with narrowness 1.0
    ungated     the shipped recipe with `--model.init_args.model.gating false`: a plain GPT on the
                same draws (the dial is ignored)
    control     configs/abcgpt_char_control.yaml: a learned style vector per corpus, interpolated
    k3          configs/abcgpt_char_k3.yaml: TinyStories, Shakespeare, King James on the simplex
    k3_ungated  the same with gating false: an ungated GPT on the same 3-corpus mixture

Each at every seed (default 1337, 1, 2: the seed of the run, of the data's windows and draws, and
of the specialties). Measured per run: each corpus's test loss at alpha 0, .25, .5, .75, 1 (K = 3:
each vertex and the centre); the voice meter (succu/analysis/voice.py: character n-gram naive
Bayes fitted on the training splits, its accuracy on validation windows reported) on `--voice`
generations per position (fixed prompts, temperature 0.8, 200 characters, seed 0) at alpha 0, .25,
.5, .75, 1 (K = 3: the vertices and the centre); for gated recipes the mean gate of the far
specialists (m < 0.1 at alpha = 1 and m > 0.9 at alpha = 0; K = 3: m_k < 0.1 at the vertex e_k)
and of all units at the ends. Tables give mean ± sd over seeds; a cost (or gain) against the
ungated GPT, or a difference, is called only beyond two standard deviations of the difference,
2 sqrt(sd_a^2 + sd_b^2); otherwise "no difference detected at this scale". K = 3 checks that each
corpus is lowest at its own vertex (within 0.02) on every seed, among the four positions and on
the 66-point simplex grid (step 0.1) of the test split, where it also reports each corpus's best
point and the ternary map of the losses.

Each run's result is a JSON file under --out/runs named by the run's settings, so a rerun trains
nothing it has (a study cut short reports what it finished with --report_only). Runs go to
`--jobs` processes with one torch thread each. What the default study costs in CPU time is on
its results page, studies/results/dial.md (past block 64 every generated character recomputes the
window, so the voice readings are a large share of it; `--voice 0` skips them).

`--variants` runs the recipe search behind the shipped config (validation sweeps, one training
choice at a time, beside abcGPT's own figures; the results page's table): `--variant V`, `--seed S`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from studies import runner
from studies.runner import StudyRun, offline, saved_run

offline()

import torch  # noqa: E402
import yaml  # noqa: E402

from succu.io import atomic_write  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TWO = ["tinystories", "shakespeare"]
THREE = ["tinystories", "shakespeare", "kjv"]
ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
CORNERS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
CENTRE = (0.333334, 0.333333, 0.333333)  # the k3 config's centre (sums to 1 within 1e-6)
SHORT = {"tinystories": "TS", "shakespeare": "SH", "kjv": "KJV"}
GRID_STEP = 0.1  # K = 3: test losses on this simplex grid too (66 points), to find each corpus's best point


@dataclass(frozen=True)
class Recipe:
    """A shipped config, the model fields and AlphaBetaSampling arguments it changes."""

    config: str
    fields: tuple = ()  # (model field, value)
    sampler: tuple = ()  # (AlphaBetaSampling argument, value)
    gated: bool = True  # has a dial that moves anything (the ungated GPTs ignore alpha)
    gates: bool = True  # specialty gates (not the control code)
    k: int = 2


RECIPES = {
    "abcgpt": Recipe("abcgpt_char.yaml", (("narrowness", 1.0),), (("a", 0.5), ("b", 0.5), ("per_sample", False))),
    "shipped": Recipe("abcgpt_char.yaml"),
    "narrow1": Recipe("abcgpt_char.yaml", (("narrowness", 1.0),)),
    "ungated": Recipe("abcgpt_char.yaml", (("gating", False),), gated=False, gates=False),
    "control": Recipe("abcgpt_char_control.yaml", gates=False),
    "k3": Recipe("abcgpt_char_k3.yaml", k=3),
    "k3_ungated": Recipe("abcgpt_char_k3.yaml", (("gating", False),), gated=False, gates=False, k=3),
}
QUICK_RECIPES = ["shipped", "ungated", "control", "k3", "k3_ungated"]
QUICK_SIZE = (("n_layer", 1), ("n_embd", 32), ("n_head", 2))  # --quick: a smoke test, not a result


@dataclass(frozen=True)
class Run(StudyRun):
    recipe: str
    seed: int
    steps: int
    voice: int  # generations per dial position (0: no voice reading)
    voice_length: int = 200
    val_windows: int = 256  # validation and test windows per corpus (the configs')
    size: tuple = ()  # model field overrides (--quick only)
    cache_dir: str | None = None

    def configs(self) -> list[Path]:
        return [CONFIGS / RECIPES[self.recipe].config]


@dataclass
class Row:
    run: Run
    test: dict  # corpus -> {position label: test loss}
    test_loss: float  # the Trainer's test/loss: every corpus at its own end, token-weighted
    voice: list  # [{"alpha": label, <corpus>: share}] per position
    accuracy: dict  # the voice meter's accuracy on validation windows, per corpus and "all"
    gates: dict  # far specialists' and all units' mean gates (gated recipes)
    params: int
    seconds: float  # training
    voice_seconds: float = 0.0
    grid: list = field(default_factory=list)  # K = 3 dials: [{"alpha": label, <corpus>: test loss}] on the grid


# ---- one run, in a worker process -----------------------------------------------------------
def positions(k: int) -> list:
    return list(ALPHAS) if k == 2 else [*CORNERS, CENTRE]


def label(position) -> str:
    from succu.dial import position_label

    return position_label(position)


def sampler_callback(recipe: Recipe) -> dict:
    """The config's own AlphaBetaSampling entry with the recipe's changes: the only callback."""
    config = yaml.safe_load((CONFIGS / recipe.config).read_text())
    (entry,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("AlphaBetaSampling")]
    return {**entry, "init_args": {**entry.get("init_args", {}), **dict(recipe.sampler)}}


def argv(run: Run, tmp: str) -> list[str]:
    recipe = RECIPES[run.recipe]
    out = ["--config", str(CONFIGS / recipe.config), "--seed_everything", str(run.seed),
           "--data.init_args.windows.seed", str(run.seed), "--model.init_args.model.mask_seed", str(run.seed),
           "--trainer.max_steps", str(run.steps), "--trainer.val_check_interval", str(run.steps),
           "--model.init_args.warmup_steps", str(min(100, run.steps // 5)),
           "--model.init_args.eval_alphas", json.dumps([list(p) if isinstance(p, tuple) else p
                                                        for p in positions(recipe.k)]),
           "--data.init_args.windows.val_windows", str(run.val_windows),
           "--trainer.callbacks", json.dumps([sampler_callback(recipe)])]
    for name, value in (*recipe.fields, *run.size):
        out += [f"--model.init_args.model.{name}", str(value).lower()]
    if run.cache_dir:
        out += ["--data.init_args.tokens.cache_dir", run.cache_dir]
    return out + ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                  "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
                  "--trainer.default_root_dir", tmp]


_METERS: dict = {}


def voice_meter(dm):
    """The meter fitted on the data's training splits, and its accuracy on validation windows;
    once per process and mixture (it depends on the data only, not on the run)."""
    from succu.analysis import voice

    key = tuple(dm.corpora)
    if key not in _METERS:
        meter = voice.VoiceMeter.fit(voice.corpus_texts(dm, "train"))
        _METERS[key] = meter, voice.window_accuracy(meter, voice.corpus_texts(dm, "val"))
    return _METERS[key]


def gate_readings(model) -> dict:
    """Mean gate of the far specialists at the far end of the dial, and of all units at the ends.
    Two sources: m < 0.1 at alpha = 1 and m > 0.9 at alpha = 0; K: m_k < 0.1 at the vertex e_k."""
    from succu.nn.gates import simplex_tent, tent

    m, nar = model.specialties(), model.cfg.narrowness
    if m.dim() == 1:
        return {"narrowness": nar, "far@1": float(tent(1.0, m[m < 0.1], nar).mean()),
                "far@0": float(tent(0.0, m[m > 0.9], nar).mean()),
                "all@ends": float((tent(0.0, m, nar).mean() + tent(1.0, m, nar).mean()) / 2)}
    k = m.shape[-1]
    corners = torch.eye(k, dtype=m.dtype)
    far = [float(simplex_tent(corners[j], m[m[:, j] < 0.1], nar).mean()) for j in range(k)]
    every = [float(simplex_tent(corners[j], m, nar).mean()) for j in range(k)]
    return {"narrowness": nar, "far@vertex": statistics.mean(far), "all@ends": statistics.mean(every)}


def train_and_score(run: Run) -> Row:
    from succu import fit
    from succu.analysis.voice import voice_shares

    runner.quiet_worker()
    recipe = RECIPES[run.recipe]
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        cli = fit.main(argv(run, tmp))
        seconds = time.perf_counter() - start
        module, dm, trainer = cli.model, cli.datamodule, cli.trainer
        logged = trainer.test(module, datamodule=dm, verbose=False)[0]
    names = list(dm.corpora)
    test = {c: {label(p): float(logged[f"test/loss/{c}@alpha={label(p)}"]) for p in positions(recipe.k)}
            for c in names}
    module.eval()
    voice, accuracy, voice_seconds = [], {}, 0.0
    if run.voice and recipe.gated:
        start = time.perf_counter()
        meter, accuracy = voice_meter(dm)
        rows = voice_shares(module, meter, positions(recipe.k), n=run.voice, length=run.voice_length)
        voice = [{**r, "alpha": label(r["alpha"])} for r in rows]
        voice_seconds = time.perf_counter() - start
    gates = gate_readings(module.model) if recipe.gates else {}
    params = sum(p.numel() for p in module.parameters())
    grid = []
    if recipe.k == 3 and recipe.gated:
        from succu.analysis.alpha_sweep import sweep
        from succu.dial import simplex_grid

        grid = [{**r, "alpha": label(r["alpha"])}
                for r in sweep(module, dm.test_batches(), simplex_grid(3, GRID_STEP), names)]
    return Row(run, test, float(logged["test/loss"]), voice, accuracy, gates, params, seconds, voice_seconds, grid)


def execute(run: Run, out: Path) -> Row:
    """Train and score one run, or read its row back when an earlier study made it."""
    return saved_run(run, out, train_and_score, row_from_json)


def row_from_json(data: dict) -> Row:
    run = data.pop("run")
    run["size"] = tuple(tuple(f) for f in run["size"])
    return Row(Run(**run), **data)


def progress(row: Row, started: float) -> None:
    r = row.run
    print(f"  [{time.perf_counter() - started:5.0f}s] {r.recipe} seed {r.seed}: test/loss "
          f"{row.test_loss:.4f} (train {row.seconds:.0f} s, voice {row.voice_seconds:.0f} s)", flush=True)


def pool_map(runs: list[Run], jobs: int, out: Path) -> list[Row]:
    """Every run in its own process slot (one torch thread each); finished runs are read back."""
    started = time.perf_counter()
    return runner.pool_map(partial(execute, out=out), runs, jobs, lambda row: progress(row, started),
                           finished=lambda run: run.saved(out) is not None)


# ---- the report ------------------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float], digits: int = 3) -> str:
    m, s = mean_sd(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def verdict(a: list[float], b: list[float], worse: str = "costs", better: str = "buys") -> str:
    """a - b (losses: positive = a is worse), called only beyond 2 sd of the difference."""
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    if len(a) < 2 or len(b) < 2:
        return f"{ma - mb:+.3f} (one seed: no verdict)"
    bar = 2 * math.hypot(sa, sb)
    word = worse if ma - mb > bar else better if ma - mb < -bar else "no difference detected at this scale"
    return f"{ma - mb:+.3f} (2 sd = {bar:.3f}): {word}"


def by_recipe(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in rows:
        out.setdefault(row.run.recipe, []).append(row)
    return out


def loss(row: Row, corpus: str, position) -> float:
    return row.test[corpus][label(position)]


def report_two(groups: dict[str, list[Row]], lines: list[str]) -> None:
    """Test losses, far-end gaps, costs against the ungated GPT, voice, gates: two corpora."""
    recipes = [r for r in RECIPES if r in groups and RECIPES[r].k == 2]
    if not recipes:
        return
    ts, sh = TWO
    lines += ["### Two corpora: test loss (nats/char) at alpha = 0 / 0.5 / 1, mean ± sd over seeds", "",
              "| recipe | seeds | TS @0 | TS @0.5 | TS @1 | SH @0 | SH @0.5 | SH @1 | far-end gap TS | far-end gap SH |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name in recipes:
        rows = groups[name]
        cells = [cell([loss(r, c, a) for r in rows]) for c in TWO for a in (0.0, 0.5, 1.0)]
        gaps = [cell([loss(r, ts, 1.0) - loss(r, ts, 0.0) for r in rows]),
                cell([loss(r, sh, 0.0) - loss(r, sh, 1.0) for r in rows])]
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells + gaps) + " |")
    for base, title in (("ungated", "the ungated GPT"), ("control", "the control-code GPT")):
        if base in groups:
            others = [r for r in recipes if r != base and (base == "ungated" or RECIPES[r].gates)]
            compare(groups, others, base, title, lines)
    report_voice(groups, [r for r in recipes if RECIPES[r].gated], TWO, lines)
    report_gates(groups, [r for r in recipes if RECIPES[r].gates], lines)


def compare(groups: dict[str, list[Row]], recipes: list[str], base: str, title: str, lines: list[str]) -> None:
    """Each recipe's test loss minus the base's, per corpus at its own end and the middle."""
    points = [(TWO[0], 0.0), (TWO[0], 0.5), (TWO[1], 0.5), (TWO[1], 1.0)]
    lines += ["", f"### Two corpora: against {title} at the dial's ends and middle (test loss - {base}; "
              "positive: the recipe costs)", "",
              "| recipe | " + " | ".join(f"{SHORT[c]} @{a:g}" for c, a in points) + " |", "|---|" + "---|" * len(points)]
    for name in recipes:
        lines.append(f"| {name} | " + " | ".join(
            verdict([loss(r, c, a) for r in groups[name]], [loss(r, c, a) for r in groups[base]])
            for c, a in points) + " |")


def monotone(row: Row, corpus: str) -> bool:
    shares = [v[corpus] for v in row.voice]
    return all(b >= a for a, b in zip(shares, shares[1:]))


def report_voice(groups: dict[str, list[Row]], recipes: list[str], names: list[str], lines: list[str]) -> None:
    recipes = [r for r in recipes if all(row.voice for row in groups[r])]
    if not recipes:
        return
    first = groups[recipes[0]][0]
    n, accuracy = first.run.voice, first.accuracy
    head = [v["alpha"] for v in first.voice]
    lines += ["", f"### Voice: share of {n} generations per position judged {'Shakespeare' if len(names) == 2 else 'each corpus'} "
              f"(meter accuracy on validation windows: " + ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()) + ")", ""]
    if len(names) == 2:
        lines += ["| recipe | " + " | ".join(f"alpha {a}" for a in head) + " | monotone (seeds) |",
                  "|---|" + "---|" * (len(head) + 1)]
        for name in recipes:
            rows = groups[name]
            cells = [cell([r.voice[i][names[1]] for r in rows], 2) for i in range(len(head))]
            mono = sum(monotone(r, names[1]) for r in rows)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {mono}/{len(rows)} |")
        return
    lines += ["| recipe | position | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for name in recipes:
        rows = groups[name]
        for i, position in enumerate(head):
            lines.append(f"| {name} | {position} | " + " | ".join(
                cell([r.voice[i][c] for r in rows], 2) for c in names) + " |")


def report_gates(groups: dict[str, list[Row]], recipes: list[str], lines: list[str]) -> None:
    if not recipes:
        return
    lines += ["", "### The property: mean gate of the far specialists (two corpora: m < 0.1 at alpha = 1, "
              "m > 0.9 at alpha = 0; K = 3: m_k < 0.1 at the vertex e_k) and of all units at the ends", "",
              "| recipe | narrowness | far specialists at the far end | all units at the ends |", "|---|---|---|---|"]
    for name in recipes:
        rows = groups[name]
        g = rows[0].gates
        if "far@1" in g:
            far = (f"{cell([r.gates['far@1'] for r in rows])} (m < 0.1 at 1) / "
                   f"{cell([r.gates['far@0'] for r in rows])} (m > 0.9 at 0)")
        else:
            far = cell([r.gates["far@vertex"] for r in rows])
        lines.append(f"| {name} | {g['narrowness']:g} | {far} | {cell([r.gates['all@ends'] for r in rows])} |")


def report_three(groups: dict[str, list[Row]], lines: list[str]) -> None:
    """K = 3: each corpus at each vertex and the centre, own-vertex checks, far-vertex gaps,
    the cost against the ungated 3-corpus GPT, the voice class shares."""
    if "k3" not in groups:
        return
    rows = groups["k3"]
    points = positions(3)
    heads = [f"@e_{SHORT[c]}" for c in THREE] + ["@centre"]
    lines += ["", "### Three corpora (k3): test loss (nats/char) at each vertex and the centre", "",
              "| model | corpus | " + " | ".join(heads) + " | lowest at own vertex (within 0.02) | far-vertex gaps |",
              "|---|---|" + "---|" * (len(heads) + 2)]
    for name in ("k3", "k3_ungated"):
        for i, c in enumerate(THREE):
            mine = groups.get(name)
            if not mine:
                continue
            cells = [cell([loss(r, c, p) for r in mine]) for p in points]
            if not RECIPES[name].gated:  # deaf to the dial: the same loss everywhere, nothing to check
                lines.append(f"| {name} | {c} | " + " | ".join(cells) + " | - | - |")
                continue
            lowest = sum(loss(r, c, CORNERS[i]) <= min(loss(r, c, p) for p in points) + 0.02 for r in mine)
            gaps = ", ".join(f"e_{SHORT[o]} {cell([loss(r, c, CORNERS[j]) - loss(r, c, CORNERS[i]) for r in mine])}"
                             for j, o in enumerate(THREE) if j != i)
            word = "yes" if lowest == len(mine) else "NO"
            lines.append(f"| {name} | {c} | " + " | ".join(cells) + f" | {word} ({lowest}/{len(mine)} seeds) | {gaps} |")
    checks = [all(loss(r, c, CORNERS[i]) <= min(loss(r, c, p) for p in points) + 0.02 for r in rows)
              for i, c in enumerate(THREE)]
    lines += ["", "Each corpus lowest at its own vertex (within 0.02) on every seed: " +
              ", ".join(f"{c} {'yes' if ok else 'NO'}" for c, ok in zip(THREE, checks)) + "."]
    report_grid(rows, lines)
    if "k3_ungated" in groups:
        base = groups["k3_ungated"]
        lines += ["", "### Three corpora: own-vertex cost against the ungated 3-corpus GPT (k3 - ungated)", "",
                  "| corpus | own vertex | k3 - ungated |", "|---|---|---|"]
        for i, c in enumerate(THREE):
            lines.append(f"| {c} | {label(CORNERS[i])} | " + verdict(
                [loss(r, c, CORNERS[i]) for r in rows], [loss(r, c, CORNERS[i]) for r in base]) + " |")
    report_voice(groups, ["k3"], THREE, lines)
    report_gates(groups, ["k3"], lines)


def report_grid(rows: list[Row], lines: list[str]) -> None:
    """The same check on the whole simplex grid: each corpus's best point and how far its own
    vertex sits above it, per seed."""
    if not all(r.grid for r in rows):
        return
    lines += ["", f"### Three corpora (k3) on the {len(rows[0].grid)}-point simplex grid (step {GRID_STEP:g}) "
              "of the test split: each corpus's best point", "",
              "| corpus | own vertex | best point per seed | best loss | own vertex - best | "
              "own vertex within 0.02 of the best |", "|---|---|---|---|---|---|"]
    for i, c in enumerate(THREE):
        best = [min(r.grid, key=lambda g: g[c]) for r in rows]
        vertex = [loss(r, c, CORNERS[i]) for r in rows]
        excess = [v - b[c] for v, b in zip(vertex, best)]
        within = sum(e <= 0.02 for e in excess)
        lines.append(f"| {c} | {cell(vertex)} | " + "; ".join(b["alpha"] for b in best) +
                     f" | {cell([b[c] for b in best])} | {cell(excess)} | {within}/{len(rows)} seeds |")


def figures(groups: dict[str, list[Row]], folder: Path) -> list[Path]:
    """Voice against alpha (two corpora), ternary maps of test loss and voice shares (k3)."""
    from succu.analysis.plots import plt, save_figure

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    voiced = [r for r in RECIPES if r in groups and RECIPES[r].k == 2 and all(x.voice for x in groups[r])]
    if voiced:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for name in voiced:
            rows = groups[name]
            stats = [mean_sd([r.voice[i][TWO[1]] for r in rows]) for i in range(len(ALPHAS))]
            ax.errorbar(ALPHAS, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", label=name, capsize=3)
        ax.set_xlabel("alpha")
        ax.set_ylabel("share judged Shakespeare")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("voice meter against the dial (mean ± sd over seeds)", fontsize=9)
        fig.tight_layout()
        paths.append(save_figure(fig, folder / "alpha_dial_voice.png"))
    if "k3" in groups:
        paths += k3_figures(groups["k3"], folder)
    return paths


def k3_figures(rows: list[Row], folder: Path) -> list[Path]:
    """Ternary maps, means over seeds: each corpus's test loss (on the grid when the runs have it,
    else at the vertices and the centre) and the voice shares at the positions they were read."""
    from succu.analysis.plots import save_figure, ternary_figure
    from succu.dial import parse_position

    if all(r.grid for r in rows):
        points = [parse_position(g["alpha"]) for g in rows[0].grid]
        losses = {c: [statistics.mean(r.grid[j][c] for r in rows) for j in range(len(points))] for c in THREE}
        where = f"on the {len(points)}-point test grid"
    else:
        points = positions(3)
        losses = {c: [statistics.mean(loss(r, c, p) for r in rows) for p in points] for c in THREE}
        where = "at the vertices and the centre (the dots; linear in between)"
    fig = ternary_figure(points, {f"{c} test loss": v for c, v in losses.items()}, THREE, "mean over seeds",
                         f"k3: test loss {where}")
    paths = [save_figure(fig, folder / "alpha_dial_k3_ternary.png")]
    if all(r.voice for r in rows):
        voiced = positions(3)
        shares = {f"judged {c}": [statistics.mean(r.voice[i][c] for r in rows) for i in range(len(voiced))]
                  for c in THREE}
        fig = ternary_figure(voiced, shares, THREE, "mean over seeds",
                             "k3: voice shares at the vertices and the centre (the dots; linear in between)")
        paths.append(save_figure(fig, folder / "alpha_dial_k3_voice.png"))
    return paths


# ---- the study --------------------------------------------------------------------------------
def study_runs(args: argparse.Namespace) -> list[Run]:
    return [Run(name, seed, args.steps, args.voice, args.voice_length, args.val_windows, args.size,
                args.cache_dir) for name in args.recipes for seed in args.seeds]


def report(rows: list[Row], args: argparse.Namespace) -> str:
    groups = by_recipe(rows)
    lines = ["## The dial study", "", f"`python -m studies.dial {' '.join(args.argv)}`".replace(" `", "`"),
             "", f"{args.steps} steps, seeds {','.join(map(str, args.seeds))}, voice {args.voice} "
             f"generations of {args.voice_length} characters per position; test split.", ""]
    report_two(groups, lines)
    report_three(groups, lines)
    if args.figures:
        lines.append("")
        lines += [f"![{p.stem}]({p.name})" for p in figures(groups, args.figures)]
    seconds = [r.seconds + r.voice_seconds for r in rows] or [0.0]
    lines += ["", f"{len(rows)} runs, {sum(seconds) / 60:.1f} min of training and sampling in all "
              f"({max(seconds):.0f} s the longest)."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = runner.study_parser(__doc__, "runs/bench_alpha_dial",
                            f"12 steps of a 1-layer model, one seed, recipes {','.join(QUICK_RECIPES)}, "
                            "4 voice samples of 24 characters", threads="--variants: torch threads",
                            outputs=True)
    p.add_argument("--steps", type=int, default=3000, help="training steps (the configs' max_steps)")
    p.add_argument("--seeds", default="1337,1,2")
    p.add_argument("--recipes", default="all", help=f"'all' or a comma list of {', '.join(RECIPES)}")
    p.add_argument("--voice", type=int, default=64, help="generations per dial position (0: no voice)")
    p.add_argument("--variants", action="store_true", help="the earlier recipe search instead (see --variant)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="reference", help="--variants: which")
    p.add_argument("--seed", type=int, default=1337, help="--variants: the seed")
    args = runner.parse(p, argv)
    args.recipes = list(RECIPES) if args.recipes == "all" else args.recipes.split(",")
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipe {unknown[0]!r}; choose from {', '.join(RECIPES)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.voice < 0 or args.jobs < 1 or args.steps < 1:
        p.error(f"--voice >= 0, --jobs >= 1 and --steps >= 1 needed, got {args.voice}, {args.jobs}, {args.steps}")
    args.voice_length, args.val_windows, args.size = 200, 256, ()
    if args.quick:
        args.steps, args.seeds, args.voice, args.voice_length = 12, args.seeds[:1], 4, 24
        args.recipes, args.val_windows, args.size = QUICK_RECIPES, 24, QUICK_SIZE
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.variants:
        return variants_main(args)
    torch.set_num_threads(1)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    runs = study_runs(args)
    if args.report_only:
        rows = [row_from_json(data) for r in runs if (data := r.saved(args.out)) is not None]
    else:
        print(f"{len(runs)} runs, {args.jobs} jobs, torch threads 1 per run", flush=True)
        rows = pool_map(runs, args.jobs, args.out)
    text = report(rows, args)
    print(text)
    if args.report:
        atomic_write(args.report, (text + "\n").encode())


# ---- --variants: the recipe search behind the shipped config ---------------------------------
# abcGPT's gated_gpt_tent.py trained exactly so on this machine: val loss at ALPHAS.
REFERENCE = {
    "shakespeare": [2.38, 2.13, 1.99, 1.96, 1.99],
    "tinystories": [1.85, 1.81, 1.84, 1.97, 2.25],
}
VARIANTS = {
    "reference": dict(routing=False),
    "routed": dict(routing=True),
    "per_sample": dict(routing=False, per_sample=True),
    "narrow": dict(routing=False, narrowness=0.5),
    "uniform": dict(routing=False, distribution="uniform"),
    "combined": dict(routing=False, per_sample=True, narrowness=0.5),
    "sharp": dict(routing=False, a=0.2, b=0.2),
    "sharp_per_sample": dict(routing=False, a=0.2, b=0.2, per_sample=True),
    "sharper_per_sample": dict(routing=False, a=0.1, b=0.1, per_sample=True),
    "wide_sharp_per_sample": dict(routing=False, a=0.2, b=0.2, per_sample=True, narrowness=1.5),
}


def variant_train(variant: str, steps: int, seed: int, cache_dir: str | None):
    """(module, datamodule, seconds) of one variant trained through the user's module and callback."""
    import lightning as L

    from callbacks.alpha_sampling import AlphaBetaSampling
    from datamodules.mixture import MixtureDataModule
    from datamodules.tokens import Tokens
    from datamodules.windows import Windows
    from succu.models.gated_gpt import GatedGPTConfig
    from succu.modules.gated_gpt import GatedGPTModule

    opts = VARIANTS[variant]
    L.seed_everything(seed, verbose=False)
    dm = MixtureDataModule(corpora=["tinystories", "shakespeare"],
                           windows=Windows(block_size=64, batch_size=12, val_windows=256, seed=seed),
                           tokens=Tokens(cache_dir=cache_dir))
    config = GatedGPTConfig(
        vocab_size=dm.vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0,
        narrowness=opts.get("narrowness", 1.0), routing=opts["routing"],
    )
    module = GatedGPTModule(
        model=config, warmup_steps=100, min_lr_ratio=0.1,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1),
    )
    sampler = AlphaBetaSampling(a=opts.get("a", 0.5), b=opts.get("b", 0.5),
                                distribution=opts.get("distribution", "beta"),
                                per_sample=opts.get("per_sample", False))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, default_root_dir=tmp,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                            gradient_clip_val=1.0, callbacks=[sampler])
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm)
    return module, dm, time.perf_counter() - t0


def variant_report(variant: str, rows: list[dict], names: list[str]) -> None:
    print(f"\nval loss by alpha ({variant}; reference implementation in brackets)")
    print("alpha   " + "".join(f"{n:>24}" for n in names))
    for i, r in enumerate(rows):
        print(f"{r['alpha']:<8g}" + "".join(f"{r[n]:>15.3f} [{REFERENCE[n][i]:.2f}]" for n in names))
    for k, name in enumerate(names):
        losses = [r[name] for r in rows]
        own, far = (losses[0], losses[-1]) if k == 0 else (losses[-1], losses[0])
        ref = REFERENCE[name]
        ref_gap = (ref[-1] - ref[0]) if k == 0 else (ref[0] - ref[-1])
        print(f"{name}: own end {own:.3f}, best {min(losses):.3f} -> lowest at own end: "
              f"{'yes' if own <= min(losses) + 0.02 else 'NO'}; beats reference best {min(ref):.2f}: "
              f"{'yes' if own < min(ref) else 'NO'}; far-end gap {far - own:.2f} "
              f"(reference {ref_gap:.2f}): {'yes' if far - own >= ref_gap else 'NO'}")




def variants_main(args: argparse.Namespace) -> None:
    from succu.analysis.alpha_sweep import sweep

    runner.setup_threads(args.threads)
    module, dm, seconds = variant_train(args.variant, args.steps, args.seed, args.cache_dir)
    print(f"variant {args.variant}: {args.steps} steps in {seconds:.0f} s (seed {args.seed})")
    dm.setup("validate")
    names = list(dm.corpora)
    rows = sweep(module, list(dm.val_dataloader()), ALPHAS, names)
    variant_report(args.variant, rows, names)


if __name__ == "__main__":
    main()
