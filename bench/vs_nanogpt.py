"""succu against nanoGPT's own train.py, whole processes, on nanoGPT's CPU recipe (the baby GPT).

    python bench/vs_nanogpt.py PATH/TO/nanoGPT [--steps 2000] [--pairs 3] [--threads 1] [--compile]

PATH is a nanoGPT checkout (karpathy/nanoGPT: train.py, model.py, configurator.py,
config/train_shakespeare_char.py). Nothing is written into it: those four files are copied into a
temporary folder beside nanoGPT's data, which this script prepares itself (nanoGPT's
data/shakespeare_char/prepare.py downloads): train.bin, val.bin and meta.pkl made as prepare.py
makes them (sorted characters, first 90% train, uint16) from the local tinyshakespeare text that
succu's ShakespeareDataModule finds (`$SUCCU_DATA_DIR`, ./data or ../shared/data).

The two sides, each a fresh process on `--threads` threads (OMP_NUM_THREADS), run alternately
(succu first in even pairs, nanoGPT first in odd ones) for `--pairs` pairs:

    succu    python -m succu.fit --config configs/gpt_shakespeare_char.yaml (4 layers, 4 heads, 128
             wide, block 64, batch 12, dropout 0, AdamW lr 1e-3 betas (0.9, 0.99) wd 0.1, 100
             warmup steps, cosine to 1e-4, clipping 1.0) with --trainer.max_steps N and one
             validation, at the end; run as a user runs it: its CSV and offline W&B loggers, the
             sample generations of the config, last.ckpt and best-step=N.ckpt, all in a
             temporary run folder. Its AdamW is fused (the YAML's choice; nanoGPT fuses only on
             CUDA): the same update, up to float rounding. `--compile` adds
             --model.init_args.compile true: the first such run on a machine pays inductor's full
             compilation (minutes on a small CPU), later ones find it in inductor's cache.
    nanoGPT  python train.py config/train_shakespeare_char.py --device=cpu --compile=False
             --eval_iters=20 --log_interval=10 --block_size=64 --batch_size=12 --n_layer=4
             --n_head=4 --n_embd=128 --max_iters=N --lr_decay_iters=N --dropout=0.0
             --eval_interval=N (its README's "I only have a macbook" command, which has
             log_interval=1; 10 here, succu's log_every_n_steps, so both print as often).

Equal validation work. nanoGPT evaluates at iteration 0 and at every eval_interval; with
eval_interval = N that is twice, each time eval_iters = 20 batches of 12 on train and 20 on val:
80 forward batches in all, the last giving its final val loss (after N steps; it then trains one
more step, N + 1 in all, counted in its tokens). succu runs Lightning's sanity check (2 batches)
and one validation after step N over `val_windows` = 78 x 12 fixed windows of the same val split:
80 forward batches of 12 too. The val losses estimate the same quantity (the mean token loss of
the held-out tenth) from different windows, so they agree within a few hundredths.

Prints, per run and per side: wall seconds, end-to-end tokens/s (steps x 12 x 64 / wall, start-up
included), the median step time from the run's own log lines (nanoGPT's `iter N: ... time T ms`,
succu's `step N/M ... R it/s`) and what the wall time holds besides the steps (start-up,
evaluation, checkpoints, exit), CPU seconds (the process and those it started, W&B's service
included) and the final val loss; then the wall ratio succu / nanoGPT (target <= 1.0) and the
CPU ratio, which a busy neighbour on a shared machine disturbs less. Each side pays its own
start-up (imports, data, model) inside its wall time; nanoGPT's data files and succu's token
cache are made before any timed run.
"""

from __future__ import annotations

import argparse
import csv
import os
import pickle
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/gpt_shakespeare_char.yaml"
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
BATCH, BLOCK = 12, 64  # the baby recipe's batch and context, on both sides
EVAL_ITERS = 20  # nanoGPT's CPU recipe
WARMUP = 100  # warmup steps of both recipes (nanoGPT's warmup_iters, the YAML's warmup_steps)
SANITY_BATCHES = 2  # Lightning's default num_sanity_val_steps
VAL_LOSS = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", re.M)
NANOGPT_STEP = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", re.M)  # one iteration
SUCCU_RATE = re.compile(r"^step (\d+)/\d+ .* ([\d.]+) it/s$", re.M)  # ProgressLog: since its last line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nanogpt", nargs="?", help="path of a nanoGPT checkout (read only)")
    p.add_argument("--steps", type=int, default=2000, help="training steps per run (default 2000)")
    p.add_argument("--pairs", type=int, default=3, help="alternating (succu, nanoGPT) pairs")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both sides")
    p.add_argument("--log_interval", type=int, default=10, help="steps between log lines, both sides")
    p.add_argument("--compile", action="store_true", help="succu side with model compile: true")
    args = p.parse_args(argv)
    usage = "usage: python bench/vs_nanogpt.py PATH/TO/nanoGPT (a clone of https://github.com/karpathy/nanoGPT)"
    if args.nanogpt is None:
        sys.exit(f"error: no nanoGPT checkout given; {usage}")
    missing = [f for f in NANOGPT_FILES if not (Path(args.nanogpt) / f).is_file()]
    if missing:
        sys.exit(f"error: {args.nanogpt} lacks {', '.join(missing)}; {usage}")
    if args.steps <= WARMUP:  # nanoGPT divides by lr_decay_iters - warmup_iters
        sys.exit(f"error: --steps must exceed the recipe's {WARMUP} warmup steps, got {args.steps}")
    if args.pairs < 1 or args.threads < 1 or args.log_interval < 1:
        sys.exit("error: --pairs, --threads and --log_interval must be >= 1")
    return args


def shakespeare_text() -> Path:
    """The tinyshakespeare file succu's ShakespeareDataModule reads (same search, same file)."""
    from datamodules.corpora import CorpusError, resolve_source
    from datamodules.shakespeare import SHAKESPEARE

    try:
        return Path(resolve_source(SHAKESPEARE).location)
    except CorpusError as err:
        sys.exit(f"error: {err}")


def prepare_nanogpt(checkout: Path, text_path: Path, folder: Path) -> Path:
    """A runnable copy of nanoGPT's training code with data/shakespeare_char prepared as its
    prepare.py would (without the download)."""
    import numpy as np

    for name in NANOGPT_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(checkout / name, folder / name)
    data = folder / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    text = text_path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    cut = int(len(text) * 0.9)
    for side, part in (("train", text[:cut]), ("val", text[cut:])):
        np.array([stoi[c] for c in part], dtype=np.uint16).tofile(data / f"{side}.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    (data / "meta.pkl").write_bytes(pickle.dumps(meta))
    return folder


def warm_succu_cache(text_path: Path, cache: Path) -> None:
    """Tokenise once before timing: nanoGPT's data is prepared beforehand too."""
    from datamodules.shakespeare import ShakespeareDataModule
    from datamodules.tokens import Tokens
    from datamodules.windows import Windows

    ShakespeareDataModule(data_path=str(text_path), windows=Windows(block_size=BLOCK, batch_size=BATCH),
                          tokens=Tokens(cache_dir=str(cache))).prepare_data()


def nanogpt_command(steps: int, log_interval: int) -> list[str]:
    return [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu",
            "--compile=False", f"--eval_iters={EVAL_ITERS}", f"--log_interval={log_interval}",
            f"--block_size={BLOCK}", f"--batch_size={BATCH}", "--n_layer=4", "--n_head=4",
            "--n_embd=128", f"--max_iters={steps}", f"--lr_decay_iters={steps}", "--dropout=0.0",
            f"--eval_interval={steps}"]


def succu_command(args: argparse.Namespace, root: Path, text_path: Path, cache: Path) -> list[str]:
    # nanoGPT's two evaluations are 4 x eval_iters batches; the sanity check takes 2 of them.
    val_windows = (4 * EVAL_ITERS - SANITY_BATCHES) * BATCH
    command = [sys.executable, "-m", "succu.fit", "--config", CONFIG,
               "--trainer.max_steps", str(args.steps), "--trainer.val_check_interval", str(args.steps),
               "--trainer.log_every_n_steps", str(args.log_interval),
               "--trainer.default_root_dir", str(root), "--data.init_args.data_path", str(text_path),
               "--data.init_args.tokens.cache_dir", str(cache),
               "--data.init_args.windows.val_windows", str(val_windows)]
    return command + (["--model.init_args.compile", "true"] if args.compile else [])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], cwd: Path, env: dict[str, str], name: str) -> tuple[float, float, str]:
    """Wall and CPU seconds of one whole process (with the processes it started, e.g. W&B's) and
    its output; a failed run stops the bench."""
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"error: the {name} run failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return seconds, cpu, done.stdout + done.stderr


def step_ms(side: str, output: str) -> float:
    """Median milliseconds per training step from the run's own log lines (past the first 20
    steps and iteration 0, whose time includes nanoGPT's first evaluation)."""
    if side == "nanoGPT":
        times = [float(ms) for it, ms in NANOGPT_STEP.findall(output) if int(it) > 20]
    else:
        times = [1000.0 / float(rate) for step, rate in SUCCU_RATE.findall(output) if int(step) > 20]
    return statistics.median(times) if times else float("nan")


def nanogpt_val_loss(output: str) -> float:
    found = VAL_LOSS.findall(output)
    if not found:
        sys.exit("error: nanoGPT printed no 'step N: train loss X, val loss Y' line")
    return float(found[-1][2])


def succu_val_loss(root: Path) -> float:
    """The last val/loss in the run's metrics.csv (the CSV logger's file)."""
    rows = list(csv.DictReader((next(root.glob("version_*")) / "metrics.csv").open()))
    return [float(r["val/loss"]) for r in rows if r.get("val/loss")][-1]


def report(name: str, runs: dict[str, list[float]], steps: int) -> tuple[float, float]:
    wall, cpu = statistics.fmean(runs["wall"]), statistics.fmean(runs["cpu"])
    ms = statistics.median(runs["step_ms"])
    print(f"  {name:8s} wall {wall:7.1f} s (runs: {', '.join(f'{w:.1f}' for w in runs['wall'])})  "
          f"{steps * BATCH * BLOCK / wall:6.0f} tokens/s   cpu {cpu:7.1f} s   {ms:6.1f} ms/step "
          f"(all else: {wall - steps * ms / 1000:5.1f} s)   final val loss "
          f"{', '.join(f'{v:.4f}' for v in runs['loss'])}")
    return wall, cpu


def child_env(threads: int) -> dict[str, str]:
    """Both sides: the same threads, and nothing that reaches the network."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               WANDB_MODE="offline", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    return env


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = child_env(args.threads)
    print(f"threads: OMP_NUM_THREADS={args.threads} on both sides; {args.steps} steps, "
          f"{args.pairs} pairs{', succu compiled' if args.compile else ''}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    runs = {side: {"wall": [], "cpu": [], "loss": [], "step_ms": []} for side in ("succu", "nanoGPT")}
    with tempfile.TemporaryDirectory(prefix="vs_nanogpt_") as tmp:
        tmp = Path(tmp)
        text = shakespeare_text()
        nano = prepare_nanogpt(Path(args.nanogpt).expanduser(), text, tmp / "nanogpt")
        warm_succu_cache(text, tmp / "cache")
        for pair in range(args.pairs):
            for side in ("succu", "nanoGPT") if pair % 2 == 0 else ("nanoGPT", "succu"):
                if side == "succu":
                    root = tmp / f"succu_{pair}"
                    wall, cpu, out = run(succu_command(args, root, text, tmp / "cache"), REPO, env, side)
                    loss = succu_val_loss(root)
                else:
                    shutil.rmtree(nano / "out-shakespeare-char", ignore_errors=True)
                    wall, cpu, out = run(nanogpt_command(args.steps, args.log_interval), nano, env, side)
                    loss = nanogpt_val_loss(out)
                ms = step_ms(side, out)
                for key, value in (("wall", wall), ("cpu", cpu), ("loss", loss), ("step_ms", ms)):
                    runs[side][key].append(value)
                print(f"pair {pair}: {side:8s} wall {wall:7.1f} s  cpu {cpu:7.1f} s  {ms:6.1f} ms/step  "
                      f"val loss {loss:.4f}", flush=True)
    summary(args, runs)


def summary(args: argparse.Namespace, runs: dict[str, dict[str, list[float]]]) -> None:
    print(f"baby GPT, Shakespeare char, {args.steps} steps (nanoGPT {args.steps + 1}), whole processes:")
    succu_wall, succu_cpu = report("succu", runs["succu"], args.steps)
    nano_wall, nano_cpu = report("nanoGPT", runs["nanoGPT"], args.steps + 1)
    pairs = ", ".join(f"{s / n:.3f}" for s, n in zip(runs["succu"]["wall"], runs["nanoGPT"]["wall"]))
    print(f"  wall ratio succu / nanoGPT: {succu_wall / nano_wall:.3f}   (pairs: {pairs}; target <= 1.0)")
    print(f"  cpu ratio succu / nanoGPT:  {succu_cpu / nano_cpu:.3f}   (less sensitive to a busy "
          f"neighbour); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
