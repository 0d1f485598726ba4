"""One line for every bad input, through the one error path (succu.errors) that fit uses and
generate, sweep and evaluate can call: damaged checkpoints through `fit validate` and
`fit --ckpt_path`, empty or binary corpus and pair files, an output folder that cannot be
written, a missing CUDA device, sizes that cannot train. Each line names the file or key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from succu import errors, fit
from succu.devices import check_device
from succu.errors import TrainingError, exception_chain, run_cli, user_message
from succu.models.gated_gpt import GatedGPTConfig
from succu.models.gpt import GPTConfig
from succu.models.hypersurface import HypersurfaceConfig
from succu.models.noise_transformer import NoiseTransformerConfig
from succu.models.succulm import SuccuLMConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SUCCULM = str(CONFIGS / "succulm.yaml")
SHAKESPEARE = str(CONFIGS / "gpt_shakespeare_char.yaml")
TINY = ["--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUCCU_DEBUG", raising=False)


def one_error(capsys, *argv: str) -> str:
    """Run `python -m succu.fit argv`; it must exit 2 with exactly one `error:` line."""
    with pytest.raises(SystemExit) as exc:
        fit.main(list(argv))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A good tiny SuccuLM checkpoint and its truncated, garbage and foreign neighbours."""
    root = tmp_path_factory.mktemp("ckpts")
    fit.main(["--config", SUCCULM, *TINY, "--trainer.max_steps", "2", "--trainer.logger", "false",
              "--trainer.default_root_dir", str(root / "run")])
    (good,) = (root / "run").rglob("last.ckpt")
    (root / "truncated.ckpt").write_bytes(good.read_bytes()[:3000])
    (root / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    torch.save({"state_dict": {}, "epoch": 1}, root / "foreign.ckpt")
    return {"good": good, **{name: root / f"{name}.ckpt" for name in ("truncated", "garbage", "foreign")}}


@pytest.mark.parametrize("kind, message", [("truncated", "corrupt checkpoint"),
                                           ("garbage", "corrupt checkpoint"),
                                           ("foreign", "is not a succu checkpoint")])
@pytest.mark.parametrize("subcommand", ["validate", "fit"])
def test_bad_checkpoint_through_fit_is_one_line(checkpoints, capsys, kind, message, subcommand):
    path = checkpoints[kind]
    line = one_error(capsys, subcommand, "--config", SUCCULM, *TINY, "--trainer.logger", "false",
                     "--trainer.max_steps", "3", "--ckpt_path", str(path))
    assert message in line and str(path) in line


def test_corrupt_last_checkpoint_through_ckpt_path_last_is_one_line(checkpoints, tmp_path, capsys):
    """`--ckpt_path last` resolves at fit time; Lightning's own load goes through
    AtomicCheckpointIO, which reads like succu.checkpoint_files.read_checkpoint."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(checkpoints["truncated"].read_bytes())
    line = one_error(capsys, "--config", SUCCULM, *TINY, "--trainer.logger", "false",
                     "--trainer.max_steps", "3", "--trainer.default_root_dir", str(tmp_path / "run"),
                     "--ckpt_path", "last")
    assert "corrupt checkpoint" in line and "last.ckpt" in line


def test_a_good_checkpoint_still_validates(checkpoints):
    cli = fit.main(["validate", "--config", SUCCULM, *TINY, "--trainer.limit_val_batches", "1",
                    "--ckpt_path", str(checkpoints["good"])])
    assert "val/loss" in cli.trainer.callback_metrics


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"  \n\n ", "is empty"),
                                              (bytes(range(128, 256)) * 8, "is not UTF-8 text")])
def test_empty_or_binary_corpus_file_is_one_line_naming_it(tmp_path, capsys, content, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    line = one_error(capsys, "--config", SHAKESPEARE, "--trainer.fast_dev_run", "1",
                     "--data.init_args.data_path", str(corpus),
                     "--data.init_args.tokens.cache_dir", str(tmp_path / "cache"))
    assert message in line and str(corpus) in line and "data_path" in line


@pytest.mark.parametrize("content, message", [(b"", "not valid JSON"),
                                              (b"\xff\xfe\x00garbage\x80", "not valid JSON"),
                                              (b"[]", "holds no pairs"),
                                              (b'{"a": 1}', "expected a JSON list")])
def test_bad_succulent_pair_file_is_one_line_naming_it(tmp_path, capsys, content, message):
    """The project's message names the file; the raw decode error it replaced is not reported
    instead (user_message stops at a context suppressed with `from None`)."""
    from datamodules.succulent import SuccuPairsDataModule
    from datamodules.succulent_files import NORMAL_FILE, QA_FILE

    data = tmp_path / "pairs"
    SuccuPairsDataModule().save_reference_files(data)
    (data / NORMAL_FILE).write_bytes(content)
    line = one_error(capsys, "--config", SUCCULM, *TINY, "--trainer.fast_dev_run", "1",
                     "--data.init_args.data_dir", str(data))
    assert message in line and NORMAL_FILE in line and QA_FILE not in line


def test_empty_embeddings_file_is_one_line_naming_it(tmp_path, capsys):
    from datamodules.succulent import SuccuPairsDataModule
    from datamodules.succulent_files import EMBEDDINGS_FILE

    data = tmp_path / "pairs"
    SuccuPairsDataModule().save_reference_files(data)
    (data / EMBEDDINGS_FILE).write_bytes(b"")
    line = one_error(capsys, "--config", SUCCULM, *TINY, "--trainer.fast_dev_run", "1",
                     "--data.init_args.data_dir", str(data))
    assert "not valid JSON" in line and EMBEDDINGS_FILE in line


def unwritable_folders(tmp_path: Path) -> list[Path]:
    """Run folders that cannot be created: below a regular file, and (when not root, who may
    write anywhere) inside a read-only folder."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    folders = [blocker / "run"]
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        folders.append(locked / "run")
    return folders


def test_unwritable_output_folder_is_one_line_naming_it(tmp_path, capsys):
    for folder in unwritable_folders(tmp_path):
        line = one_error(capsys, "--config", SUCCULM, *TINY, "--trainer.max_steps", "1",
                         "--trainer.default_root_dir", str(folder))
        assert str(folder.parent) in line, line


def test_cuda_without_a_device_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    line = one_error(capsys, "--config", SUCCULM, *TINY, "--trainer.accelerator", "cuda")
    assert "accelerator=cuda" in line
    with pytest.raises(ValueError, match="--device cuda: this machine has 0 usable CUDA"):
        check_device("cuda")
    with pytest.raises(ValueError, match="is not a torch device"):
        check_device("gpu0")
    assert check_device("cpu") == "cpu"


@pytest.mark.parametrize("override, key", [
    (["--data.init_args.windows.block_size", "0"], "block_size"),
    (["--model.init_args.model.n_layer", "0"], "n_layer"),
])
def test_sizes_that_cannot_train_are_refused_before_training(capsys, override, key):
    """block_size 0 trained to nan with exit 0; n_layer 0 trained nothing."""
    config = SHAKESPEARE if key == "block_size" else SUCCULM
    extra = TINY if config == SUCCULM else []
    line = one_error(capsys, "--config", config, *extra, "--trainer.max_steps", "2",
                     "--trainer.logger", "false", *override)
    assert f"{key} must be at least 1, got 0" in line


@pytest.mark.parametrize("cls", [GPTConfig, GatedGPTConfig, HypersurfaceConfig,
                                 NoiseTransformerConfig, SuccuLMConfig])
@pytest.mark.parametrize("field", ["block_size", "n_layer", "n_head", "n_embd"])
def test_every_model_config_refuses_sizes_below_one(cls, field):
    cls()  # the defaults are fine
    with pytest.raises(ValueError, match=f"{field} must be at least 1, got 0"):
        cls(**{field: 0})


# ---- the shared path itself -------------------------------------------------------------------
def test_user_message_stops_at_a_suppressed_context():
    try:
        try:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        except ValueError:
            raise ValueError("pairs.json: not valid JSON; expected a list") from None
    except ValueError as err:
        assert len(exception_chain(err)) == 1
        assert user_message(err) == "pairs.json: not valid JSON; expected a list"


def test_user_message_names_the_file_of_an_os_error():
    err = PermissionError(13, "Permission denied", "/runs/x")
    assert user_message(err) == "/runs/x: Permission denied"
    assert user_message(RuntimeError("a bug")) is None


def test_run_cli_one_line_for_user_errors_traceback_for_the_rest(capsys, monkeypatch):
    def bad_input():
        raise FileNotFoundError("data.txt does not exist")

    with pytest.raises(SystemExit) as exc:
        run_cli(bad_input)
    assert exc.value.code == 2 and capsys.readouterr().err == "error: data.txt does not exist\n"
    assert run_cli(lambda: 7) == 7

    def bug():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_cli(bug)

    def while_training():
        try:
            raise ValueError("inside training_step")
        except ValueError as err:
            raise TrainingError("fit failed while running") from err

    with pytest.raises(TrainingError):
        run_cli(while_training)
    monkeypatch.setenv("SUCCU_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run_cli(bad_input)


def test_fail_prints_one_line_and_exits_2(capsys, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        errors.fail("--alpha 2 is outside [0, 1]\n(the dial)")
    assert exc.value.code == 2 and capsys.readouterr().err == "error: --alpha 2 is outside [0, 1] (the dial)\n"
    monkeypatch.setenv("SUCCU_DEBUG", "1")
    with pytest.raises(RuntimeError, match="outside"):
        errors.fail("--alpha 2 is outside [0, 1]")
