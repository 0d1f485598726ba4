"""Progress of long work that is not training (scoring, sweeps, meters, reports, export).

`progress(items, what, total)` yields the items unchanged and shows how far the work has got on
standard error: a bar when standard error is a terminal, else (a log file, a pipe, a batch job) one
line every few seconds and one at the end, so a log records it without a bar's redraws. Nothing is
shown for work that ends before the first line is due, so short calls stay quiet.

    for batch in progress(batches, "evaluate shakespeare (test)"):
        ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")
EVERY_S = 5.0  # seconds between lines in a pipe


def progress(items: Iterable[T], what: str, total: int | None = None, *,
             every: float = EVERY_S, stream: TextIO | None = None) -> Iterator[T]:
    """`items`, with progress shown on `stream` (default: standard error) while they are consumed."""
    stream = sys.stderr if stream is None else stream
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if stream.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=what, total=total, file=stream, leave=False, mininterval=0.5)
        return
    yield from _lines(items, what, total, every, stream)


def _lines(items: Iterable[T], what: str, total: int | None, every: float, stream: TextIO) -> Iterator[T]:
    start = last = time.monotonic()
    done, shown = 0, False
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every:
            print(_line(what, done, total, now - start), file=stream, flush=True)
            last, shown = now, True
    if shown:  # the end of work that has shown a line before
        print(_line(what, done, total, time.monotonic() - start) + ", done", file=stream, flush=True)


def _line(what: str, done: int, total: int | None, seconds: float) -> str:
    count = f"{done}/{total}" if total is not None else f"{done}"
    return f"{what}: {count} in {seconds:.0f} s"
