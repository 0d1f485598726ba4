"""A small checkpoint that asks for huge sizes: refused fast, in a small process.

    python bench/hostile_checkpoint.py [--n_layer 4] [--n_embd 224]

Writes a GatedGPT checkpoint of about 10 MB (a character tokenizer) in a temporary folder, and
copies of it whose recorded settings ask for vocab_size 10^7, vocab_size 10^9, n_layer 10^4 and
n_embd 10^6. Each runs `python -m succu.generate --ckpt X --prompt a` in a child process (the
untouched file first, which loads and generates 8 tokens: the baseline of the same run); the
script prints the seconds of generate's main (after its imports, which every checkpoint pays
alike), the child's wall seconds, its max RSS and exit status, the refusal's line, and each
hostile case against the baseline. Target: every hostile case refused in one line, in under 2 s,
with max RSS under 1 GB.
"""

from __future__ import annotations

import argparse
import os
import string
import sys
import tempfile
from pathlib import Path

import torch

from succu.modules.gated_gpt import GatedGPTModule
from succu.tokenizers import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.child import run_python  # noqa: E402
from tests.tiny import tiny_module, write_checkpoint  # noqa: E402

# The child imports the tool first (the same for every checkpoint), then times its main alone.
CHILD = """import os, sys, time
from succu import generate
start = time.perf_counter()
try:
    generate.main(sys.argv[1:])
finally:
    with open(os.environ["BENCH_SECONDS"], "w") as f:
        f.write(repr(time.perf_counter() - start))
"""
HOSTILE = {"vocab_size": 10**7, "vocab_size ": 10**9, "n_layer": 10**4, "n_embd": 10**6}


def run(argv: list[str], tmp: str) -> tuple[float, float, int, int, str]:
    """(wall seconds of the child, seconds of generate's main after its imports, its own peak
    resident memory in MB, exit status, last stderr line) of `generate argv` in a fresh process."""
    seconds_file = os.path.join(tmp, "seconds")
    child = run_python(["-c", CHILD, *argv], env={"BENCH_SECONDS": seconds_file, "SUCCU_DEBUG": ""})
    lines = child.stderr.strip().splitlines()
    last = (lines[-1] if lines else "") + (f"  [{len(lines)} stderr lines]" if len(lines) > 1 else "")
    return (child.seconds, float(Path(seconds_file).read_text()), child.peak_bytes // 2**20,
            child.returncode, last)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=224)
    args = p.parse_args()
    tok = CharTokenizer.from_texts([string.printable])
    torch.manual_seed(0)
    module = tiny_module(GatedGPTModule, vocab_size=tok.vocab_size, block_size=256, n_layer=args.n_layer,
                         n_head=4, n_embd=args.n_embd)
    with tempfile.TemporaryDirectory() as tmp:
        good = write_checkpoint(Path(tmp) / "gated.ckpt", module, tok)
        print(f"checkpoint: GatedGPT, {os.path.getsize(good) / 1e6:.1f} MB, "
              f"{sum(t.numel() for t in module.parameters()):,} parameters")
        generate = ["--prompt", "a", "--max_new_tokens", "8", "--ckpt"]
        base_wall, base_s, base_mb, base_rc, _ = run([*generate, good], tmp)
        print("case                             main() s  process s  max RSS")
        print(f"{'untouched (loads, generates)':32s} {base_s:8.2f} {base_wall:10.2f} {base_mb:6d} MB  exit {base_rc}")
        worst_s, worst_mb = 0.0, 0
        for i, (key, value) in enumerate(HOSTILE.items()):
            ckpt = torch.load(good, weights_only=True)
            ckpt["hyper_parameters"]["model"][key.strip()] = value
            path = str(Path(tmp) / f"hostile{i}.ckpt")
            torch.save(ckpt, path)
            wall, s, mb, rc, line = run([*generate, path], tmp)
            worst_s, worst_mb = max(worst_s, s), max(worst_mb, mb)
            print(f"{key.strip() + f' = {value:.0e}':32s} {s:8.2f} {wall:10.2f} {mb:6d} MB  exit {rc}  "
                  f"({s / base_s:.2f}x the time, {mb / base_mb:.2f}x the memory of the untouched load)")
            print(f"    {line.replace(tmp, '<tmp>')}")
        ok = worst_s < 2.0 and worst_mb < 1024
        print(f"worst hostile case: {worst_s:.2f} s in main(), {worst_mb} MB max RSS of the process "
              "(its imports included; target < 2 s, < 1024 MB): "
              f"{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
