"""Run folders: claim a version, find the last checkpoint, clean up, discard a failed start.

A run lives under its root (`trainer.default_root_dir: runs/<name>`): each fit claims its own
`version_N` (`os.mkdir`, so concurrent fits never share one), checkpoints go to
`version_N/checkpoints/` (SLURM's `hpc_ckpt_*.ckpt` in the root itself). A fit without loggers
claims `<root>/checkpoints/` the same way when it is free, else a `version_N/checkpoints/` of its
own (`claim_checkpoint_folder`): two such fits never write into one folder. And `--ckpt_path last` resumes from the newest `last*.ckpt` among the run's own
checkpoint folders, never a file elsewhere under the root. Checkpoints are written atomically
(`AtomicCheckpointIO`), and orphan temporary files of killed writes are removed when the next fit
starts; a fit that fails before training a step removes the version folder and offline W&B
run it made.

A fit with a W&B logger records its run's id in its version folder (`version_N/wandb_id`); a fit
resumed from a checkpoint of that folder (`version_N/checkpoints/*.ckpt`) passes the id to its
WandbLogger, so the metrics continue the same W&B run (offline: a new `offline-run-*` folder with
the same id, which `wandb sync` uploads into that run after the first).
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from succu.checkpoint_files import read_checkpoint
from succu.io import atomic_write, remove_orphans

LAST_PATTERNS = ("last*.ckpt", "hpc_ckpt_*.ckpt")
WANDB_ID = "wandb_id"  # in a run's version folder: the id of the W&B run its fit logged to
# What W&B accepts as a run id, and nothing that could be read as a path.
WANDB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the target folder, fsync, then rename over the target.

    `os.replace` is atomic on POSIX, so a run killed at any instant leaves either the previous
    complete file or the new complete file at `path`, never a truncated one (`succu.io.atomic_write`).
    A killed write leaves `.<name>.<host>.<pid>.<random>.tmp`, which the next fit on the run folder
    removes (`succu.fit`, `succu.io.remove_orphans`). Reading (Lightning's resume) is plain data
    only, as in `read_checkpoint`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        # `read_checkpoint` (onto the CPU, as Lightning's default map_location): a missing,
        # damaged or foreign file is one CheckpointError naming it, where Lightning's own load
        # fails with a bare RuntimeError, UnpicklingError or KeyError deep inside its resume.
        return read_checkpoint(path)


def checkpoint_folders(root: str | Path) -> list[tuple[Path, tuple[str, ...]]]:
    """A run root's own checkpoint folders and what may resume from each: SLURM's
    `hpc_ckpt_*.ckpt` in the root itself (where Lightning writes them), `last*.ckpt` in
    `<root>/checkpoints` (a run without loggers) and `<root>/version_*/checkpoints` (logged runs)."""
    root = Path(root)
    folders = [root / "checkpoints", *sorted(root.glob("version_*/checkpoints"))]
    return [(root, ("hpc_ckpt_*.ckpt",)), *((folder, ("last*.ckpt",)) for folder in folders)]


def find_last_checkpoint(roots: list[str | Path], dirpaths: list[str | Path] = ()) -> str | None:
    """The newest `last*.ckpt` or `hpc_ckpt_*.ckpt` in the run's own checkpoint folders: those of
    each root (`checkpoint_folders`) and each explicit ModelCheckpoint `dirpath`. Nothing deeper:
    any other file under a root (a download, a copied-in run) is not this run's checkpoint."""
    places = [place for root in roots for place in checkpoint_folders(root)]
    places += [(Path(d), LAST_PATTERNS) for d in dirpaths]
    found: dict[str, float] = {}
    for folder, patterns in places:
        for pattern in patterns:
            for path in folder.glob(pattern):
                if path.is_file():
                    found[str(path)] = path.stat().st_mtime
    return max(found, key=found.get) if found else None


def checkpoint_roots(trainer: L.Trainer) -> list[str]:
    """Where a run's version folders live: default_root_dir, and each logger's save_dir and
    save_dir/name (Lightning's `<save_dir>/<name>/version_N/checkpoints`)."""
    roots = [trainer.default_root_dir]
    for logger in trainer.loggers:
        if logger.save_dir:
            roots += [logger.save_dir, str(Path(logger.save_dir, str(logger.name or "")))]
    return list(dict.fromkeys(str(Path(r)) for r in roots))


def checkpoint_dirpaths(trainer: L.Trainer) -> list[str]:
    """The folders the config names for its ModelCheckpoints (None until resolved at setup)."""
    return list(dict.fromkeys(str(cb.dirpath) for cb in trainer.checkpoint_callbacks
                              if isinstance(cb, ModelCheckpoint) and cb.dirpath))


def launched_as_rank_zero() -> bool:
    """Before the Trainer exists, a process knows its rank only from its launcher's environment:
    Lightning's DDP children get LOCAL_RANK, torchrun RANK, srun SLURM_PROCID, other nodes NODE_RANK."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"))


def claim_version(root: str | Path) -> int:
    """Create the first free `<root>/version_N` and return N. `os.mkdir` is atomic: of two fits
    started together on one run folder, each gets its own (Lightning only lists the folder)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def claim_versions(loggers: list[Logger]) -> list[Path]:
    """Give each CSV/TensorBoard logger without a fixed version a folder of its own (rank 0 only:
    Lightning broadcasts rank 0's log dir and checkpoint folder to the other ranks)."""
    claimed = []
    for logger in loggers:
        if isinstance(logger, (CSVLogger, TensorBoardLogger)) and logger._version is None:
            logger._version = claim_version(logger.root_dir)
            claimed.append(Path(logger.log_dir))
    return claimed


def claim_checkpoint_folder(root: str | Path) -> tuple[Path, Path]:
    """The checkpoint folder of a fit without loggers, created here so that no other fit writes
    into it: `<root>/checkpoints` when no fit has made it yet (`os.mkdir` is atomic), else
    `<root>/version_N/checkpoints` of a newly claimed N (`claim_version`). Returns (the folder,
    what to remove should the fit fail before its first step)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        (root / "checkpoints").mkdir()
        return root / "checkpoints", root / "checkpoints"
    except FileExistsError:
        version = root / f"version_{claim_version(root)}"
        (version / "checkpoints").mkdir()
        return version / "checkpoints", version


def claim_checkpoint_folders(trainer_callbacks: list[L.Callback], root: str | Path) -> list[Path]:
    """Point every ModelCheckpoint of a fit without loggers that names no `dirpath` at one folder
    claimed for this fit (`claim_checkpoint_folder`; rank 0 only: Lightning broadcasts its
    folder to the other ranks); the claimed folders, for `discard_run`. None to claim: []."""
    unnamed = [cb for cb in trainer_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath is None]
    if not unnamed:
        return []
    folder, claimed = claim_checkpoint_folder(root)
    for cb in unnamed:
        cb.dirpath = os.path.realpath(folder)  # as ModelCheckpoint keeps a dirpath it is given
    return [claimed]


class RunStarted(L.Callback):
    """Marks the moment batches start to run: errors after it are not configuration errors.
    `start_step` is the global step training started from (None before training starts).

    With `freeze_gc` (a `python -m succu.fit` process, not a fit inside a longer-lived one such
    as the tests'), everything alive when training starts is frozen out of the garbage collector.
    """

    def __init__(self, freeze_gc: bool = False) -> None:
        self.started = False
        self.start_step: int | None = None
        self.freeze_gc = freeze_gc

    def mark(self, *args) -> None:
        self.started = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started, self.start_step = True, trainer.global_step
        if self.freeze_gc:
            # It lives until the process ends: spare every later collection, and the exit, from
            # walking it. Not in a longer-lived process: its cycles would never be collected.
            gc.freeze()

    on_validation_start = on_test_start = on_predict_start = mark


def current_wandb_run():
    """The W&B run of this process, if any: a new WandbLogger joins it instead of starting one."""
    return getattr(sys.modules.get("wandb"), "run", None)


def discard_wandb_run(logger: WandbLogger, joined) -> None:
    """Finish an offline W&B run this fit started and delete its folder (not a run it `joined`,
    which an earlier fit in this process started; an online run exists on the server already)."""
    run = logger._experiment  # None when the run was never started
    if run is None or run is joined or not run.offline:
        return
    folder = Path(run.dir).parent  # <save_dir>/wandb/offline-run-<date>-<id>
    run.finish(exit_code=1)
    latest = folder.parent / "latest-run"
    if latest.is_symlink() and latest.resolve() == folder.resolve():
        latest.unlink()
    shutil.rmtree(folder, ignore_errors=True)


def discard_run(trainer: L.Trainer, claimed: list[Path], joined) -> None:
    """What a run that trained no step created: its claimed version folders (unless a checkpoint
    is in them) and its offline W&B run, so failed starts do not pile up empty versions."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            discard_wandb_run(logger, joined)
    for folder in claimed:
        if not any(folder.rglob("*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)


def record_wandb_id(loggers: list[Logger], folder: str | Path) -> str | None:
    """Write the id of the first W&B logger's run into `folder`/wandb_id (the run's version
    folder; rank 0, once the run exists); the id, or None without a W&B logger."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run_id = str(logger.experiment.id)
            path = Path(folder) / WANDB_ID
            if not path.is_file() or path.read_text().strip() != run_id:
                atomic_write(path, f"{run_id}\n".encode())
            return run_id
    return None


def recorded_wandb_id(ckpt_path: str | Path) -> str | None:
    """The W&B run id recorded for the run that wrote a checkpoint: `wandb_id` beside it or in
    its parent (`version_N/checkpoints/last.ckpt` -> `version_N/wandb_id`); None when neither
    holds one (a checkpoint copied elsewhere, a run without W&B)."""
    path = Path(ckpt_path)
    for folder in (path.parent, path.parent.parent):
        recorded = folder / WANDB_ID
        if recorded.is_file():
            run_id = recorded.read_text(errors="replace").strip()
            return run_id if WANDB_ID_PATTERN.fullmatch(run_id) else None
    return None


def continue_wandb_run(loggers: list[Logger], ckpt_path: str | Path | None) -> str | None:
    """Point each WandbLogger that has no run yet and no id of its own at the W&B run recorded
    for `ckpt_path` (`recorded_wandb_id`), resuming it (`resume="allow"`); the id, or None."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return None
    run_id = recorded_wandb_id(ckpt_path)
    if run_id is None:
        return None
    for logger in loggers:
        # WandbLogger keeps the arguments of wandb.init in `_wandb_init` and starts the run on
        # first use; the fit has not used it yet when the checkpoint to resume is known.
        if isinstance(logger, WandbLogger) and logger._experiment is None and not logger._wandb_init.get("id"):
            logger._wandb_init.update(id=run_id, resume="allow")
            logger._id = run_id
    return run_id


def remove_orphan_writes(roots: list[str], dirpaths: list[str]) -> list[Path]:
    """Temporary files that killed checkpoint writes left in the run's checkpoint folders (only
    those whose writer is gone: `succu.io.remove_orphans`); the removed paths."""
    folders = [folder for root in roots for folder, _ in checkpoint_folders(root)] + dirpaths
    return list(remove_orphans(folders))
