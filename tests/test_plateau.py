"""PlateauStop: the fit ends at the first validation whose loss improved by less than the given
fraction over the last `window` steps; the history survives a checkpoint."""

import lightning as L
import pytest
import torch

from callbacks.plateau import PlateauStop
from datamodules.shakespeare import ShakespeareDataModule
from datamodules.tokens import Tokens
from datamodules.windows import Windows
from succu.modules.gpt import GPTModule
from tests.tiny import tiny_module


def fit(tmp_path, lr: float, window: int, steps: int = 60, rule: float = 0.01):
    dm = ShakespeareDataModule(windows=Windows(block_size=8, batch_size=4, val_windows=8), tokens=Tokens(cache_dir=str(tmp_path / "cache")))
    module = tiny_module(GPTModule, vocab_size=dm.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16,
                         warmup_steps=0, min_lr_ratio=1.0, optimizer=lambda p: torch.optim.AdamW(p, lr=lr))
    stop = PlateauStop(window=window, min_improvement=rule)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, val_check_interval=5,
                        num_sanity_val_steps=0, callbacks=[stop],
                        enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    return trainer, stop


def test_a_flat_loss_stops_one_window_after_the_first_validation(tmp_path):
    trainer, stop = fit(tmp_path, lr=0.0, window=10)  # lr 0: the val loss never moves
    assert [s for s, _ in stop.history] == [5, 10, 15]  # 15 - 10 = 5: the first comparable pair
    assert stop.plateau_step == 15 and trainer.global_step == 15


def test_a_falling_loss_runs_on_and_the_rule_is_relative(tmp_path):
    trainer, stop = fit(tmp_path, lr=3e-3, window=10, steps=30, rule=0.0001)
    values = [v for _, v in stop.history]
    assert values[-1] < values[0] and stop.plateau_step is None and trainer.global_step == 30
    # The same curve under a rule that asks for more than it improved: it stops where that shows.
    rule = next(r for r in (0.9, 0.5) if all(a - b < r * a for a, b in zip(values, values[2:])))
    _, strict = fit(tmp_path, lr=3e-3, window=10, steps=30, rule=rule)
    assert strict.plateau_step == 15


def test_history_round_trips_and_arguments_are_checked(tmp_path):
    _, stop = fit(tmp_path, lr=0.0, window=10)
    other = PlateauStop(window=10)
    other.load_state_dict(stop.state_dict())
    assert other.history == stop.history and other.plateau_step == 15
    with pytest.raises(ValueError, match="window must be at least 1 step, got 0"):
        PlateauStop(window=0)
    with pytest.raises(ValueError, match=r"min_improvement must be in \[0, 1\), got 1.5"):
        PlateauStop(min_improvement=1.5)
