"""A checkpoint is data, not code; the network only when asked; `--ckpt_path last` only in the run's
own checkpoint folders.

Every hostile file below goes through the three tools that read checkpoints (`succu.generate`,
`succu.sweep alpha`, `succu.sweep tt`): it is refused with one `error:` line, or its planted paths
are ignored, and the marker file its payload would create never appears.
"""

import socket
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.corpora import Sources
from succu import export, fit, generate, runs, sweep
from succu.checkpoint import load_datamodule, load_module
from succu.checkpoint_files import CheckpointError
from succu.runs import AtomicCheckpointIO
from tests.paths import touch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.limit_val_batches", "2"]


def plant(marker: str) -> None:
    """What a hostile pickle runs when it is loaded with weights_only=False."""
    Path(marker).write_text("code from the checkpoint ran")


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return plant, (self.marker,)


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture(scope="module")
def succulm_ckpt(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("succulm")
    cli = fit.main(["--config", str(CONFIGS / "succulm.yaml"), *QUIET,
                    "--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8",
                    "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                    "--trainer.default_root_dir", str(root)])
    return cli.trainer.checkpoint_callback.best_model_path


@pytest.fixture(scope="module")
def gated_ckpt(tmp_path_factory, shared_data, cache) -> str:
    root = tmp_path_factory.mktemp("gated")
    cli = fit.main(["--config", str(CONFIGS / "abcgpt_char.yaml"), *QUIET,
                    "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                    "--model.init_args.model.n_layer", "1", "--model.init_args.model.n_embd", "16",
                    "--model.init_args.model.n_head", "2", "--data.init_args.windows.block_size", "16",
                    "--data.init_args.windows.val_windows", "8", "--data.init_args.tokens.cache_dir", cache,
                    "--trainer.default_root_dir", str(root)])
    return cli.trainer.checkpoint_callback.best_model_path


def rewrite(src: str, dst: Path, edit) -> str:
    """A copy of a real checkpoint with `edit(ckpt)` applied: what an attacker would hand out."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return str(dst)


def tool_args(tool: str, ckpt: str, out: Path) -> list[str]:
    if tool == "export":
        return ["--ckpt", ckpt, str(out)]
    if tool == "generate":
        return ["--ckpt", ckpt, "--prompt", "is ruby a boy?", "--max_new_tokens", "2"]
    if tool == "alpha":
        return ["alpha", "--ckpt", ckpt, "--alphas", "0,1", "--max_batches", "1", "--out", str(out)]
    return ["tt", "--ckpt", ckpt, "--layers", "0", "--bond_dims", "2", "--no_baseline",
            "--seeds", "0", "--samples", "1", "--out", str(out)]


def run_tool(tool: str, ckpt: str, out: Path):
    main = {"generate": generate.main, "export": export.main}.get(tool, sweep.main)
    return main(tool_args(tool, ckpt, out))


def refused(tool: str, ckpt: str, tmp_path: Path, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        run_tool(tool, ckpt, tmp_path / "out")
    assert exc.value.code == 2
    return error_line(capsys.readouterr().err)


TOOLS = ["generate", "export", "alpha", "tt"]


# ---- (1) a pickle payload ---------------------------------------------------------------------
@pytest.mark.parametrize("tool", TOOLS)
def test_a_pickle_payload_is_refused_and_never_runs(tool, succulm_ckpt, tmp_path, capsys):
    marker = tmp_path / "marker"
    hostile = rewrite(succulm_ckpt, tmp_path / "payload.ckpt",
                      lambda c: c["succu"].update(tokenizer=Payload(marker)))
    line = refused(tool, hostile, tmp_path, capsys)
    assert line == (f"error: refused {hostile}: it asks to run {plant.__module__}.plant while loading; "
                    "succu reads checkpoints as plain data only (torch.load weights_only=True)")
    assert not marker.exists()


def test_resuming_reads_plain_data_only_and_the_payload_is_live(succulm_ckpt, tmp_path):
    marker = tmp_path / "marker"
    hostile = rewrite(succulm_ckpt, tmp_path / "payload.ckpt", lambda c: c.update(extra=Payload(marker)))
    with pytest.raises(CheckpointError, match="asks to run"):  # Lightning's --ckpt_path: one line
        AtomicCheckpointIO().load_checkpoint(hostile)
    assert not marker.exists()
    torch.load(hostile, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()


# ---- (2) dotted-path payloads -----------------------------------------------------------------
@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("target", ["os.system", "lightning.pytorch.demos.boring_classes.BoringModel"])
def test_a_module_class_outside_the_allow_list_is_refused(tool, target, succulm_ckpt, tmp_path, capsys):
    marker = tmp_path / "marker"

    def edit(ckpt):
        ckpt["succu"]["module"] = target
        ckpt["hyper_parameters"] = {"command": f"touch {marker}", "model": {}}

    hostile = rewrite(succulm_ckpt, tmp_path / "dotted.ckpt", edit)
    line = refused(tool, hostile, tmp_path, capsys)
    assert f"{hostile} names module class {target!r}, which is not one of succu's" in line
    assert not marker.exists()


@pytest.mark.parametrize("tool", ["alpha", "tt"])
@pytest.mark.parametrize("target", ["os.system", "datamodules.text.CorpusSpec"])
def test_a_datamodule_class_outside_the_allow_list_is_refused(tool, target, succulm_ckpt, gated_ckpt,
                                                              tmp_path, capsys):
    marker = tmp_path / "marker"
    src = gated_ckpt if tool == "alpha" else succulm_ckpt
    hostile = rewrite(src, tmp_path / "dotted.ckpt", lambda c: c.update(datamodule_hyper_parameters={
        "_class_path": target, "command": f"touch {marker}"}))
    line = refused(tool, hostile, tmp_path, capsys)
    assert f"{hostile} names datamodule class {target!r}, which is not one of succu's" in line
    assert not marker.exists()


# ---- (3) planted paths ------------------------------------------------------------------------
def test_planted_data_and_cache_paths_are_ignored_by_the_alpha_sweep(gated_ckpt, tmp_path, monkeypatch):
    import datasets

    secret, planted_cache = tmp_path / "secret.txt", tmp_path / "planted_cache"
    secret.write_text("not for the sweep to read\n" * 100)

    def plant_paths(ckpt):
        hparams = ckpt["datamodule_hyper_parameters"]
        planted = dict(data_paths={"shakespeare": str(secret)}, data_dir=str(tmp_path), source="hub",
                       hub_ids={"tinystories": "https://example.invalid/stories.txt"})
        hparams["sources"].update(planted)  # in their settings groups
        hparams["tokens"].update(cache_dir=str(planted_cache))
        hparams.update(planted, cache_dir=str(planted_cache))  # and flat, outside the groups

    hostile = rewrite(gated_ckpt, tmp_path / "paths.ckpt", plant_paths)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub was touched"))
    dm = load_datamodule(hostile, load_module(hostile))
    assert dm.sources == Sources() and dm.tokens.cache_dir is None
    assert str(secret) not in dm.source_of("shakespeare").location
    user_cache = tmp_path / "user_cache"  # a path the user passes again is used
    rows = sweep.main([*tool_args("alpha", hostile, tmp_path / "out"), "--cache_dir", str(user_cache)])
    assert len(rows) == 2 and any(user_cache.rglob("meta.json"))
    assert not planted_cache.exists()


def test_a_planted_data_dir_is_ignored_by_the_tt_sweep(succulm_ckpt, tmp_path):
    planted = tmp_path / "planted"  # not even a folder: reading it would be an error
    hostile = rewrite(succulm_ckpt, tmp_path / "paths.ckpt",
                      lambda c: c["datamodule_hyper_parameters"].update(data_dir=str(planted)))
    rows = run_tool("tt", hostile, tmp_path / "out")
    assert len(rows) == 2 and (tmp_path / "out" / "tt_sweep.csv").is_file()


def test_a_planted_module_path_is_ignored_by_generate(succulm_ckpt, tmp_path):
    secret = tmp_path / "secret.json"
    hostile = rewrite(succulm_ckpt, tmp_path / "paths.ckpt",
                      lambda c: c["hyper_parameters"].update(init_embeddings=str(secret)))
    assert load_module(hostile).init_embeddings is None
    assert len(run_tool("generate", hostile, tmp_path)) == 1


# ---- network only when asked ------------------------------------------------------------------
@pytest.fixture
def online_without_corpora(tmp_path, monkeypatch):
    """No HF_*_OFFLINE, an empty data folder, and any attempt at the network fails the test."""
    import datasets

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SUCCU_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset called"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("a DNS lookup"))


def test_a_missing_corpus_is_one_line_and_no_download(online_without_corpora, capsys):
    with pytest.raises(SystemExit) as exc:
        fit.main(["--config", str(CONFIGS / "gpt_shakespeare_char.yaml"), *QUIET,
                  "--trainer.fast_dev_run", "1"])
    line = error_line(capsys.readouterr().err)
    assert exc.value.code == 2
    assert "shakespeare: no tinyshakespeare.txt" in line and "set data_path=" in line
    assert "$SUCCU_DATA_DIR" in line and "source=hub" in line


def test_the_mixture_names_the_per_corpus_setting(online_without_corpora, tmp_path):
    from datamodules.corpora import CorpusError
    from datamodules.mixture import MixtureDataModule
    from datamodules.tokens import Tokens

    with pytest.raises(CorpusError) as err:
        _ = MixtureDataModule(tokens=Tokens(cache_dir=str(tmp_path))).vocab_size
    message = str(err.value)
    assert "data_paths.tinystories" in message and "$SUCCU_DATA_DIR" in message and "\n" not in message


# ---- `--ckpt_path last` -----------------------------------------------------------------------
def test_ckpt_path_last_looks_only_in_the_runs_checkpoint_folders(tmp_path):
    root = tmp_path / "runs" / "succulm"
    own = touch(root / "version_0" / "checkpoints" / "last.ckpt", 1000)
    touch(root / "downloads" / "last.ckpt", 2000)  # newer, but not a checkpoint folder of the run
    touch(root / "downloads" / "version_9" / "checkpoints" / "last.ckpt", 3000)
    touch(root / "last.ckpt", 4000)
    trainer = L.Trainer(default_root_dir=root, logger=L.pytorch.loggers.CSVLogger(root, name=""),
                        accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    folders = runs.checkpoint_roots(trainer), runs.checkpoint_dirpaths(trainer)
    assert runs.find_last_checkpoint(*folders) == str(own)
    own.unlink()
    assert runs.find_last_checkpoint(*folders) is None


def test_ckpt_path_hyperparameters_are_not_merged_into_the_config(tmp_path, monkeypatch):
    """A checkpoint given to `fit --ckpt_path` cannot choose a class or a file to read."""
    import torch

    from succu import fit as succu_fit
    from succu.checkpoint_files import read_checkpoint

    config = str(Path(__file__).resolve().parents[1] / "configs" / "succulm.yaml")
    monkeypatch.chdir(tmp_path)
    tiny = ["--config", config, "--model.init_args.model.profile", "tiny",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    cli = succu_fit.main([*tiny, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                          "--trainer.default_root_dir", str(tmp_path / "a")])
    ckpt = read_checkpoint(cli.trainer.checkpoint_callbacks[0].last_model_path)
    ckpt["hyper_parameters"]["_class_path"] = "antigravity.Nothing"
    ckpt["hyper_parameters"]["init_embeddings"] = str(tmp_path / "planted.json")
    planted = tmp_path / "planted.ckpt"
    torch.save(ckpt, planted)
    resumed = succu_fit.main([*tiny, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1",
                              "--trainer.default_root_dir", str(tmp_path / "b"),
                              "--ckpt_path", str(planted)])
    assert resumed.trainer.global_step == 3
    assert type(resumed.model).__name__ == "SuccuLMModule"
    assert resumed.model.init_embeddings is None
