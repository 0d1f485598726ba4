"""A fit whose loss turns non-finite stops with one line; no checkpoint ever holds non-finite weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.safety import FiniteTraining
from succu import fit
from succu.checkpoint_files import read_checkpoint
from succu.errors import NonFiniteError
from tests.refusals import refused

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SUCCULM = str(CONFIGS / "succulm.yaml")
TINY = ["--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.logger", "false", "--trainer.limit_val_batches", "1", "--trainer.callbacks", "[]"]


class PoisonAt(L.Callback):
    """Make one weight NaN before training step `step` runs (a divergence at a known step)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step - 1:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class PoisonAfter(L.Callback):
    """Make one weight NaN after the update of step `step` (its loss was still finite)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUCCU_DEBUG", raising=False)


def finite(path: Path) -> bool:
    state = read_checkpoint(path)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_a_diverging_learning_rate_stops_at_its_first_step_with_one_line(capsys, tmp_path):
    line = refused(capsys, fit.main, ["--config", SUCCULM, *TINY, "--trainer.max_steps", "40",
                              "--trainer.val_check_interval", "20", "--model.init_args.warmup_steps", "0",
                              "--model.init_args.optimizer.init_args.lr", "1e6",
                              "--trainer.default_root_dir", str(tmp_path / "run")])
    assert "training stopped at step" in line and "non-finite" in line and "learning rate" in line
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # nothing of the diverged weights is kept


def test_the_checkpoints_keep_the_last_finite_step_and_last_resumes_from_it(capsys, tmp_path):
    run = tmp_path / "run"
    args = ["--config", SUCCULM, *TINY, "--trainer.val_check_interval", "5",
            "--trainer.default_root_dir", str(run)]
    poison = '[{"class_path": "tests.test_finite.PoisonAt", "init_args": {"step": 8}}]'
    line = refused(capsys, fit.main, [*args, "--trainer.max_steps", "20", "--trainer.callbacks", poison])
    assert "training stopped at step 8:" in line
    (last,) = run.rglob("last.ckpt")
    assert read_checkpoint(last)["global_step"] == 5 and finite(last)
    cli = fit.main([*args, "--trainer.max_steps", "7", "--ckpt_path", "last"])
    assert cli.trainer.global_step == 7  # resumed from step 5, the last finite one


def test_weights_that_turn_non_finite_after_a_finite_loss_stop_before_sampling(capsys, tmp_path):
    run = tmp_path / "run"
    callbacks = ('[{"class_path": "tests.test_finite.PoisonAfter", "init_args": {"step": 6}}, '
                 '{"class_path": "callbacks.generations.GenerationTable", "init_args": {"max_new_tokens": 4}}]')
    line = refused(capsys, fit.main, ["--config", SUCCULM, *TINY, "--trainer.max_steps", "20",
                              "--trainer.val_check_interval", "3", "--trainer.callbacks", callbacks,
                              "--trainer.default_root_dir", str(run)])
    assert line.startswith("error: training stopped at step 6: 1 weight tensors hold non-finite values")
    (last,) = run.rglob("last.ckpt")
    assert read_checkpoint(last)["global_step"] == 3 and finite(last)


def test_a_checkpoint_of_non_finite_weights_is_refused():
    trainer = L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False)
    state = {"state_dict": {"w": torch.tensor([1.0, float("inf")]), "steps": torch.tensor([3])}}
    with pytest.raises(NonFiniteError, match=r"refused to write a checkpoint at step 0: 1 weight tensors hold non-finite values \(w\)"):
        FiniteTraining().on_save_checkpoint(trainer, None, state)
    FiniteTraining().on_save_checkpoint(trainer, None, {"state_dict": {"w": torch.ones(2)}})


def test_every_tool_refuses_a_checkpoint_of_non_finite_weights(tmp_path, capsys):
    from succu import generate

    fit.main(["--config", SUCCULM, *TINY, "--trainer.max_steps", "2", "--trainer.default_root_dir",
              str(tmp_path / "run")])
    (good,) = (tmp_path / "run").rglob("last.ckpt")
    ckpt = torch.load(good, weights_only=True)
    next(iter(v for v in ckpt["state_dict"].values() if v.is_floating_point())).view(-1)[0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.ckpt")
    with pytest.raises(SystemExit) as exc:
        generate.main(["--ckpt", str(tmp_path / "nan.ckpt"), "--prompt", "is ruby a boy?"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "holds non-finite weights" in err and len(err.strip().splitlines()) == 1
    line = refused(capsys, fit.main, ["--config", SUCCULM, *TINY, "--trainer.max_steps", "3",
                              "--ckpt_path", str(tmp_path / "nan.ckpt")])
    assert "holds non-finite weights" in line
