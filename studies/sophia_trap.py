"""The sophia trap as the SuccuLM tensor-network article set it up, measured over seeds.

    python -m studies.sophia_trap [--jobs 2] [--seeds 0 1 2 3 4] [--samples 20] [--out runs/bench_sophia_trap]
    python -m studies.sophia_trap --quick       # smoke test: a few steps, one seed, two experiments
    python -m studies.sophia_trap --report      # the tables again, from the finished runs in --out

Two set-ups, each trained once per seed by the product (`succu.fit.main`, what
`python -m succu.fit` runs) from the shipped configs, the seed being `seed_everything` (weights
and batch order; the world, seed 42, is the same for every run):
- random embeddings: configs/succulm_article.yaml (the article's world), `sophia`'s row random and never a target;
- prepared embeddings, the article's set-up: configs/succulm_stage1.yaml (a world in which sophia
  is a third plant; writes the `{word: vector}` file) then configs/succulm_stage2.yaml (the
  standard world, starting from that file, not frozen).
Each trained model goes through the article's corruption experiments (`succu.analysis.tt_sweep`,
ARTICLE_PLAN: each FFN alone at bonds 27 and 20; all four at [39, 42, 46, 47] and reversed; the
pairs [0, 1], [2, 3], [1, 2] at 30), with the parameter-matched truncated-SVD baseline beside each
row, sampling `--samples` continuations of each of the article's 14 prompts at T = 0.6 and reading
them with the grammar and fact meter (`succu.analysis.meter`). Each (set-up, seed) writes one
result file under --out/runs/, so a rerun (or a larger --seeds) resumes; runs go to --jobs
processes with one torch thread each.

Tables: the rate of each row, mean over seeds with a 95% t-interval across seeds (TT / low
rank). Verdicts on the article's three observations use paired differences across seeds (the
same trained model corrupted two ways), with the project's rule: "holds" when the mean difference
is on the article's side of zero by more than two standard deviations of the differences,
"opposite" when on the other side by as much, else "no difference detected at this scale"; one
seed gives no verdict.

A (set-up, seed) is one fit and a sweep (random) or two fits and a sweep (prepared): the default
study, 2 set-ups x 5 seeds, is 15 fits and 10 sweeps; what they cost is on its results page,
studies/results/sophia_trap.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from studies import runner
from studies.runner import cell, offline, setup_threads

offline()

from succu import fit  # noqa: E402
from succu.analysis.meter import Meter  # noqa: E402
from succu.analysis.trap import hidden_token_ids  # noqa: E402
from succu.analysis.tt_sweep import (  # noqa: E402
    ARTICLE_PLAN,
    METRICS,
    Probe,
    bond_for_damage,
    parse_experiments,
    sweep,
)
from succu.contracts import QAProbes, WorldKnowledge, require  # noqa: E402
from succu.io import atomic_write  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SETUPS = {
    "random": ("succulm_article.yaml",),
    "prepared": ("succulm_stage1.yaml", "succulm_stage2.yaml"),
}
TITLES = {
    "random": "random embeddings (configs/succulm_article.yaml)",
    "prepared": "prepared embeddings (configs/succulm_stage1.yaml -> configs/succulm_stage2.yaml)",
}
QUICK_PLAN = "0@20;3@20"  # --quick: two experiments, for the path, not the numbers
HIDDEN = "sophia"  # the standard world's hidden word
DAMAGE = (0.05, 0.2)  # equal damage: validation-loss rises (nats) every layer is compressed to
DOSE_STEPS = (500, 1000, 2500)  # the dose-response's stage-2 lengths
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
         "--trainer.callbacks", "[]"]
# Columns of the tables: (metric, heading, format).
COLUMNS = (("hidden_rate", "sophia rate", "{:.3f}"), ("special_rate", "<BOS>/<PAD>/<UNK> rate",
           "{:.3f}"), ("grammar_rate", "grammar rate", "{:.3f}"), ("oot_rate", "out-of-template",
           "{:.3f}"), ("fact_rate", "fact rate", "{:.3f}"), ("hidden_mass", "p(sophia)", "{:.1e}"),
           ("qa_exact", "train QA", "{:.3f}"), ("qa_exact_heldout", "held-out QA", "{:.3f}"))


@dataclass(frozen=True)
class Run:
    setup: str  # random, prepared
    seed: int
    steps: int
    plan: str
    samples: int
    temperature: float = 0.6
    qa_limit: int | None = None  # score only the first n training and held-out questions (--quick)
    damage: tuple = ()  # validation-loss rises (nats) each layer is compressed to, for equal damage

    @property
    def key(self) -> str:
        return f"{self.setup}-s{self.seed}-" + hashlib.sha1(repr(self).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class DoseRun:
    """One cell of the dose-response: stage 2 of the prepared set-up from seed's stage-1 file, with
    sophia's row as prepared, scaled (x3) or frozen as loaded, for `steps` steps, then corrupted."""

    seed: int
    row: str  # prepared, x3, frozen
    steps: int  # stage 2's
    stage1_steps: int
    samples: int
    plan: str = "0@20;3@20"
    temperature: float = 0.6
    qa_limit: int | None = 40

    @property
    def key(self) -> str:
        return f"dose-{self.row}-{self.steps}-s{self.seed}-" + hashlib.sha1(repr(self).encode()).hexdigest()[:10]


# ---- one run, in a worker process -----------------------------------------------------------
def fit_argv(config: str, run: Run, root: str, embeddings: str) -> list[str]:
    out = ["--config", str(CONFIGS / config), "--trainer.max_steps", str(run.steps),
           "--trainer.val_check_interval", str(run.steps), "--seed_everything", str(run.seed),
           "--model.init_args.warmup_steps", str(min(100, run.steps // 5)),
           "--trainer.default_root_dir", root]
    if config == "succulm_stage1.yaml":
        out += ["--model.init_args.save_embeddings", embeddings]
    if config == "succulm_stage2.yaml":
        out += ["--model.init_args.init_embeddings", embeddings]
    return out + QUIET


def stage1_file(out: Path, seed: int, steps: int) -> Path:
    return out / "stage1" / f"s{seed}-{steps}.json"


def train_stage1(job: tuple[int, int], out: Path) -> float:
    """Stage 1 of the prepared set-up once per (seed, steps), its embeddings file kept under
    `out` for every stage 2 of the dose-response; returns the fit's seconds (0: read back)."""
    seed, steps = job
    path = stage1_file(out, seed, steps)
    if path.exists():
        return 0.0
    runner.quiet_worker()
    run = DoseRun(seed, "prepared", steps, steps, samples=1)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        scratch = Path(tmp) / "succulm_embeddings.json"
        fit.main(fit_argv("succulm_stage1.yaml", run, str(Path(tmp) / "stage1"), str(scratch)))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, scratch.read_bytes())
    return time.perf_counter() - start


ROWS = {"prepared": 1.0, "x3": 3.0, "frozen": 1.0}  # sophia's row: its scale, and frozen or not


def dosed_embeddings(source: Path, row: str, tmp: str) -> str:
    """Stage 1's file with sophia's vector scaled as `row` says (a copy; the source stays)."""
    vectors = json.loads(source.read_text())
    vectors[HIDDEN] = [ROWS[row] * v for v in vectors[HIDDEN]]
    path = Path(tmp) / f"embeddings-{row}.json"
    path.write_text(json.dumps(vectors))
    return str(path)


def saved_or(done: Path, compute: Callable[[], dict]) -> dict:
    """The result saved at `done`, or compute() in a quiet worker, written there atomically."""
    if done.exists():
        return json.loads(done.read_text())
    runner.quiet_worker()
    result = compute()
    atomic_write(done, json.dumps(result).encode())
    return result


def dose_execute(run: DoseRun, out: Path) -> dict:
    """Stage 2 of one dose cell and its corruption rows, or the result saved before."""
    return saved_or(out / "dose" / f"{run.key}.json", partial(dose_cell, run, out))


def dose_cell(run: DoseRun, out: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        embeddings = dosed_embeddings(stage1_file(out, run.seed, run.stage1_steps), run.row, tmp)
        argv = fit_argv("succulm_stage2.yaml", run, str(Path(tmp) / "stage2"), embeddings)
        if run.row == "frozen":
            argv += ["--model.init_args.frozen_words", json.dumps([HIDDEN])]
        start = time.perf_counter()
        cli = fit.main(argv)
        fit_seconds = time.perf_counter() - start
        module = cli.model.eval()
        rows = sweep(module, make_probe(cli.datamodule, run), parse_experiments(run.plan),
                     baseline=False, log=lambda *_: None)
    return {"run": dataclasses.asdict(run), "fit_seconds": fit_seconds,
            "sweep_seconds": time.perf_counter() - start - fit_seconds, "rows": [slim(r) for r in rows]}


def train(run: Run, tmp: str):
    """Fit the run's set-up (one or two stages); returns the last stage's CLI and the seconds."""
    embeddings = str(Path(tmp) / "succulm_embeddings.json")
    start = time.perf_counter()
    for k, config in enumerate(SETUPS[run.setup]):
        cli = fit.main(fit_argv(config, run, str(Path(tmp) / f"stage{k}"), embeddings))
    return cli, time.perf_counter() - start


def make_probe(datamodule, run: Run | DoseRun) -> Probe:
    datamodule = require(datamodule, QAProbes, "the sophia-trap study")
    meter = Meter(datamodule.world_grammar()) if isinstance(datamodule, WorldKnowledge) else None
    n = run.qa_limit
    return Probe(val_loader=datamodule.val_dataloader(), prompts=list(datamodule.probe_prompts),
                 hidden_ids=hidden_token_ids(datamodule), train_qa=list(datamodule.train_qa)[:n],
                 heldout_qa=list(datamodule.heldout_qa)[:n], temperature=run.temperature,
                 seeds=(0,), samples=run.samples, meter=meter)


def slim(row: dict) -> dict:
    """A sweep row as JSON-able numbers: metrics, layers, bonds, params (offenders dropped)."""
    keep = {k: row[k] for k in ("layers", "bond_dims", "params", "rel_error", *METRICS) if k in row}
    if "lr" in row:
        keep["lr"] = slim(row["lr"])
    return keep


def execute(run: Run, out: Path) -> dict:
    """Train and sweep one (set-up, seed), or read its result from `out` when done before."""
    return saved_or(out / "runs" / f"{run.key}.json", partial(article_run, run))


def article_run(run: Run) -> dict:
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        cli, fit_seconds = train(run, tmp)
        module = cli.model.eval()
        start = time.perf_counter()
        probe = make_probe(cli.datamodule, run)
        rows = sweep(module, probe, parse_experiments(run.plan), log=lambda *_: None)
        sweep_seconds = time.perf_counter() - start
        damage = equal_damage(module, probe, run.damage, rows[0]["val_loss"])
    return {"run": dataclasses.asdict(run), "fit_seconds": fit_seconds,
            "sweep_seconds": sweep_seconds, "rows": [slim(r) for r in rows], "damage": damage,
            "damage_seconds": time.perf_counter() - start - sweep_seconds}


def equal_damage(module, probe: Probe, targets: tuple, dense_loss: float) -> list[dict]:
    """Each FFN alone compressed to the largest bond that raises the validation loss by at least
    each target (`bond_for_damage`), then read like every other row: layers compared at the
    same damage, not the same bond."""
    out = []
    for target in targets:
        bonds = [bond_for_damage(module, probe.val_loader, k, target, dense_loss)[0] for k in range(4)]
        plan = ";".join(f"{k}@{b}" for k, b in enumerate(bonds))
        rows = sweep(module, probe, parse_experiments(plan), baseline=False, log=lambda *_: None)
        out += [{**slim(r), "target": target, "rise": r["val_loss"] - dense_loss} for r in rows[1:]]
    return out


def progress(result: dict) -> None:
    r = result["run"]
    name = r["setup"] if "setup" in r else f"dose {r['row']} {r['steps']} steps"
    print(f"  [{name} seed {r['seed']}] fit {result['fit_seconds']:.0f} s, sweep "
          f"{result['sweep_seconds']:.0f} s", flush=True)


def pool_map(runs: list[Run], jobs: int, out: Path) -> list[dict]:
    """Every run in its own process slot (one torch thread each); results in the order of runs."""
    return runner.pool_map(partial(execute, out=out), runs, jobs, progress)


# ---- statistics -----------------------------------------------------------------------------
def side(diffs: list[float]) -> str:
    """The verdict of paired differences (positive = the article's side): beyond 2 sd or not."""
    if len(diffs) < 2:
        return "one seed: no verdict"
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if mean > 2 * sd:
        return "holds"
    if mean < -2 * sd:
        return "opposite"
    return "no difference detected at this scale"


# ---- tables ---------------------------------------------------------------------------------
def values(results: list[dict], layers: str, bond: str, metric: str, kind: str = "tt") -> list:
    """One value per seed of a row's metric (kind "lr": its low-rank baseline); [] if absent."""
    out = []
    for result in results:
        for row in result["rows"]:
            if row["layers"] == layers and row["bond_dims"] == bond:
                src = row if kind == "tt" else row.get("lr", {})
                out.append(float(src.get(metric, math.nan)))
    return out


def row_keys(results: list[dict]) -> list[tuple[str, str]]:
    keys: dict[tuple[str, str], None] = {}
    for result in results:
        for row in result["rows"]:
            keys[(row["layers"], row["bond_dims"])] = None
    return list(keys)


def report_setup(results: list[dict], setup: str) -> None:
    seeds = sorted(r["run"]["seed"] for r in results)
    print(f"\n### Sophia trap: {TITLES[setup]}\n")
    print(f"Seeds {seeds}; mean ± 95% t-interval across seeds; TT / parameter-matched low rank.\n")
    print("| layers | bond | " + " | ".join(h for _, h, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for layers, bond in row_keys(results):
        cells = []
        for metric, _, fmt in COLUMNS:
            tt = cell(values(results, layers, bond, metric), fmt)
            lr = values(results, layers, bond, metric, "lr")
            cells.append(tt if layers == "-" or not lr else f"{tt} / {cell(lr, fmt)}")
        print(f"| {'none' if layers == '-' else layers} | {bond} | " + " | ".join(cells) + " |")


def paired(results: list[dict], metric: str, plus: list[tuple[str, str]],
           minus: list[tuple[str, str]]) -> list[float] | None:
    """Per seed: mean of `metric` over the `plus` cells minus its mean over the `minus` cells
    (None when a cell is not in the plan)."""
    diffs = []
    for result in results:
        table = {(r["layers"], r["bond_dims"]): r for r in result["rows"]}
        if any(c not in table for c in plus + minus):
            return None
        diffs.append(statistics.fmean(float(table[c][metric]) for c in plus)
                     - statistics.fmean(float(table[c][metric]) for c in minus))
    return diffs


def verdict_line(results: list[dict], claim: str, metric: str, plus, minus) -> str:
    diffs = paired(results, metric, plus, minus)
    if diffs is None:
        return f"- {claim}: not measured (its experiments are not in this plan)"
    diffs = [d for d in diffs if not math.isnan(d)]
    if not diffs:
        return f"- {claim}: {metric} not measured (no value on any seed)"
    mean = statistics.fmean(diffs)
    sd = f" ± {statistics.stdev(diffs):.3f} (sd over seeds)" if len(diffs) > 1 else ""
    return f"- {claim}: {metric} difference {mean:+.3f}{sd} -> **{side(diffs)}**"


def report_verdicts(results: list[dict], setup: str) -> None:
    print(f"\n### Verdicts: {TITLES[setup]}\n")
    single = lambda layer, bond: (str(layer), str(bond))  # noqa: E731
    for bond in (27, 20):
        others = [single(k, bond) for k in (1, 2, 3)]
        print(verdict_line(results, f"1. corrupting layer 0 breaks sentence structure (bond {bond}: "
                           "layers 1-3 minus layer 0)", "grammar_rate", others, [single(0, bond)]))
    for bond in (27, 20):
        others = [single(k, bond) for k in (0, 1, 2)]
        for metric in ("oot_rate", "hidden_rate"):
            print(verdict_line(results, f"2. corrupting the last layer brings strange vocabulary "
                               f"(bond {bond}: layer 3 minus layers 0-2)", metric,
                               [single(3, bond)], others))
    every = range(4)
    print(verdict_line(results, "3a. severe corruption triggers the sophia trap (bond 20 minus "
                       "bond 27, each layer alone)", "hidden_rate",
                       [single(k, 20) for k in every], [single(k, 27) for k in every]))
    print(verdict_line(results, "3b. ... more in later layers (bond 20: layers 2, 3 minus layers "
                       "0, 1)", "hidden_rate", [single(2, 20), single(3, 20)],
                       [single(0, 20), single(1, 20)]))
    print(verdict_line(results, "3b'. ... p(sophia), teacher-forced (bond 20: layers 2, 3 minus "
                       "layers 0, 1)", "hidden_mass", [single(2, 20), single(3, 20)],
                       [single(0, 20), single(1, 20)]))
    loosen, tighten = ("0,1,2,3", "39/42/46/47"), ("0,1,2,3", "47/46/42/39")
    for metric in ("grammar_rate", "false_fact_rate", "val_loss"):
        print(same_line(results, "S1. loosening and tightening the compression along the layers "
                        "read about the same (39/42/46/47 minus 47/46/42/39)", metric, [loosen], [tighten]))
    first, last = ("0,1", "30"), ("2,3", "30")
    print(verdict_line(results, "S3. corrupting the first two layers has a larger impact than the "
                       "last two (bond 30: layers 2,3 minus 0,1)", "grammar_rate", [last], [first]))
    print(verdict_line(results, "S3. ... (bond 30: layers 0,1 minus 2,3)", "val_loss", [first], [last]))
    inner, outer = [single(1, 20), single(2, 20)], [single(3, 20)]
    print(same_line(results, "S5. internal layers keep the text looking natural (bond 20: layers 1, "
                    "2 minus layer 3)", "grammar_rate", inner, outer))
    print(verdict_line(results, "S5. ... but state more false facts (bond 20: layers 1, 2 minus "
                       "layer 3)", "false_fact_rate", inner, outer))


def same_line(results: list[dict], claim: str, metric: str, plus, minus) -> str:
    """A claim of no difference: a difference within two sd is what the claim predicts, one
    beyond it refutes it ("differs")."""
    line = verdict_line(results, claim, metric, plus, minus)
    for word in ("holds", "opposite"):
        line = line.replace(f"**{word}**", "**differs**")
    return line.replace("**no difference detected at this scale**",
                        "**no difference detected at this scale** (as claimed)")


def damage_values(results: list[dict], target: float, layer: str, metric: str) -> list[float]:
    return [float(r[metric]) for result in results for r in result.get("damage", [])
            if r["target"] == target and r["layers"] == layer]


def report_damage(results: list[dict], setup: str) -> None:
    """Each layer alone at the bond that costs the same validation loss; verdicts paired by seed."""
    targets = sorted({r["target"] for result in results for r in result.get("damage", [])})
    if not targets:
        return
    print(f"\n### Equal damage: {TITLES[setup]}\n")
    print("Each FFN alone compressed to the largest bond that raises the validation loss by at least "
          "the target; mean ± 95% t-interval across seeds.\n")
    metrics = (("rise", "loss rise", "{:.3f}"), ("grammar_rate", "grammar rate", "{:.3f}"),
               ("oot_rate", "out-of-template", "{:.3f}"), ("false_fact_rate", "false-fact rate", "{:.3f}"),
               ("fact_rate", "fact rate", "{:.3f}"), ("hidden_rate", "sophia rate", "{:.3f}"))
    print("| target | layer | bond | " + " | ".join(h for _, h, _ in metrics) + " |")
    print("|---|---|---|" + "---|" * len(metrics))
    for target in targets:
        for layer in "0123":
            bonds = damage_values(results, target, layer, "bond_dims")
            cells = [cell(damage_values(results, target, layer, m), fmt) for m, _, fmt in metrics]
            print(f"| {target:g} | {layer} | {'/'.join(f'{b:g}' for b in bonds)} | " + " | ".join(cells) + " |")
    for target in targets:
        claims = (("1. layer 0 breaks sentence structure most (grammar: layers 1-3 minus 0)",
                   "grammar_rate", "123", "0"),
                  ("2. the last layer brings strange vocabulary (out-of-template: layer 3 minus 0-2)",
                   "oot_rate", "3", "012"),
                  ("S5. internal layers state more false facts (layers 1, 2 minus 3)",
                   "false_fact_rate", "12", "3"))
        for claim, metric, plus, minus in claims:
            diffs = [statistics.fmean(damage_values([res], target, k, metric)[0] for k in plus)
                     - statistics.fmean(damage_values([res], target, k, metric)[0] for k in minus)
                     for res in results]
            diffs = [d for d in diffs if not math.isnan(d)]
            sd = f" ± {statistics.stdev(diffs):.3f}" if len(diffs) > 1 else ""
            mean = statistics.fmean(diffs) if diffs else math.nan
            print(f"- at a loss rise of {target:g}: {claim}: {mean:+.3f}{sd} -> **{side(diffs)}**")


def report_dose(results: list[dict]) -> None:
    """The trap's dose-response: sophia's row as prepared, x3 or frozen, stage 2 of each length."""
    if not results:
        return
    seeds = sorted({r["run"]["seed"] for r in results})
    print("\n### The trap's dose-response (prepared set-up; sophia's row x stage-2 length)\n")
    print(f"Seeds {seeds}; mean ± 95% t-interval across seeds; dense / layer 0 at bond 20 / layer 3 "
          "at bond 20.\n")
    print("| sophia's row | stage-2 steps | sophia rate | p(sophia) | val loss (dense) |\n|---|---|---|---|---|")
    cells = [("-", "-"), ("0", "20"), ("3", "20")]
    found = []
    for row in ROWS:
        for steps in sorted({r["run"]["steps"] for r in results}):
            mine = [r for r in results if r["run"]["row"] == row and r["run"]["steps"] == steps]
            if not mine:
                continue
            rate = [values(mine, *c, "hidden_rate") for c in cells]
            mass = [values(mine, *c, "hidden_mass") for c in cells]
            print(f"| {row} | {steps} | " + " / ".join(cell(v, "{:.3f}") for v in rate) + " | "
                  + " / ".join(cell(v, "{:.1e}") for v in mass) + " | "
                  + cell(values(mine, "-", "-", "val_loss"), "{:.3f}") + " |")
            intervals = [runner.interval(v) for v in rate[1:]]
            if any(mean >= 0.01 and mean - half > 0 for mean, half in intervals):  # nan half: no
                found.append((row, steps, mine))
    top = max(float(row["hidden_rate"]) for r in results for row in r["rows"])
    if not found:
        print(f"\nThe trap appears in no regime (a sophia rate of 1% or more, its interval above 0); "
              f"the highest rate of any row on any seed is {top:.3f}: it needs an atypical row.")
        return
    for row, steps, mine in found:
        print(verdict_line(mine, f"where it appears ({row}, {steps} steps): more in the later layer "
                           "(layer 3 minus layer 0 at bond 20)", "hidden_rate", [("3", "20")], [("0", "20")]))


# ---- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = runner.study_parser(__doc__, "runs/bench_sophia_trap", "few steps, one seed", cache_dir=False,
                            threads=True, report_only="--report")
    p.add_argument("--steps", type=int, default=2500, help="steps of every fit (the configs')")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--samples", type=int, default=20, help="samples per prompt at T = 0.6")
    p.add_argument("--setups", default="random,prepared", help="comma list of random, prepared")
    p.add_argument("--damage", default=",".join(map(str, DAMAGE)),
                   help="equal damage: validation-loss rises (nats) each layer is compressed to, "
                        "comma list ('' for none)")
    p.add_argument("--dose", action="store_true",
                   help="the trap's dose-response instead: sophia's row prepared, x3 or frozen, "
                        "stage 2 of --dose_steps, layers 0 and 3 at bond 20 (prepared set-up)")
    p.add_argument("--dose_steps", default=",".join(map(str, DOSE_STEPS)), help="stage-2 lengths")
    args = runner.parse(p, argv)
    try:
        args.damage = tuple(float(t) for t in args.damage.split(",") if t.strip())
        args.dose_steps = tuple(int(t) for t in args.dose_steps.split(","))
    except ValueError as err:
        p.error(f"--damage wants numbers and --dose_steps integers, comma-separated: {err}")
    if any(t <= 0 for t in args.damage) or any(t < 1 for t in args.dose_steps):
        p.error(f"--damage rises must be > 0 and --dose_steps >= 1, got {args.damage} and {args.dose_steps}")
    args.setups = args.setups.split(",")
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown:
        p.error(f"unknown set-up {unknown[0]!r}; choose from {list(SETUPS)}")
    if args.jobs < 1 or args.samples < 1 or args.steps < 1:
        p.error("--jobs, --samples and --steps must be at least 1")
    args.plan, args.qa_limit = ARTICLE_PLAN, None
    if args.quick:
        args.steps, args.seeds, args.samples, args.plan, args.qa_limit = 10, [0], 1, QUICK_PLAN, 8
        args.damage, args.dose_steps = args.damage[:1], (5, 10)
    return args


def dose_main(args: argparse.Namespace) -> None:
    """Stage 1 once per seed, then every (row, length, seed) cell; the dose table."""
    runs = [DoseRun(seed, row, steps, args.steps, args.samples, qa_limit=args.qa_limit or 40)
            for row in ROWS for steps in args.dose_steps for seed in args.seeds]
    if not args.report_only:
        print(f"dose-response: {len(args.seeds)} stage-1 fits, {len(runs)} stage-2 fits and sweeps, "
              f"{args.jobs} jobs", flush=True)
        runner.pool_map(partial(train_stage1, out=args.out), [(s, args.steps) for s in args.seeds],
                        args.jobs, lambda sec: print(f"  stage 1: {sec:.0f} s", flush=True))
        runner.pool_map(partial(dose_execute, out=args.out), runs, args.jobs, progress)
    done = [args.out / "dose" / f"{r.key}.json" for r in runs]
    report_dose([json.loads(p.read_text()) for p in done if p.exists()])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_threads(args.threads)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.dose:
        dose_main(args)
        print(f"\ntotal {time.perf_counter() - start:.0f} s")
        return
    runs = [Run(s, seed, args.steps, args.plan, args.samples, qa_limit=args.qa_limit, damage=args.damage)
            for s in args.setups for seed in args.seeds]
    if args.report_only:
        done = [args.out / "runs" / f"{r.key}.json" for r in runs]
        results = [json.loads(p.read_text()) for p in done if p.exists()]
    else:
        print(f"{len(runs)} runs: set-ups {args.setups}, seeds {args.seeds}, {args.steps} steps, "
              f"{args.samples} samples per prompt, {args.jobs} jobs", flush=True)
        results = pool_map(runs, args.jobs, args.out)
    for setup in args.setups:
        mine = [r for r in results if r["run"]["setup"] == setup]
        if mine:
            report_setup(mine, setup)
            report_verdicts(mine, setup)
            report_damage(mine, setup)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
