"""A Python child process and the peak memory of its own: what the memory tests and benches read.

The kernel's account of a child (`os.wait4`'s `ru_maxrss`) keeps the high-water mark of the pages
it was forked (or vforked) from: a test process that already holds a gigabyte makes every child it
starts look at least that large. So the child records, as it exits, the peak resident memory of
the address space it got at exec (`VmHWM` in /proc/self/status) and nothing before it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs `-m MODULE ARGS` or `-c CODE ARGS` as python would, then writes VmHWM (kB) at exit, also
# after the SystemExit of a refusal.
LAUNCH = """import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["SUCCU_PEAK_FILE"], "w") as f:
        f.write(kb)
atexit.register(peak)
mode, target, *rest = sys.argv[1:]
if mode == "-m":
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(target, "<child>", "exec"), {"__name__": "__main__"})
"""


@dataclass
class Child:
    returncode: int
    stdout: str
    stderr: str
    peak_bytes: int  # the child's own peak resident memory
    seconds: float


def run_python(argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Child:
    """`python argv` (argv starting with "-m MODULE" or "-c CODE") in a fresh process with this
    checkout on its path and one torch thread; its output, exit status, wall time and own peak."""
    if sys.platform != "linux":
        raise RuntimeError("a child's own peak memory is read from Linux's /proc")
    if not argv or argv[0] not in ("-m", "-c"):
        raise ValueError(f"argv must start with -m MODULE or -c CODE, got {argv[:1]}")
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {}),
               "SUCCU_PEAK_FILE": str(peak_file)}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", LAUNCH, *argv], env=env, cwd=cwd,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        return Child(done.returncode, done.stdout, done.stderr, int(peak_file.read_text()) * 1024, seconds)
