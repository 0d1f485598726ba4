"""`python -m succu.fit`: the LightningCLI of succu.

    python -m succu.fit                                   # fit configs/succulm.yaml, then talk
    python -m succu.fit --config configs/X.yaml           # fit is implied
    python -m succu.fit --config configs/X.yaml --trainer.max_steps 10 --model.init_args.dropout 0.1
    python -m succu.fit validate --config configs/X.yaml --ckpt_path runs/.../last.ckpt
    python -m succu.fit --config configs/X.yaml --print_config

Model and data are chosen in subclass mode (`class_path` + `init_args`); the datamodule's
`vocab_size` and `block_size` are linked into the model when both are instantiated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from succu.checkpoint import AtomicCheckpointIO, CheckpointError
from succu.modules.base import LanguageModule

SUBCOMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "succulm.yaml"


class SuccuCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for name in ("vocab_size", "block_size"):
            parser.link_arguments(
                "data", f"model.init_args.{name}", compute_fn=lambda dm, n=name: getattr(dm, n),
                apply_on="instantiate",
            )

    def instantiate_trainer(self, **kwargs):
        """Checkpoints are written atomically unless the config names its own CheckpointIO."""
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Talk to the freshly fitted model when its data has probe prompts (rank 0 only)."""
        smoke_test = bool(self.trainer.fast_dev_run)
        if self.trainer.is_global_zero and not smoke_test and hasattr(self.datamodule, "probe_prompts"):
            from succu.analysis.qa import report

            print(report(self.model, self.datamodule), flush=True)


def default_args(argv: list[str]) -> list[str]:
    """Fit is implied; without `--config`, fit configs/succulm.yaml (plus any overrides)."""
    if argv and argv[0] in ("-h", "--help", "--version"):
        return argv
    if not argv or argv[0] not in SUBCOMMANDS:
        argv = ["fit", *argv]
    # Overrides alone (`--trainer.max_steps 10`) apply to the default SuccuLM config.
    if argv[0] == "fit" and not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["fit", "--config", str(DEFAULT_CONFIG), *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> SuccuCLI | None:
    os.environ.setdefault("WANDB_MODE", "offline")  # never touch the network unless asked to
    args = default_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return SuccuCLI(
            LanguageModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        if os.environ.get("SUCCU_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
