"""`python -m succu.fit`: the LightningCLI of succu.

    python -m succu.fit                                   # fit configs/succulm.yaml, then talk
    python -m succu.fit --config configs/X.yaml           # fit is implied
    python -m succu.fit --config configs/X.yaml --trainer.max_steps 10 --model.init_args.model.dropout 0.1
    python -m succu.fit validate --config configs/X.yaml --ckpt_path runs/.../last.ckpt
    python -m succu.fit --config configs/X.yaml --print_config
    python -m succu.fit --config configs/X.yaml --config configs/cluster/ddp.yaml   # DDP
    python -m succu.fit --config configs/X.yaml --ckpt_path last    # continue the newest last.ckpt

Model and data are chosen in subclass mode (`class_path` + `init_args`); a module takes its
network's Config dataclass whole (`--model.init_args.model.n_layer 6`), and the datamodule's
`vocab_size` and `block_size` are linked into that config when both are instantiated.

This is the one place that composes a run. An experiment YAML names its run folder once
(`trainer.default_root_dir: runs/<name>`) and lists what differs; unless it sets its own, every
run gets the same loggers (CSV in the run folder, W&B offline under the same folder and name) and
the same two checkpoints (`last.ckpt` rewritten at every validation, `best-step=<N>.ckpt` by
lowest `val/loss`), atomic checkpoint writes and a SIGTERM checkpoint.

Errors: bad configuration or input found before training starts is one `error:` line (exit 2);
an error once batches run is re-raised with its traceback.

Runs (docs/operations.md): device requests that cannot start are refused before the Trainer is
built; `precision: bf16-mixed` with `accelerator: auto` falls back to 32-true on a CPU-only
machine; `--ckpt_path last` is the newest `last*.ckpt` (or SLURM `hpc_ckpt_*.ckpt`) in the run's
own checkpoint folders (every `version_*/checkpoints`, not only the new one's; never a file
elsewhere under the run folder); SIGTERM writes `last.ckpt` of
the current step and exits with status 143; the resolved config is logged to every logger.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.distributed import PreemptionCheckpoint, accelerator_kind, check_devices
from succu.checkpoint import AtomicCheckpointIO
from succu.contracts import QAProbes
from succu.modules.base import LanguageModule

SUBCOMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_CONFIG = Path("configs") / "succulm.yaml"  # relative to the working directory
WANDB_PROJECT = "succu"
SIGTERM_EXIT = 143  # 128 + SIGTERM: stopped by a signal, last.ckpt written, resume with --ckpt_path last
LAST_PATTERNS = ("last*.ckpt", "hpc_ckpt_*.ckpt")


class LoggedConfigCallback(SaveConfigCallback):
    """Lightning's config.yaml in the log dir, and the resolved config to every logger (W&B's
    run config, CSV's hparams.yaml) under the key `config`."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        import yaml

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


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


def default_loggers(root: str) -> list[Logger]:
    """CSV in `root` (version_N folders) and W&B under the same folder, named after it: offline
    unless WANDB_MODE=online is set (`main` sets offline when WANDB_MODE is unset)."""
    online = os.environ.get("WANDB_MODE", "offline") == "online"
    return [
        CSVLogger(save_dir=root, name=""),
        WandbLogger(save_dir=root, project=WANDB_PROJECT, name=Path(root).name, offline=not online),
    ]


def default_checkpoints() -> list[ModelCheckpoint]:
    """`last.ckpt`, rewritten at every validation, and the best by `val/loss` so far."""
    return [
        ModelCheckpoint(filename="last", enable_version_counter=False),
        ModelCheckpoint(monitor="val/loss", filename="best-{step}", save_top_k=1),
    ]


class RunStarted(L.Callback):
    """Marks the moment batches start to run: errors after it are not configuration errors."""

    def __init__(self) -> None:
        self.started = False

    def mark(self, *args) -> None:
        self.started = True

    on_train_start = on_validation_start = on_test_start = on_predict_start = mark


class TrainingError(RuntimeError):
    """An error raised while batches ran; its cause keeps the full traceback."""


def as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


class SuccuCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Sizes the data decides, linked into the network's config (checked in tests/test_cli.py).
        parser.link_arguments("data", "model.init_args.model.vocab_size",
                              compute_fn=lambda dm: dm.vocab_size, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.model.block_size",
                              compute_fn=lambda dm: dm.block_size, apply_on="instantiate")

    def instantiate_trainer(self, **kwargs):
        """Compose the run: the shared loggers and checkpoints unless the config names its own,
        atomic checkpoint writes unless it names a CheckpointIO, last.ckpt on SIGTERM
        (PreemptionCheckpoint); impossible device requests are refused before anything starts."""
        config = self._get(self.config_init, "trainer", default={})
        accelerator = config.get("accelerator", "auto")
        check_devices(accelerator, config.get("devices", "auto"), config.get("num_nodes", 1))
        if (config.get("precision") == "bf16-mixed" and accelerator == "auto"
                and accelerator_kind(accelerator) == "cpu"):
            rank_zero_info("precision bf16-mixed is for GPUs; no GPU here, so 32-true")
            kwargs["precision"] = "32-true"
        plugins = as_list(config.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        if config.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(config.get("default_root_dir") or "runs/succu")
        callbacks = list(as_list(config.get("callbacks")))
        checkpointing = config.get("enable_checkpointing") is not False
        if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks += default_checkpoints()
        if not any(isinstance(c, PreemptionCheckpoint) for c in callbacks):
            callbacks.append(PreemptionCheckpoint())
        self.run_started = RunStarted()
        kwargs["callbacks"] = [*callbacks, self.run_started]
        return super().instantiate_trainer(**kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except Exception as err:
            if self.run_started.started:
                raise TrainingError(f"{subcommand} failed while running: {err}") from err
            raise

    def before_fit(self) -> None:
        """`--ckpt_path last`: the newest last.ckpt of earlier runs in this run's checkpoint folders.

        Lightning looks only in the new run's own checkpoint folder (a fresh version_N), which is
        empty; with nothing found, the fit starts from scratch (so `last` can be set and forgotten
        in a requeued job script).
        """
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        roots, dirpaths = checkpoint_roots(self.trainer), checkpoint_dirpaths(self.trainer)
        path = find_last_checkpoint(roots, dirpaths)
        if path is None:
            rank_zero_warn("--ckpt_path last: no last*.ckpt in the checkpoint folders of "
                           f"{', '.join(roots + dirpaths)}; starting from scratch")
        else:
            rank_zero_info(f"--ckpt_path last: resuming from {path}")
        config["ckpt_path"] = path

    def after_fit(self) -> None:
        """Talk to the freshly fitted model when its data has probe prompts (rank 0 only)."""
        smoke_test = bool(self.trainer.fast_dev_run)
        if self.trainer.is_global_zero and not smoke_test and isinstance(self.datamodule, QAProbes):
            from succu.analysis.qa import report

            print(report(self.model, self.datamodule), flush=True)


def default_args(argv: list[str]) -> list[str]:
    """Fit is implied; without `--config`, fit configs/succulm.yaml (plus any overrides)."""
    if argv and argv[0] in ("-h", "--help", "--version"):
        return argv
    if not argv or argv[0] not in SUBCOMMANDS:
        argv = ["fit", *argv]
    # Overrides alone (`--trainer.max_steps 10`) apply to the default SuccuLM config.
    if argv[0] == "fit" and not any(a == "--config" or a.startswith("--config=") for a in argv):
        if not DEFAULT_CONFIG.is_file():
            raise FileNotFoundError(
                f"no --config given and the default {DEFAULT_CONFIG} is not under {Path.cwd()}; "
                "run from the succu checkout or pass --config FILE"
            )
        argv = ["fit", "--config", str(DEFAULT_CONFIG), *argv[1:]]
    return argv


USER_ERRORS = (argparse.ArgumentError, ValueError, FileNotFoundError)  # CheckpointError: ValueError


def exception_chain(err: BaseException | None) -> list[BaseException]:
    """err, its cause, the cause's cause, ... (jsonargparse wraps errors raised while instantiating
    in layers of "Does not validate against any of the Union subtypes")."""
    chain: list[BaseException] = []
    while err is not None and all(err is not e for e in chain):
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def user_message(err: BaseException) -> str | None:
    """One line for the innermost user-facing error of the chain (the layer that names the bad
    value), with the class it concerns when jsonargparse says so; None for anything else."""
    chain = exception_chain(err)
    user = [e for e in chain if isinstance(e, USER_ERRORS)]
    if not user:
        return None
    cause = user[-1]
    message = str(cause.message if isinstance(cause, argparse.ArgumentError) else cause)
    context = re.search(r"Problem with given class_path '([\w.]+)'", "\n".join(map(str, chain)))
    if context and context.group(1) not in message:
        message = f"{context.group(1)}: {message} (--help lists the accepted options)"
    return " ".join(message.split())


def quiet_known_warnings() -> None:
    """Silence warnings about choices succu makes on purpose (set by the CLI, not on import)."""
    # We hand LightningCLI the command line ourselves (with fit and the default config filled in).
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # LanguageModule.transfer_batch_to_device is deliberate (flat dict batches, no collection walk).
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
    # RandomWindows shards batches across DataLoader workers itself, so its __len__ is exact.
    warnings.filterwarnings("ignore", message=r".*Your `IterableDataset` has `__len__` defined.*")


def main(argv: list[str] | None = None) -> SuccuCLI | None:
    os.environ.setdefault("WANDB_MODE", "offline")  # never touch the network unless asked to
    quiet_known_warnings()
    try:
        args = default_args(list(sys.argv[1:] if argv is None else argv))
        return SuccuCLI(
            LanguageModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_callback=LoggedConfigCallback,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
            args=args,
        )
    except SIGTERMException:  # a SystemExit: PreemptionCheckpoint has written last.ckpt
        print("stopped by SIGTERM; last.ckpt holds the last finished step: rerun with "
              "--ckpt_path last to continue", file=sys.stderr, flush=True)
        sys.exit(SIGTERM_EXIT)
    except TrainingError:
        raise  # the traceback of what failed while batches ran
    except Exception as err:
        message = user_message(err)
        if message is None or os.environ.get("SUCCU_DEBUG"):
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
