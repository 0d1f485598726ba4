"""`python -m succu.fit` and `python -m succu.generate`: links, overrides, checkpoints, bad input."""

import json
from pathlib import Path

import pytest
import torch

from succu import fit, generate
from succu.checkpoint import load_module
from succu.checkpoint_files import CheckpointError, read_checkpoint
from succu.runs import AtomicCheckpointIO

SUCCULM = str(Path(__file__).resolve().parents[1] / "configs" / "succulm.yaml")
TINY = ["--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8"]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run directories land in the test's own folder


def error_line(stderr: str) -> str:
    """The one `error:` line (stderr may also carry library warnings)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def run_fit(*extra: str):
    return fit.main(["--config", SUCCULM, *TINY, *extra])


def test_default_args_imply_fit_and_the_default_config(monkeypatch):
    monkeypatch.chdir(Path(SUCCULM).parents[1])  # the default config is found from a checkout
    assert fit.default_args([]) == ["fit", "--config", str(fit.DEFAULT_CONFIG)]
    assert fit.default_args(["--config", "x.yaml"]) == ["fit", "--config", "x.yaml"]
    assert fit.default_args(["validate", "--config", "x.yaml"])[0] == "validate"
    assert fit.default_args(["--trainer.max_steps", "3"]) == [
        "fit", "--config", str(fit.DEFAULT_CONFIG), "--trainer.max_steps", "3"]
    assert fit.default_args(["--help"]) == ["--help"]
    assert fit.DEFAULT_CONFIG.is_file()


def test_data_sizes_are_linked_into_the_model():
    cli = fit.SuccuCLI(
        fit.LanguageModule, fit.L.LightningDataModule, subclass_mode_model=True,
        subclass_mode_data=True, auto_configure_optimizers=False, run=False,
        args=["--config", SUCCULM, *TINY, "--trainer.logger", "false"],
    )
    dm, cfg = cli.datamodule, cli.model.model.cfg
    assert cfg.vocab_size == dm.vocab_size == len(dm.tokenizer) and cfg.vocab_size > 100
    assert cfg.block_size == dm.block_size
    # The YAML's 0/32 defaults were really replaced, not left in place.
    assert cli.model.hparams.model["vocab_size"] == dm.vocab_size


def test_dotted_overrides_reach_the_model(tmp_path):
    cli = run_fit("--trainer.fast_dev_run", "1", "--model.init_args.model.n_embd", "16",
                  "--model.init_args.model.n_head", "4", "--model.init_args.optimizer.init_args.lr", "0.01")
    assert cli.model.model.cfg.n_embd == 16 and cli.model.model.cfg.n_head == 4
    assert cli.trainer.optimizers[0].defaults["lr"] == 0.01


def test_unknown_config_key_is_named(capsys):
    with pytest.raises(SystemExit) as exc:
        run_fit("--model.init_args.n_layers", "3")
    assert exc.value.code != 0
    assert "n_layers" in capsys.readouterr().err


def test_missing_embeddings_file_is_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        run_fit("--trainer.fast_dev_run", "1", "--model.init_args.init_embeddings", "missing.json")
    err = error_line(capsys.readouterr().err)
    assert exc.value.code == 2 and "missing.json" in err


def test_embeddings_of_wrong_width_are_one_line_error(tmp_path, capsys):
    path = tmp_path / "emb.json"
    path.write_text(json.dumps({"ruby": [0.1] * 7, "winy": [0.2] * 7}))
    with pytest.raises(SystemExit):
        run_fit("--trainer.fast_dev_run", "1", "--model.init_args.init_embeddings", str(path))
    err = error_line(capsys.readouterr().err)
    assert "width" in err and "32" in err


def test_embeddings_file_initialises_rows(tmp_path):
    vec = [0.5] * 32
    path = tmp_path / "emb.json"
    path.write_text(json.dumps({"ruby": vec}))
    cli = run_fit("--trainer.fast_dev_run", "1", "--trainer.max_steps", "1",
                  "--model.init_args.init_embeddings", str(path),
                  "--model.init_args.optimizer.init_args.lr", "0.0")
    module = cli.model
    row = module.model.embed.weight[module.tokenizer.stoi["ruby"]]
    torch.testing.assert_close(row, torch.tensor(vec))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny SuccuLM fitted for a few steps, with its checkpoint on disk."""
    root = tmp_path_factory.mktemp("run")
    cli = fit.main([
        "--config", SUCCULM, *TINY, "--trainer.max_steps", "6", "--trainer.val_check_interval", "3",
        "--trainer.limit_val_batches", "2", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
    ])
    return cli, cli.trainer.checkpoint_callback.best_model_path


def test_checkpoint_round_trip_gives_identical_logits(fitted):
    cli, path = fitted
    assert Path(path).name == "last.ckpt"
    loaded = load_module(path)
    assert loaded.tokenizer == cli.datamodule.tokenizer
    ids = torch.tensor([loaded.prompt_ids("is ruby a boy?")])
    original = cli.model.eval().cpu()
    torch.testing.assert_close(loaded(ids), original(ids), rtol=0, atol=0)


def test_generate_cli_talks_to_a_checkpoint(fitted, capsys):
    _, path = fitted
    out = generate.main(["--ckpt", path, "--prompt", "is ruby a boy?", "--prompt", "zebra?",
                         "--max_new_tokens", "5", "--seed", "3"])
    again = generate.main(["--ckpt", path, "--prompt", "is ruby a boy?", "--prompt", "zebra?",
                           "--max_new_tokens", "5", "--seed", "3"])
    assert out == again and len(out) == 2
    assert "is ruby a boy? ->" in capsys.readouterr().out
    nucleus = ["--ckpt", path, "--prompt", "is ruby a boy?", "--max_new_tokens", "5", "--seed", "3"]
    assert generate.main([*nucleus, "--top_p", "1"]) == out[:1]  # p = 1 cuts nothing
    assert generate.main([*nucleus, "--top_p", "0.5"]) == generate.main([*nucleus, "--top_p", "0.5"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temperature", "0"], "temperature must be > 0, got 0.0"),
        (["--temperature", "-0.5"], "temperature must be > 0, got -0.5"),
        (["--max_new_tokens", "-1"], "max_new_tokens must be >= 0, got -1"),
        (["--top_k", "0"], "top_k must be a positive integer"),
        (["--top_p", "0"], "top_p must be in (0, 1] (1: no nucleus cut), got 0.0"),
        (["--top_p", "1.5"], "top_p must be in (0, 1] (1: no nucleus cut), got 1.5"),
        (["--stop", "key"], "--stop key needs a noise-embedding LM (NoiseLM, NoiseTransformerLM)"),
    ],
)
def test_generate_rejects_bad_sampling(fitted, capsys, flags, message):
    _, path = fitted
    with pytest.raises(SystemExit) as exc:
        generate.main(["--ckpt", path, "--prompt", "hi", *flags])
    assert exc.value.code == 2 and message in error_line(capsys.readouterr().err)


def test_bad_checkpoints_give_one_line_errors(tmp_path, fitted, capsys):
    _, path = fitted
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(Path(path).read_bytes()[:2000])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 1}, foreign)
    cases = [(tmp_path / "nope.ckpt", "checkpoint not found"), (garbage, "corrupt checkpoint"),
             (truncated, "corrupt checkpoint"), (foreign, "is not a succu checkpoint")]
    for bad, message in cases:
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(bad)
        with pytest.raises(SystemExit):
            generate.main(["--ckpt", str(bad), "--prompt", "hi"])
        assert message in error_line(capsys.readouterr().err)


def test_atomic_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def dies_midway(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the run is interrupted in the middle of writing

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=False) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_print_config_shows_linked_model(capsys):
    with pytest.raises(SystemExit) as exc:
        fit.main(["--config", SUCCULM, "--print_config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "SuccuLMModule" in out and "SuccuPairsDataModule" in out


def test_diagnostics_log_under_diag_and_write_attention_png(tmp_path):
    cli = run_fit("--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                  "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
                  "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                  "--trainer.logger.save_dir", str(tmp_path),
                  "--trainer.callbacks+=callbacks.diagnostics.Diagnostics")
    metrics = cli.trainer.logged_metrics
    n_layer = cli.model.model.cfg.n_layer
    for i in range(n_layer):
        for name in ("resid_norm", "ffn_norm", "ffn_cos"):
            assert f"diag/block{i}/{name}" in metrics
    assert -1 <= float(metrics[f"diag/block{n_layer - 1}/ffn_cos"]) <= 1
    pngs = list(Path(cli.trainer.log_dir).glob("diag/attention_*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:4] == b"\x89PNG"


def test_missing_data_folder_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_fit("--trainer.fast_dev_run", "1", "--data.init_args.data_dir", str(tmp_path / "nowhere"))
    err = error_line(capsys.readouterr().err)
    assert exc.value.code == 2 and "nowhere" in err


def test_missing_corpus_file_is_one_line_error(tmp_path, capsys):
    config = str(Path(__file__).resolve().parents[1] / "configs" / "gpt_shakespeare_char.yaml")
    with pytest.raises(SystemExit) as exc:
        fit.main(["--config", config, "--trainer.fast_dev_run", "1",
                  "--data.init_args.data_path", str(tmp_path / "missing.txt")])
    err = error_line(capsys.readouterr().err)
    assert exc.value.code == 2 and "missing.txt" in err


def test_an_error_while_training_keeps_its_traceback(monkeypatch):
    """Bad configuration is one line (exit 2); a bug once batches run is raised with its cause."""
    from succu.modules.succulm import SuccuLMModule

    def broken(self, batch, batch_idx):
        raise ValueError("a bug inside training_step")

    monkeypatch.setattr(SuccuLMModule, "training_step", broken)
    with pytest.raises(fit.TrainingError, match="fit failed while running") as err:
        run_fit("--trainer.max_steps", "2", "--trainer.logger", "false")
    assert isinstance(err.value.__cause__, ValueError)
    assert "inside training_step" in str(err.value.__cause__)


def test_composed_run_gets_the_shared_loggers_and_checkpoints(tmp_path):
    article = str(Path(SUCCULM).with_name("succulm_article.yaml"))  # names no checkpoints
    cli = fit.main(["--config", article, *TINY, "--trainer.max_steps", "1",
                    "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path / "r")])
    loggers = {type(logger).__name__: logger for logger in cli.trainer.loggers}
    assert set(loggers) == {"CSVLogger", "WandbLogger"}
    assert loggers["CSVLogger"].save_dir == str(tmp_path / "r")
    assert loggers["WandbLogger"]._wandb_init["name"] == "r"
    checkpoints = [cb for cb in cli.trainer.callbacks if isinstance(cb, fit.ModelCheckpoint)]
    assert [(cb.filename, cb.monitor) for cb in checkpoints] == [("last", None), ("best-{step}", "val/loss")]
    # A config that names its checkpoints keeps them: make fit's best is chosen on the dev QA.
    named = run_fit("--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
                    "--trainer.logger", "false")
    assert named.trainer.loggers == []
    checkpoints = [cb for cb in named.trainer.callbacks if isinstance(cb, fit.ModelCheckpoint)]
    assert [(cb.filename, cb.monitor) for cb in checkpoints] == [
        ("last", None), ("best-dev-{step}", "qa/dev_exact_match")]


def test_validating_a_checkpoint_on_other_data_is_refused(tmp_path, capsys):
    """The data must be the checkpoint's: its corpora (by their text fingerprints) and, for a
    checkpoint that records none, its tokenizer: another vocabulary would give meaningless numbers
    (same size) or a size-mismatch traceback (other size)."""
    configs = Path(SUCCULM).parent
    tiny = ["--model.init_args.model.n_layer", "1", "--model.init_args.model.n_embd", "16",
            "--model.init_args.model.n_head", "2", "--trainer.logger", "false",
            "--data.init_args.tokens.cache_dir", str(tmp_path / "cache")]
    cli = fit.main(["--config", str(configs / "gpt_shakespeare_char.yaml"), *tiny,
                    "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                    "--trainer.default_root_dir", str(tmp_path / "run")])
    ckpt = cli.trainer.checkpoint_callback.last_model_path or cli.trainer.checkpoint_callbacks[0].last_model_path
    with pytest.raises(SystemExit) as exc:
        fit.main(["validate", "--config", str(configs / "gpt_tinystories_char.yaml"), *tiny,
                  "--ckpt_path", ckpt])
    assert exc.value.code == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith(f"error: {ckpt} did not train on a corpus named tinystories (it trained on shakespeare)")
    older = tmp_path / "older.ckpt"  # no fingerprints: the tokenizer still tells
    state = torch.load(ckpt, weights_only=True)
    del state["succu"]["corpora"]
    torch.save(state, older)
    with pytest.raises(SystemExit) as exc:
        fit.main(["validate", "--config", str(configs / "gpt_tinystories_char.yaml"), *tiny,
                  "--ckpt_path", str(older)])
    assert exc.value.code == 2
    err = error_line(capsys.readouterr().err)
    assert "the checkpoint's tokenizer (char, 65 tokens) is not the data's" in err
