"""Atomic file writes: a run killed at any instant leaves the old file or the new one, never half.

Temporary files are named `.<target name>.<host>.<pid>.<random>.tmp` in the target's folder, so a
later start can tell which ones a dead process left behind (`remove_orphans`). A write that finds
the disk or the quota full is one `NoSpaceError` naming the file (the previous file is kept),
however deep the writer reported it (torch.save says "unexpected pos" and keeps the OSError as
its context: `no_space`).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # every temporary name atomic_write has ever used
OWNED_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp$")
STALE_SECONDS = 3600  # a temporary file untouched this long is no write in progress
FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class NoSpaceError(OSError):
    """A write that found the disk (or the user's quota) full: `<file>: no space left on device
    ...` in one line, also while a fit runs (it is the disk, not the code)."""


def no_space(err: BaseException, path: str | Path | None = None) -> NoSpaceError | None:
    """`err` as a NoSpaceError naming `path` (else the file the OSError names) when a full disk
    or quota caused it, found anywhere in its chain of causes and contexts; None otherwise."""
    seen: list[BaseException] = []
    while err is not None and all(err is not e for e in seen):
        if isinstance(err, NoSpaceError):
            return err
        if isinstance(err, OSError) and err.errno in FULL:
            where = path if path is not None else err.filename
            return NoSpaceError(err.errno, f"{FULL[err.errno]}; the previous file (if any) is kept: "
                                           "free some space and run again",
                                None if where is None else str(where))
        seen.append(err)
        err = err.__cause__ or err.__context__
    return None


def host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def atomic_write(path: str | Path, data: bytes | Callable[[BinaryIO], None], exclusive: bool = False) -> bool:
    """Write `data` (bytes, or a function that writes to a binary file) to `path` atomically.

    The bytes go to a temporary file in the target folder, are fsynced, then `os.replace` renames
    the file over `path` (atomic on POSIX). With `exclusive`, the first writer wins: the file is
    hard-linked into place and an existing `path` is kept (returns False). The temporary file is
    removed whatever happens. Returns True when `path` now holds `data`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{host_tag()}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                if callable(data):
                    data(f)
                else:
                    f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except Exception as err:
            full = no_space(err, path)
            if full is None:
                raise
            raise full from None  # the writer's own message ("unexpected pos ...") hides it
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


def load_json(path: Path, expected: str) -> Any:
    """The parsed JSON of `path`; a missing or malformed file is one error naming both."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; expected {expected}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); expected {expected}") from None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_orphan(path: Path, now: float) -> bool:
    """A temporary file nobody is writing: its writer (this host, named in the file name) is dead,
    or (another host, an older name) it has not been touched for STALE_SECONDS."""
    owned = OWNED_TEMP.match(path.name)
    if owned and owned["host"] == host_tag():
        return not process_alive(int(owned["pid"]))
    try:
        return now - path.stat().st_mtime > STALE_SECONDS
    except FileNotFoundError:  # renamed into place meanwhile
        return False


def remove_orphans(folders: Iterable[str | Path]) -> list[Path]:
    """Delete the temporary files killed writes left in `folders` (not their subfolders);
    files that do not match the temporary-name pattern are never touched."""
    removed, now = [], time.time()
    for folder in dict.fromkeys(Path(f) for f in folders):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if TEMP.match(path.name) and path.is_file() and is_orphan(path, now):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def writable_folder(path: str | Path, flag: str = "--out") -> Path:
    """`path` as a folder this process can write into, created if missing; checked before any
    work so a long job never fails at its last step. One-line ValueError naming it otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # the permission bits do not tell (ACLs, read-only mounts)
            pass
    except FileExistsError:
        raise ValueError(f"{flag} {path}: exists and is not a folder") from None
    except OSError as err:
        raise ValueError(f"{flag} {path}: not a writable folder ({err.strerror or err})") from None
    return path


def figure_bytes(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (then closed), to be written with `atomic_write`."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def write_outputs(folder: str | Path, files: dict[str, bytes | str]) -> list[Path]:
    """Write each of `files` (name -> content) into `folder` atomically; all contents are built
    before the first write, so a failure leaves every old file as it was or replaced whole."""
    paths = []
    for name, content in files.items():
        path = Path(folder) / name
        atomic_write(path, content.encode() if isinstance(content, str) else content)
        paths.append(path)
    return paths
