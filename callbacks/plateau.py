"""PlateauStop: end a fit when the monitored validation loss has stopped falling.

The rule of the hypersurface study (studies/hypersurface.py), usable in any config: at a validation
at step s, with the value v(s) of `monitor` and the value v(s - window) recorded `window` steps
earlier (the latest validation at or before that step),

    stop when  v(s - window) - v(s) < min_improvement * v(s - window)

i.e. the loss improved by less than `min_improvement` (a fraction, 0.01 = 1%) over the last
`window` steps; a loss that rises stops too. Unlike EarlyStopping it compares against the value a
fixed number of steps back, not the best so far with a patience count, so "less than 1% over
1,000 steps" means exactly that whatever the validation interval. The step it stopped at is
`plateau_step` (None while training goes on); it and the history are kept in the checkpoint, so a
resumed fit goes on with them.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class PlateauStop(L.Callback):
    """Stop when `monitor` improved by less than `min_improvement` (relative) over `window` steps.

    Args:
        monitor: the validation metric, lower is better.
        window: steps between the two values compared.
        min_improvement: the relative improvement below which training stops (0.01 = 1%).
    """

    def __init__(self, monitor: str = "val/loss", window: int = 1000, min_improvement: float = 0.01):
        if window < 1:
            raise ValueError(f"window must be at least 1 step, got {window}")
        if not 0.0 <= min_improvement < 1.0:
            raise ValueError(f"min_improvement must be in [0, 1), got {min_improvement}")
        self.monitor = monitor
        self.window = window
        self.min_improvement = min_improvement
        self.history: list[tuple[int, float]] = []  # (step, value) at every validation
        self.plateau_step: int | None = None

    def value_before(self, step: int) -> float | None:
        """The value recorded at the latest validation at or before `step` (None: none yet)."""
        earlier = [v for s, v in self.history if s <= step]
        return earlier[-1] if earlier else None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        step, value = trainer.global_step, float(trainer.callback_metrics[self.monitor])
        if self.history and self.history[-1][0] == step:  # a second validation at one step
            return
        old = self.value_before(step - self.window)
        self.history.append((step, value))
        if old is not None and old - value < self.min_improvement * old:
            self.plateau_step = step
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "plateau_step": self.plateau_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(h) for h in state_dict["history"]]
        self.plateau_step = state_dict["plateau_step"]
