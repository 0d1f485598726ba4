"""Where the tests find the repository and the shared corpora (a plain module: DDP child processes
and helpers import it; pytest fixtures live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The shared corpora the tests read: $SUCCU_DATA_DIR, else the `shared/data` folder beside the
# repository (../shared/data from the checkout).
SHARED_DATA_DEFAULT = REPO.parent / "shared" / "data"
SHARED_DATA = Path(os.environ.get("SUCCU_DATA_DIR") or SHARED_DATA_DEFAULT).resolve()
CORPUS_FILES = ("tinystories.txt", "tinyshakespeare.txt", "kjv.txt")


def shared_data_problem(folder: Path = SHARED_DATA, files: tuple[str, ...] = CORPUS_FILES) -> str | None:
    """None when `folder` holds every corpus file, else one line saying what is missing and how
    to point the tests at the corpora."""
    how = (f"set $SUCCU_DATA_DIR to the folder with {', '.join(files)} "
           f"(default: {SHARED_DATA_DEFAULT})")
    if not folder.is_dir():
        return f"shared corpora folder {folder} not found; {how}"
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        return f"shared corpora folder {folder} lacks {', '.join(missing)}; {how}"
    return None


def touch(path: Path, mtime: float) -> Path:
    """A one-byte file at `path` (folders created) with the given modification time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path
