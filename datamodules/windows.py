"""Windows of token ids: random training rows, fixed validation and test rows.

Training rows are block_size + 1 windows at random offsets (nanoGPT); batch k on rank r is drawn
from a `torch.Generator` seeded by (seed, r, k), so a run is reproducible, ranks differ, and
resuming needs only the count of batches consumed. Validation uses fixed, evenly spaced windows:
val loss is comparable across runs and models; test uses as many windows, over the test share.
With several corpora each row is labelled with `source`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from succu.dial import DialSampler


@dataclass(frozen=True)
class Windows:
    """How token ids are cut into rows and batched.

    Attributes:
        block_size: tokens per training/validation row (windows are block_size + 1 long).
        batch_size: rows per training batch.
        val_windows: fixed evenly spaced validation windows per corpus (test: as many).
        val_batch_size: rows per validation batch (default: batch_size).
        batches_per_epoch: training batches that make an epoch (windows are drawn forever).
        seed: window seed (default: the global seed, $PL_GLOBAL_SEED, else 0); combined with the
            global rank so DDP ranks draw different windows.
        num_workers: DataLoader workers (0 is right for in-memory windows).
    """

    block_size: int = 64
    batch_size: int = 12
    val_windows: int = 256
    val_batch_size: int | None = None
    batches_per_epoch: int = 250
    seed: int | None = None
    num_workers: int = 0

    def check(self) -> None:
        """Counts that must be positive integers (num_workers: zero or more). block_size is the
        model's too: its config refuses one below 1 (the CLI links it there)."""
        for name in ("batch_size", "val_windows", "val_batch_size", "batches_per_epoch"):
            value = getattr(self, name)
            if value is None and name == "val_batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"windows.{name} must be a positive integer, got {value!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"windows.num_workers must be zero or a positive integer, got {self.num_workers!r}")


# Independent random streams of one batch index (distributed.py's per-step torch seed uses 3).
WINDOW_STREAM, DIAL_STREAM = 0, 2


def window_seed(seed: int, rank: int, index: int, stream: int = WINDOW_STREAM) -> int:
    """A 63-bit seed for batch `index` of `stream` on `rank`: independent draws, random access."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, rank, index, stream]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def cut_windows(arrays: Sequence[np.ndarray], sources: torch.Tensor, offsets: torch.Tensor, block: int):
    """Rows arrays[sources[i]][offsets[i] : offsets[i] + block + 1] as an int64 (B, block + 1)."""
    rows = np.empty((len(offsets), block + 1), dtype=np.int64)
    span = np.arange(block + 1)
    src, off = sources.numpy(), offsets.numpy()
    for s in np.unique(src):
        pick = src == s
        rows[pick] = arrays[s][off[pick][:, None] + span]
    return torch.from_numpy(rows)


def as_batch(rows: torch.Tensor, sources: torch.Tensor | None) -> dict[str, torch.Tensor]:
    batch = {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, 1:].contiguous()}
    if sources is not None:
        batch["source"] = sources.long()
    return batch


class RandomWindows(IterableDataset):
    """An epoch of `length` batches of random windows, starting at `cursor["consumed"]`.

    Batch k depends on (seed, rank, k) only. With DataLoader workers, worker w makes batches
    k = start + w, start + w + W, ... which the loader hands back in order.
    """

    def __init__(self, sampler: WindowSampler, length: int, cursor: dict[str, int]):
        self.sampler, self.length, self.cursor = sampler, length, cursor

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        start = self.cursor["consumed"]
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k in range(start + worker, start + self.length, workers):
            yield self.sampler.batch(k)


@dataclass
class WindowSampler:
    """Draws batches of windows over K token arrays (rows labelled with `source` when labelled)."""

    arrays: list[np.ndarray]
    block_size: int
    batch_size: int
    seed: int
    rank: int
    weights: torch.Tensor
    labelled: bool
    dial: DialSampler | None = None

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Training batch `index`: rows of corpora drawn by `weights`, or by the dial when one is
        installed (then the batch carries `alpha`: (B,), or (1,) for one position per batch)."""
        g = torch.Generator().manual_seed(window_seed(self.seed, self.rank, index, WINDOW_STREAM))
        n, alpha = self.batch_size, None
        if self.dial is not None:
            alpha, sources = self.dial.draw(window_seed(self.seed, self.rank, index, DIAL_STREAM), n)
            alpha = alpha if self.dial.per_sample else alpha[:1]
        elif len(self.arrays) == 1:
            sources = torch.zeros(n, dtype=torch.long)
        else:
            sources = torch.multinomial(self.weights, n, replacement=True, generator=g)
        spans = torch.tensor([len(a) - self.block_size for a in self.arrays], dtype=torch.float64)
        offsets = (torch.rand(n, generator=g, dtype=torch.float64) * spans[sources]).long()
        rows = cut_windows(self.arrays, sources, offsets, self.block_size)
        batch = as_batch(rows, sources if self.labelled or alpha is not None else None)
        if alpha is not None:
            batch["alpha"] = alpha
        return batch


def fixed_batches(
    arrays: Sequence[np.ndarray], block: int, n_windows: int, batch_size: int, labelled: bool
) -> list[dict[str, torch.Tensor]]:
    """Evenly spaced windows over each array, batched per corpus (a batch never mixes sources)."""
    batches = []
    for s, arr in enumerate(arrays):
        last = len(arr) - block - 1
        count = min(n_windows, last + 1)
        offsets = torch.from_numpy(np.linspace(0, last, count).round().astype(np.int64))
        for chunk in offsets.split(batch_size):
            sources = torch.full((len(chunk),), s, dtype=torch.long)
            batches.append(as_batch(cut_windows(arrays, sources, chunk, block), sources if labelled else None))
    return batches


class BatchList(Dataset):
    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]

