"""Every shipped YAML in configs/ parses and fits one batch (`--trainer.fast_dev_run=1`)."""

from pathlib import Path

import pytest
import torch

from succu import fit

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
# Full-size configs run one real 64 x 256 step: tens of seconds each on one CPU thread.
PARAMS = [pytest.param(p, marks=pytest.mark.slow) if p.stem.endswith("_full") else p for p in CONFIGS]


def test_there_are_configs():
    assert any(p.name == "succulm.yaml" for p in CONFIGS)


def stage1_embeddings(folder: Path) -> None:
    """What configs/succulm_stage1.yaml leaves for stage 2 (fast_dev_run writes no file): one
    vector per word of the shared vocabulary, at the model's width."""
    from datamodules.succulent import SuccuPairsDataModule
    from succu.embeddings import write_embeddings_json
    from succu.models.succulm import SuccuLMConfig

    tokenizer = SuccuPairsDataModule().tokenizer
    width = SuccuLMConfig(profile="upper_middle").resolved().n_embd
    write_embeddings_json(folder / "runs/succulm_stage1/succulm_embeddings.json", tokenizer,
                          torch.randn(tokenizer.vocab_size, width))


# Configs that read what another config's run writes: make that file first.
PREPARE = {"succulm_stage2": stage1_embeddings}


@pytest.mark.parametrize("config", PARAMS, ids=lambda p: p.stem)
def test_config_runs_fast_dev_run(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if config.stem in PREPARE:
        PREPARE[config.stem](tmp_path)
    cli = fit.main(["--config", str(config), "--trainer.fast_dev_run", "1",
                    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1
    assert cli.model.model.cfg.vocab_size == cli.datamodule.vocab_size
