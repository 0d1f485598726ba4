"""Multi-process training (Lightning DDP on CPU, GPUs, torchrun or SLURM): batch, speed, memory, seeds.

`DistributedTraining` is the callback a multi-GPU run adds (configs/cluster/ddp.yaml appends it):

    batch      logs the effective batch, per-device batch x devices x nodes x accumulation
               (`dist/effective_batch`, `dist/world_size`, `dist/tokens_per_step`, also as
               hyperparameters); with `global_batch_size` set, derives the per-device batch from it
               and refuses one that does not divide by devices x nodes x accumulation.
    speed      global tokens/s over all ranks (`dist/tokens_per_s`, validation time excluded) and
               per device (`dist/tokens_per_s_per_device`).
    memory     per-rank memory, gathered to rank 0: `dist/rank<r>/rss_mb` (resident set), and on GPUs
               `dist/rank<r>/cuda_alloc_mb` and `dist/rank<r>/cuda_peak_mb`.
    seeds      one seed for every stream: all ranks must agree on it (checked), the data windows
               (TextDataModule), the dial and corpus draws (AlphaBetaSampling) and the DDP sampler of
               map-style data are keyed by (seed, rank) already; this callback also reseeds torch's
               global generator (dropout) from (seed, rank, step) before every step, so dropout masks
               differ across ranks and a resumed run draws the ones an uninterrupted run draws. A
               map-style training loader without a DistributedSampler (every rank would train on
               the same rows) is refused.

Evaluation metrics are global because whoever logs them makes them so (the modules reduce their
validation losses over ranks, and log `diag/` and `trap/` values with `sync_dist`); this callback
does not touch `pl_module.log`.

Device requests that cannot start are refused before the Trainer is built (`succu.devices`);
every fit ends with `last.ckpt` whatever stops it (`callbacks.safety.PreemptionCheckpoint`).
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from succu.contracts import BatchSized, require
from succu.loggers import log_metrics

TORCH_STREAM = 3  # stream id of the per-step torch seed (0: windows, 1: batch_from, see windows.py)


# ---- seeds ------------------------------------------------------------------------------------
def rank_seed(seed: int, rank: int, step: int, stream: int = TORCH_STREAM) -> int:
    """A 63-bit seed for (seed, rank, step, stream): independent streams, random access."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, rank, step, stream]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def global_seed(seed: int | None = None) -> int:
    if seed is not None:
        return int(seed)
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


# ---- memory -----------------------------------------------------------------------------------
def memory_mb(device: torch.device) -> list[float]:
    """[resident MB, peak resident MB, CUDA allocated MB, CUDA peak allocated MB] of this process."""
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        rss = float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    alloc = cuda_peak = 0.0
    if device.type == "cuda":
        alloc = torch.cuda.memory_allocated(device) / 2**20
        cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20
    return [rss, peak, alloc, cuda_peak]


def gather_rows(trainer: L.Trainer, row: torch.Tensor) -> torch.Tensor:
    """(world_size, n): every rank's `row` (n,), on the CPU, in rank order."""
    if trainer.world_size < 2 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return row.reshape(1, -1).cpu()
    row = row.to(trainer.strategy.root_device)
    out = [torch.zeros_like(row) for _ in range(trainer.world_size)]
    torch.distributed.all_gather(out, row)
    return torch.stack(out).cpu()


# ---- the callback -----------------------------------------------------------------------------
class DistributedTraining(L.Callback):
    """Effective batch, global tokens/s, per-rank memory, one seed for every stream.

    Args:
        global_batch_size: sequences per optimizer step over all ranks; the datamodule's
            `batch_size` becomes global_batch_size / (devices x nodes x accumulate_grad_batches),
            which must divide exactly (None: keep the datamodule's batch_size).
        seed: the one seed (default: the global seed, $PL_GLOBAL_SEED); every rank must agree.
        reseed_every_step: reseed torch's global generator from (seed, rank, step) before each
            training step (dropout differs across ranks and resumes exactly).
        log_every_n_steps: how often tokens/s and memory are measured (default: the trainer's).
        log_memory: log per-rank memory.
    """

    def __init__(self, global_batch_size: int | None = None, seed: int | None = None,
                 reseed_every_step: bool = True, log_every_n_steps: int | None = None,
                 log_memory: bool = True):
        if global_batch_size is not None and global_batch_size < 1:
            raise ValueError(f"global_batch_size must be a positive integer, got {global_batch_size}")
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {log_every_n_steps}")
        self.global_batch_size, self.seed = global_batch_size, seed
        self.reseed_every_step = reseed_every_step
        self.log_every_n_steps, self.log_memory = log_every_n_steps, log_memory
        self.layout: dict[str, int] = {}
        self._base_seed = 0
        self._logged_step = -1
        self._reset_window()

    # -- set-up and refusals ------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._base_seed = global_seed(self.seed)
        self.check_seed(trainer)
        if stage == "fit":
            self.check_batch(trainer)

    def check_seed(self, trainer: L.Trainer) -> None:
        if trainer.world_size < 2:
            return
        seeds = gather_rows(trainer, torch.tensor([self._base_seed], dtype=torch.long)).reshape(-1).tolist()
        if len(set(seeds)) > 1:
            raise ValueError(
                f"the ranks disagree on the seed ({seeds}); set seed_everything to an integer so "
                "every stream (windows, alpha, corpus, dropout) derives from one seed"
            )

    def check_batch(self, trainer: L.Trainer) -> None:
        world, accumulate = trainer.world_size, trainer.accumulate_grad_batches
        datamodule = trainer.datamodule
        if self.global_batch_size is not None:
            share = world * accumulate
            if self.global_batch_size % share:
                raise ValueError(
                    f"global_batch_size={self.global_batch_size} does not divide by devices x nodes x "
                    f"accumulate_grad_batches = {trainer.num_devices} x {trainer.num_nodes} x "
                    f"{accumulate} = {share}; pick a multiple of {share}"
                )
            require(datamodule, BatchSized, "global_batch_size").batch_size = (
                self.global_batch_size // share)
        per_device = datamodule.batch_size if isinstance(datamodule, BatchSized) else None
        self.layout = {"world_size": world, "num_nodes": trainer.num_nodes,
                       "devices": trainer.num_devices, "accumulate_grad_batches": accumulate}
        if per_device is not None:
            self.layout["per_device_batch"] = int(per_device)
            self.layout["effective_batch"] = int(per_device) * world * accumulate

    def check_sampler(self, trainer: L.Trainer) -> None:
        """Under DDP a map-style loader must shard its rows; iterable ones key on the rank."""
        if trainer.world_size < 2:
            return
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            return
        samplers = [loader.sampler, loader.batch_sampler and loader.batch_sampler.sampler]
        if not any(isinstance(s, DistributedSampler) for s in samplers):
            raise ValueError(
                "the training loader has no DistributedSampler, so every rank would train on the same "
                "rows; keep trainer.use_distributed_sampler true (the default)"
            )

    # -- per step -----------------------------------------------------------------------------
    def _reset_window(self) -> None:
        self._tokens, self._t0, self._excluded, self._val_t0 = 0, None, 0.0, None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_sampler(trainer)
        self._reset_window()
        if self.layout and trainer.is_global_zero:
            rank_zero_info(
                f"DistributedTraining: {self.layout['world_size']} process(es) = "
                f"{self.layout['devices']} device(s) x {self.layout['num_nodes']} node(s), "
                f"accumulation {self.layout['accumulate_grad_batches']}, per-device batch "
                f"{self.layout.get('per_device_batch', '?')} -> effective batch "
                f"{self.layout.get('effective_batch', '?')}; seed {self._base_seed}"
            )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.reseed_every_step:
            torch.manual_seed(rank_seed(self._base_seed, trainer.global_rank, trainer.global_step))
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        ids = batch.get("input_ids") if isinstance(batch, dict) else None
        if ids is not None:
            self._tokens += ids.numel()
            if "tokens_per_step" not in self.layout and "effective_batch" in self.layout:
                self.layout["tokens_per_step"] = self.layout["effective_batch"] * int(ids.size(-1))
                self._log_layout(trainer)
        every = self.log_every_n_steps or trainer.log_every_n_steps or 50
        step = trainer.global_step
        if step % every == 0 and step != self._logged_step:  # once per optimizer step
            self._logged_step = step
            self._log_window(trainer, pl_module)

    def _log_layout(self, trainer: L.Trainer) -> None:
        hparams = {f"dist/{k}": v for k, v in self.layout.items()}
        for logger in trainer.loggers:
            logger.log_hyperparams(hparams)
        log_metrics(trainer, {f"dist/{k}": v for k, v in self.layout.items()
                              if k in ("world_size", "effective_batch", "tokens_per_step")})

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_t0 is not None and self._t0 is not None:
            self._excluded += time.perf_counter() - self._val_t0
        self._val_t0 = None

    def _log_window(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One all_gather: tokens, seconds and memory of every rank; rank 0's loggers write them."""
        if self._t0 is None:
            return
        seconds = max(time.perf_counter() - self._t0 - self._excluded, 1e-9)
        mem = memory_mb(pl_module.device) if self.log_memory else [0.0] * 4
        rows = gather_rows(trainer, torch.tensor([float(self._tokens), seconds, *mem], dtype=torch.float64))
        tokens, slowest = float(rows[:, 0].sum()), float(rows[:, 1].max())
        metrics = {"dist/tokens_per_s": tokens / slowest,
                   "dist/tokens_per_s_per_device": tokens / slowest / trainer.world_size}
        if self.log_memory:
            for rank, row in enumerate(rows.tolist()):
                metrics[f"dist/rank{rank}/rss_mb"] = row[2]
                metrics[f"dist/rank{rank}/peak_rss_mb"] = row[3]
                if pl_module.device.type == "cuda":
                    metrics[f"dist/rank{rank}/cuda_alloc_mb"] = row[4]
                    metrics[f"dist/rank{rank}/cuda_peak_mb"] = row[5]
        log_metrics(trainer, metrics)
        self._reset_window()
        self._t0 = time.perf_counter()
