"""Every shipped YAML in configs/ parses and fits one batch (`--trainer.fast_dev_run=1`)."""

from pathlib import Path

import pytest

from succu import fit

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
# Full-size configs run one real 64 x 256 step: tens of seconds each on one CPU thread.
PARAMS = [pytest.param(p, marks=pytest.mark.slow) if p.stem.endswith("_full") else p for p in CONFIGS]


def test_there_are_configs():
    assert any(p.name == "succulm.yaml" for p in CONFIGS)


@pytest.mark.parametrize("config", PARAMS, ids=lambda p: p.stem)
def test_config_runs_fast_dev_run(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = fit.main(["--config", str(config), "--trainer.fast_dev_run", "1",
                    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1
    assert cli.model.model.cfg.vocab_size == cli.datamodule.vocab_size
