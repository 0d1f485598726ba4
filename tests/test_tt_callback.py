"""TensorTrainCompression end to end on a tiny SuccuLM: compress, log, save, reload, resume."""

from pathlib import Path

import pytest
import torch
import yaml

from callbacks.sophia_trap import SophiaTrapDetection
from callbacks.tensor_train import TensorTrainCompression
from succu import fit, sweep
from succu.checkpoint import load_module
from succu.nn.tt import TTLinear

torch.set_num_threads(1)
TT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "succulm_tt.yaml"
TINY = ["--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.limit_val_batches", "2"]


def write_config(tmp_path: Path, tt_args: dict, trap_args: dict) -> str:
    """configs/succulm_tt.yaml with the callbacks' arguments replaced, checkpoints every validation."""
    config = yaml.safe_load(TT_CONFIG.read_text())
    config["trainer"]["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"save_last": True}},  # no monitor: last.ckpt follows every validation
        {"class_path": "callbacks.tensor_train.TensorTrainCompression", "init_args": tt_args},
        {"class_path": "callbacks.sophia_trap.SophiaTrapDetection", "init_args": trap_args},
    ]
    path = tmp_path / "tt.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def callback(cli, kind):
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, kind))


@pytest.fixture(scope="module")
def compressed_at_fit_end(tmp_path_factory):
    root = tmp_path_factory.mktemp("tt_end")
    config = write_config(
        root, {"blocks": [0], "bond_dims": 3, "finetune_epochs": 1, "finetune_lr": 1e-3},
        {"every_n_validations": 1, "seeds": [0], "samples": 1})
    cli = fit.main(["--config", config, *TINY, "--trainer.max_steps", "4",
                    "--trainer.val_check_interval", "2", "--trainer.default_root_dir", str(root)])
    return cli, root


def test_fit_end_compression_logs_and_swaps(compressed_at_fit_end):
    cli, _ = compressed_at_fit_end
    tt_cb = callback(cli, TensorTrainCompression)
    ffn = cli.model.model.blocks[0].ffn
    assert isinstance(ffn[0], TTLinear) and isinstance(ffn[2], TTLinear)
    assert ffn[0].in_modes == (4, 8) and ffn[0].bond_dims == [4, 3, 8]  # 32 -> 4 x 8, auto
    r = tt_cb.results
    assert r["tt/params_before"] - r["tt/params_after"] == (
        r["tt/ffn_params_before"] - r["tt/ffn_params_after"]) > 0
    assert 0 < r["tt/rel_error"] < 1 and r["tt/compression_ratio"] > 1
    for key in ("tt/val_loss_before", "tt/val_loss_after", "tt/val_loss_finetuned"):
        assert r[key] > 0 and key in cli.trainer.callback_metrics
    # the trap was probed at validations and after compression and fine-tuning
    trap = callback(cli, SophiaTrapDetection)
    assert trap.validations == 2 and trap.last["tag"].endswith("finetuned")
    assert {"trap/hidden_rate", "trap/special_rate", "trap/qa_exact"} <= set(trap.last["metrics"])


def test_compressed_checkpoint_loads_back_and_generates(compressed_at_fit_end):
    cli, _ = compressed_at_fit_end
    path = callback(cli, TensorTrainCompression).saved_path
    assert Path(path).name == "tt.ckpt"
    loaded = load_module(path)
    assert isinstance(loaded.model.blocks[0].ffn[2], TTLinear)
    assert not isinstance(loaded.model.blocks[0].ffn[0], torch.nn.Linear)
    ids = torch.tensor([loaded.prompt_ids("is ruby a boy?")])
    torch.testing.assert_close(loaded(ids), cli.model.eval().cpu()(ids), rtol=0, atol=0)
    assert isinstance(loaded.complete(["is ruby a boy?"], greedy=True)[0], str)


def test_compress_at_epoch_then_resume(tmp_path):
    config = write_config(tmp_path, {"blocks": [0], "bond_dims": 2, "at_epoch": 1},
                          {"every_n_validations": 0, "qa": False})
    common = ["--config", config, *TINY, "--trainer.limit_train_batches", "3",
              "--trainer.val_check_interval", "3", "--trainer.default_root_dir", str(tmp_path)]
    cli = fit.main([*common, "--trainer.max_steps", "6"])
    assert callback(cli, TensorTrainCompression).compressed
    assert isinstance(cli.model.model.blocks[0].ffn[0], TTLinear)
    # the rebuilt optimizer trains the cores
    assert any(p is cli.model.model.blocks[0].ffn[0].cores[1]
               for g in cli.trainer.optimizers[0].param_groups for p in g["params"])
    last = cli.trainer.checkpoint_callback.last_model_path
    resumed = fit.main([*common, "--trainer.max_steps", "9", "--ckpt_path", last])
    assert resumed.trainer.global_step == 9
    tt = resumed.model.model.blocks[0].ffn[0]
    assert isinstance(tt, TTLinear) and tt.bond_dims == [4, 2, 8]
    assert callback(resumed, TensorTrainCompression).compressed  # not compressed twice


def test_sweep_cli_writes_its_tables(compressed_at_fit_end, tmp_path, monkeypatch, capsys):
    from succu.progress import progress

    monkeypatch.setitem(progress.__kwdefaults__, "every", 0.0)  # a line per cell in a pipe
    cli, root = compressed_at_fit_end
    ckpt = str(Path(root) / "checkpoints" / "last.ckpt")
    rows = sweep.main(["tt", "--ckpt", ckpt, "--layers", "0", "--bond_dims", "2,[3]",
                       "--seeds", "0", "--samples", "1", "--out", str(tmp_path)])
    assert [r["bond_dims"] for r in rows] == ["-", "2", "3"]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tt sweep: ")]
    assert [line.split(" in ")[0] for line in lines] == ["tt sweep: 1/2", "tt sweep: 2/2", "tt sweep: 2/2"]
    assert rows[1]["params"] >= rows[1]["lr"]["params"] and len(rows[1]["lr"]["rank"]) == 2
    for name in ("tt_sweep.csv", "tt_sweep.md", "tt_sweep.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_sweep_clamps_impossible_bonds_and_refuses_zero_samples(compressed_at_fit_end, tmp_path,
                                                                 capsys):
    cli, root = compressed_at_fit_end
    ckpt = str(Path(root) / "checkpoints" / "last.ckpt")
    full = min(load_module(ckpt).model.blocks[0].ffn[0].weight.shape)  # dense in last.ckpt
    rows = sweep.main(["tt", "--ckpt", ckpt, "--layers", "0", "--bond_dims", "100000",
                       "--seeds", "0", "--samples", "1", "--no_baseline", "--out", str(tmp_path)])
    assert rows[1]["bond_dims"] == str(full) and rows[1]["clamped_from"] == "100000"
    assert f"{full} (clamped from 100000)" in (tmp_path / "tt_sweep.md").read_text()
    with pytest.raises(SystemExit) as exc:
        sweep.main(["tt", "--ckpt", ckpt, "--layers", "0", "--samples", "0",
                    "--out", str(tmp_path / "zero")])
    assert exc.value.code == 2
    assert "--samples must be at least 1" in capsys.readouterr().err


def test_lightning_resumes_from_the_compressed_checkpoint(compressed_at_fit_end):
    cli, root = compressed_at_fit_end
    path = callback(cli, TensorTrainCompression).saved_path
    resumed = fit.main(["--config", str(Path(root) / "tt.yaml"), *TINY, "--trainer.max_steps", "6",
                        "--trainer.val_check_interval", "2", "--trainer.default_root_dir",
                        str(Path(root) / "resumed"), "--ckpt_path", path])
    assert resumed.trainer.global_step == 6
    assert isinstance(resumed.model.model.blocks[0].ffn[0], TTLinear)
    assert callback(resumed, TensorTrainCompression).saved_path is None  # not compressed again


def test_sweep_experiments_option_runs_with_the_meter(compressed_at_fit_end, tmp_path):
    """--experiments: explicit layer@bond cells (a per-block list included), beside each its
    low-rank baseline, with the grammar and fact meter's rates in the rows and the table."""
    cli, root = compressed_at_fit_end
    ckpt = str(Path(root) / "checkpoints" / "last.ckpt")
    rows = sweep.main(["tt", "--ckpt", ckpt, "--experiments", "0@2;0@[3]", "--seeds", "0,1",
                       "--samples", "1", "--out", str(tmp_path)])
    assert [(r["layers"], r["bond_dims"]) for r in rows] == [("-", "-"), ("0", "2"), ("0", "3")]
    for row in rows[1:]:
        for res in (row, row["lr"]):
            assert 0.0 <= res["grammar_rate"] <= 1.0 and 0.0 <= res["oot_rate"] <= 1.0
            assert "grammar_rate_std" in res and "false_fact_rate" in res
    table = (tmp_path / "tt_sweep.md").read_text()
    assert "grammar TT / LR" in table and "out-of-template TT / LR" in table
    assert "grammar_rate" in (tmp_path / "tt_sweep.csv").read_text().splitlines()[0]
