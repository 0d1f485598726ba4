"""Every shipped YAML in configs/ parses and fits one batch (`--trainer.fast_dev_run=1`): each
experiment alone, and each write-up-size overlay in configs/full/ over the experiment of its name
(the cluster overlays: tests/test_distributed.py). A setting every config shares is stated once
in code: no experiment restates it."""

from pathlib import Path

import pytest
import torch

from succu import fit

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
# Write-up-size overlays run one real 64 x 256 step: tens of seconds each on one CPU thread.
FULL = sorted((CONFIG_DIR / "full").glob("*.yaml"))
PARAMS = [*([p] for p in CONFIGS),
          *(pytest.param([CONFIG_DIR / p.name, p], marks=pytest.mark.slow, id=f"full/{p.stem}") for p in FULL)]


def test_there_are_configs():
    assert any(p.name == "succulm.yaml" for p in CONFIGS)


def stage1_embeddings(folder: Path) -> list[str]:
    """What configs/succulm_stage1.yaml leaves for stage 2 (fast_dev_run writes no file): one
    vector per word of the shared vocabulary, at the model's width."""
    from datamodules.succulent import SuccuPairsDataModule
    from succu.embeddings import write_embeddings_json
    from succu.models.succulm import SuccuLMConfig

    tokenizer = SuccuPairsDataModule().tokenizer
    width = SuccuLMConfig(profile="upper_middle").resolved().n_embd
    write_embeddings_json(folder / "runs/succulm_stage1/succulm_embeddings.json", tokenizer,
                          torch.randn(tokenizer.vocab_size, width))
    return []


def own_text(folder: Path) -> list[str]:
    """What configs/gpt_text.yaml asks of its user: a text of theirs, given on the command line."""
    path = folder / "my.txt"
    path.write_text("".join(f"Line {i}: the cat sat on the mat, {i * i} times.\n" for i in range(400)))
    return ["--data.init_args.data_path", str(path)]


# Configs that read what another config's run writes, or a user's file: make it first (and name it).
PREPARE = {"succulm_stage2": stage1_embeddings, "gpt_text": own_text}


@pytest.mark.parametrize("configs", PARAMS, ids=lambda c: c[-1].stem)
def test_config_runs_fast_dev_run(configs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given = [arg for config in configs for arg in ("--config", str(config))]
    if configs[0].stem in PREPARE:
        given += PREPARE[configs[0].stem](tmp_path)
    cli = fit.main([*given, "--trainer.fast_dev_run", "1",
                    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1
    assert cli.model.model.cfg.vocab_size == cli.datamodule.vocab_size


def test_every_overlay_has_its_base():
    assert FULL and all((CONFIG_DIR / p.name).is_file() for p in FULL)


@pytest.mark.parametrize("config", [*CONFIGS, *FULL], ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_shared_settings_are_stated_once_in_code(config):
    """The optimizer block and the trainer settings every run shares are defaults in code
    (succu.optim.AdamW, succu.fit.TRAINER_DEFAULTS); a config states only what differs."""
    text = config.read_text()
    assert "torch.optim.AdamW" not in text and "check_val_every_n_epoch" not in text
    assert "accelerator: auto" not in text and "devices: 1\n" not in text
