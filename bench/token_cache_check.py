"""What the token cache's integrity check adds to a fit's start: sizes, and SHA-256 of each file.

    python bench/token_cache_check.py [--sizes_mb 10,100,1000]

For each size, writes a cache folder of that many MB of uint16 ids (train.bin; val.bin a tenth of
it) with its meta.json but no stamp (a cache copied from elsewhere, or changed since its last
check), then times `cache_problem` twice: the first check hashes every file and stamps them, the
second (every later start of an unchanged cache) reads the stamps only. Both against reading
every id once, in the same run. The full TinyStories training text tokenised by characters is about
3.8 GB of uint16 ids; by BPE about a quarter of that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from datamodules.tokens import cache_problem


def write_cache(folder: Path, megabytes: float) -> int:
    rng = np.random.default_rng(0)
    meta = {"dtype": "uint16", "sha256": {}}
    total = 0
    for side, share in (("train", 1.0), ("val", 0.1)):
        ids = rng.integers(0, 1024, size=int(megabytes * share * 1e6 / 2), dtype=np.uint16)
        (folder / f"{side}.bin").write_bytes(ids.tobytes())
        meta[side], meta["sha256"][side] = len(ids), hashlib.sha256(ids.tobytes()).hexdigest()
        total += ids.nbytes
    (folder / "meta.json").write_text(json.dumps(meta))
    return total


def read_all(folder: Path) -> int:
    """Sum every id once through a memory map (a floor for what training reads)."""
    total = 0
    for side in ("train", "val"):
        arr = np.memmap(folder / f"{side}.bin", dtype=np.uint16, mode="r")
        for start in range(0, len(arr), 1 << 24):
            total += int(arr[start:start + (1 << 24)].sum(dtype=np.uint64))
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes_mb", default="10,100,1000")
    args = p.parse_args()
    for mb in (float(x) for x in args.sizes_mb.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            size = write_cache(folder, mb)
            t0 = time.perf_counter()
            first = cache_problem(folder, ("train", "val"))
            t1 = time.perf_counter()
            again = cache_problem(folder, ("train", "val"))
            t2 = time.perf_counter()
            read_all(folder)
            t3 = time.perf_counter()
            assert first is None and again is None, (first, again)
            check, stamped, read = t1 - t0, t2 - t1, t3 - t2
            print(f"{size / 1e6:8.1f} MB cache: first check {check:6.2f} s ({size / 1e6 / check:5.0f} MB/s), "
                  f"later checks {stamped * 1e3:6.2f} ms, reading every id once {read:6.2f} s "
                  f"(first check / read {check / read:.2f})", flush=True)


if __name__ == "__main__":
    main()
