"""Logging outside `LightningModule.log`: metrics, tables and images handed to loggers directly.

A LightningModule passes `self.loggers`, a callback `trainer.loggers`. Tables and images go only to
loggers known to take them (`takes_media`): Lightning's WandbLogger, plus any class registered with
`register_media_logger` (e.g. a test logger that records calls); a CSV or TensorBoard logger gets
none, and the caller writes its own markdown/PNG copy under the run folder (`run_folder`;
`markdown_table` for a table). Line charts (`log_line_chart`) go to W&B as native charts, and to
a registered logger that has a `log_line_chart` method.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.loggers import Logger

_MEDIA_LOGGERS: list[type] = []  # registered beside WandbLogger


def register_media_logger(cls: type) -> type:
    """Declare that instances of `cls` take `log_table(key, columns, data, step)` and
    `log_image(key, images, step)` like WandbLogger; usable as a class decorator."""
    if cls not in _MEDIA_LOGGERS:
        _MEDIA_LOGGERS.append(cls)
    return cls


def media_logger_classes() -> tuple[type, ...]:
    from lightning.pytorch.loggers import WandbLogger

    return (WandbLogger, *_MEDIA_LOGGERS)


def takes_media(logger: Logger) -> bool:
    """Whether `logger` takes tables and images."""
    return isinstance(logger, media_logger_classes())


def logged_step(trainer: L.Trainer) -> bool:
    """Whether the training step about to run (or running) reaches the loggers: one in
    log_every_n_steps (Lightning's own rule), every step of fast_dev_run, and the last step of a
    max_steps fit (PreemptionCheckpoint sends that one at the end). Per-step values are logged on
    these steps only: every `self.log` costs Python time at every step, and a value left on a GPU for the
    progress bar is read back (a host sync) at every step after it."""
    last = trainer.max_steps > 0 and trainer.global_step + 1 >= trainer.max_steps
    return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run or last)


def log_metrics(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Log values that are identical on every rank, outside the hooks where `pl_module.log` is
    allowed (e.g. at the end of fit); loggers write on rank 0 only. The values also land in
    `trainer.callback_metrics`, where checkpoint and early-stopping callbacks look."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
    trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in metrics.items()})


def log_table(loggers: Iterable[Logger], key: str, columns: list[str], rows: list[list[Any]],
              step: int | None) -> None:
    """Hand a table to every logger that takes tables."""
    for logger in loggers:
        if takes_media(logger):
            logger.log_table(key=key, columns=columns, data=rows, step=step)


def log_image(loggers: Iterable[Logger], key: str, path: str | Path, step: int | None) -> None:
    """Hand a PNG to every logger that takes images."""
    for logger in loggers:
        if takes_media(logger):
            logger.log_image(key=key, images=[str(path)], step=step)


def log_line_chart(loggers: Iterable[Logger], key: str, x: Sequence[float],
                   lines: dict[str, Sequence[float]], xname: str, title: str, step: int | None) -> None:
    """Hand a chart of each of `lines` against `x` to the loggers that draw charts: W&B gets a
    line series (`wandb.plot.line_series`: the panel `key`, its data the table `<key>_table`), a
    registered media logger with a `log_line_chart` method the same arguments; others none."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            chart = wandb.plot.line_series(xs=list(x), ys=[list(v) for v in lines.values()],
                                           keys=list(lines), title=title, xname=xname)
            logger.log_metrics({key: chart}, step=step)
        elif takes_media(logger) and hasattr(logger, "log_line_chart"):
            logger.log_line_chart(key=key, x=list(x), lines={k: list(v) for k, v in lines.items()},
                                  xname=xname, title=title, step=step)


def run_folder(trainer: L.Trainer) -> Path:
    """`trainer.log_dir` (a collective under DDP: call it on every rank), else default_root_dir."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table (pipes in cells escaped)."""
    def cell(v) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return text.replace("|", "\\|")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
