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
run gets the same loggers (CSV in the run folder, W&B offline under the same folder and name), the
same two checkpoints (`last.ckpt` rewritten at every validation, `best-step=<N>.ckpt` by lowest
`val/loss`), atomic checkpoint writes, and the every-run callbacks (`EVERY_RUN`: `lr` logged, a
summary line when no progress bar draws, `last.ckpt` and flushed metrics whatever stops the fit,
and a greedy talk with the fitted model when its data has QA probes).
Run folders (claiming a version, `--ckpt_path last`, cleaning up a failed start) are
`succu.runs`; device requests that cannot start are refused before the Trainer is built
(`succu.devices`). validate/test get no loggers unless the config names them; with `--ckpt_path`
they name the file(s) each corpus is read from and refuse, in one line naming both fingerprints,
a text that is not the one the checkpoint trained on (`succu.checkpoint.check_corpus_text`).

Errors: bad configuration or input found before training starts is one `error:` line (exit 2):
trainer settings that cannot run (`check_trainer`) and `--config` files that are not YAML or never
end (`check_yaml`) before any run folder is made; an error once batches run is re-raised with its
traceback, except a full disk (one line naming the file, `succu.io.NoSpaceError`). SIGTERM writes `last.ckpt` of the
current step and exits with status 143.

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
import math
import os
import shutil
import sys
import warnings
from pathlib import Path

if __name__ == "__main__":
    # `python -m succu.fit`: the imports below create millions of objects that live as long as
    # the process, and the collector would walk them all every few thousand allocations (a
    # noticeable share of the start-up) to free nothing. main() freezes them, then turns it on.
    gc.disable()

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger  # noqa: E402
from lightning.pytorch.plugins.io import CheckpointIO  # noqa: E402
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn  # noqa: E402
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException  # noqa: E402

from callbacks.progress import LearningRate, ProgressLog  # noqa: E402
from callbacks.qa import TalkAfterFit  # noqa: E402
from callbacks.safety import FiniteTraining, PreemptionCheckpoint  # noqa: E402
from succu import runs  # noqa: E402
from succu.checkpoint import check_corpus_text  # noqa: E402
from succu.checkpoint_files import read_checkpoint  # noqa: E402
from succu.devices import check_devices  # noqa: E402
from succu.errors import NonFiniteError, TrainingError, run_cli  # noqa: E402
from succu.io import no_space  # noqa: E402
from succu.modules.base import LanguageModule  # noqa: E402

# No `predict`: a LanguageModule has no predict_step (prompts in, text out is succu.generate).
SUBCOMMANDS = ("fit", "validate", "test")
DEFAULT_CONFIG = Path("configs") / "succulm.yaml"  # relative to the working directory
WANDB_PROJECT = "succu"
# One of each for every run unless the config names its own.
EVERY_RUN = (LearningRate, ProgressLog, PreemptionCheckpoint, FiniteTraining, TalkAfterFit)
SIGTERM_EXIT = 143  # 128 + SIGTERM: stopped by a signal, last.ckpt written, resume with --ckpt_path last


class LoggedConfigCallback(SaveConfigCallback):
    """Lightning's config.yaml in the log dir, and the resolved config to every logger (W&B's
    run config, CSV's hparams.yaml) under the key `config`; a fit's W&B run id beside it
    (`succu.runs.record_wandb_id`). validate/test/predict without a logger write nothing: their
    log dir would be the run folder itself."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" and not trainer.loggers:
            return
        self.log_dir = trainer.log_dir  # a collective under DDP: every rank asks, here
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        import yaml

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})
        if stage == "fit" and self.log_dir is not None:
            runs.record_wandb_id(trainer.loggers, self.log_dir)


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
        check_trainer(config)
        check_devices(config.get("accelerator", "auto"), config.get("devices", "auto"),
                      config.get("num_nodes", 1))
        plugins = as_list(config.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, runs.AtomicCheckpointIO()]
        kwargs["logger"] = self.compose_loggers(config)
        callbacks = list(as_list(config.get("callbacks")))
        checkpointing = config.get("enable_checkpointing") is not False
        if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks += default_checkpoints()
        for kind in EVERY_RUN:
            if not any(isinstance(c, kind) for c in callbacks):
                callbacks.append(kind())
        if kwargs["logger"] is False and self.subcommand in (None, "fit") and runs.launched_as_rank_zero():
            # No logger claims a folder: the checkpoints get one of their own.
            root = config.get("default_root_dir") or os.getcwd()
            self.claimed += runs.claim_checkpoint_folders(callbacks, root)
        self.run_started = runs.RunStarted(freeze_gc=self.freeze_gc)
        kwargs["callbacks"] = [*callbacks, self.run_started]
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:  # a setting Lightning refuses as it builds the Trainer
            for folder in self.claimed:  # empty: nothing has run
                shutil.rmtree(folder, ignore_errors=True)
            raise ValueError(f"trainer: {err}") from None

    def compose_loggers(self, config: dict) -> list[Logger] | bool:
        """The shared loggers for a fit whose config names none; none for validate/test/predict
        (an evaluation is no new run: no version folder, no W&B run). Rank 0 claims each logger's
        version folder now, exclusively (`succu.runs.claim_versions`)."""
        logger = config.get("logger")
        if logger in (None, True):
            if self.subcommand not in (None, "fit"):
                return False
            logger = default_loggers(config.get("default_root_dir") or "runs/succu")
        loggers = [] if logger is False else as_list(logger)
        # Here, not at start-up: only a run with a W&B logger imports wandb.
        if os.environ.get("WANDB_MODE") == "offline" and any(isinstance(x, WandbLogger) for x in loggers):
            quiet_offline_wandb()
        self.claimed = runs.claim_versions(loggers) if runs.launched_as_rank_zero() else []
        self.joined_wandb_run = runs.current_wandb_run()
        return loggers or False

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException as err:  # SystemExit and Ctrl+C too: nothing to keep of a failed start
            start = self.run_started.start_step
            if start is None or self.trainer.global_step <= start:
                runs.discard_run(self.trainer, self.claimed, self.joined_wandb_run)
            full = no_space(err) if isinstance(err, Exception) else None
            if full is not None:  # the disk, not the code: one line naming the file
                if full.filename is None:
                    full = no_space(err, f"{self.trainer.default_root_dir} (the run's files)")
                raise full from None
            if self.run_started.started and isinstance(err, Exception) and not isinstance(err, NonFiniteError):
                raise TrainingError(f"{subcommand} failed while running: {err}") from err
            raise

    def before_validate(self) -> None:
        self.check_scored_text()

    def before_test(self) -> None:
        self.check_scored_text()

    def check_scored_text(self) -> None:
        """validate/test `--ckpt_path CKPT`: the data's text must be what CKPT trained on (else one
        line naming both fingerprints, before anything is scored); rank 0 names the files read."""
        path = self.config_init[self.subcommand].get("ckpt_path")
        if not path or not Path(path).is_file():  # none, or Lightning's "best"/"last" (it says so)
            return
        lines = check_corpus_text(path, self.datamodule,
                                  lambda text: f"give the text it trained on with --data.init_args.{text.setting} PATH")
        if runs.launched_as_rank_zero():
            for line in lines:
                print(line, file=sys.stderr, flush=True)

    def before_fit(self) -> None:
        """Remove orphan temporary files from the run's checkpoint folders; then `--ckpt_path
        last`: the newest last.ckpt of earlier runs in this run's checkpoint folders. A resumed
        fit continues the W&B run of the checkpoint's run folder (`succu.runs.continue_wandb_run`).

        Lightning looks only in the new run's own checkpoint folder (a fresh version_N), which is
        empty; with nothing found, the fit starts from scratch (so `last` can be set and forgotten
        in a requeued job script).
        """
        config = self.config_init[self.subcommand]
        roots, dirpaths = runs.checkpoint_roots(self.trainer), runs.checkpoint_dirpaths(self.trainer)
        if runs.launched_as_rank_zero():
            for path in runs.remove_orphan_writes(roots, dirpaths):
                rank_zero_info(f"removed {path}, left by a write that was killed")
        if config.get("ckpt_path") == "last":
            path = runs.find_last_checkpoint(roots, dirpaths)
            if path is None:
                rank_zero_warn("--ckpt_path last: no last*.ckpt in the checkpoint folders of "
                               f"{', '.join(roots + dirpaths)}; starting from scratch")
            else:
                rank_zero_info(f"--ckpt_path last: resuming from {path}")
            config["ckpt_path"] = path
        run_id = runs.continue_wandb_run(self.trainer.loggers, config.get("ckpt_path"))
        if run_id is not None:
            rank_zero_info(f"continuing W&B run {run_id}")


def default_args(argv: list[str]) -> list[str]:
    """Fit is implied; without `--config`, fit configs/succulm.yaml (plus any overrides)."""
    if argv and argv[0] in ("-h", "--help", "--version"):
        return argv
    if argv and argv[0] == "predict":
        raise ValueError("predict is not offered; to continue prompts use python -m succu.generate "
                         "--ckpt CKPT --prompt TEXT, to score text python -m succu.evaluate --ckpt CKPT")
    if not argv or argv[0] not in SUBCOMMANDS:
        argv = ["fit", *argv]
    for path in config_files(argv):
        check_yaml(path)
    # Overrides alone (`--trainer.max_steps 10`) apply to the default SuccuLM config.
    if argv[0] == "fit" and not any(a == "--config" or a.startswith("--config=") for a in argv):
        if not DEFAULT_CONFIG.is_file():
            raise FileNotFoundError(
                f"no --config given and the default {DEFAULT_CONFIG} is not under {Path.cwd()}; "
                "run from the succu checkout or pass --config FILE"
            )
        argv = ["fit", "--config", str(DEFAULT_CONFIG), *argv[1:]]
    return argv


def config_files(argv: list[str]) -> list[Path]:
    """The existing files named by `--config FILE` or `--config=FILE` (jsonargparse says that a
    missing one is missing)."""
    named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    named += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    return [Path(n) for n in named if Path(n).is_file()]


# Values a config file may expand to through its aliases: far above any real config, far below
# what would exhaust memory (an alias of an alias ... doubles each time).
MAX_YAML_VALUES = 1_000_000


def check_yaml(path: Path) -> None:
    """A config file that can be read: valid YAML, no alias inside its own anchor (`a: &x [*x]`
    sends the parser into endless recursion), at most MAX_YAML_VALUES values once every alias
    is expanded; one ValueError naming the file otherwise."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            root = yaml.compose(f, Loader=yaml.SafeLoader)
        size = yaml_size(root, set(), {}) if root is not None else 0
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to read") from None
    if size is None:
        raise ValueError(f"{path}: a YAML alias refers to the value that holds it (an anchor used "
                         "inside itself), which never ends; write the value out instead")
    if size > MAX_YAML_VALUES:
        raise ValueError(f"{path}: its aliases expand to more than {MAX_YAML_VALUES:,} values")


def yaml_size(node, inside: set[int], sizes: dict[int, int]) -> int | None:
    """The number of values `node` expands to (aliases counted at each use), or None when it
    holds itself; `inside` the nodes being walked, `sizes` those already counted."""
    import yaml

    if id(node) in inside:
        return None
    if id(node) in sizes or isinstance(node, yaml.ScalarNode):
        return sizes.get(id(node), 1)
    items = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
    inside.add(id(node))
    total = 1
    for item in items:
        size = yaml_size(item, inside, sizes)
        if size is None:
            return None
        total += size
    inside.discard(id(node))
    sizes[id(node)] = total
    return total


def check_trainer(config) -> None:
    """Trainer settings that cannot run, one ValueError each naming the flag and what it takes,
    before any folder is made. Lightning refuses some only with a traceback, once a version folder
    exists, and some not at all (`val_check_interval 0` divides by zero at the first step)."""
    def whole(key: str, low: int, allowed: str = "") -> None:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"--trainer.{key} must be {allowed}a whole number >= {max(low, 0)}, "
                             f"got {value}")

    whole("max_steps", -1, "-1 (no limit) or ")
    whole("max_epochs", -1, "-1 (no limit) or ")
    whole("min_steps", 0)
    whole("min_epochs", 0)
    whole("accumulate_grad_batches", 1)
    whole("check_val_every_n_epoch", 1, "null (validation by steps) or ")
    whole("num_sanity_val_steps", -1, "-1 (every batch) or ")
    whole("log_every_n_steps", 0)
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches",
                "limit_predict_batches", "overfit_batches"):
        value = config.get(key)
        if isinstance(value, (int, float)) and not (0 <= value <= 1 or (value > 1 and value % 1 == 0)):
            raise ValueError(f"--trainer.{key} must be a whole number of batches >= 0 or a fraction "
                             f"in [0, 1], got {value}")
    value = config.get("val_check_interval")
    by_epoch = config.get("check_val_every_n_epoch") is not None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not (
            (value >= 1 and value % 1 == 0) or (by_epoch and 0 < value <= 1)):
        raise ValueError("--trainer.val_check_interval must be a whole number of steps >= 1 (with "
                         "--trainer.check_val_every_n_epoch N also a fraction of an epoch in (0, 1]), "
                         f"got {value}")
    clip = config.get("gradient_clip_val")
    if isinstance(clip, (int, float)) and not (clip >= 0 and math.isfinite(clip)):
        raise ValueError(f"--trainer.gradient_clip_val must be a finite number >= 0, got {clip}")


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
    docs/reference.md). WANDB_SILENT applies once wandb sets itself up, after Lightning's
    WandbLogger has passed it a deprecated `anonymous` setting, hence its terminal is made quiet
    now as well."""
    os.environ.setdefault("WANDB_SILENT", "true")
    if os.environ["WANDB_SILENT"].lower() == "true" and importlib.util.find_spec("wandb"):
        import wandb

        wandb.termsetup(wandb.Settings(silent=True), None)


def no_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in str(record.msg)


NO_LITLOGGER_TIP = no_litlogger_tip  # one object, so adding it again is a no-op


# Trainer settings every succu config shares, stated once: one device unless a config (e.g.
# configs/cluster/ddp.yaml) asks for more; validation every `val_check_interval` steps, across
# epoch boundaries (a text epoch is a fixed number of random batches, not a pass over the data).
TRAINER_DEFAULTS = {"devices": 1, "check_val_every_n_epoch": None}


def trainer_defaults() -> dict:
    """`TRAINER_DEFAULTS`; and with stdout not a terminal (a log file, a batch job, W&B's console
    capture) the progress bar is off, since each of its redraws would land in the log (ProgressLog
    prints a summary line instead). A config or the command line wins over each."""
    defaults: dict = dict(TRAINER_DEFAULTS)
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
