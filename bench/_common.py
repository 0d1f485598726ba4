"""Helpers shared by the benches: thread setup (printed) and offline, local-data defaults."""

from __future__ import annotations

import argparse
import os

import torch


def add_thread_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")


def setup_threads(n: int) -> int:
    """Pin torch to n threads and say so: every timing a bench prints is for this many."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    return torch.get_num_threads()


def offline() -> None:
    """Benches read the local corpora; never let a missing file turn into a download."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
