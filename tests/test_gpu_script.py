"""bench/gpu.py, the GPU path in one call: the commands it would run on a GPU (bf16-mixed, compile,
the write-up's 6x384x256 sizes, the same sizes on nanoGPT's side), its timing and MFU arithmetic,
and its dry run on the CPU (what `make bench` runs where there is no GPU)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu.py"
PY = sys.executable
ROOT, DATA, CACHE = Path("/tmp/r"), Path("/data"), Path("/tmp/c")


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPT.parent))  # its sibling vs_nanogpt, as when run as a script
        spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def model(gpu, name):
    return next(m for m in gpu.MODELS if m.name == name)


def gpu_command(gpu, name):
    return gpu.succu_command(model(gpu, name), dry=False, steps=300, log_interval=10, root=ROOT,
                             data_dir=DATA, cache=CACHE)


TAIL = ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed",
        "--model.init_args.compile", "true", "--trainer.max_steps", "300",
        "--trainer.val_check_interval", "300", "--trainer.log_every_n_steps", "10",
        "--trainer.default_root_dir", "/tmp/r", "--data.init_args.sources.data_dir", "/data",
        "--data.init_args.tokens.cache_dir", "/tmp/c"]


def test_succu_gpu_commands_are_bf16_compiled_on_the_write_up_configs(gpu):
    # nanoGPT's two evaluations of 20 batches per split, less Lightning's 2 sanity batches.
    assert gpu_command(gpu, "GPT 6x384") == [
        PY, "-m", "succu.fit", "--config", "configs/gpt_shakespeare_char.yaml",
        "--config", "configs/full/gpt_shakespeare_char.yaml", *TAIL,
        "--data.init_args.windows.val_windows", str(78 * 64)]
    assert gpu_command(gpu, "GatedGPT 6x384") == [
        PY, "-m", "succu.fit", "--config", "configs/abcgpt_char.yaml",
        "--config", "configs/full/abcgpt_char.yaml", *TAIL,
        "--data.init_args.windows.val_windows", str(78 * 64)]
    assert gpu_command(gpu, "baby GPT") == [
        PY, "-m", "succu.fit", "--config", "configs/gpt_shakespeare_char.yaml", *TAIL,
        "--data.init_args.windows.val_windows", str(78 * 12)]


def test_csv_only_names_the_csv_logger_in_the_run_folder(gpu):
    command = gpu.succu_command(model(gpu, "baby GPT"), dry=False, steps=300, log_interval=10, root=ROOT,
                                data_dir=DATA, cache=CACHE, csv_only=True)
    assert command[-2:] == ["--trainer.logger", '{"class_path": "lightning.pytorch.loggers.CSVLogger", '
                            '"init_args": {"save_dir": "/tmp/r", "name": ""}}']


def test_nanogpt_gpu_commands_carry_bf16_compile_and_the_sizes(gpu):
    assert gpu.nanogpt_command(model(gpu, "GPT 6x384"), dry=False, steps=300, log_interval=10) == [
        PY, "train.py", "config/train_shakespeare_char.py", "--device=cuda", "--dtype=bfloat16",
        "--compile=True", "--eval_iters=20", "--log_interval=10", "--block_size=256",
        "--batch_size=64", "--n_layer=6", "--n_head=6", "--n_embd=384", "--dropout=0.2",
        "--max_iters=300", "--lr_decay_iters=300", "--eval_interval=300"]
    assert gpu.nanogpt_command(model(gpu, "baby GPT"), dry=False, steps=300, log_interval=10) == [
        PY, "train.py", "config/train_shakespeare_char.py", "--device=cuda", "--dtype=bfloat16",
        "--compile=True", "--eval_iters=20", "--log_interval=10", "--block_size=64",
        "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0",
        "--max_iters=300", "--lr_decay_iters=300", "--eval_interval=300"]


@pytest.mark.parametrize("name", ["baby GPT", "GPT 6x384", "GatedGPT 6x384"])
def test_succu_gpu_command_resolves_to_the_sizes_nanogpt_is_given(gpu, name):
    """succu's sizes come from its configs; resolved, they are the ones handed to nanoGPT."""
    m = model(gpu, name)
    out = subprocess.run([*gpu_command(gpu, name), "--print_config"], cwd=REPO,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr[-2000:]
    config = yaml.safe_load(out.stdout)
    trainer, module = config["trainer"], config["model"]["init_args"]
    net, windows = module["model"], config["data"]["init_args"]["windows"]
    assert (trainer["accelerator"], trainer["precision"], module["compile"]) == ("gpu", "bf16-mixed", True)
    # bf16 needs no loss scaler, so the fused AdamW and Lightning's clipping go together (nanoGPT: 1.0).
    assert module["optimizer"]["init_args"]["fused"] is True and trainer["gradient_clip_val"] == 1.0
    assert (net["n_layer"], net["n_head"], net["n_embd"], net["dropout"]) == (m.n_layer, m.n_head, m.n_embd, m.dropout)
    assert (windows["block_size"], windows["batch_size"]) == (m.block, m.batch)
    if name != "baby GPT":
        assert (m.n_layer, m.n_embd, m.n_head, m.block) == (6, 384, 6, 256)


def test_ms_per_step_runs_from_the_first_line_past_skip_to_the_last_before_the_end(gpu):
    # nanoGPT's "iter k" follows k + 1 steps; its last line (iter 6) follows the final evaluation.
    nano = [(0.5 * k + (9.0 if k == 6 else 0.0), f"iter {k}: loss 4.0, time 1.00ms, mfu -100.00%") for k in range(7)]
    nano.insert(0, (0.1, "step 0: train loss 4.2, val loss 4.2"))
    points = gpu.timed_steps(nano, "nanoGPT")
    assert points == [(k + 1, 0.5 * k + (9.0 if k == 6 else 0.0)) for k in range(7)]
    assert gpu.ms_per_step(points, skip=2, steps=6) == pytest.approx(500.0)  # iter 1 .. iter 4
    succu = [(0.25 * s * s, f"step {s}/6  train/loss 4.0  3.0 it/s") for s in range(1, 7)]
    succu.append((99.0, "validation at step 6: val/loss 3.9  val/ppl 49.0"))
    # steps 2 .. 5: (6.25 - 1.0) s over 3 steps
    assert gpu.ms_per_step(gpu.timed_steps(succu, "succu"), skip=2, steps=6) == pytest.approx(1750.0)


def test_mfu_is_nanogpts_estimate(gpu):
    m = model(gpu, "GPT 6x384")
    result = gpu.Result(m, "succu", [], wall=1.0, ms_step=50.0, tokens_step=64 * 256, params=10_645_632,
                        block=256, val_loss=1.0)
    # nanoGPT's estimate_mfu(fwdbwd_per_iter=64, dt=0.05) against a 989 TFLOPs peak
    flops_per_iter = (6 * 10_645_632 + 12 * 6 * 6 * 64 * 256) * 256 * 64
    assert result.tokens_s == pytest.approx(64 * 256 / 0.05)
    assert result.mfu(989.0) == pytest.approx(flops_per_iter / 0.05 / 989e12)


ROW = re.compile(r"^(baby GPT|GPT 6x384|GatedGPT 6x384) +(succu|nanoGPT) +([\d.]+)M +(\d+) +([\d.]+) +([\d.]+) "
                 r"+([\d.e+-]+) +([\d.]+) +([\d.]+)  (.*)$", re.M)


def dry_run(*extra: str) -> str:
    # Without a GPU the script runs its dry run by itself (what `make bench` gets there).
    args = ["--dry-run"] if torch.cuda.is_available() else []
    out = subprocess.run([PY, str(SCRIPT), *args, *extra], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    if not args:
        assert out.stdout.startswith("no GPU: running --dry-run")
    return out.stdout


def test_dry_run_prints_a_row_of_positive_figures_per_model_and_its_commands():
    out = dry_run("--csv_only")  # W&B's offline start-up would double each run's few seconds
    assert re.search(r"^no GPU used: .*; torch \S+$", out, re.M) or re.search(r"^GPU: .*; torch \S+$", out, re.M)
    rows = {(m[0], m[1]): m[2:] for m in ROW.findall(out)}
    assert set(rows) == {("baby GPT", "succu"), ("GPT 6x384", "succu"), ("GatedGPT 6x384", "succu")}, out
    for params, tok_step, ms, tok_s, mfu, wall, loss, ratio in rows.values():
        assert int(tok_step) == 2 * 64  # the dry run's batch 2, block 64
        assert min(float(params), float(ms), float(tok_s), float(mfu), float(wall), float(loss)) > 0
        assert float(tok_s) == pytest.approx(int(tok_step) / float(ms) * 1000, rel=1e-3)
        assert ratio == "n/a (no nanoGPT run)"
    commands = re.findall(r"^\$ \(cd (\S+) && (.*)\)$", out, re.M)
    assert [Path(cwd) for cwd, _ in commands] == [REPO] * 3
    for _, command in commands:
        assert " -m succu.fit " in command and "--trainer.precision 32-true" in command
        assert "--model.init_args.compile false" in command and "--trainer.max_steps 6" in command
    assert "nanoGPT skipped: no --nanogpt" in out


def nanogpt_checkout() -> Path | None:
    """A local nanoGPT checkout: $NANOGPT (as `make bench NANOGPT=DIR`), else none (never fetched)."""
    path = os.environ.get("NANOGPT")
    return Path(path) if path and (Path(path) / "train.py").is_file() else None


@pytest.mark.skipif(nanogpt_checkout() is None,
                    reason="no nanoGPT checkout on this machine: set NANOGPT=DIR (a karpathy/nanoGPT clone)")
def test_dry_run_with_nanogpt_prints_both_sides_and_the_ratio():
    out = dry_run("--csv_only", "--nanogpt", str(nanogpt_checkout()), "--models", "baby GPT")
    rows = {(m[0], m[1]): m[2:] for m in ROW.findall(out)}
    assert set(rows) == {("baby GPT", "succu"), ("baby GPT", "nanoGPT")}, out
    assert float(rows["baby GPT", "nanoGPT"][2]) > 0 and float(rows["baby GPT", "succu"][-1]) > 0
    assert "--device=cpu --dtype=float32 --compile=False" in out
