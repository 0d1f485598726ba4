"""Helpers for the scripts in bench/: thread setup, offline defaults, resumable study runs, and
Trainer-vs-loop timing.

A study (bench/noiselm.py, hypersurface.py, alpha_dial.py, sophia_trap.py) is many independent
runs, each a frozen dataclass; `run_key` names each run's result file, so a rerun reads finished
runs back instead of training them, and `pool_map` spreads the rest over worker processes.

Benchmarks on a shared 2-core machine are only meaningful when the compared sides run in the same
process, interleaved finely, on a stated number of threads. `lockstep` does that for "the Trainer
against a hand-written loop": after every Trainer step a callback runs one step of the hand loop,
and each side is timed on its own steps only, so a busy neighbour slows both alike.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from succu.io import atomic_write
from succu.modules.base import LanguageModule, warmup_cosine


def add_thread_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")


def setup_threads(n: int) -> int:
    """Pin torch to n threads and say so: every timing a bench prints is for this many."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    return torch.get_num_threads()


def offline() -> None:
    """Benches read the local corpora; never let a missing file turn into a download."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")


R = TypeVar("R")


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
    """compute(run), its (dataclass) result written atomically as out/runs/<run.key>.json with the
    run's config stamp; when an earlier study wrote that file from the same configs (or before
    results were stamped), load(its JSON) instead of computing again."""
    data = run.saved(out)
    if data is not None:
        return load(data)
    result = compute(run)
    atomic_write(run.result(out), json.dumps({**dataclasses.asdict(result), "stamp": run.stamp()}).encode())
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


class HandLoop:
    """The hand-written side: fetch, forward, loss, backward, (clip), optimizer, zero_grad, schedule."""

    def __init__(self, module: LanguageModule, batches: Callable[[], Iterable], optimizer: Callable,
                 total: int, clip: float | None = None):
        self.module, self.model = module, module.model.train()
        self.optimizer = optimizer(module.param_groups())
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, module.warmup_steps, total, module.min_lr_ratio)
        )
        self.make_batches, self.batches, self.clip = batches, iter(batches()), clip

    def next_batch(self) -> dict[str, torch.Tensor]:
        # A new epoch when the loader runs out (a StopIteration escaping a callback would be
        # taken by Lightning for the end of its own epoch).
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.make_batches())
            return next(self.batches)

    def step(self) -> int:
        batch = self.next_batch()
        loss = self.module.loss(self.model(batch["input_ids"]), batch["labels"])
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return batch["input_ids"].numel()


class Lockstep(L.Callback):
    """After every Trainer step, one hand-loop step. A Trainer iteration is timed as the whole
    interval between consecutive `on_train_batch_end` calls (fetch, hooks, step, logging) less the
    hand step run inside it, so both sides are timed within the same few milliseconds."""

    def __init__(self, hand: HandLoop, warmup: int):
        self.hand, self.warmup, self.last = hand, warmup, None
        self.seconds = {"trainer": 0.0, "loop": 0.0}
        self.tokens = {"trainer": 0, "loop": 0}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        timed = trainer.global_step > self.warmup
        if timed and self.last is not None:
            self.seconds["trainer"] += now - self.last
            self.tokens["trainer"] += batch["input_ids"].numel()
        start = time.perf_counter()
        tokens = self.hand.step()
        self.last = time.perf_counter()
        if timed:
            self.seconds["loop"] += self.last - start
            self.tokens["loop"] += tokens


def lockstep(base: LanguageModule, datamodule: L.LightningDataModule, optimizer: Callable,
             steps: int, warmup: int, clip: float | None = None) -> dict[str, float]:
    """Tokens/s of the Trainer and of the hand loop over `steps` timed steps each.

    Both sides start from copies of `base` (same weights) and read the same datamodule's loader.
    """
    total = warmup + steps + 1
    hand = HandLoop(copy.deepcopy(base), datamodule.train_dataloader, optimizer, total, clip)
    clock = Lockstep(hand, warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=total, gradient_clip_val=clip,
            logger=CSVLogger(tmp), enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=[clock], log_every_n_steps=50,
        )
        trainer.fit(copy.deepcopy(base), datamodule=datamodule)
    return {side: clock.tokens[side] / clock.seconds[side] for side in clock.seconds}


def report_rounds(rounds: list[dict[str, float]], target: float = 0.95) -> float:
    """Print both sides' tokens/s over rounds (harmonic mean: equal tokens per round) and the ratio."""
    overall = {}
    for side, label in (("trainer", "Trainer:  "), ("loop", "hand loop:")):
        rates = [r[side] for r in rounds]
        overall[side] = len(rates) / sum(1.0 / x for x in rates)
        print(f"  {label} {overall[side]:8.0f} tokens/s   (rounds: {', '.join(f'{x:.0f}' for x in rates)})")
    per_round = ", ".join(f"{r['trainer'] / r['loop']:.3f}" for r in rounds)
    ratio = overall["trainer"] / overall["loop"]
    print(f"  ratio Trainer / loop: {ratio:.3f}   (rounds: {per_round}; target >= {target})")
    return ratio
