"""Atomic file writes: a run killed at any instant leaves the old file or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, data: bytes | Callable[[BinaryIO], None], exclusive: bool = False) -> bool:
    """Write `data` (bytes, or a function that writes to a binary file) to `path` atomically.

    The bytes go to a temporary file in the target folder, are fsynced, then `os.replace` renames
    the file over `path` (atomic on POSIX). With `exclusive`, the first writer wins: the file is
    hard-linked into place and an existing `path` is kept (returns False). The temporary file is
    removed whatever happens. Returns True when `path` now holds `data`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        os.replace(tmp, path)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)
