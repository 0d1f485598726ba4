"""Runs lose no work and leave no litter: every fit ends with last.ckpt and its metrics on disk,
run folders are claimed exclusively, evaluations and failed starts create no version folder or
W&B run, orphan temporary files are removed, sweeps check --out first and write atomically."""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from succu import dial, fit, runs, sweep
from succu.analysis import alpha_sweep
from succu.checkpoint_files import read_checkpoint
from succu.io import host_tag, remove_orphans, writable_folder

SUCCULM = str(Path(__file__).resolve().parents[1] / "configs" / "succulm.yaml")
TINY = ["--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8",
        "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0",
        "--trainer.limit_val_batches", "2"]  # succulm.yaml validates every 500 steps


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def run_fit(root: Path, *extra: str):
    return fit.main(["--config", SUCCULM, *TINY, "--trainer.default_root_dir", str(root), *extra])


def step_of(path: Path) -> int:
    return read_checkpoint(path)["global_step"]


def metric_steps(version: Path) -> list[int]:
    with open(version / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]


def offline_runs(root: Path) -> list[Path]:
    return sorted((root / "wandb").glob("offline-run-*"))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def temp_name(target: str, host: str, pid: int) -> str:
    return f".{target}.{host}.{pid}.abcd_123.tmp"


# ---- every fit ends with last.ckpt and flushed metrics ------------------------------------------
def test_a_fit_shorter_than_the_validation_interval_keeps_its_steps_and_resumes(tmp_path):
    root = tmp_path / "run"
    run_fit(root, "--trainer.max_steps", "3")  # no validation before step 500
    first = root / "version_0"
    assert step_of(first / "checkpoints" / "last.ckpt") == 3
    assert metric_steps(first) == [2]  # the last step, though log_every_n_steps is 25

    # A killed write of the first run (its writer is dead), a write in progress (this process),
    # another host's fresh one, and a user's file: only the first goes at the next start.
    folder = first / "checkpoints"
    orphan = folder / temp_name("last.ckpt", host_tag(), dead_pid())
    live = folder / temp_name("last.ckpt", host_tag(), os.getpid())
    foreign = folder / temp_name("last.ckpt", "otherhost", 1)
    mine = folder / "notes.tmp"
    for path in (orphan, live, foreign, mine):
        path.write_bytes(b"")
    resumed = run_fit(root, "--trainer.max_steps", "5", "--ckpt_path", "last")
    assert resumed.trainer.ckpt_path == str(folder / "last.ckpt")
    assert step_of(root / "version_1" / "checkpoints" / "last.ckpt") == 5
    assert not orphan.exists() and live.exists() and foreign.exists() and mine.exists()


def test_a_resumed_fit_continues_its_wandb_run_offline(tmp_path, monkeypatch):
    import wandb

    from tests.wandb_log import read_wandb, wandb_summary

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing may reach a server
    root = tmp_path / "run"

    def fit_and_finish(*extra: str):
        wandb.finish()  # each fit as its own process: no W&B run left to join
        cli = run_fit(root, "--trainer.log_every_n_steps", "1", *extra)
        wandb.finish()
        return cli

    fit_and_finish("--trainer.max_steps", "2")
    first = (root / "version_0" / "wandb_id").read_text().strip()
    fit_and_finish("--trainer.max_steps", "4", "--ckpt_path", "last")
    assert (root / "version_1" / "wandb_id").read_text().strip() == first
    fit_and_finish("--trainer.max_steps", "5", "--ckpt_path",
                   str(root / "version_1" / "checkpoints" / "last.ckpt"))
    assert (root / "version_2" / "wandb_id").read_text().strip() == first
    # Three offline folders of one run: `wandb sync` uploads them in order into that run.
    folders = offline_runs(root)
    # (W&B names each `offline-run-<date>_<time>-<id>`, adding `-1`, `-2` within one second)
    assert len(folders) == 3 and all(f"-{first}" in f.name for f in folders)
    seen = [wandb_summary(read_wandb(next(f.glob("run-*.wandb")))) for f in folders]
    assert [s["run_ids"] for s in seen] == [{first}] * 3
    assert [s["steps"][0] for s in seen] == [0, 2, 4] and seen[1]["steps"][-1] == 3
    assert "train/loss" in seen[1]["history"] and "train/loss" in seen[2]["history"]

    # A checkpoint whose folder records no run (copied elsewhere) starts a new W&B run.
    copied = tmp_path / "copied.ckpt"
    copied.write_bytes((root / "version_2" / "checkpoints" / "last.ckpt").read_bytes())
    fit_and_finish("--trainer.max_steps", "6", "--ckpt_path", str(copied))
    assert (root / "version_3" / "wandb_id").read_text().strip() != first
    assert runs.recorded_wandb_id(copied) is None


def test_an_exception_mid_fit_saves_last_ckpt_and_the_metrics(tmp_path, monkeypatch):
    from succu.modules.succulm import SuccuLMModule

    step = SuccuLMModule.training_step

    def fails_at_step_2(self, batch, batch_idx):
        if self.global_step == 2:
            raise RuntimeError("a bug at step 2")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SuccuLMModule, "training_step", fails_at_step_2)
    with pytest.raises(fit.TrainingError, match="a bug at step 2"):
        run_fit(tmp_path / "run", "--trainer.max_steps", "10")
    version = tmp_path / "run" / "version_0"
    assert step_of(version / "checkpoints" / "last.ckpt") == 2
    assert metric_steps(version) == [1]


@pytest.fixture
def sigint_restored():
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after a Ctrl+C
    yield
    signal.signal(signal.SIGINT, handler)


def test_ctrl_c_before_the_first_validation_saves_last_ckpt(tmp_path, monkeypatch, sigint_restored):
    from succu.modules.succulm import SuccuLMModule

    step = SuccuLMModule.training_step

    def ctrl_c_at_step_2(self, batch, batch_idx):
        if self.global_step == 2:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SuccuLMModule, "training_step", ctrl_c_at_step_2)
    with pytest.raises(SystemExit):
        run_fit(tmp_path / "run", "--trainer.max_steps", "10", "--trainer.logger", "false")
    assert step_of(tmp_path / "run" / "checkpoints" / "last.ckpt") == 2


# ---- run folders: exclusive, no litter -----------------------------------------------------------
def claim_after(barrier, root: str, queue) -> None:
    barrier.wait()
    queue.put(runs.claim_version(root))


def test_concurrent_fits_claim_distinct_version_folders(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=claim_after, args=(barrier, str(tmp_path), queue)) for _ in range(6)]
    for p in procs:
        p.start()
    versions = sorted(queue.get(timeout=30) for _ in procs)
    for p in procs:
        p.join()
    assert versions == list(range(6))
    assert runs.claim_version(tmp_path) == 6


def test_validate_and_failed_starts_leave_no_version_folder(tmp_path, monkeypatch):
    import wandb

    from datamodules.succulent import SuccuPairsDataModule

    wandb.finish()  # an earlier test's run would be joined, not started (wandb.run is global)
    root = tmp_path / "run"
    cli = run_fit(root, "--trainer.max_steps", "2")
    ckpt = root / "version_0" / "checkpoints" / "last.ckpt"
    before = sorted(root.iterdir()), offline_runs(root)
    fit.main(["validate", "--config", SUCCULM, *TINY, "--trainer.default_root_dir", str(root),
              "--ckpt_path", str(ckpt)])
    assert (sorted(root.iterdir()), offline_runs(root)) == before
    assert not (root / "config.yaml").exists() and cli.trainer.global_step == 2

    def missing(self, stage=None):
        raise FileNotFoundError("corpus missing.txt not found")

    monkeypatch.setattr(SuccuPairsDataModule, "setup", missing)
    wandb.finish()  # so that the failed start starts a W&B run of its own
    with pytest.raises(SystemExit) as exit_:
        run_fit(root, "--trainer.max_steps", "2")
    assert exit_.value.code == 2
    assert (sorted(root.iterdir()), offline_runs(root)) == before and len(before[1]) == 1


def test_orphans_are_told_by_their_writer_or_their_age(tmp_path):
    dead = tmp_path / temp_name("x.csv", host_tag(), dead_pid())
    live = tmp_path / temp_name("x.csv", host_tag(), os.getpid())
    old_style = tmp_path / ".x.csv.abcd_123.tmp"  # no writer in the name: age decides
    fresh_style = tmp_path / ".y.csv.abcd_456.tmp"
    for path in (dead, live, old_style, fresh_style):
        path.write_bytes(b"")
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    assert sorted(remove_orphans([tmp_path, tmp_path / "missing"])) == sorted([dead, old_style])
    assert live.exists() and fresh_style.exists()


# ---- sweeps ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["alpha", "tt"])
def test_sweeps_refuse_a_bad_out_before_any_work(kind, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in ("/dev/null/x", str(tmp_path / "file")):
        with pytest.raises(SystemExit) as exit_:  # the checkpoint is never opened
            sweep.main([kind, "--ckpt", str(tmp_path / "missing.ckpt"), "--out", out])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_.value.code == 2 and err.startswith(f"error: --out {out}:"), err
    with pytest.raises(ValueError, match="not a writable folder"):
        writable_folder("/proc/x")


def test_alpha_ranges_count_down_and_never_come_out_empty():
    assert dial.parse_alphas("1:0:0.25") == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match="--alphas ','"):
        dial.parse_alphas(",")


def fake_sweep(monkeypatch, rows):
    """alpha_sweep.run over a stand-in checkpoint: only the writing is real."""
    import succu.checkpoint

    class Data:
        corpora = ["a", "b"]

        def setup(self, stage):
            pass

    module = argparse.Namespace(has_dial=True)
    monkeypatch.setattr(succu.checkpoint, "load_module", lambda path: module)
    monkeypatch.setattr(succu.checkpoint, "load_datamodule", lambda *a, **k: Data())
    monkeypatch.setattr(alpha_sweep, "NamedCorpora", Data)
    monkeypatch.setattr(alpha_sweep, "val_batches", lambda dm, n: [])
    monkeypatch.setattr(alpha_sweep, "sweep", lambda *a: rows)


def test_a_failing_sweep_leaves_the_old_outputs_whole(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    out.mkdir()
    names = ("alpha_sweep.csv", "alpha_sweep.md", "alpha_sweep.png")
    for name in names:
        (out / name).write_text(f"old {name}")
    fake_sweep(monkeypatch, [{"alpha": 0.0, "a": 1.0, "b": 2.0}, {"alpha": 1.0, "a": 2.0, "b": 1.0}])
    args = ["alpha", "--ckpt", "x.ckpt", "--alphas", "0,1", "--out", str(out)]

    def broken_plot(*a):
        raise RuntimeError("plot failed")

    with monkeypatch.context() as m:
        m.setattr(alpha_sweep, "plot_png", broken_plot)
        with pytest.raises(RuntimeError, match="plot failed"):
            sweep.main(args)
    assert [(out / n).read_text() for n in names] == [f"old {n}" for n in names]
    sweep.main(args)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary file left
    assert (out / "alpha_sweep.csv").read_text().splitlines() == ["alpha,a,b", "0.0,1.0,2.0", "1.0,2.0,1.0"]
    assert (out / "alpha_sweep.png").read_bytes()[:4] == b"\x89PNG"
