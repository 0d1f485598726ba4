"""The GPU path in one call: succu and nanoGPT's own train.py on one GPU, bf16 and compile.

    python bench/gpu.py --nanogpt PATH/TO/nanoGPT [--steps 300] [--peak_tflops 989]
    python bench/gpu.py --dry-run [--nanogpt PATH]   # a few steps of each on the CPU: the wiring

Three models, each trained by `python -m succu.fit` in a fresh process as a user runs it (its
loggers, checkpoints and end-of-fit callbacks), with `--trainer.precision bf16-mixed` and
`--model.init_args.compile true` (AdamW stays fused: bf16 needs no loss scaling, so Lightning can
clip), and the two GPTs by nanoGPT's train.py too, on the same sizes:

    baby GPT        configs/gpt_shakespeare_char.yaml: 4 layers, 4 heads, 128 wide, block 64,
                    batch 12, dropout 0 (nanoGPT's CPU recipe)
    GPT 6x384       + configs/full/gpt_shakespeare_char.yaml: 6 layers, 6 heads, 384 wide,
                    block 256, batch 64, dropout 0.2 (nanoGPT's config/train_shakespeare_char.py)
    GatedGPT 6x384  configs/abcgpt_char.yaml + configs/full/abcgpt_char.yaml: the same sizes,
                    TinyStories and Shakespeare; held to nanoGPT's GPT 6x384 (no nanoGPT twin)

nanoGPT runs as bench/vs_nanogpt.py runs it (its train.py, model.py, configurator.py and config
copied beside data/shakespeare_char prepared from the local tinyshakespeare text, nothing written
into the checkout), with `--device=cuda --dtype=bfloat16 --compile=True` and the sizes above as
`--key=value` overrides. Without `--nanogpt` only succu's side runs. `--csv_only` drops succu's
offline W&B logger (for a machine without wandb); its CSV logger stays.

ms/step leaves out the start: compilation, the first evaluations and warm-up. Both programs print
a line every `--log_interval` steps once that step has read its loss back from the device (a sync:
succu's logged step copies it to the CPU, nanoGPT calls loss.item()), and this script stamps each
line as it arrives; ms/step is the time between the first line at or past
`--skip` steps and the last line before the final evaluation, over the steps between them. The
same clock and the same kind of point serve both sides, so neither side's own timer (nanoGPT's
per-iteration `time`, measured before its sync) decides. tokens/s = batch x block / (ms/step).
MFU is nanoGPT's estimate_mfu: 6 N + 12 L H Q T flops per token (N parameters without the
position table, L layers, H heads, Q = width / H, T = block), against `--peak_tflops` (dense bf16
of an H100 / H200 SXM by default). Both GPTs are the same network (succu's GPT is nanoGPT's
layout), so their N comes from succu's GPT at those sizes; GatedGPT's from its checkpoint. The
ratio is succu's ms/step over nanoGPT's (below 1: succu faster).

Runs alternate which side goes first from model to model; each child gets OMP_NUM_THREADS
`--threads` and no network. The script prints the GPU, torch and every command it ran.

`--dry-run` (what the test suite runs, and what this script does by itself on a machine without
a GPU, so `make bench` stays quick there): the same commands on the CPU in 32-bit, without compile
(`--compile` to add it), with a few steps of batch 2 and block 64, one validation batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vs_nanogpt import (  # a sibling: `python bench/gpu.py` puts bench/ on the path
    NANOGPT_FILES,
    SANITY_BATCHES,
    child_env,
    nanogpt_val_loss,
    prepare_nanogpt,
    shakespeare_text,
    succu_val_loss,
)

REPO = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = 989.0  # H100 / H200 SXM, dense bf16
EVAL_ITERS = 20  # nanoGPT's batches per split per evaluation (the CPU recipe's)


@dataclass(frozen=True)
class Model:
    """One model of the table: succu's configs and the sizes nanoGPT is given for the same run."""

    name: str
    configs: tuple[str, ...]
    n_layer: int
    n_head: int
    n_embd: int
    block: int
    batch: int
    dropout: float
    nanogpt: bool = True  # nanoGPT trains this network itself
    versus: str | None = None  # else: the nanoGPT run it is held to


MODELS = (
    Model("baby GPT", ("configs/gpt_shakespeare_char.yaml",), 4, 4, 128, 64, 12, 0.0),
    Model("GPT 6x384", ("configs/gpt_shakespeare_char.yaml", "configs/full/gpt_shakespeare_char.yaml"),
          6, 6, 384, 256, 64, 0.2),
    Model("GatedGPT 6x384", ("configs/abcgpt_char.yaml", "configs/full/abcgpt_char.yaml"),
          6, 6, 384, 256, 64, 0.2, nanogpt=False, versus="GPT 6x384"),
)
# The dry run: a few steps of batch 2, block 64, one validation batch per corpus.
DRY = {"steps": 6, "log_interval": 1, "skip": 2, "batch": 2, "block": 64, "val_windows": 2, "eval_iters": 1}
SUCCU_LINE = re.compile(r"^step (\d+)/\d+ ")  # ProgressLog: after `step` steps
NANOGPT_LINE = re.compile(r"^iter (\d+): loss ")  # after iteration `iter`, i.e. iter + 1 steps
NANOGPT_PARAMS = re.compile(r"number of parameters: ([\d.]+)M")


@dataclass
class Result:
    model: Model
    side: str  # "succu" or "nanoGPT"
    command: list[str]
    wall: float
    ms_step: float
    tokens_step: int
    params: int
    block: int
    val_loss: float

    @property
    def tokens_s(self) -> float:
        return self.tokens_step / self.ms_step * 1000.0

    def mfu(self, peak_tflops: float) -> float:
        """nanoGPT's estimate_mfu, as a fraction of the peak."""
        m = self.model
        flops_token = 6 * self.params + 12 * m.n_layer * m.n_head * (m.n_embd // m.n_head) * self.block
        return flops_token * self.tokens_s / (peak_tflops * 1e12)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", help="a nanoGPT checkout (read only); without it only succu runs")
    p.add_argument("--dry-run", action="store_true", help="a few steps of each on the CPU, 32-bit")
    p.add_argument("--steps", type=int, help="training steps per run (default 300; dry run 6)")
    p.add_argument("--log_interval", type=int, help="steps between timed lines (default 10; dry run 1)")
    p.add_argument("--skip", type=int, help="steps left out of ms/step (default 100; dry run 2)")
    p.add_argument("--peak_tflops", type=float, default=PEAK_TFLOPS,
                   help=f"the device's peak bf16 TFLOPs for MFU (default {PEAK_TFLOPS:g}: H100/H200 dense)")
    p.add_argument("--models", nargs="+", choices=[m.name for m in MODELS], metavar="NAME",
                   help=f"a subset of: {', '.join(repr(m.name) for m in MODELS)}")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run (default 1)")
    p.add_argument("--compile", action="store_true", help="dry run: compile too (minutes on a CPU)")
    p.add_argument("--csv_only", action="store_true", help="succu logs to CSV alone, without its "
                   "offline W&B run (for a machine without wandb)")
    p.add_argument("--data_dir", help="folder of tinyshakespeare.txt and tinystories.txt "
                   "(default: where succu finds them)")
    args = p.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no GPU: running --dry-run (a few CPU steps of each run, 32-bit, no compile)", flush=True)
        args.dry_run = True
    dry = args.dry_run
    args.steps = args.steps or (DRY["steps"] if dry else 300)
    args.log_interval = args.log_interval or (DRY["log_interval"] if dry else 10)
    args.skip = DRY["skip"] if dry and args.skip is None else 100 if args.skip is None else args.skip
    if args.steps < args.skip + 2 * args.log_interval:
        sys.exit(f"error: --steps must leave two timed lines past --skip {args.skip}, "
                 f"got {args.steps} steps every {args.log_interval}")
    if args.threads < 1 or args.log_interval < 1 or args.peak_tflops <= 0:
        sys.exit("error: --threads and --log_interval must be >= 1, --peak_tflops > 0")
    if args.nanogpt and args.steps == 100:  # nanoGPT's schedule divides by max_iters - warmup_iters
        sys.exit("error: nanoGPT cannot run --steps 100 (its 100 warmup steps): choose another count")
    if args.nanogpt:
        missing = [f for f in NANOGPT_FILES if not (Path(args.nanogpt) / f).is_file()]
        if missing:
            sys.exit(f"error: {args.nanogpt} lacks {', '.join(missing)} (not a nanoGPT checkout)")
    return args


# ---- the commands ------------------------------------------------------------------------------
def batch_block(model: Model, dry: bool) -> tuple[int, int]:
    return (DRY["batch"], DRY["block"]) if dry else (model.batch, model.block)


def succu_command(model: Model, *, dry: bool, steps: int, log_interval: int, root: Path,
                  data_dir: Path, cache: Path, compile: bool = True, csv_only: bool = False) -> list[str]:
    """`python -m succu.fit` with the model's configs; on a GPU bf16-mixed and compiled, the sizes
    the configs give. Validation once, after the last step, over as many windows per corpus as
    nanoGPT's two evaluations read batches (less Lightning's sanity check). `csv_only`: the CSV
    logger that every run has, without the W&B one."""
    batch, block = batch_block(model, dry)
    val_windows = DRY["val_windows"] if dry else (4 * EVAL_ITERS - SANITY_BATCHES) * batch
    command = [sys.executable, "-m", "succu.fit"]
    for config in model.configs:
        command += ["--config", config]
    command += ["--trainer.accelerator", "cpu" if dry else "gpu",
                "--trainer.precision", "32-true" if dry else "bf16-mixed",
                "--model.init_args.compile", "true" if compile else "false",
                "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
                "--trainer.log_every_n_steps", str(log_interval),
                "--trainer.default_root_dir", str(root),
                "--data.init_args.sources.data_dir", str(data_dir),
                "--data.init_args.tokens.cache_dir", str(cache),
                "--data.init_args.windows.val_windows", str(val_windows)]
    if csv_only:
        command += ["--trainer.logger", json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                    "init_args": {"save_dir": str(root), "name": ""}})]
    if dry:
        command += ["--data.init_args.windows.batch_size", str(batch),
                    "--data.init_args.windows.block_size", str(block)]
    return command


def nanogpt_command(model: Model, *, dry: bool, steps: int, log_interval: int,
                    compile: bool = True) -> list[str]:
    """nanoGPT's train.py on its Shakespeare config with the model's sizes; nanoGPT trains
    steps + 1 iterations and evaluates at 0 and at `steps`."""
    batch, block = batch_block(model, dry)
    eval_iters = DRY["eval_iters"] if dry else EVAL_ITERS
    return [sys.executable, "train.py", "config/train_shakespeare_char.py",
            f"--device={'cpu' if dry else 'cuda'}", f"--dtype={'float32' if dry else 'bfloat16'}",
            f"--compile={compile}", f"--eval_iters={eval_iters}", f"--log_interval={log_interval}",
            f"--block_size={block}", f"--batch_size={batch}", f"--n_layer={model.n_layer}",
            f"--n_head={model.n_head}", f"--n_embd={model.n_embd}", f"--dropout={model.dropout}",
            f"--max_iters={steps}", f"--lr_decay_iters={steps}", f"--eval_interval={steps}"]


# ---- running and timing ------------------------------------------------------------------------
def run_stamped(command: list[str], cwd: Path, env: dict[str, str], name: str) -> tuple[float, list[tuple[float, str]]]:
    """Run one whole process; every output line with the second it arrived. A failed run stops
    the bench with its output's tail."""
    print(f"$ (cd {shlex.quote(str(cwd))} && {shlex.join(command)})", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    wall = time.perf_counter() - start
    if proc.wait() != 0:
        tail = "\n".join(line for _, line in lines[-40:])
        sys.exit(f"error: the {name} run failed (exit {proc.returncode}):\n{tail}")
    return wall, lines


def timed_steps(lines: list[tuple[float, str]], side: str) -> list[tuple[int, float]]:
    """(steps done, arrival second) of each training log line."""
    pattern, offset = (SUCCU_LINE, 0) if side == "succu" else (NANOGPT_LINE, 1)
    return [(int(m.group(1)) + offset, t) for t, line in lines if (m := pattern.match(line))]


def ms_per_step(points: list[tuple[int, float]], skip: int, steps: int) -> float:
    """Milliseconds per step between the first line at or past `skip` steps and the last line
    before `steps` (nanoGPT's last line follows its final evaluation)."""
    window = [(s, t) for s, t in points if skip <= s < steps]
    if len(window) < 2:
        sys.exit(f"error: fewer than two log lines between step {skip} and {steps}: {points}")
    (s0, t0), (s1, t1) = window[0], window[-1]
    return (t1 - t0) / (s1 - s0) * 1000.0


def gpt_params(model: Model, vocab_size: int, block: int) -> int:
    """N of a GPT of these sizes: succu's GPT, nanoGPT's layout (tests/test_gpt.py)."""
    import torch

    from succu.models.gpt import GPT, GPTConfig

    with torch.device("meta"):
        net = GPT(GPTConfig(vocab_size=vocab_size, block_size=block, n_layer=model.n_layer,
                            n_head=model.n_head, n_embd=model.n_embd, bias=False))
    return net.num_params()


def checkpoint_params(root: Path) -> tuple[int, int]:
    """N of the network a succu run trained (its last.ckpt) and its vocabulary."""
    from succu.checkpoint import load_module

    net = load_module(next(root.glob("version_*/checkpoints/last.ckpt"))).model
    return net.num_params(), net.cfg.vocab_size


def run_succu(model: Model, args: argparse.Namespace, tmp: Path, data_dir: Path, env: dict[str, str]) -> Result:
    root = tmp / f"succu_{model.name.replace(' ', '_')}"
    compile = args.compile or not args.dry_run
    command = succu_command(model, dry=args.dry_run, steps=args.steps, log_interval=args.log_interval,
                            root=root, data_dir=data_dir, cache=tmp / "cache", compile=compile,
                            csv_only=args.csv_only)
    wall, lines = run_stamped(command, REPO, env, f"succu {model.name}")
    ms = ms_per_step(timed_steps(lines, "succu"), args.skip, args.steps)
    params, _ = checkpoint_params(root)
    batch, block = batch_block(model, args.dry_run)
    return Result(model, "succu", command, wall, ms, batch * block, params, block, succu_val_loss(root))


def run_nanogpt(model: Model, args: argparse.Namespace, nano: Path, vocab_size: int, env: dict[str, str]) -> Result:
    shutil.rmtree(nano / "out-shakespeare-char", ignore_errors=True)
    compile = args.compile or not args.dry_run
    command = nanogpt_command(model, dry=args.dry_run, steps=args.steps, log_interval=args.log_interval,
                              compile=compile)
    wall, lines = run_stamped(command, nano, env, f"nanoGPT {model.name}")
    output = "\n".join(line for _, line in lines)
    ms = ms_per_step(timed_steps(lines, "nanoGPT"), args.skip, args.steps)
    batch, block = batch_block(model, args.dry_run)
    params = gpt_params(model, vocab_size, block)
    printed = NANOGPT_PARAMS.search(output)
    if printed and abs(float(printed.group(1)) - params / 1e6) > 0.006:
        print(f"warning: nanoGPT reports {printed.group(1)}M parameters, succu's GPT {params / 1e6:.3f}M")
    return Result(model, "nanoGPT", command, wall, ms, batch * block, params, block, nanogpt_val_loss(output))


# ---- the report --------------------------------------------------------------------------------
def device_line(dry: bool) -> str:
    import torch

    if torch.cuda.is_available() and not dry:
        props = torch.cuda.get_device_properties(0)
        where = f"GPU: {torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        where = f"no GPU used: CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{where}; torch {torch.__version__}"


def table(results: list[Result], peak_tflops: float) -> list[str]:
    """One row per run: model, side, N, tokens/step, ms/step, tokens/s, MFU, wall, val loss, and
    on each succu row the ratio of its ms/step to nanoGPT's (of the same network, or the one it is
    held to)."""
    nano = {r.model.name: r for r in results if r.side == "nanoGPT"}
    rows = [f"{'model':15s} {'side':8s} {'params':>9s} {'tok/step':>8s} {'ms/step':>9s} {'tokens/s':>10s} "
            f"{'MFU %':>9s} {'wall s':>7s} {'val loss':>8s}  ratio succu/nanoGPT ms/step"]
    for r in results:
        ratio = ""
        if r.side == "succu":
            other = nano.get(r.model.versus or r.model.name)
            ratio = (f"{r.ms_step / other.ms_step:.3f}" + (f" (vs nanoGPT {other.model.name})" if r.model.versus else "")
                     if other else "n/a (no nanoGPT run)")
        rows.append(f"{r.model.name:15s} {r.side:8s} {r.params / 1e6:8.3f}M {r.tokens_step:8d} {r.ms_step:9.3f} "
                    f"{r.tokens_s:10.1f} {100 * r.mfu(peak_tflops):9.3g} {r.wall:7.1f} {r.val_loss:8.4f}  {ratio}")
    return rows


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    models = [m for m in MODELS if not args.models or m.name in args.models]
    # vs_nanogpt's environment (threads, offline), lines unbuffered, and PYTHONPATH kept: on a GPU
    # machine it may name where packages the image lacks were unpacked.
    env = dict(child_env(args.threads), PYTHONUNBUFFERED="1")
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    text = Path(args.data_dir) / "tinyshakespeare.txt" if args.data_dir else shakespeare_text()
    data_dir = text.parent.resolve()
    print(device_line(args.dry_run))
    print(f"{'dry run on the CPU, 32-bit' if args.dry_run else 'bf16-mixed, torch.compile'}; {args.steps} "
          f"steps per run, ms/step from step {args.skip} on (lines every {args.log_interval}); "
          f"OMP_NUM_THREADS={args.threads}; peak {args.peak_tflops:g} TFLOPs bf16 for MFU", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as tmp:
        tmp = Path(tmp)
        nano = prepare_nanogpt(Path(args.nanogpt).expanduser(), text, tmp / "nanogpt") if args.nanogpt else None
        vocab = len(set(text.read_text(encoding="utf-8")))  # nanoGPT's meta.pkl vocab_size
        for i, model in enumerate(models):
            sides = ["succu"] + (["nanoGPT"] if nano and model.nanogpt else [])
            for side in sides if i % 2 == 0 else sides[::-1]:
                run = run_succu(model, args, tmp, data_dir, env) if side == "succu" else run_nanogpt(model, args, nano, vocab, env)
                print(f"  {model.name} {side}: {run.ms_step:.3f} ms/step, wall {run.wall:.1f} s", flush=True)
                results.append(run)
        if not args.nanogpt:
            print("nanoGPT skipped: no --nanogpt PATH/TO/nanoGPT given")
    print(device_line(args.dry_run))
    print(f"MFU: 6N + 12 L H Q T flops per token against {args.peak_tflops:g} TFLOPs (--peak_tflops)")
    for line in table(results, args.peak_tflops):
        print(line)
    return results


if __name__ == "__main__":
    main()
