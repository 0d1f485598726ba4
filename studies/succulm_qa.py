"""SuccuLM's question answering with `make fit`'s recipe, over five seeds: how well it answers.

    python -m studies.succulm_qa                 # five seeds of configs/succulm.yaml, two at a time
    python -m studies.succulm_qa --config succulm_article.yaml   # the article's world and recipe
    python -m studies.succulm_qa --quick         # smoke test: 30 steps, two seeds
    python -m studies.succulm_qa --report_only   # the table of the finished runs

Seed s trains the config through the user's Trainer (`python -m succu.fit --config CONFIG
--seed_everything s --data.init_args.seed s`: the model's initialisation, the training order and
the world's split of its questions all change with s), then answers, greedily, every training,
development and held-out question: exact match, fact accuracy, yes/no accuracy and the
always-the-majority baseline (`succu.analysis.qa.qa_scores`). The report gives each seed's row,
then the mean and 95% t-interval across seeds. Results are saved per run under --out, stamped
with the config's contents: a rerun reads finished runs back.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from studies import runner
from studies.runner import cell, offline, setup_threads

offline()

from succu import fit  # noqa: E402
from succu.analysis.qa import qa_scores, qa_sets  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEEDS = (0, 1, 2, 3, 4)
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]
# Columns of the table: (result key, heading).
COLUMNS = (("train_exact", "train exact"), ("heldout_exact", "held-out exact"),
           ("heldout_fact", "held-out fact"), ("heldout_yes_no", "held-out yes/no"),
           ("heldout_majority", "always the majority"), ("dev_exact", "dev exact"),
           ("fit_seconds", "fit s"))
FORMATS = {"fit_seconds": "{:.0f}"}  # the rest: "{:.3f}"; a missing figure (no dev set) is "-"


@dataclass(frozen=True)
class Run(runner.StudyRun):
    config: str
    seed: int
    steps: int | None = None  # None: the config's own
    cache_dir: None = None  # no token cache: the succulent world is generated

    def configs(self) -> list[Path]:
        return [CONFIGS / self.config]


def fit_argv(run: Run, root: str) -> list[str]:
    out = ["--config", str(CONFIGS / run.config), "--seed_everything", str(run.seed),
           "--data.init_args.seed", str(run.seed), "--trainer.default_root_dir", root, *QUIET]
    if run.steps is not None:
        out += ["--trainer.max_steps", str(run.steps), "--trainer.val_check_interval", str(run.steps)]
    return out


def train_and_score(run: Run) -> dict:
    """Train one seed and score its QA sets greedily."""
    runner.quiet_worker()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        cli = fit.main(fit_argv(run, tmp))
        fit_seconds = time.perf_counter() - start
        module = cli.model.eval()
        result = {"config": run.config, "seed": run.seed, "fit_seconds": fit_seconds}
        for name, pairs in qa_sets(cli.datamodule):
            if pairs:
                scores = qa_scores(module, pairs)
                result |= {f"{name}_exact": scores.exact.rate, f"{name}_fact": scores.fact.rate,
                           f"{name}_yes_no": scores.yes_no.rate, f"{name}_majority": scores.majority.rate,
                           f"{name}_count": len(pairs)}
    return result


def execute(run: Run, out: Path) -> dict:
    """One seed's result, trained now or read back when a study saved it before."""
    return runner.saved_run(run, out, train_and_score, lambda data: data)


def progress(result: dict) -> None:
    print(f"  [seed {result['seed']}] fit {result['fit_seconds']:.0f} s: held-out exact "
          f"{result.get('heldout_exact', math.nan):.3f}, yes/no {result.get('heldout_yes_no', math.nan):.3f}",
          flush=True)


def report(results: list[dict], config: str) -> list[str]:
    """The markdown table: one row per seed, then the mean ± 95% interval across seeds."""
    lines = [f"### configs/{config}, {len(results)} seeds", "",
             "| seed | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for r in results:
        lines.append(f"| {r['seed']} | " + " | ".join(cell([r.get(k, math.nan)], FORMATS.get(k, "{:.3f}"))
                                                      for k, _ in COLUMNS) + " |")
    means = [cell([r.get(k, math.nan) for r in results], FORMATS.get(k, "{:.3f}")) for k, _ in COLUMNS]
    lines.append("| mean ± 95% | " + " | ".join(means) + " |")
    counts = results[0] if results else {}
    lines += ["", f"Questions per seed: {counts.get('train_count', 0)} training, "
              f"{counts.get('dev_count', 0)} development, {counts.get('heldout_count', 0)} held-out."]
    return lines


def main(argv: list[str] | None = None) -> list[dict]:
    p = runner.study_parser(__doc__, "runs/studies/succulm_qa", "30 steps, seeds 0 and 1",
                            cache_dir=False)
    p.add_argument("--config", default="succulm.yaml", help="the config under configs/ to train")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds")
    args = runner.parse(p, argv)
    setup_threads(1)
    seeds = (0, 1) if args.quick else tuple(int(s) for s in args.seeds.split(","))
    runs = [Run(args.config, s, 30 if args.quick else None) for s in seeds]
    if args.report_only:
        results = [r for r in (run.saved(args.out) for run in runs) if r is not None]
    else:
        results = runner.pool_map(partial(execute, out=args.out), runs, args.jobs, progress)
    print("\n".join(report(results, args.config)), flush=True)
    return results


if __name__ == "__main__":
    main()
