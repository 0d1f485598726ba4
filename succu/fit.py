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
lowest `val/loss`), atomic checkpoint writes, and `last.ckpt` plus flushed metrics at the end of
every fit whatever stops it (PreemptionCheckpoint). Each fit claims its own `version_N` folder
(`os.mkdir`, so concurrent fits never share one); validate/test get no loggers unless the config
names them; a fit that fails before training a step removes the folder and offline W&B run it made.

Errors: bad configuration or input found before training starts is one `error:` line (exit 2);
an error once batches run is re-raised with its traceback.

Runs (docs/operations.md): device requests that cannot start are refused before the Trainer is
built; `precision: bf16-mixed` means bf16 autocast wherever the run lands, the CPU included
(Lightning's torch.autocast("cpu")); `--ckpt_path last` is the newest `last*.ckpt` (or SLURM `hpc_ckpt_*.ckpt`) in the run's
own checkpoint folders (every `version_*/checkpoints`, not only the new one's; never a file
elsewhere under the run folder); orphan `.*.tmp` files of killed writes there are removed at the
start of a fit; SIGTERM writes `last.ckpt` of the current step and exits with status 143; the
resolved config is logged to every logger.

Start-up imports what the run uses: wandb only when a W&B logger is composed, tensorly only when
the model holds tensor-train layers, datasets only when a corpus is tokenised. Everything alive
when training starts (modules, the model, the data) is frozen out of Python's garbage collector
(`gc.freeze`, in a `python -m succu.fit` process: once after the imports, which run with the
collector off, and again when training starts): it lives until the end anyway, and every full
collection, and the interpreter's exit, would otherwise walk the millions of objects that torch
and Lightning import.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

if __name__ == "__main__":
    # `python -m succu.fit`: the imports below create millions of objects that live as long as
    # the process, and the collector would walk them all every few thousand allocations (about
    # 1.5 s of a 2-core machine's start-up) to free nothing. main() freezes them, then turns it on.
    gc.disable()

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger  # noqa: E402
from lightning.pytorch.plugins.io import CheckpointIO  # noqa: E402
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn  # noqa: E402
from lightning.pytorch.utilities.exceptions import SIGTERMException  # noqa: E402

from callbacks.distributed import PreemptionCheckpoint, check_devices  # noqa: E402
from callbacks.logging import LearningRate, ProgressLog  # noqa: E402
from succu.checkpoint import AtomicCheckpointIO, read_checkpoint  # noqa: E402
from succu.contracts import QAProbes  # noqa: E402
from succu.errors import TrainingError, run_cli  # noqa: E402
from succu.io import remove_orphans  # noqa: E402
from succu.modules.base import LanguageModule  # noqa: E402

# No `predict`: a LanguageModule has no predict_step (prompts in, text out is succu.generate).
SUBCOMMANDS = ("fit", "validate", "test")
DEFAULT_CONFIG = Path("configs") / "succulm.yaml"  # relative to the working directory
WANDB_PROJECT = "succu"
SIGTERM_EXIT = 143  # 128 + SIGTERM: stopped by a signal, last.ckpt written, resume with --ckpt_path last
LAST_PATTERNS = ("last*.ckpt", "hpc_ckpt_*.ckpt")


class LoggedConfigCallback(SaveConfigCallback):
    """Lightning's config.yaml in the log dir, and the resolved config to every logger (W&B's
    run config, CSV's hparams.yaml) under the key `config`. validate/test/predict without a
    logger write nothing: their log dir would be the run folder itself."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" and not trainer.loggers:
            return
        super().setup(trainer, pl_module, stage)

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


def as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


class SuccuCLI(LightningCLI):
    def __init__(self, *args, freeze_gc: bool = False, **kwargs) -> None:
        self.freeze_gc = freeze_gc  # set first: LightningCLI runs the whole fit in __init__
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands that succu supports (SUBCOMMANDS): --help offers only these."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        # Sizes the data decides, linked into the network's config (checked in tests/test_cli.py).
        parser.link_arguments("data", "model.init_args.model.vocab_size",
                              compute_fn=lambda dm: dm.vocab_size, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.model.block_size",
                              compute_fn=lambda dm: dm.block_size, apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Check `--ckpt_path` first, so a damaged or foreign file is one line naming it.

        Lightning would then merge the file's hyperparameters into the config, a class path and
        any paths included: a checkpoint would choose what is imported and which files are read.
        succu takes the model from the config the user gives and the weights from the file (they
        must fit it), so nothing is merged.
        """
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).is_file():
            read_checkpoint(path)

    def instantiate_trainer(self, **kwargs):
        """Compose the run: the shared loggers and checkpoints unless the config names its own,
        atomic checkpoint writes unless it names a CheckpointIO, last.ckpt at the end and on
        interruption (PreemptionCheckpoint); impossible device requests are refused before
        anything starts."""
        config = self._get(self.config_init, "trainer", default={})
        check_devices(config.get("accelerator", "auto"), config.get("devices", "auto"),
                      config.get("num_nodes", 1))
        plugins = as_list(config.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        kwargs["logger"] = self.compose_loggers(config)
        callbacks = list(as_list(config.get("callbacks")))
        checkpointing = config.get("enable_checkpointing") is not False
        if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks += default_checkpoints()
        # One of each for every run unless the config names its own: `lr` logged, a one-line
        # summary when no progress bar draws, last.ckpt at the end and on interruption.
        for kind in (LearningRate, ProgressLog, PreemptionCheckpoint):
            if not any(isinstance(c, kind) for c in callbacks):
                callbacks.append(kind())
        self.run_started = RunStarted(freeze_gc=self.freeze_gc)
        kwargs["callbacks"] = [*callbacks, self.run_started]
        return super().instantiate_trainer(**kwargs)

    def compose_loggers(self, config: dict) -> list[Logger] | bool:
        """The shared loggers for a fit whose config names none; none for validate/test/predict
        (an evaluation is no new run: no version folder, no W&B run). Rank 0 claims each logger's
        version folder now, exclusively (`claim_versions`)."""
        logger = config.get("logger")
        if logger in (None, True):
            if self.subcommand not in (None, "fit"):
                return False
            logger = default_loggers(config.get("default_root_dir") or "runs/succu")
        loggers = [] if logger is False else as_list(logger)
        # Here, not at start-up: only a run with a W&B logger imports wandb.
        if os.environ.get("WANDB_MODE") == "offline" and any(isinstance(x, WandbLogger) for x in loggers):
            quiet_offline_wandb()
        self.claimed = claim_versions(loggers) if launched_as_rank_zero() else []
        self.joined_wandb_run = current_wandb_run()
        return loggers or False

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException as err:  # SystemExit and Ctrl+C too: nothing to keep of a failed start
            start = self.run_started.start_step
            if start is None or self.trainer.global_step <= start:
                discard_run(self.trainer, self.claimed, self.joined_wandb_run)
            if self.run_started.started and isinstance(err, Exception):
                raise TrainingError(f"{subcommand} failed while running: {err}") from err
            raise

    def before_fit(self) -> None:
        """Remove orphan temporary files from the run's checkpoint folders; then `--ckpt_path
        last`: the newest last.ckpt of earlier runs in this run's checkpoint folders.

        Lightning looks only in the new run's own checkpoint folder (a fresh version_N), which is
        empty; with nothing found, the fit starts from scratch (so `last` can be set and forgotten
        in a requeued job script).
        """
        config = self.config_init[self.subcommand]
        roots, dirpaths = checkpoint_roots(self.trainer), checkpoint_dirpaths(self.trainer)
        if launched_as_rank_zero():
            self.remove_orphans(roots, dirpaths)
        if config.get("ckpt_path") != "last":
            return
        path = find_last_checkpoint(roots, dirpaths)
        if path is None:
            rank_zero_warn("--ckpt_path last: no last*.ckpt in the checkpoint folders of "
                           f"{', '.join(roots + dirpaths)}; starting from scratch")
        else:
            rank_zero_info(f"--ckpt_path last: resuming from {path}")
        config["ckpt_path"] = path

    @staticmethod
    def remove_orphans(roots: list[str], dirpaths: list[str]) -> None:
        """Temporary files that killed checkpoint writes left in the run's checkpoint folders
        (`succu.io.remove_orphans`: only those whose writer is gone)."""
        folders = [folder for root in roots for folder, _ in checkpoint_folders(root)] + dirpaths
        for path in remove_orphans(folders):
            rank_zero_info(f"removed {path}, left by a write that was killed")

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
    if argv and argv[0] == "predict":
        raise ValueError("predict is not offered; to continue prompts use python -m succu.generate "
                         "--ckpt CKPT --prompt TEXT, to score text python -m succu.evaluate --ckpt CKPT")
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


def quiet_known_warnings() -> None:
    """Silence warnings about choices succu makes on purpose, and third-party noise that would
    fill every log (`make fit > log`); set by the CLI, not on import."""
    # We hand LightningCLI the command line ourselves (with fit and the default config filled in).
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # LanguageModule.transfer_batch_to_device is deliberate (flat dict batches, no collection walk).
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
    # RandomWindows shards batches across DataLoader workers itself, so its __len__ is exact.
    warnings.filterwarnings("ignore", message=r".*Your `IterableDataset` has `__len__` defined.*")
    # Lightning's own _pytree still uses torch's deprecated LeafSpec; nothing for us to change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Lightning advertises its cloud logger at every Trainer: a filter on its info logger.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(NO_LITLOGGER_TIP)


def quiet_offline_wandb() -> None:
    """An offline W&B run only prints set-up chatter (git root, sync hints: the run folder is in
    the README). WANDB_SILENT applies once wandb sets itself up, after Lightning's WandbLogger has
    passed it a deprecated `anonymous` setting, hence its terminal is made quiet now as well."""
    os.environ.setdefault("WANDB_SILENT", "true")
    if os.environ["WANDB_SILENT"].lower() == "true" and importlib.util.find_spec("wandb"):
        import wandb

        wandb.termsetup(wandb.Settings(silent=True), None)


def no_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in str(record.msg)


NO_LITLOGGER_TIP = no_litlogger_tip  # one object, so adding it again is a no-op


def trainer_defaults() -> dict:
    """With stdout not a terminal (a log file, a batch job, W&B's console capture) the progress
    bar is off by default, since each of its redraws would land in the log (ProgressLog prints a
    summary line instead); a config or command line that sets enable_progress_bar wins."""
    defaults: dict = {}
    if not sys.stdout.isatty():
        defaults["enable_progress_bar"] = False
    return defaults


def build_cli(argv: list[str] | None) -> SuccuCLI:
    """The CLI for `argv`; None: this process's own command line, so the process is the fit."""
    args = default_args(list(sys.argv[1:] if argv is None else argv))
    return SuccuCLI(
        LanguageModule,
        L.LightningDataModule,
        freeze_gc=argv is None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=LoggedConfigCallback,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=trainer_defaults(),
        parser_kwargs={"exit_on_error": False},
        args=args,
    )


def main(argv: list[str] | None = None) -> SuccuCLI | None:
    if argv is None:  # this process is the CLI: the modules imported so far live until it exits
        gc.freeze()
        gc.enable()
    os.environ.setdefault("WANDB_MODE", "offline")  # never touch the network unless asked to
    quiet_known_warnings()
    try:
        # Bad input: one `error:` line, exit 2; a TrainingError keeps its traceback (succu.errors).
        return run_cli(lambda: build_cli(argv))
    except SIGTERMException:  # a SystemExit: PreemptionCheckpoint has written last.ckpt
        print("stopped by SIGTERM; last.ckpt holds the last finished step: rerun with "
              "--ckpt_path last to continue", file=sys.stderr, flush=True)
        sys.exit(SIGTERM_EXIT)


if __name__ == "__main__":
    main()
