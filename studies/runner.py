"""What the four studies share: each run's saved result, the worker pool, and the command line.

A study (studies/dial.py, hypersurface.py, noiselm.py, sophia_trap.py) is many independent runs,
each a frozen dataclass; `run_key` names each run's result file, so a rerun reads finished runs
back instead of training them, and `pool_map` spreads the rest over worker processes, each on
one torch thread (`quiet_worker`). `interval` is the mean and 95% t-interval a table gives across seeds.
`study_parser` declares the options every study takes once:
--jobs, --out, --quick, and where a study has them --cache_dir, --threads, the report-only
switch, --report FILE and --figures DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import torch

from succu.devices import set_threads
from succu.io import atomic_write

R = TypeVar("R")


# ---- process set-up --------------------------------------------------------------------------
def offline() -> None:
    """Studies read the local corpora; never let a missing file turn into a download."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")


def setup_threads(n: int) -> int:
    """Pin torch to n threads and say so."""
    n = set_threads(n)
    print(f"torch threads: {n}", flush=True)
    return n


def quiet_worker() -> None:
    """A run's process: one torch thread, Lightning's info lines and the warnings silenced (the
    study prints one progress line per run)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)


# ---- saved runs ------------------------------------------------------------------------------
def run_key(run: Any) -> str:
    """The stable name of a study run's result file: a hash of the run's fields (a dataclass with
    a `cache_dir`), the token cache's folder left out since it changes no number."""
    text = repr(dataclasses.replace(run, cache_dir=None))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class StudyRun:
    """Base of a study's frozen run dataclass: its result file's name and place, and the config
    files it trains from (`configs`), whose contents stamp the result: a config edited since a
    result was saved makes that run train again instead of being read back."""

    @property
    def key(self) -> str:
        return run_key(self)

    def result(self, out: Path) -> Path:
        return Path(out) / "runs" / f"{self.key}.json"

    def configs(self) -> list[Path]:
        return []

    def stamp(self) -> str:
        digest = hashlib.sha1()
        for path in self.configs():
            digest.update(Path(path).read_bytes())
        return digest.hexdigest()[:16]

    def saved(self, out: Path) -> dict | None:
        """The saved result's JSON (stamp removed), or None: not saved, or saved from other configs."""
        done = self.result(out)
        if not done.exists():
            return None
        data, stamp = json.loads(done.read_text()), self.stamp()
        if data.pop("stamp", stamp) != stamp:
            print(f"{done.name}: its configs changed since it was saved "
                  f"({', '.join(p.name for p in self.configs())}); not reused", flush=True)
            return None
        return data


def saved_run(run: StudyRun, out: Path, compute: Callable[[Any], R], load: Callable[[dict], R]) -> R:
    """compute(run), its result (a dataclass, or a dict of JSON data) written atomically as
    out/runs/<run.key>.json with the run's config stamp; when an earlier study wrote that file
    from the same configs (or before results were stamped), load(its JSON) instead of computing
    again."""
    data = run.saved(out)
    if data is not None:
        return load(data)
    result = compute(run)
    fields = result if isinstance(result, dict) else dataclasses.asdict(result)
    atomic_write(run.result(out), json.dumps({**fields, "stamp": run.stamp()}).encode())
    return result


def pool_map(work: Callable[[Any], R], runs: Sequence[Any], jobs: int, progress: Callable[[R], None],
             finished: Callable[[Any], bool] = lambda run: False) -> list[R]:
    """work(run) for every run, in `jobs` spawned processes (the work sets one torch thread each);
    inline when jobs <= 1, and for finished(run) runs, which only read their result back. Results
    come in the order of `runs`; progress(result) is called as each is known. `work` must be
    picklable: a module-level function, or a functools.partial of one."""
    results: dict[int, R] = {}
    todo = []
    for i, run in enumerate(runs):
        if jobs <= 1 or finished(run):
            results[i] = work(run)
            progress(results[i])
        else:
            todo.append(i)
    if todo:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {i: pool.submit(work, runs[i]) for i in todo}
            for i, future in futures.items():
                results[i] = future.result()
                progress(results[i])
    return [results[i] for i in range(len(runs))]


# ---- choosing a setting on a grid that widens -------------------------------------------------
def half_decade(value: float, direction: int) -> float:
    """The next value of the 1-3-10 ladder below (direction -1) or above (+1) `value`:
    1e-3 -> 3e-4 or 3e-3; 3e-3 -> 1e-3 or 1e-2 (one significant figure)."""
    return float(f"{10 ** ((round(2 * math.log10(value)) + direction) / 2):.0e}")


def edge_extension(tried: dict[float, float]) -> float | None:
    """The value to try next when the lowest loss of `tried` ({value: loss}) sits at an edge of
    the values tried (the grid is too narrow to show a minimum), else None."""
    best, ordered = min(tried, key=tried.get), sorted(tried)
    if len(ordered) < 2 or ordered[0] < best < ordered[-1]:
        return None
    return half_decade(best, -1 if best == ordered[0] else 1)


def widened_grid(keys: Sequence[Any], grid: Sequence[float], losses: Callable[[list[tuple[Any, float]]], list[float]],
                 rounds: int = 4) -> dict[Any, dict[float, float]]:
    """Every key's {value: loss} over `grid`, widened past whichever edge holds its lowest loss
    until the lowest sits inside (or `rounds` widenings were made: then it is at an edge still,
    and the report says so). `losses(pairs)` scores a list of (key, value) pairs in one go, so a
    study runs every key's pending runs as one batch of its worker pool."""
    tried: dict[Any, dict[float, float]] = {key: {} for key in keys}
    pending = [(key, value) for key in keys for value in grid]
    for _ in range(rounds + 1):
        for (key, value), loss in zip(pending, losses(pending)):
            tried[key][value] = loss
        pending = [(key, new) for key in keys if (new := edge_extension(tried[key])) is not None]
        if not pending:
            break
    return tried


def at_edge(tried: dict[float, float]) -> bool:
    """Whether the lowest loss of {value: loss} sits at an edge of the values tried."""
    return edge_extension(tried) is not None


# ---- statistics across seeds ---------------------------------------------------------------
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval across seeds); nan values (no fact stated) are
    left out; one value has no interval (half-width nan)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    df = len(values) - 1
    t = T975[max(k for k in T975 if k <= df)] if df <= 30 else 1.96  # conservative between
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def cell(values: list[float], fmt: str) -> str:
    mean, half = interval(values)
    if math.isnan(mean):
        return "-"
    return fmt.format(mean) + ("" if math.isnan(half) else " ± " + fmt.format(half))


# ---- the command line ------------------------------------------------------------------------
def study_parser(doc: str, out: str, quick: str, *, out_help: str = "", cache_dir: bool = True,
                 threads: bool | str = False, report_only: str | None = "--report_only",
                 outputs: bool = False) -> argparse.ArgumentParser:
    """The options every study shares, declared once; the study adds its own to the parser.

    doc: the study's docstring (its first line describes the command); out: --out's default;
    quick: what --quick does; out_help: what else --out holds; cache_dir: --cache_dir (the token
    cache); threads: --threads, torch's intra-op threads (a string: its help); report_only: the flag
    that prints the tables of the finished runs without training (None: none), read as
    args.report_only; outputs: --report FILE (the markdown) and --figures DIR (the PNGs).
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one torch thread each)")
    p.add_argument("--out", type=Path, default=Path(out),
                   help="each run's result (runs/KEY.json: a rerun skips finished runs)" + out_help)
    p.add_argument("--quick", action="store_true", help=f"smoke test: {quick}")
    if cache_dir:
        p.add_argument("--cache_dir", default=None, help="token cache (default: the datamodule's)")
    if threads:
        text = threads if isinstance(threads, str) else "torch intra-op threads (default 1)"
        p.add_argument("--threads", type=int, default=1, help=text)
    if report_only is not None:
        p.add_argument(report_only, dest="report_only", action="store_true",
                       help="tables of the finished runs, no training")
    if outputs:
        p.add_argument("--report", type=Path, default=None, help="also write the markdown here")
        p.add_argument("--figures", type=Path, default=None, help="folder for the PNGs (default: none)")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """p's arguments, with the command line as given in args.argv (a report prints it)."""
    args = p.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    return args
