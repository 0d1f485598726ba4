"""Quiet logs: `python -m succu.fit > log` holds no progress-bar redraws (a one-line summary every
log_every_n_steps instead), no third-party tips or deprecation noise; and what the dashboard
promises reaches the CSV and the offline W&B run: `lr`, SuccuLM's `qa/*_exact_match`, its
`samples/generations` table, GatedGPT's `val/ppl`."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from callbacks.progress import LearningRate, ProgressLog
from succu import fit
from tests.wandb_log import read_wandb, wandb_summary

REPO = Path(__file__).resolve().parents[1]
SUCCULM = str(REPO / "configs" / "succulm.yaml")
TINY = ["--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8"]
NOISE = ("\r", "litlogger", "LeafSpec", "anonymous", "deprecated", "wandb:")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def metrics_columns(run: Path) -> dict[str, list[str]]:
    """Column -> non-empty values of the run's metrics.csv."""
    (path,) = run.glob("version_*/metrics.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {key: [r[key] for r in rows if r[key]] for key in rows[0]}


@pytest.fixture(scope="module")
def piped_fit(tmp_path_factory) -> tuple[str, Path]:
    """`python -m succu.fit ... > log 2>&1` of a tiny SuccuLM with the default loggers (CSV and
    W&B offline): what `make fit > log` writes, and the run folder."""
    tmp = tmp_path_factory.mktemp("piped")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    log = tmp / "log"
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "succu.fit", "--config", SUCCULM, *TINY,
             "--trainer.max_steps", "20", "--trainer.val_check_interval", "10",
             "--trainer.log_every_n_steps", "5", "--trainer.default_root_dir", "run"],
            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text
    return text, tmp / "run"


def test_piped_fit_log_has_summary_lines_and_no_noise(piped_fit):
    text, _ = piped_fit
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in the log:\n{text}"
    steps = [line for line in text.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["5/20", "10/20", "15/20", "20/20"]
    assert "train/loss" in steps[0] and "it/s" in steps[0] and "val/loss" in steps[-1]
    assert sum(line.startswith("validation at step ") for line in text.splitlines()) == 2
    assert max(len(line) for line in text.splitlines()) < 200 and len(text) < 6000


def test_piped_fit_logs_lr_qa_and_samples_to_csv_and_wandb(piped_fit):
    _, run = piped_fit
    columns = metrics_columns(run)
    for key in ("lr", "qa/train_exact_match", "qa/heldout_exact_match", "val/ppl", "train/loss"):
        assert columns.get(key), f"no {key} in metrics.csv: {sorted(columns)}"
    assert len(columns["qa/train_exact_match"]) == 2  # one per validation, none for the sanity check
    assert 0.0 <= float(columns["qa/heldout_exact_match"][-1]) <= 1.0
    assert len(list(run.glob("version_*/samples/step*.md"))) == 2  # GenerationTable in succulm.yaml
    (wandb_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    history = wandb_summary(read_wandb(wandb_file))["history"]
    assert {"lr", "qa/train_exact_match", "qa/heldout_exact_match", "val/ppl",
            "samples/generations"} <= history


def test_progress_bar_is_off_only_when_stdout_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert fit.trainer_defaults()["enable_progress_bar"] is False
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert "enable_progress_bar" not in fit.trainer_defaults()


def test_an_explicit_progress_bar_wins_and_the_summary_then_stays_silent(monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    cli = fit.main(["--config", SUCCULM, *TINY, "--trainer.max_steps", "2", "--trainer.logger", "false",
                    "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "true"])
    assert cli.trainer.progress_bar_callback is not None
    (summary,) = [c for c in cli.trainer.callbacks if isinstance(c, ProgressLog)]
    assert sum(isinstance(c, LearningRate) for c in cli.trainer.callbacks) == 1
    assert not summary.active
    assert "step 1/2" not in capsys.readouterr().out


def test_lr_follows_the_warmup_schedule():
    cli = fit.main(["--config", SUCCULM, *TINY, "--trainer.max_steps", "3", "--trainer.logger", "false",
                    "--trainer.log_every_n_steps", "1", "--model.init_args.warmup_steps", "10"])
    # The third step's lr: 3/10 of a linear warmup to succulm.yaml's 0.003.
    assert float(cli.trainer.callback_metrics["lr"]) == pytest.approx(0.003 * 3 / 10, rel=1e-5)


def test_progress_log_refuses_bad_intervals():
    with pytest.raises(ValueError, match="every_n_steps"):
        ProgressLog(every_n_steps=0)


def test_quiet_known_warnings_drops_the_litlogger_tip_and_leafspec(caplog):
    fit.quiet_known_warnings()
    tip_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=tip_logger.name):
        tip_logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger](...)")
        tip_logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
    assert not caught


def test_gated_gpt_val_ppl_and_lr_reach_the_csv(tmp_path):
    tiny = ["--model.init_args.model.n_layer", "1", "--model.init_args.model.n_embd", "16",
            "--model.init_args.model.n_head", "2", "--data.init_args.windows.block_size", "16",
            "--data.init_args.windows.batch_size", "4", "--data.init_args.windows.val_windows", "8",
            "--data.init_args.windows.val_batch_size", "4", "--data.init_args.tokens.cache_dir", str(tmp_path / "cache")]
    fit.main(["--config", str(REPO / "configs" / "abcgpt_char.yaml"), *tiny,
              "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
              "--trainer.log_every_n_steps", "1", "--trainer.num_sanity_val_steps", "0",
              "--trainer.callbacks", "callbacks.alpha_sampling.AlphaBetaSampling",
              "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
              "--trainer.logger.save_dir", str(tmp_path / "run"), "--trainer.logger.name", ""])
    columns = metrics_columns(tmp_path / "run")
    assert columns.get("val/ppl") and columns.get("lr") and columns.get("val/loss")
