"""What the dial is worth: baselines, a voice meter, the property, and a dial over K corpora.

    python -m studies.dial [--jobs 2] [--steps 3000] [--seeds 1337,1,2] [--voice 64]
                           [--recipes all] [--out runs/bench_alpha_dial]
                           [--report dial.md] [--figures runs/bench_alpha_dial/fig]
    python -m studies.dial --quick     # smoke test: the whole path on a few steps
    python -m studies.dial --recipes abcgpt,shipped,narrow1,control,ts_only,sh_only,k3,k3_d02
    python -m studies.dial --variants [--variant reference] [--steps 3000] [--seed 1337]
                           [--reference runs/abcgpt_reference.json]
    python -m studies.dial --scale full --recipes abcgpt,ungated,control --seeds 1337 --steps 5000 \
                           --out runs/bench_alpha_dial_full     # the write-up's size (a GPU's job)

The study. Every model trains through the product, `succu.fit.main` (what `python -m
succu.fit` runs), from a shipped config plus the command-line overrides that `argv` builds per
recipe (steps, seed, the recipe's fields, and a callbacks list holding only the config's own
AlphaBetaSampling, or nothing for a single-corpus recipe, so the dashboard's sweeps do not run), and is scored by the same Trainer's
`test` on the test split, which no recipe was chosen on (GatedGPTModule logs
`test/loss/<corpus>@alpha=<a>` for each of `eval_alphas`). Recipes, same mixture, steps, schedule:

    abcgpt      abcGPT's recipe: configs/abcgpt_char.yaml with one Beta(0.5, 0.5) alpha per batch
                and narrowness 1 (the `reference` variant below)
    shipped     configs/abcgpt_char.yaml as shipped (Beta(0.2, 0.2) per row, narrowness 1.5)
    narrow1     the shipped recipe with narrowness 1.0
    ungated     the shipped recipe with `--model.init_args.model.gating false`: a plain GPT on the
                same draws (the dial is ignored)
    control     configs/abcgpt_char_control.yaml: a learned style vector per corpus, interpolated
    ts_only     the ungated recipe trained on TinyStories alone (the mixture's training weights
                [1, 0], no dial draws): the same data module, tokenizer, text form, test windows
    sh_only     the same on Shakespeare alone (weights [0, 1])
    k3          configs/abcgpt_char_k3.yaml: TinyStories, Shakespeare, King James on the simplex,
                rows drawn from Dirichlet(0.1) as shipped (chosen on the validation grid)
    k3_d02      the same with Dirichlet(0.2) draws: both draws reported on the test split
    k3_ungated  the same with gating false: an ungated GPT on the same 3-corpus mixture

`--scale full` lays configs/full/abcgpt_char.yaml over every recipe's config: abcGPT's own size
(6 layers, 6 heads, 384 wide, block 256, batch 64, dropout 0.2), all else as at the baby scale.

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

Three further readings ask what the dial does inside. Partitioning (claim C5): each end of a dial
is scored on the other corpus against the single-corpus GPT that never saw that corpus; an end
level with it has partitioned the corpora, one below it shares what it learnt from the other.
Specialists (claim C3): with no training, each gated two-corpus model has sets of units silenced
at alpha = 0.5 (their gates held at zero, succu/analysis/silence.py): corpus 1's specialists
(m > 0.9; m is a unit's corpus-1 share and alpha = 1 is Shakespeare's end), as many units drawn
at random (a generator seeded by the run's seed), then corpus 0's specialists (m < 0.1); a
specialist set should cost its own corpus more than the other, and more than random units do.
Voice scores: each generation's log-likelihood ratio Shakespeare : TinyStories per character
under the voice meter, whose spread at alpha .25 / .5 / .75 tells a blend (scores in the middle
third between the ends' mean scores) from a switch (scores at the ends, bimodal), which the share
judged Shakespeare alone cannot; the middle share is read against the one a pure switch would give
(each generation in one end's voice, as often as the meter judged it so, scored like that end's).

Each run's result is a JSON file under --out/runs named by the run's settings (READINGS among
them: runs saved before the voice scores and the silencing train again), so a rerun trains
nothing it has (a study cut short reports what it finished with --report_only). Runs go to
`--jobs` processes with one torch thread each. What the default study costs in CPU time is on
its results page, studies/results/dial.md (past block 64 every generated character recomputes the
window, so the voice readings are a large share of it; `--voice 0` skips them).

`--variants` runs the recipe search behind the shipped config (validation sweeps, one training
choice at a time, beside abcGPT's own figures; the results page's table): `--variant V`, `--seed S`.
abcGPT's figures are its own gated_gpt_tent.py trained at the variants' settings over three seeds
by `python -m studies.abcgpt_reference PATH/TO/abcGPT`, read from the JSON it writes (`--reference`,
default runs/abcgpt_reference.json); without that file `--variants` says so and trains nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
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
    only: str | None = None  # trains on this corpus alone (rows by the data's weights, no dial draws)


RECIPES = {
    "abcgpt": Recipe("abcgpt_char.yaml", (("narrowness", 1.0),), (("a", 0.5), ("b", 0.5), ("per_sample", False))),
    "shipped": Recipe("abcgpt_char.yaml"),
    "narrow1": Recipe("abcgpt_char.yaml", (("narrowness", 1.0),)),
    "ungated": Recipe("abcgpt_char.yaml", (("gating", False),), gated=False, gates=False),
    "control": Recipe("abcgpt_char_control.yaml", gates=False),
    "ts_only": Recipe("abcgpt_char.yaml", (("gating", False),), gated=False, gates=False, only="tinystories"),
    "sh_only": Recipe("abcgpt_char.yaml", (("gating", False),), gated=False, gates=False, only="shakespeare"),
    "k3": Recipe("abcgpt_char_k3.yaml", k=3),
    "k3_d02": Recipe("abcgpt_char_k3.yaml", sampler=(("concentration", 0.2),), k=3),
    "k3_ungated": Recipe("abcgpt_char_k3.yaml", (("gating", False),), gated=False, gates=False, k=3),
}
SINGLE = {"tinystories": "ts_only", "shakespeare": "sh_only"}  # corpus -> the recipe trained on it alone
QUICK_RECIPES = ["shipped", "ungated", "control", "ts_only", "sh_only", "k3", "k3_d02", "k3_ungated"]
READINGS = 2  # what a run measures (2: + voice scores, unit silencing); earlier saved runs train again
SILENCE_AT = 0.5  # the dial position of the unit-silencing ablation
QUICK_SIZE = (("n_layer", 1), ("n_embd", 32), ("n_head", 2))  # --quick: a smoke test, not a result
FULL = CONFIGS / "full" / "abcgpt_char.yaml"  # --scale full: abcGPT's size, over every recipe's config


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
    readings: int = READINGS
    scale: str = field(default="baby", repr=False)  # "full": FULL laid over the recipe's config

    @property
    def key(self) -> str:
        # The scale names full-size results apart; baby runs keep the names saved before it existed.
        return runner.run_key(self) if self.scale == "baby" else f"{self.scale}-{runner.run_key(self)}"

    def configs(self) -> list[Path]:
        return [CONFIGS / RECIPES[self.recipe].config] + ([FULL] if self.scale == "full" else [])


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
    scores: dict = field(default_factory=dict)  # two corpora: position label -> each generation's voice score
    silencing: dict = field(default_factory=dict)  # gated two-corpus: {"alpha", "units": {set: n}, "losses"}


# ---- one run, in a worker process -----------------------------------------------------------
def positions(k: int) -> list:
    return list(ALPHAS) if k == 2 else [*CORNERS, CENTRE]


def label(position) -> str:
    from succu.dial import position_label

    return position_label(position)


def config_of(recipe: Recipe) -> dict:
    return yaml.safe_load((CONFIGS / recipe.config).read_text())


def sampler_callback(recipe: Recipe) -> dict:
    """The config's own AlphaBetaSampling entry with the recipe's changes: the only callback."""
    (entry,) = [c for c in config_of(recipe)["trainer"]["callbacks"] if c["class_path"].endswith("AlphaBetaSampling")]
    return {**entry, "init_args": {**entry.get("init_args", {}), **dict(recipe.sampler)}}


def single_corpus(recipe: Recipe) -> list[str]:
    """A one-corpus recipe's overrides: the mixture's training weights 1 for its corpus and 0 for
    the others, and no callbacks (no dial draws). The data stays the mixture's, so the tokenizer,
    the text form and the test windows of every corpus are the dial models' own."""
    corpora = config_of(recipe)["data"]["init_args"]["corpora"]
    return ["--data.init_args.weights", json.dumps([float(c == recipe.only) for c in corpora]),
            "--trainer.callbacks", "[]"]


def argv(run: Run, tmp: str) -> list[str]:
    recipe = RECIPES[run.recipe]
    out = [x for path in run.configs() for x in ("--config", str(path))]
    out += ["--seed_everything", str(run.seed),
           "--data.init_args.windows.seed", str(run.seed), "--model.init_args.model.mask_seed", str(run.seed),
           "--trainer.max_steps", str(run.steps), "--trainer.val_check_interval", str(run.steps),
           "--model.init_args.warmup_steps", str(min(100, run.steps // 5)),
           "--model.init_args.eval_alphas", json.dumps([list(p) if isinstance(p, tuple) else p
                                                        for p in positions(recipe.k)]),
           "--data.init_args.windows.val_windows", str(run.val_windows)]
    out += single_corpus(recipe) if recipe.only else ["--trainer.callbacks", json.dumps([sampler_callback(recipe)])]
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


def silencing(module, dm, seed: int) -> dict:
    """Unit silencing at SILENCE_AT on the test split (succu/analysis/silence.py): corpus 1's
    specialists (m > 0.9; alpha = 1 is corpus 1's own end), as many random units (drawn by a
    generator seeded by the run's seed), corpus 0's specialists (m < 0.1); the loss per corpus
    with each set silenced and without."""
    from succu.analysis.silence import set_names, silencing_losses, specialty_masks

    names = list(dm.corpora)
    masks = specialty_masks(module.model.specialties(), torch.Generator().manual_seed(seed))
    losses = silencing_losses(module, dm.test_batches(), SILENCE_AT, masks, names)
    high, _, low = set_names()
    return {"alpha": SILENCE_AT, "units": {k: int(v.sum()) for k, v in masks.items()}, "losses": losses,
            "owners": {high: names[1], low: names[0]}}  # m is the corpus-1 share


def train_and_score(run: Run) -> Row:
    from succu import fit
    from succu.analysis.voice import share_rows, voice_texts

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
    voice, accuracy, voice_seconds, scores = [], {}, 0.0, {}
    if run.voice and recipe.gated:
        start = time.perf_counter()
        meter, accuracy = voice_meter(dm)
        points = positions(recipe.k)
        texts = voice_texts(module, points, n=run.voice, length=run.voice_length)
        voice = [{**r, "alpha": label(r["alpha"])} for r in share_rows(meter, points, texts)]
        if recipe.k == 2:  # the score of corpus 1 (alpha = 1's end) over corpus 0, per generation
            scores = {label(p): meter.score(t).tolist() for p, t in zip(points, texts)}
        voice_seconds = time.perf_counter() - start
    gates = gate_readings(module.model) if recipe.gates else {}
    silenced = silencing(module, dm, run.seed) if recipe.gates and recipe.k == 2 else {}
    params = sum(p.numel() for p in module.parameters())
    grid = []
    if recipe.k == 3 and recipe.gated:
        from succu.analysis.alpha_sweep import sweep
        from succu.dial import simplex_grid

        grid = [{**r, "alpha": label(r["alpha"])}
                for r in sweep(module, dm.test_batches(), simplex_grid(3, GRID_STEP), names)]
    return Row(run, test, float(logged["test/loss"]), voice, accuracy, gates, params, seconds, voice_seconds, grid,
               scores, silenced)


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
            others = [r for r in recipes if r != base and not RECIPES[r].only and (base == "ungated" or RECIPES[r].gates)]
            compare(groups, others, base, title, lines)
    dials = [r for r in recipes if RECIPES[r].gated]
    report_partitioning(groups, dials, lines)
    report_voice(groups, dials, TWO, lines)
    report_scores(groups, dials, lines)
    report_gates(groups, [r for r in recipes if RECIPES[r].gates], lines)
    report_silencing(groups, [r for r in recipes if RECIPES[r].gates], lines)


def report_partitioning(groups: dict[str, list[Row]], recipes: list[str], lines: list[str]) -> None:
    """C5 partitioning: each end of the dial against the single-corpus GPT of that end's corpus,
    on both corpora. On the other corpus the single-corpus model never saw it: a dial end level
    with it has partitioned the corpora (it knows the other corpus no better than a model that
    never saw it), one below it shares what it learnt from the other corpus."""
    if not all(SINGLE[c] in groups for c in TWO) or not recipes:
        return
    ends = list(zip(TWO, (0.0, 1.0)))  # corpus k's own end is alpha = k
    heads = [f"{SHORT[c]} end (alpha {a:g}) on {SHORT[o]} - {SINGLE[c]}" for c, a in ends for o in TWO]
    lines += ["", "### C5 partitioning: each end of the dial against the single-corpus GPT of that end's corpus "
              "(test loss - single-corpus model; on the other corpus that model never saw it)", "",
              "| recipe | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for name in recipes:
        cells = []
        for c, a in ends:
            base = groups[SINGLE[c]]
            for o in TWO:
                words = ("costs", "buys") if o == c else ("worse than never seeing it", "shared: better than never seeing it")
                cells.append(verdict([loss(r, o, a) for r in groups[name]], [loss(r, o, a) for r in base], *words))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "On the other corpus, no difference detected means partitioned: the dial's end knows that "
              "corpus no better than a model that never saw it."]


def report_scores(groups: dict[str, list[Row]], recipes: list[str], lines: list[str]) -> None:
    """The voice score's spread at the inner positions, each statistic per seed, then mean ± sd
    over seeds: a blend has its scores in the middle third between the two ends' mean scores, a
    switch has them at the ends (a bimodal spread), so the middle share is set against a pure
    switch's, per seed, by the two-sd rule."""
    from succu.analysis.voice import score_spread, switch_middle

    recipes = [r for r in recipes if all(row.scores and row.voice for row in groups[r])]
    if not recipes:
        return
    ts, sh = TWO
    stats = ("mean", "sd", "q10", "q50", "q90", "middle")
    lines += ["", f"### Voice scores: log-likelihood ratio {sh} : {ts} of each generation (nats/char; the "
              "voice meter's naive Bayes), the share in the middle third between the ends' mean scores, and "
              f"the share a pure switch would put there (each generation one end's voice, {sh}'s as often as "
              "the meter judged it so, its score drawn from that end's scores)", "",
              "| recipe | alpha | mean | sd | 10% | median | 90% | in the middle third | a switch would give | "
              "middle - switch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in recipes:
        rows = groups[name]
        ends = [(r.scores[label(0.0)], r.scores[label(1.0)]) for r in rows]
        bounds = [(statistics.mean(lo), statistics.mean(hi)) for lo, hi in ends]
        for i, a in enumerate(ALPHAS[1:-1], start=1):
            spreads = [score_spread(r.scores[label(a)], *b) for r, b in zip(rows, bounds)]
            switch = [switch_middle(lo, hi, r.voice[i][sh], *b) for r, (lo, hi), b in zip(rows, ends, bounds)]
            middle = [s["middle"] for s in spreads]
            lines.append(f"| {name} | {a:g} | " + " | ".join(cell([s[k] for s in spreads], 2) for k in stats) +
                         f" | {cell(switch, 2)} | {verdict(middle, switch, 'blends: more than a switch', 'fewer than a switch')} |")


def report_silencing(groups: dict[str, list[Row]], recipes: list[str], lines: list[str]) -> None:
    """C3 specialists: the loss each silenced set adds per corpus, its own corpus against the
    other and against as many random units on its own corpus."""
    recipes = [r for r in recipes if all(row.silencing for row in groups[r])]
    if not recipes:
        return
    first = groups[recipes[0]][0].silencing
    sets, owner = [k for k in first["losses"] if k != "none"], first["owners"]
    lines += ["", f"### C3 specialists: unit silencing at alpha = {first['alpha']:g} (test loss with the set's "
              "gates held at 0 - without; no training; " +
              ", ".join(f"{s}: the specialists of {c}" for s, c in owner.items()) + ")", "",
              f"| recipe | silenced | units | Δ {TWO[0]} | Δ {TWO[1]} | own corpus - other corpus | "
              "own corpus: set - random |", "|---|---|---|---|---|---|---|"]
    for name in recipes:
        rows = groups[name]

        def delta(r: Row, s: str, c: str) -> float:
            return r.silencing["losses"][s][c] - r.silencing["losses"]["none"][c]

        for s in sets:
            units = "/".join(str(r.silencing["units"][s]) for r in rows)
            cells = [cell([delta(r, s, c) for r in rows]) for c in TWO]
            if s in owner:
                own, other = owner[s], next(c for c in TWO if c != owner[s])
                cells += [verdict([delta(r, s, own) for r in rows], [delta(r, s, other) for r in rows],
                                  "hurts its own corpus more", "hurts the other corpus more"),
                          verdict([delta(r, s, own) for r in rows], [delta(r, "random", own) for r in rows],
                                  "hurts more than random", "hurts less than random")]
            else:
                cells += ["-", "-"]
            lines.append(f"| {name} | {s} | {units} | " + " | ".join(cells) + " |")


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
    """K = 3: each three-corpus dial (the draws the config ships, k3, and any variant of them) on
    its own, the draws side by side when there are several, then the voice class shares and gates."""
    dials = [r for r in RECIPES if r in groups and RECIPES[r].k == 3 and RECIPES[r].gated]
    for name in dials:
        report_dial_three(groups, name, lines)
    report_draws(groups, dials, lines)
    report_voice(groups, dials, THREE, lines)
    report_gates(groups, dials, lines)


def report_dial_three(groups: dict[str, list[Row]], name: str, lines: list[str]) -> None:
    """One K = 3 dial: each corpus at each vertex and the centre, own-vertex checks, far-vertex
    gaps, the grid, the cost against the ungated 3-corpus GPT."""
    rows = groups[name]
    points = positions(3)
    heads = [f"@e_{SHORT[c]}" for c in THREE] + ["@centre"]
    lines += ["", f"### Three corpora ({name}, {draws(RECIPES[name])} draws): test loss (nats/char) at each "
              "vertex and the centre", "",
              "| model | corpus | " + " | ".join(heads) + " | lowest at own vertex (within 0.02) | far-vertex gaps |",
              "|---|---|" + "---|" * (len(heads) + 2)]
    for model in (name, "k3_ungated"):
        for i, c in enumerate(THREE):
            mine = groups.get(model)
            if not mine:
                continue
            cells = [cell([loss(r, c, p) for r in mine]) for p in points]
            if not RECIPES[model].gated:  # deaf to the dial: the same loss everywhere, nothing to check
                lines.append(f"| {model} | {c} | " + " | ".join(cells) + " | - | - |")
                continue
            lowest = sum(loss(r, c, CORNERS[i]) <= min(loss(r, c, p) for p in points) + 0.02 for r in mine)
            gaps = ", ".join(f"e_{SHORT[o]} {cell([loss(r, c, CORNERS[j]) - loss(r, c, CORNERS[i]) for r in mine])}"
                             for j, o in enumerate(THREE) if j != i)
            word = "yes" if lowest == len(mine) else "NO"
            lines.append(f"| {model} | {c} | " + " | ".join(cells) + f" | {word} ({lowest}/{len(mine)} seeds) | {gaps} |")
    checks = [all(loss(r, c, CORNERS[i]) <= min(loss(r, c, p) for p in points) + 0.02 for r in rows)
              for i, c in enumerate(THREE)]
    lines += ["", f"Each corpus lowest at its own vertex (within 0.02) on every seed ({name}): " +
              ", ".join(f"{c} {'yes' if ok else 'NO'}" for c, ok in zip(THREE, checks)) + "."]
    report_grid(name, rows, lines)
    if "k3_ungated" in groups:
        base = groups["k3_ungated"]
        lines += ["", f"### Three corpora: own-vertex cost against the ungated 3-corpus GPT ({name} - ungated)", "",
                  f"| corpus | own vertex | {name} - ungated |", "|---|---|---|"]
        for i, c in enumerate(THREE):
            lines.append(f"| {c} | {label(CORNERS[i])} | " + verdict(
                [loss(r, c, CORNERS[i]) for r in rows], [loss(r, c, CORNERS[i]) for r in base]) + " |")


def draws(recipe: Recipe) -> str:
    """A three-corpus recipe's training draws, as the report names them: Dirichlet(c)."""
    return f"Dirichlet({sampler_callback(recipe)['init_args']['concentration']:g})"


def report_draws(groups: dict[str, list[Row]], dials: list[str], lines: list[str]) -> None:
    """The K = 3 draws side by side on the test split: each corpus's own vertex, how far above the
    grid's best point it sits, and the centre; each variant against the shipped draws (k3)."""
    if len(dials) < 2 or "k3" not in dials:
        return
    lines += ["", "### Three corpora: the training draws compared on the test split (k3 ships "
              f"{draws(RECIPES['k3'])}, chosen on the validation grid at seed 1337; the test split chose nothing)", "",
              "| recipe | draws | corpus | own vertex | own vertex - grid best | @centre | own vertex - k3 |",
              "|---|---|---|---|---|---|---|"]
    for name in dials:
        rows = groups[name]
        for i, c in enumerate(THREE):
            vertex = [loss(r, c, CORNERS[i]) for r in rows]
            excess = cell([v - min(g[c] for g in r.grid) for v, r in zip(vertex, rows)]) if all(r.grid for r in rows) else "-"
            against = "-" if name == "k3" else verdict(vertex, [loss(r, c, CORNERS[i]) for r in groups["k3"]])
            lines.append(f"| {name} | {draws(RECIPES[name])} | {c} | {cell(vertex)} | {excess} | "
                         f"{cell([loss(r, c, CENTRE) for r in rows])} | {against} |")


def report_grid(name: str, rows: list[Row], lines: list[str]) -> None:
    """The same check on the whole simplex grid: each corpus's best point and how far its own
    vertex sits above it, per seed."""
    if not all(r.grid for r in rows):
        return
    lines += ["", f"### Three corpora ({name}) on the {len(rows[0].grid)}-point simplex grid (step {GRID_STEP:g}) "
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
    scored = [r for r in RECIPES if r in groups and all(x.scores for x in groups[r])]
    if scored:
        paths.append(score_figure(groups, scored, folder))
    if "k3" in groups:
        paths += k3_figures(groups["k3"], folder)
    return paths


def score_figure(groups: dict[str, list[Row]], recipes: list[str], folder: Path) -> Path:
    """Histograms of the voice scores at alpha 0.25 / 0.5 / 0.75, every seed's generations
    together, one outline per recipe: a blend is one hump in the middle, a switch two at the ends."""
    from succu.analysis.plots import plt, save_figure

    inner = ALPHAS[1:-1]
    everything = [x for name in recipes for r in groups[name] for a in inner for x in r.scores[label(a)]]
    edges = torch.linspace(min(everything), max(everything) + 1e-9, 31).tolist()
    fig, axes = plt.subplots(1, len(inner), figsize=(4 * len(inner), 3.2), sharey=True)
    for ax, a in zip(axes, inner):
        for name in recipes:
            ax.hist([x for r in groups[name] for x in r.scores[label(a)]], bins=edges, histtype="step", label=name)
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set_title(f"alpha {a:g}", fontsize=9)
        ax.set_xlabel(f"voice score ({TWO[1]} : {TWO[0]}, nats/char)", fontsize=8)
    axes[0].set_ylabel("generations")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, folder / "alpha_dial_voice_scores.png")


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
                args.cache_dir, scale=args.scale) for name in args.recipes for seed in args.seeds]


def report(rows: list[Row], args: argparse.Namespace) -> str:
    groups = by_recipe(rows)
    lines = ["## The dial study", "", f"`python -m studies.dial {' '.join(args.argv)}`".replace(" `", "`"),
             "", f"{args.steps} steps, seeds {','.join(map(str, args.seeds))}, {args.scale} scale, voice "
             f"{args.voice} generations of {args.voice_length} characters per position; test split.", ""]
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
    p.add_argument("--scale", choices=["baby", "full"], default="baby",
                   help="model and windows: the recipes' configs as shipped (baby, CPU), or with "
                   "configs/full/abcgpt_char.yaml over them (full: abcGPT's 6 layers, 384 wide, block 256, "
                   "batch 64, dropout 0.2; meant for a GPU)")
    p.add_argument("--variants", action="store_true", help="the earlier recipe search instead (see --variant)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="reference", help="--variants: which")
    p.add_argument("--seed", type=int, default=1337, help="--variants: the seed")
    p.add_argument("--reference", type=Path, default=REFERENCE_JSON,
                   help=f"--variants: abcGPT's own figures, the JSON of {REFERENCE_COMMAND} (default {REFERENCE_JSON})")
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
# The variants' model and windows; studies/abcgpt_reference.py trains abcGPT's own code at them.
VARIANT_SIZE = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
VARIANT_WINDOWS = dict(block_size=64, batch_size=12, val_windows=256)
REFERENCE_JSON = Path("runs/abcgpt_reference.json")  # studies/abcgpt_reference.py's --out default
REFERENCE_COMMAND = "python -m studies.abcgpt_reference PATH/TO/abcGPT"
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


def variant_data(seed: int, cache_dir: str | None, **windows):
    """The variants' data: TinyStories and Shakespeare, char-level in abcGPT's surface form, the
    windows of VARIANT_WINDOWS (changed by `windows`) seeded by `seed`."""
    from datamodules.mixture import MixtureDataModule
    from datamodules.tokens import Tokens
    from datamodules.windows import Windows

    return MixtureDataModule(corpora=TWO, windows=Windows(**{**VARIANT_WINDOWS, **windows}, seed=seed),
                             tokens=Tokens(cache_dir=cache_dir))


def variant_train(variant: str, steps: int, seed: int, cache_dir: str | None):
    """(module, datamodule, seconds) of one variant trained through the user's module and callback."""
    import lightning as L

    from callbacks.alpha_sampling import AlphaBetaSampling
    from succu.models.gated_gpt import GatedGPTConfig
    from succu.modules.gated_gpt import GatedGPTModule

    opts = VARIANTS[variant]
    L.seed_everything(seed, verbose=False)
    dm = variant_data(seed, cache_dir)
    config = GatedGPTConfig(
        vocab_size=dm.vocab_size, **VARIANT_SIZE,
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


def load_reference(path: Path) -> dict | None:
    """The figures of abcGPT's own code that studies/abcgpt_reference.py wrote to `path` (its
    --out): "mean" and "sd" over "seeds", {corpus: [val loss at each of ALPHAS]}, with "steps";
    None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("alphas") != ALPHAS or not set(TWO) <= set(data.get("mean", {})):
        raise ValueError(f"{path}: not studies/abcgpt_reference.py's output (alphas {ALPHAS}, corpora "
                         f"{', '.join(TWO)}); run {REFERENCE_COMMAND} --out {path}")
    return data


def variant_report(variant: str, rows: list[dict], names: list[str], reference: dict) -> None:
    mean, sd = reference["mean"], reference["sd"]
    seeds = ",".join(map(str, reference["seeds"]))
    print(f"\nval loss by alpha ({variant}; in brackets abcGPT's gated_gpt_tent.py, mean ± sd over seeds "
          f"{seeds}, {reference['steps']} steps{', a --dry-run: not a reference' if reference.get('dry_run') else ''})")
    print("alpha   " + "".join(f"{n:>26}" for n in names))
    for i, r in enumerate(rows):
        print(f"{r['alpha']:<8g}" + "".join(f"{r[n]:>12.3f} [{mean[n][i]:.2f} ± {sd[n][i]:.2f}]" for n in names))
    for k, name in enumerate(names):
        losses = [r[name] for r in rows]
        own, far = (losses[0], losses[-1]) if k == 0 else (losses[-1], losses[0])
        ref = mean[name]
        ref_gap = (ref[-1] - ref[0]) if k == 0 else (ref[0] - ref[-1])
        print(f"{name}: own end {own:.3f}, best {min(losses):.3f} -> lowest at own end: "
              f"{'yes' if own <= min(losses) + 0.02 else 'NO'}; beats reference best {min(ref):.2f}: "
              f"{'yes' if own < min(ref) else 'NO'}; far-end gap {far - own:.2f} "
              f"(reference {ref_gap:.2f}): {'yes' if far - own >= ref_gap else 'NO'}")


def variants_main(args: argparse.Namespace) -> None:
    from succu.analysis.alpha_sweep import sweep

    reference = load_reference(args.reference)  # before the training: no reference, no comparison
    if reference is None:
        sys.exit(f"no reference: run {REFERENCE_COMMAND} (it writes {args.reference}, which --variants reads)")
    if reference["steps"] != args.steps:
        print(f"note: the reference trained {reference['steps']} steps, this variant {args.steps}", flush=True)
    runner.setup_threads(args.threads)
    module, dm, seconds = variant_train(args.variant, args.steps, args.seed, args.cache_dir)
    print(f"variant {args.variant}: {args.steps} steps in {seconds:.0f} s (seed {args.seed})")
    dm.setup("validate")
    names = list(dm.corpora)
    rows = sweep(module, list(dm.val_dataloader()), ALPHAS, names)
    variant_report(args.variant, rows, names, reference)


if __name__ == "__main__":
    main()
