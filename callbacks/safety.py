"""What every fit gets for safety: `last.ckpt` whatever stops it, and a stop when training diverges.

`python -m succu.fit` adds both to every trainer:

    PreemptionCheckpoint  `last.ckpt` and flushed metrics at the end of training, on SIGTERM
                          (pre-emption, scancel, a SLURM time limit), Ctrl+C or an exception on
                          one process, so `--ckpt_path last` continues exactly.
    FiniteTraining        a non-finite training loss stops the fit with one line naming the step,
                          the learning rate then and the likely cause; no checkpoint of non-finite
                          weights is ever written, so `last.ckpt` and `best-*.ckpt` keep the last
                          finite state and `--ckpt_path last` resumes from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from succu.errors import NonFiniteError
from succu.io import NoSpaceError
from succu.loggers import logged_step
from succu.modules.base import LanguageModule


def last_checkpoint_target(trainer: L.Trainer) -> tuple[str, ModelCheckpoint] | None:
    """Where `last.ckpt` goes: the `last` ModelCheckpoint's folder (else one with save_last)."""
    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    ordered = ([cb for cb in callbacks if cb.filename == cb.CHECKPOINT_NAME_LAST]
               + [cb for cb in callbacks if cb.save_last] + callbacks)
    for cb in ordered:
        if cb.dirpath:
            return str(Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"), cb
    return None


class PreemptionCheckpoint(L.Callback):
    """Every fit ends with `last.ckpt` of its last step and flushed metrics, whatever stops it.

    - the end of training (max_steps, max_epochs, early stopping): saved unless the last
      validation already wrote this step, so a fit shorter than the validation interval keeps it;
    - SIGTERM (pre-emption, scancel, SLURM time limit, torchrun shutting down): Lightning raises
      `SIGTERMException` at the end of the running step on every rank (rank 0 broadcasts it), so
      all ranks save together and `--ckpt_path last` continues as if never stopped;
    - Ctrl+C or any other exception: saved on a single process only (under DDP a crash on one
      rank must not leave the others waiting in the save's barrier).
    Nothing is saved when this fit trained no step (a failed start, a finished run resumed) or in
    fast_dev_run. The metrics of the last step, when log_every_n_steps skipped it, are logged at
    the end (all of a max_steps fit's last step, which succu logs anyway; of a step after which an
    interruption came, the train/loss the module kept), and every logger is saved.
    """

    def __init__(self) -> None:
        self._start_step: int | None = None
        self._unlogged: tuple[int, dict] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step, self._unlogged = trainer.global_step, None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        # Lightning sends one step in log_every_n_steps to the loggers (at this step index, right
        # after this hook); keep a skipped step's metrics so the end of the fit can send them.
        # References only (tensors, never read back here): no host sync on any step.
        connector = trainer._logger_connector
        if not trainer.loggers or trainer.fit_loop._should_accumulate():
            return
        if connector.should_update_logs:
            self._unlogged = None
            return
        # succu logs per-step values on `logged_step`s only; on a step it skipped, what is known
        # of it is the loss the LanguageModule kept (the logged values are older steps').
        if isinstance(pl_module, LanguageModule) and pl_module.unlogged_loss is not None:
            metrics = {"train/loss": pl_module.unlogged_loss}
        else:
            metrics = dict(connector.metrics["log"])
        self._unlogged = (trainer.fit_loop.epoch_loop._batches_that_stepped, metrics)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_last(trainer, "end of training")
        self.flush(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if trainer.state.fn != "fit":
            return
        # Non-finite weights must not be kept; a full disk would refuse the file again.
        if isinstance(exception, (NonFiniteError, NoSpaceError)):
            self.flush(trainer)
            return
        if isinstance(exception, SIGTERMException) or trainer.world_size == 1:
            try:
                self.save_last(trainer, type(exception).__name__)
            except Exception as err:  # never hide the exception that stopped the fit
                rank_zero_warn(f"could not save last.ckpt after {type(exception).__name__}: {err}")
        self.flush(trainer)

    def save_last(self, trainer: L.Trainer, why: str) -> None:
        if trainer.fast_dev_run or self._start_step is None or trainer.global_step <= self._start_step:
            return
        target = last_checkpoint_target(trainer)
        if target is None:
            return
        path, callback = target
        done = callback._last_global_step_saved == trainer.global_step and Path(path).is_file()
        # Every rank must take the same branch: saving is collective (a barrier).
        if trainer.strategy.broadcast(done):
            if why != "end of training":
                rank_zero_info(f"{why}: {path} already holds step {trainer.global_step}")
            return
        trainer.save_checkpoint(path, weights_only=False)
        callback._last_global_step_saved = trainer.global_step
        callback.last_model_path = path
        rank_zero_info(f"{why}: saved {path} at step {trainer.global_step}")

    def flush(self, trainer: L.Trainer) -> None:
        """Send the last step's skipped metrics, then write every logger's buffer to disk."""
        unlogged, self._unlogged = self._unlogged, None
        if unlogged and unlogged[1]:
            trainer._logger_connector.log_metrics(unlogged[1], step=unlogged[0])  # saves each logger
        for logger in trainer.loggers:
            logger.save()


class FiniteTraining(L.Callback):
    """Stop a fit whose training loss turns non-finite; never write non-finite weights.

    Each step's loss adds one flag on its own device (no host sync); the flags are read on the
    steps the loggers write (which sync anyway), before each validation and at the end of
    training, summed over DDP ranks so that every rank stops together. The first non-finite step
    stops the fit with a `NonFiniteError` naming it and the learning rate it ran at. Before any
    checkpoint is written its weights are checked as well, since an update can make them
    non-finite after the last finite loss: such a checkpoint is refused, and the checkpoints on
    disk keep the last finite state.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[int, float, torch.Tensor]] = []  # (step, lr, loss not finite)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else float("nan")
            self._pending.append((trainer.global_step, lr, ~torch.isfinite(loss.detach())))
        if logged_step(trainer):
            self.check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.check(trainer)
            # The last update can make weights non-finite after a finite loss; validation and the
            # probes after it (sampled generations, sweeps) would then fail on them.
            bad = non_finite(pl_module.state_dict())
            if bad:
                raise NonFiniteError(
                    f"training stopped at step {trainer.global_step}: {diverged(bad)}; the fit "
                    "diverged. The checkpoints on disk keep the last finite state (--ckpt_path last)")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Raise NonFiniteError at the first step since the last check whose loss was not finite."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        flags = torch.stack([bad.reshape(()) for _, _, bad in pending]).float()
        flags = trainer.strategy.reduce(flags, reduce_op="sum")
        if not bool(flags.any()):
            return
        step, lr, _ = pending[int(flags.nonzero()[0])]
        raise NonFiniteError(
            f"training stopped at step {step}: the training loss became non-finite (learning rate "
            f"{lr:g} at that step); likely a learning rate too high for this model or too short a "
            "warmup (model.init_args.optimizer.init_args.lr, model.init_args.warmup_steps), or no "
            "gradient clipping (trainer.gradient_clip_val). No checkpoint of non-finite weights "
            "was written: --ckpt_path last resumes from the last finite one")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.check(trainer)
        bad = non_finite(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(
                f"refused to write a checkpoint at step {trainer.global_step}: {diverged(bad)}; the "
                "fit diverged. The checkpoints on disk keep the last finite state (--ckpt_path last)")


def non_finite(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in `state` that hold a NaN or an infinity."""
    floats = [(name, value) for name, value in state.items() if torch.is_tensor(value) and value.is_floating_point()]
    if not floats:
        return []
    flags = torch.stack([~torch.isfinite(value).all() for _, value in floats]).cpu()  # one sync
    return [name for (name, _), bad in zip(floats, flags.tolist()) if bad]


def diverged(bad: list[str]) -> str:
    return f"{len(bad)} weight tensors hold non-finite values ({bad[0]}{', ...' if len(bad) > 1 else ''})"
