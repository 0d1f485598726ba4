"""Helpers for tests that run `python -m succu.fit` in child processes (DDP, kill-and-resume).

Importable as `tests.ddp_probe` by a child started from the repository root, so a config can name
`tests.ddp_probe.Probe` / `tests.ddp_probe.RecordingLogger`:

    Probe            per-rank facts as JSON lines in $SUCCU_PROBE_DIR/rank<r>.jsonl: the rows and
                     dial of every training step, a checksum of the weights after every step, the
                     rank's own validation loss beside the logged (reduced) one; the final weights
                     in final_rank<r>.pt.
    RecordingLogger  a Lightning logger that keeps every call (metrics, hyperparameters, tables,
                     images) in memory and, with $SUCCU_RECORD_DIR, in record_<pid>.json.

The shared corpora folder is `tests.paths.SHARED_DATA`; offline W&B runs are read by
`tests.wandb_log`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from succu.loggers import register_media_logger
from tests.paths import REPO

PYTHON = sys.executable


# ---- child processes ---------------------------------------------------------------------------


def child_env(probe_dir: str | Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline",
               HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               WANDB_SILENT="true", TOKENIZERS_PARALLELISM="false")
    env.pop("SUCCU_DEBUG", None)
    if probe_dir is not None:
        env["SUCCU_PROBE_DIR"] = str(probe_dir)
    env.update(extra)
    return env


def fit_command(*args: str) -> list[str]:
    return [PYTHON, "-m", "succu.fit", *args]


def run_fit(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a fit to the end from the repository root; raises with its output when it fails."""
    proc = subprocess.run(fit_command(*args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"fit failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def gated_args(root: str | Path, cache: str | Path, steps: int = 6, val_every: int = 3) -> list[str]:
    """configs/abcgpt_char.yaml at toy size, no loggers, no progress bar."""
    return [
        "--config", str(REPO / "configs" / "abcgpt_char.yaml"),
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(val_every),
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
        "--trainer.default_root_dir", str(root), "--trainer.log_every_n_steps", "2",
        "--model.init_args.model.n_layer", "1", "--model.init_args.model.n_embd", "16",
        "--model.init_args.model.n_head", "2", "--model.init_args.warmup_steps", "2",
        "--data.init_args.windows.block_size", "16", "--data.init_args.windows.batch_size", "4",
        "--data.init_args.windows.val_windows", "8", "--data.init_args.windows.val_batch_size", "4",
        "--data.init_args.windows.batches_per_epoch", "4", "--data.init_args.tokens.cache_dir", str(cache),
    ]


def succulm_args(root: str | Path, steps: int = 4, val_every: int = 2) -> list[str]:
    """configs/succulm.yaml at the tiny profile, no loggers, no progress bar."""
    return [
        "--config", str(REPO / "configs" / "succulm.yaml"),
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(val_every),
        "--trainer.limit_val_batches", "2", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(root),
        "--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8",
    ]


DDP_CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
WITH_PROBE = ["--trainer.callbacks+=tests.ddp_probe.Probe"]


def read_probe(probe_dir: str | Path) -> dict[int, list[dict[str, Any]]]:
    """{rank: records} from the JSON lines a Probe wrote."""
    out = {}
    for path in sorted(Path(probe_dir).glob("rank*.jsonl")):
        rank = int(path.stem[4:])
        out[rank] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---- the probe callback ------------------------------------------------------------------------
def _plain(x: Any) -> Any:
    if torch.is_tensor(x):
        return x.tolist()
    return x


class Probe(L.Callback):
    """Write what each rank saw and did (see the module docstring). Appends: a resumed run adds
    its steps to the same files. $SUCCU_PROBE_SLEEP (seconds) pauses after every step."""

    def __init__(self, out_dir: str | None = None):
        self.out_dir = Path(out_dir or os.environ.get("SUCCU_PROBE_DIR") or ".")
        self._val: list[float] = [0.0, 0.0]

    def _write(self, trainer: L.Trainer, record: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world": trainer.world_size, **record}
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._write(trainer, {
            "kind": "batch", "step": trainer.global_step, "rows": batch["input_ids"][:, :8].tolist(),
            "alpha": _plain(batch.get("alpha")),
            "source": _plain(batch.get("source")),
            "dropout_draw": torch.rand(1).item(),
        })

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        total = sum(float(p.detach().double().sum()) for p in pl_module.parameters())
        self._write(trainer, {"kind": "weights", "step": trainer.global_step,
                              "digest": weights_digest(pl_module), "sum": total})
        pause = float(os.environ.get("SUCCU_PROBE_SLEEP", 0))
        if pause:  # slows a run down so a test can signal it mid-way; changes no number
            time.sleep(pause)

    def on_validation_epoch_start(self, trainer, pl_module):
        self._val = [0.0, 0.0]

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if torch.is_tensor(outputs):  # the base module returns the batch loss (token-weighted log)
            n = float((batch["labels"] != -100).sum())
            self._val[0] += float(outputs) * n
            self._val[1] += n

    def on_validation_epoch_end(self, trainer, pl_module):
        # Callbacks run before the module's hook: GatedGPT's own-end sums are complete here
        # (keys (corpus, alpha); corpus c's own end is alpha = c).
        if pl_module.has_dial:
            local = pl_module.local_losses()
            per_corpus = [loss for (c, a), (loss, _) in local.items() if a == float(c >= 1)]
            own = sum(per_corpus) / len(per_corpus)
            self._own_tokens = None
        else:
            own = self._val[0] / self._val[1] if self._val[1] else None
            self._own_tokens = self._val[1]
        self._own = own

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith(("val/", "trap/"))}
        self._write(trainer, {"kind": "val", "step": trainer.global_step, "own": self._own,
                              "own_tokens": self._own_tokens, "logged": logged})

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, self.out_dir / f"final_rank{trainer.global_rank}.pt")
        self._write(trainer, {"kind": "end", "step": trainer.global_step, "digest": weights_digest(pl_module)})


# ---- a logger that records ---------------------------------------------------------------------
class StopAt(L.Callback):
    """Interrupt a run after `step` optimizer steps (its schedule still plans for max_steps)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@register_media_logger  # takes tables and images like WandbLogger
class RecordingLogger(Logger):
    """Keeps every call; `RecordingLogger.instances` holds the loggers of this process."""

    instances: list[RecordingLogger] = []

    def __init__(self, save_dir: str | None = None):
        super().__init__()
        self._save_dir = save_dir
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.hparams: list[dict[str, Any]] = []
        self.tables: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.charts: list[dict[str, Any]] = []
        RecordingLogger.instances.append(self)

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def metric_keys(self) -> set[str]:
        return {k for _, m in self.metrics for k in m}

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.hparams.append(dict(params) if not isinstance(params, dict) else params)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, {k: float(v) for k, v in metrics.items()}))

    @rank_zero_only
    def log_line_chart(self, key: str, x: list[float], lines: dict[str, list[float]], xname: str,
                       title: str, step: int | None = None) -> None:
        self.charts.append({"key": key, "x": x, "lines": lines, "xname": xname, "title": title,
                            "step": step})

    @rank_zero_only
    def log_table(self, key: str, columns: list[str] | None = None, data: list[list[Any]] | None = None,
                  dataframe: Any = None, step: int | None = None) -> None:
        self.tables.append({"key": key, "columns": list(columns or []), "data": [list(r) for r in data or []],
                            "step": step})

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        self.images.append({"key": key, "images": [str(i) for i in images], "step": step})

    @rank_zero_only
    def finalize(self, status: str) -> None:
        out = os.environ.get("SUCCU_RECORD_DIR")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            record = {"metrics": self.metrics, "hparams": self.hparams, "tables": self.tables,
                      "images": self.images, "status": status}
            (Path(out) / f"record_{os.getpid()}.json").write_text(json.dumps(record, default=str))
