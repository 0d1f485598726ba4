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

    @property
    def key(self) -> str:
        return f"{self.setup}-s{self.seed}-" + hashlib.sha1(repr(self).encode()).hexdigest()[:10]


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


def train(run: Run, tmp: str):
    """Fit the run's set-up (one or two stages); returns the last stage's CLI and the seconds."""
    embeddings = str(Path(tmp) / "succulm_embeddings.json")
    start = time.perf_counter()
    for k, config in enumerate(SETUPS[run.setup]):
        cli = fit.main(fit_argv(config, run, str(Path(tmp) / f"stage{k}"), embeddings))
    return cli, time.perf_counter() - start


def make_probe(datamodule, run: Run) -> Probe:
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
    done = out / "runs" / f"{run.key}.json"
    if done.exists():
        return json.loads(done.read_text())
    runner.quiet_worker()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        cli, fit_seconds = train(run, tmp)
        module = cli.model.eval()
        start = time.perf_counter()
        rows = sweep(module, make_probe(cli.datamodule, run), parse_experiments(run.plan),
                     log=lambda *_: None)
    result = {"run": dataclasses.asdict(run), "fit_seconds": fit_seconds,
              "sweep_seconds": time.perf_counter() - start, "rows": [slim(r) for r in rows]}
    atomic_write(done, json.dumps(result).encode())
    return result


def progress(result: dict) -> None:
    r = result["run"]
    print(f"  [{r['setup']} seed {r['seed']}] fit {result['fit_seconds']:.0f} s, sweep "
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


# ---- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = runner.study_parser(__doc__, "runs/bench_sophia_trap", "few steps, one seed", cache_dir=False,
                            threads=True, report_only="--report")
    p.add_argument("--steps", type=int, default=2500, help="steps of every fit (the configs')")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--samples", type=int, default=20, help="samples per prompt at T = 0.6")
    p.add_argument("--setups", default="random,prepared", help="comma list of random, prepared")
    args = runner.parse(p, argv)
    args.setups = args.setups.split(",")
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown:
        p.error(f"unknown set-up {unknown[0]!r}; choose from {list(SETUPS)}")
    if args.jobs < 1 or args.samples < 1 or args.steps < 1:
        p.error("--jobs, --samples and --steps must be at least 1")
    args.plan, args.qa_limit = ARTICLE_PLAN, None
    if args.quick:
        args.steps, args.seeds, args.samples, args.plan, args.qa_limit = 10, [0], 1, QUICK_PLAN, 8
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_threads(args.threads)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    runs = [Run(s, seed, args.steps, args.plan, args.samples, qa_limit=args.qa_limit)
            for s in args.setups for seed in args.seeds]
    start = time.perf_counter()
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
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
