"""The one error path of succu's entry points (fit, generate, sweep, evaluate).

Bad input (configuration, files, checkpoints, devices) is one `error: ...` line on stderr naming
the value or file and what is allowed, exit status 2; `SUCCU_DEBUG=1` shows the traceback instead.
An error once batches run (`TrainingError`) and anything that is not a user-facing error keep their
traceback: those are bugs to read, not inputs to fix.

    def main(argv=None):
        args = build_parser().parse_args(argv)
        return run_cli(lambda: work(args))
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")

# What a user can fix: bad values (CheckpointError is a ValueError), missing or unreadable files
# and folders (OSError: FileNotFoundError, PermissionError, a read-only file system, ...).
USER_ERRORS = (argparse.ArgumentError, ValueError, OSError)


class TrainingError(RuntimeError):
    """An error raised while batches ran; its cause keeps the full traceback."""


class NonFiniteError(ValueError):
    """Training produced a non-finite loss or weights: the fit stops with one line (the numbers,
    not the code, went wrong, so a traceback would only hide the message)."""


def exception_chain(err: BaseException | None) -> list[BaseException]:
    """err, its cause, the cause's cause, ... (jsonargparse wraps errors raised while instantiating
    in layers of "Does not validate against any of the Union subtypes"). A context suppressed with
    `raise ... from None` ends the chain, as in Python's own traceback: the error raised there
    already says what the one it replaced meant (e.g. a JSON decode error, with the file's name)."""
    chain: list[BaseException] = []
    while err is not None and all(err is not e for e in chain):
        chain.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return chain


def describe(err: BaseException) -> str:
    """The message of one user error: an OSError as `<file>: <reason>` (Python's shows the errno)."""
    if isinstance(err, argparse.ArgumentError):
        return str(err.message)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def user_message(err: BaseException) -> str | None:
    """One line for the innermost user-facing error of the chain (the layer that names the bad
    value), with the class it concerns when jsonargparse says so; None for anything else."""
    chain = exception_chain(err)
    if any(isinstance(e, TrainingError) for e in chain):
        return None
    user = [e for e in chain if isinstance(e, USER_ERRORS)]
    if not user:
        return None
    message = describe(user[-1])
    context = re.search(r"Problem with given class_path '([\w.]+)'", "\n".join(map(str, chain)))
    if context and context.group(1) not in message:
        message = f"{context.group(1)}: {message} (--help lists the accepted options)"
    return " ".join(message.split())


def fail(message: str) -> NoReturn:
    """Print the one `error:` line and exit with status 2 (SUCCU_DEBUG=1: raise a RuntimeError,
    whose traceback shows where the input was refused). Also fits `parser.error = fail`."""
    if os.environ.get("SUCCU_DEBUG"):
        raise RuntimeError(message)
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(2)


INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl+C


def run_cli(fn: Callable[[], T]) -> T:
    """Run an entry point's body: a user-facing error (`user_message`) becomes one `error:` line
    and exit 2, Ctrl+C one `interrupted` line and exit 130, unless SUCCU_DEBUG is set; anything
    else propagates with its traceback."""
    try:
        return fn()
    except KeyboardInterrupt:
        if os.environ.get("SUCCU_DEBUG"):
            raise
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED)
    except Exception as err:
        message = user_message(err)
        if message is None or os.environ.get("SUCCU_DEBUG"):
            raise
        fail(message)
