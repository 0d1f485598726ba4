"""What each experiment puts on a dashboard, and the offline W&B run it leaves for `wandb sync`.

* A fit with WandbLogger offline completes with a local server standing in for api.wandb.ai
  (WANDB_BASE_URL): nothing may connect to it. The run's `.wandb` file is read back record by
  record: resolved config, train and val metrics, the sample table, the alpha histogram and the
  sweep plot are in it, and `wandb sync --dry-run` accepts the folder.
* Through `tests.ddp_probe.RecordingLogger`, each experiment's metric keys, tables and images are
  checked by name (SuccuLM with diagnostics, SuccuLM + TT + trap, abcGPT, abcGPT over three
  corpora with the voice meter, the GPT baseline).

Default suite: ~40 s on the 2-core box.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from callbacks.alpha_histogram import AlphaHistogram  # noqa: E402
from callbacks.generations import GenerationTable  # noqa: E402
from callbacks.sweep_report import SweepReport  # noqa: E402
from succu import fit  # noqa: E402
from tests.ddp_probe import REPO, RecordingLogger  # noqa: E402
from tests.wandb_log import read_wandb, wandb_summary  # noqa: E402

CONFIGS = REPO / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.num_sanity_val_steps", "0"]
GATED_TINY = ["--model.init_args.model.n_layer", "1", "--model.init_args.model.n_embd", "16",
              "--model.init_args.model.n_head", "2", "--model.init_args.warmup_steps", "2",
              "--data.init_args.windows.block_size", "16", "--data.init_args.windows.batch_size", "4",
              "--data.init_args.windows.val_windows", "8", "--data.init_args.windows.val_batch_size", "4",
              "--data.init_args.windows.batches_per_epoch", "4"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "succu-token-cache"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    RecordingLogger.instances.clear()


class FakeServer:
    """A TCP listener on localhost that counts connections (W&B's API would be behind it)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


def overlay(tmp_path: Path, text: str, name: str = "extras.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- W&B offline ----------------------------------------------------------------------------------
def test_wandb_offline_run_is_complete_and_never_touches_the_network(tmp_path, cache_dir, monkeypatch):
    server = FakeServer()
    monkeypatch.setenv("WANDB_BASE_URL", server.url)
    try:  # the shipped abcgpt config carries the generation table, alpha histogram and sweep
        cli = fit.main(["--config", str(CONFIGS / "abcgpt_char.yaml"), *GATED_TINY, *QUIET,
                        "--data.init_args.tokens.cache_dir", str(cache_dir),
                        "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
                        "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
                        "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
                        "--trainer.logger.save_dir", str(tmp_path / "run"),
                        "--trainer.logger.project", "succu", "--trainer.logger.offline", "true",
                        "--trainer.logger.name", "abcgpt_char"])
        (logger,) = cli.trainer.loggers
        run_dir = Path(logger.experiment.dir).parent  # <save_dir>/wandb/offline-run-*/
        logger.experiment.finish()
    finally:
        server.close()
    assert server.connections == 0, "the offline run contacted the W&B server"
    assert run_dir.name.startswith("offline-run-")
    (wandb_file,) = run_dir.glob("run-*.wandb")
    seen = wandb_summary(read_wandb(wandb_file))
    assert {"train/loss", "val/loss", "train/alpha", "val/loss/tinystories@alpha=0",
            "val/loss/shakespeare@alpha=1", "samples/generations", "train/alpha_hist",
            "sweep/alpha", "sweep/alpha_plot", "sweep/alpha_chart_table"} <= seen["history"]
    assert "sweep/alpha_chart" in seen["charts"]  # a W&B line chart of each corpus against alpha
    assert "config" in seen["config"] and "model" in seen["config"]  # resolved config + hparams
    assert json.loads(seen["config"]["model"])["n_layer"] == 1  # the model's config, as plain data
    resolved = json.loads(seen["config"]["config"])
    assert resolved["trainer"]["max_steps"] == 4 and resolved["model"]["class_path"].endswith("GatedGPTModule")
    assert any(f.startswith("media/table") for f in seen["files"])
    assert any(f.startswith("media/images") for f in seen["files"])

    wandb_cli = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    if wandb_cli is not None:
        proc = subprocess.run([wandb_cli, "sync", "--dry-run", str(run_dir)], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "WANDB_BASE_URL": server.url})
        assert proc.returncode == 0, proc.stderr
        assert "Would sync 1 run" in proc.stdout + proc.stderr
    server.close()
    assert server.connections == 0, "wandb sync --dry-run contacted the W&B server"


# ---- what each experiment logs ----------------------------------------------------------------------
def recorded_fit(tmp_path: Path, config: str, *extra: str) -> tuple[fit.SuccuCLI, RecordingLogger]:
    cli = fit.main(["--config", str(CONFIGS / config), *QUIET, *extra,
                    "--trainer.default_root_dir", str(tmp_path / "run"),
                    "--trainer.logger", "tests.ddp_probe.RecordingLogger",
                    "--trainer.logger.save_dir", str(tmp_path / "run")])
    (logger,) = [lg for lg in cli.trainer.loggers if isinstance(lg, RecordingLogger)]
    return cli, logger


def table(logger: RecordingLogger, key: str) -> dict:
    tables = [t for t in logger.tables if t["key"] == key]
    assert tables, f"no table {key!r}; tables: {sorted({t['key'] for t in logger.tables})}"
    return tables[-1]


def images(logger: RecordingLogger, key: str) -> list[Path]:
    paths = [Path(p) for i in logger.images if i["key"] == key for p in i["images"]]
    assert paths, f"no image {key!r}; images: {sorted({i['key'] for i in logger.images})}"
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG"
    return paths


def assert_config_logged(logger: RecordingLogger, config: str) -> None:
    logged = [h["config"] for h in logger.hparams if "config" in h]
    assert logged and logged[0]["model"]["class_path"]
    assert logged[0]["trainer"]["default_root_dir"].endswith("run")


def test_succulm_logs_losses_diagnostics_attention_and_samples(tmp_path):
    # Replaces succulm.yaml's own callbacks with a shorter GenerationTable and the diagnostics.
    extras = overlay(tmp_path, "trainer:\n  callbacks:\n"
                     "    - class_path: callbacks.generations.GenerationTable\n"
                     "      init_args: {max_new_tokens: 5, n_prompts: 2}\n"
                     "    - class_path: callbacks.diagnostics.Diagnostics\n")
    cli, logger = recorded_fit(tmp_path, "succulm.yaml", "--model.init_args.model.profile", "tiny",
                               "--config", extras,
                               "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                               "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1")
    assert {"train/loss", "val/loss", "val/ppl", "diag/block0/resid_norm", "diag/block0/ffn_norm",
            "diag/block0/ffn_cos"} <= logger.metric_keys
    images(logger, "diag/attention")
    samples = table(logger, "samples/generations")
    assert samples["columns"] == ["step", "prompt", "alpha", "text"]
    assert [r[1] for r in samples["data"]] == cli.datamodule.probe_prompts[:2]
    assert all(r[2] is None for r in samples["data"])  # no dial, no alpha
    assert (Path(cli.trainer.log_dir) / "samples" / "step000002.md").is_file()
    assert_config_logged(logger, "succulm.yaml")


def test_succulm_tt_logs_compression_trap_and_the_tt_sweep(tmp_path):
    extras = overlay(tmp_path, "trainer:\n  callbacks+:\n"
                     "    - class_path: callbacks.sweep_report.SweepReport\n"
                     "      init_args: {kind: tt, layers: '2', bond_dims: '20', samples: 1}\n")
    cli, logger = recorded_fit(tmp_path, "succulm_tt.yaml", "--config", extras,
                               "--trainer.max_steps", "2", "--trainer.val_check_interval", "1",
                               "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1")
    keys = logger.metric_keys
    assert {"train/loss", "val/loss", "trap/hidden_rate", "trap/special_rate", "trap/qa_exact",
            "tt/params_before", "tt/params_after", "tt/compression_ratio", "tt/rel_error",
            "tt/val_loss_before", "tt/val_loss_after"} <= keys
    sweep = table(logger, "sweep/tt")
    assert sweep["columns"][:3] == ["layers", "bond_dims", "layout"] and len(sweep["data"]) == 2
    images(logger, "sweep/tt_plot")
    assert (Path(cli.trainer.log_dir) / "sweeps" / "tt_sweep.md").is_file()


def test_abcgpt_logs_the_dial_grid_samples_at_each_alpha_histogram_and_sweep(tmp_path, cache_dir):
    # No overlay: abcgpt_char.yaml itself ships GenerationTable, AlphaHistogram and SweepReport.
    cli, logger = recorded_fit(tmp_path, "abcgpt_char.yaml", *GATED_TINY,
                               "--data.init_args.tokens.cache_dir", str(cache_dir),
                               "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
                               "--trainer.log_every_n_steps", "1")
    grid = {f"val/loss/{c}@alpha={a}" for c in ("tinystories", "shakespeare") for a in ("0", "0.5", "1")}
    assert grid | {"train/loss", "val/loss", "train/alpha", "train/corpus1_share"} <= logger.metric_keys
    samples = table(logger, "samples/generations")
    assert sorted({r[2] for r in samples["data"]}) == [0.0, 0.5, 1.0]  # the module's eval_alphas
    assert len(samples["data"]) == 3 * 2  # 3 alphas x one prompt per corpus
    hist = images(logger, "train/alpha_hist")
    assert len(hist) == 2  # one per validation
    (cb,) = [c for c in cli.trainer.callbacks if isinstance(c, AlphaHistogram)]
    # per-row dial: one draw per row (batch 4) and step since the previous validation
    assert cb.last_counts.sum() == 2 * 4
    sweep = table(logger, "sweep/alpha")
    assert sweep["columns"] == ["alpha", "tinystories", "shakespeare"]
    assert [r[0] for r in sweep["data"]] == [round(0.1 * i, 10) for i in range(11)]
    images(logger, "sweep/alpha_plot")
    (chart,) = [c for c in logger.charts if c["key"] == "sweep/alpha_chart"]
    assert chart["x"] == [r[0] for r in sweep["data"]] and chart["xname"] == "alpha"
    assert chart["lines"] == {n: [r[1 + i] for r in sweep["data"]]
                              for i, n in enumerate(["tinystories", "shakespeare"])}
    assert_config_logged(logger, "abcgpt_char.yaml")


def test_a_three_source_dial_logs_shares_histograms_the_simplex_sweep_and_the_voice(tmp_path, cache_dir):
    # abcgpt_char_k3.yaml ships the dashboard; its SweepReport (the last callback) on a coarse
    # grid, with a few short voice samples.
    cli, logger = recorded_fit(tmp_path, "abcgpt_char_k3.yaml", *GATED_TINY,
                               "--data.init_args.tokens.cache_dir", str(cache_dir),
                               "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
                               "--trainer.log_every_n_steps", "1",
                               "--trainer.callbacks.init_args.step", "0.5",
                               "--trainer.callbacks.init_args.voice", "2",
                               "--trainer.callbacks.init_args.voice_length", "12")
    names = ["tinystories", "shakespeare", "kjv"]
    assert {"val/loss/kjv@alpha=0,0,1", "train/alpha2", "train/corpus2_share", "voice/accuracy",
            "voice/accuracy/kjv"} <= logger.metric_keys
    samples = table(logger, "samples/generations")
    assert sorted({r[2] for r in samples["data"]}) == ["0,0,1", "0,1,0", "0.333334,0.333333,0.333333", "1,0,0"]
    assert len(images(logger, "train/alpha_hist")) == 2
    (hist,) = [c for c in cli.trainer.callbacks if isinstance(c, AlphaHistogram)]
    # one panel per corpus share, split by the 3 corpora: every draw (batch 4 x 2 steps) in each panel
    assert hist.last_counts.shape == (3, 3, 20) and hist.last_counts.sum() == 3 * 2 * 4
    sweep = table(logger, "sweep/alpha")
    assert sweep["columns"] == [*(f"alpha_{c}" for c in names), *names] and len(sweep["data"]) == 6
    images(logger, "sweep/alpha_plot")
    voice = table(logger, "sweep/voice")
    assert voice["columns"] == sweep["columns"] and len(voice["data"]) == 7  # grid 0.5 + the centre
    assert all(abs(sum(r[3:]) - 1) < 1e-9 for r in voice["data"])
    images(logger, "sweep/voice_plot")
    assert not logger.charts  # a simplex has no single axis: its ternary plots show it
    folder = Path(cli.trainer.log_dir) / "sweeps"
    assert {p.name for p in folder.iterdir()} >= {"alpha_sweep.csv", "alpha_sweep.png", "voice.md", "voice.png"}


def test_gpt_baseline_logs_losses_and_samples_from_validation_text(tmp_path, cache_dir):
    # No overlay: the GPT configs ship a GenerationTable (prompts cut from validation text).
    cli, logger = recorded_fit(
        tmp_path, "gpt_shakespeare_char.yaml", "--model.init_args.model.n_layer", "1",
        "--model.init_args.model.n_embd", "16", "--model.init_args.model.n_head", "2",
        "--data.init_args.windows.block_size", "16", "--data.init_args.windows.val_windows", "4",
        "--data.init_args.tokens.cache_dir", str(cache_dir),
        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1")
    assert {"train/loss", "val/loss", "val/ppl"} <= logger.metric_keys
    samples = table(logger, "samples/generations")
    assert len(samples["data"]) == 1 and len(samples["data"][0][1]) == 16  # one corpus, 16 chars


def test_logging_callbacks_refuse_bad_arguments():
    with pytest.raises(ValueError):
        GenerationTable(max_new_tokens=0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        GenerationTable(top_p=1.5)
    with pytest.raises(ValueError):
        AlphaHistogram(bins=0)
    with pytest.raises(ValueError, match="kind must be 'alpha' or 'tt'"):
        SweepReport(kind="beta")
    with pytest.raises(ValueError, match="voice must be 0 \\(off\\) or a number of samples"):
        SweepReport(voice=-1)
    with pytest.raises(ValueError, match="got voice=4, kind='tt'"):
        SweepReport(kind="tt", voice=4)
    with pytest.raises(ValueError, match="alpha must be 3 non-negative shares summing to 1"):
        GenerationTable(alphas=[[0.5, 0.6, 0.0]])
