"""What makes a fit fast without changing its maths: `compile: true`, bf16 autocast on the CPU when
the config asks for it, training metrics logged on the logging interval only, start-up that
imports what the run uses, and the whole-process comparison with nanoGPT (bench/vs_nanogpt.py)."""

from __future__ import annotations

import copy
import csv
import functools
import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from succu import fit, runs
from succu.data import pin_memory
from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.models.gpt import GPT, GPTConfig
from succu.modules.gpt import GPTModule
from succu.nn.tt import TTLinear
from tests.tiny import tiny_module

REPO = Path(__file__).resolve().parents[1]
GPT_YAML = str(REPO / "configs" / "gpt_shakespeare_char.yaml")
TINY_GPT = ["--model.init_args.model.n_layer", "1", "--model.init_args.model.n_embd", "16",
            "--model.init_args.model.n_head", "2", "--data.init_args.windows.block_size", "16",
            "--data.init_args.windows.batch_size", "4", "--data.init_args.windows.val_windows", "8",
            "--trainer.num_sanity_val_steps", "0"]
# bf16 keeps 8 bits of mantissa: a tiny network's logits move by ~1e-2, its mean loss by less.
BF16_LOSS_RTOL, BF16_LOGITS_ATOL = 2e-2, 0.1


@pytest.fixture
def fast_compile(monkeypatch):
    """torch.compile with the aot_eager backend: dynamo's graph capture and AOT autograd, as with
    inductor, without the C++ build that takes a minute on a small CPU (the slow test runs that)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def train_steps(module: GPTModule, batches: list[torch.Tensor]) -> list[float]:
    """Hand-written steps through the module's forward (what training_step runs)."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    losses = []
    for rows in batches:
        loss = module.loss(module(rows[:, :-1]), rows[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def compiled_and_eager_agree(tolerance: float) -> None:
    torch.manual_seed(0)
    eager = tiny_module(GPTModule, vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16)
    compiled = copy.deepcopy(eager)
    compiled.compile_network = True
    batches = [torch.randint(0, 20, (3, 9), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    torch.testing.assert_close(train_steps(compiled, batches), train_steps(eager, batches),
                               rtol=tolerance, atol=tolerance)
    assert compiled._compiled is not None  # the steps did run the compiled call
    with torch.no_grad():
        eager.eval(), compiled.eval()
        torch.testing.assert_close(compiled(batches[0][:, :8]), eager(batches[0][:, :8]),
                                   rtol=tolerance, atol=tolerance)
    # Generation runs the eager network with its KV cache: the same tokens as the eager module's.
    prompt = batches[1][:1, :3]
    assert torch.equal(compiled.generate(prompt, 12, greedy=True), eager.generate(prompt, 12, greedy=True))
    # Checkpoints do not change: the call is compiled, not the module.
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert "compile" not in compiled.hparams


def test_compiled_steps_match_eager_and_generation_is_unchanged(fast_compile):
    compiled_and_eager_agree(tolerance=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="torch.compile (inductor) on CPU builds C++: no g++ (or $CXX) here")
def test_inductor_compiled_steps_match_eager():
    torch._dynamo.reset()
    compiled_and_eager_agree(tolerance=1e-4)  # fused kernels reorder float sums


def test_compile_option_runs_a_fit_through_the_cli(fast_compile, tmp_path):
    cli = fit.main(["--config", GPT_YAML, *TINY_GPT, "--model.init_args.compile", "true",
                    "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.logger", "false",
                    "--trainer.default_root_dir", str(tmp_path / "run"),
                    "--data.init_args.tokens.cache_dir", str(tmp_path / "cache")])
    module = cli.model
    assert module.compile_network and module._compiled is not None
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


# ---- bf16 autocast on the CPU ----------------------------------------------------------------
def autocast_agrees(model: torch.nn.Module, ids: torch.Tensor, **kwargs) -> None:
    model.eval()
    with torch.no_grad():
        full = model(ids, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(ids, **kwargs)
    assert half.dtype == torch.bfloat16  # autocast really ran the matmuls in bf16
    torch.testing.assert_close(half.float(), full, rtol=0, atol=BF16_LOGITS_ATOL)
    labels = ids.roll(-1, dims=1)
    loss = torch.nn.functional.cross_entropy
    assert loss(half.float().flatten(0, 1), labels.flatten()).item() == pytest.approx(
        loss(full.flatten(0, 1), labels.flatten()).item(), rel=BF16_LOSS_RTOL)


def test_gpt_and_gated_gpt_under_cpu_bf16_autocast_match_float32():
    torch.manual_seed(0)
    ids = torch.randint(0, 40, (4, 16))
    sizes = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)
    autocast_agrees(GPT(GPTConfig(**sizes)), ids)
    gated = GatedGPT(GatedGPTConfig(**sizes))
    for alpha in (0.0, 0.5, torch.tensor([0.0, 0.3, 0.7, 1.0])):
        autocast_agrees(gated, ids, alpha=alpha)


def test_tt_layer_under_cpu_bf16_autocast_matches_float32():
    torch.manual_seed(0)
    x = torch.randn(8, 50)
    for layout in ("mps", "ttm"):
        tt = TTLinear((5, 10), (10, 20), 8, layout)
        with torch.no_grad():
            full = tt(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                half = tt(x).float()  # float32 after the bias add, bf16 contractions before it
        assert not torch.equal(half, full)  # autocast did change the arithmetic
        torch.testing.assert_close(half, full, rtol=2e-2, atol=2e-2)


def test_bf16_mixed_on_the_cpu_is_autocast_not_a_silent_32_bit(tmp_path):
    cli = fit.main(["--config", GPT_YAML, *TINY_GPT, "--trainer.precision", "bf16-mixed",
                    "--trainer.accelerator", "auto", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                    "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                    "--data.init_args.tokens.cache_dir", str(tmp_path / "cache")])
    trainer = cli.trainer
    assert trainer.precision == "bf16-mixed" and trainer.precision_plugin.device == "cpu"
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


# ---- logging, data, start-up -----------------------------------------------------------------
def test_train_loss_is_logged_on_the_interval_and_at_the_last_step(tmp_path):
    fit.main(["--config", GPT_YAML, *TINY_GPT, "--trainer.max_steps", "7",
              "--trainer.log_every_n_steps", "3", "--trainer.val_check_interval", "7",
              "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
              "--trainer.logger.save_dir", str(tmp_path / "run"),
              "--data.init_args.tokens.cache_dir", str(tmp_path / "cache")])
    (path,) = (tmp_path / "run").glob("**/metrics.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["train/loss"]] == [2, 5, 6]
    assert [int(r["step"]) for r in rows if r["lr"]] == [2, 5, 6]


def test_batches_are_pinned_only_for_a_cuda_device():
    assert pin_memory(None) is False
    trainer = fit.L.Trainer(accelerator="cpu", devices=1, logger=False)
    assert pin_memory(trainer) is False


def test_only_a_cli_process_freezes_the_garbage_collector():
    assert runs.RunStarted().freeze_gc is False
    trainer = fit.L.Trainer(accelerator="cpu", devices=1, logger=False)
    started = runs.RunStarted(freeze_gc=True)
    try:
        started.on_train_start(trainer, None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_help_imports_neither_wandb_nor_tensorly_nor_datasets():
    code = ("import sys\nfrom succu import fit\ntry:\n    fit.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('wandb', 'tensorly', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"


def test_vs_nanogpt_without_a_checkout_is_one_line_and_nonzero():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "vs_nanogpt.py")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no nanoGPT checkout given")
