"""How long a user waits: the first generated token and the first served token, against `import torch`.

    python bench/first_token.py [--reps 5] [--ckpt CKPT]

Each side is a fresh process, timed from its start (the user pressing Enter) to the moment it
has answered:

    import torch     python -c "import torch; print()": the floor of any command that runs a
                     model, to the line it prints once torch is imported
    generate         python -m succu.generate --ckpt CKPT --prompt "ROMEO:" --max_new_tokens 1,
                     to the first byte of the continuation on its stdout
    serve            python -m succu.serve --ckpt CKPT --port P, to the first token event of a
                     GET /stream the bench sends as soon as the port accepts
    import lightning python -c "import lightning" (reference: what every command paid before
                     the commands that only use a model loaded it without Lightning)
    fit --help       python -m succu.fit --help (reference: fit's own start-up)

Without `--ckpt` the bench writes a random-weight checkpoint of the write-up-size character GPT
(6 layers, 6 heads, 384 wide, block 256, a 65-character vocabulary: configs/full/
gpt_shakespeare_char.yaml's sizes; the time does not depend on the weights). Sides run one after
another within a repeat, their order rotating, after one warm-up repeat (the page cache); the
script prints each side's median of `--reps` and the targets: generate at most 2x import torch,
serve's first token within 4 s. Every process runs one torch thread (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROMPT = "ROMEO:"


def write_checkpoint(path: Path) -> str:
    """A random-weight GPT of the write-up's size, saved as `python -m succu.fit` saves one."""
    from succu.models.gpt import GPTConfig
    from succu.modules.gpt import GPTModule
    from succu.tokenizers import CharTokenizer

    torch.manual_seed(0)
    chars = string.ascii_letters + " .,;:!?'-\n&$3"
    tok = CharTokenizer.from_texts([chars])
    module = GPTModule(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=6, n_head=6,
                                 n_embd=384))
    module.tokenizer = tok
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return str(path)


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}


def run_to_exit(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=REPO, env=env(), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def first_output(args: list[str], marker: bytes = b"") -> float:
    """Seconds from starting `args` to the first byte it prints after `marker` (the process is
    then waited for, untimed)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = b""
    while True:
        byte = proc.stdout.read(1)
        if not byte:
            raise RuntimeError(f"{' '.join(args[1:3])} ended before printing: {seen!r}")
        if seen.endswith(marker):
            elapsed = time.perf_counter() - start
            break
        seen += byte
    proc.stdout.read()
    if proc.wait(timeout=60):
        raise RuntimeError(f"{' '.join(args[1:3])} failed with status {proc.returncode}")
    return elapsed


def first_token(ckpt: str) -> float:
    """Seconds from starting `succu.generate` to the first byte after its "PROMPT -> "."""
    return first_output([sys.executable, "-m", "succu.generate", "--ckpt", ckpt, "--prompt", PROMPT,
                         "--max_new_tokens", "1"], f"{PROMPT} -> ".encode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_served_token(ckpt: str) -> float:
    """Seconds from starting `succu.serve` to the first token event of a /stream request."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "succu.serve", "--ckpt", ckpt, "--port", str(port),
                             "--threads", "1"], cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/stream?prompt={PROMPT}&max_new_tokens=1&seed=0"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"succu.serve ended with status {proc.returncode} before answering")
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    for line in response:
                        if line.startswith(b"event: token"):
                            return time.perf_counter() - start
                raise RuntimeError("the stream ended without a token event")
            except (ConnectionRefusedError, urllib.error.URLError):
                time.sleep(0.01)  # not listening yet
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--ckpt", default=None, help="a checkpoint to time (default: a random write-up-size GPT)")
    args = p.parse_args()
    print("torch threads: 1 (OMP_NUM_THREADS=1 in every timed process)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or write_checkpoint(Path(tmp) / "gpt.ckpt")
        sides: dict[str, Callable[[], float]] = {
            "import torch": lambda: first_output([sys.executable, "-c", "import torch; print()"]),
            "generate": lambda: first_token(ckpt),
            "serve": lambda: first_served_token(ckpt),
            "import lightning": lambda: run_to_exit([sys.executable, "-c", "import lightning"]),
            "fit --help": lambda: run_to_exit([sys.executable, "-m", "succu.fit", "--help"]),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        names = list(sides)
        for rep in range(args.reps + 1):  # rep 0 warms the page cache
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                seconds = sides[name]()
                if rep:
                    times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"checkpoint: {args.ckpt or 'random GPT, 6 layers x 384, block 256, 65 characters'}")
    for name, seconds in median.items():
        spread = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:17s} {seconds:6.2f} s  (median of {args.reps}: {spread})")
    ratio = median["generate"] / median["import torch"]
    print(f"time to first token / import torch: {ratio:.2f}x  (target <= 2x)")
    print(f"serve, first token after start: {median['serve']:.2f} s  (target <= 4 s)")


if __name__ == "__main__":
    main()
