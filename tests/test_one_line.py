"""One line where a traceback showed: an empty prompt, a temperature float32 makes 0, trainer
settings that cannot run, a YAML that never ends, a full disk, Ctrl+C in generate and serve; and
a fit's own work kept: a learning rate given on resume applies, run folders without loggers are
claimed exclusively. Each through the command a user types (`main(argv)` in process)."""

from __future__ import annotations

import errno
import importlib.util
import io
import threading
from pathlib import Path

import pytest
import torch

from succu import fit, generate, runs
from succu.checkpoint_files import read_checkpoint
from succu.decoding import Decoding
from succu.io import NoSpaceError, atomic_write, no_space
from succu.modules.gpt import GPTModule
from succu.optim import warmup_cosine
from succu.sampling import MIN_TEMPERATURE, check_temperature
from succu.tokenizers import CharTokenizer
from tests.refusals import refused
from tests.tiny import tiny_module, write_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SUCCULM = str(CONFIGS / "succulm.yaml")
TINY = ["--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "2",
        "--trainer.logger", "false"]
TEXT = "once upon a time the king said hello.\n"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUCCU_DEBUG", raising=False)


def char_ckpt(path: Path, text: str = TEXT) -> str:
    """An untrained tiny GPT with a character vocabulary (no <BOS>) of `text`."""
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts([text])
    module = tiny_module(GPTModule, vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                         n_embd=16)
    return write_checkpoint(path, module, tok)


# ---- generate: the prompt and the temperature ---------------------------------------------------
def test_an_empty_prompt_starts_from_a_line_break(tmp_path, capsys):
    """A character vocabulary has no <BOS>: "" continues a line break, as nanoGPT's sample.py."""
    ckpt = char_ckpt(tmp_path / "char.ckpt")
    args = ["--ckpt", ckpt, "--max_new_tokens", "8", "--seed", "3"]
    empty = generate.main([*args, "--prompt", ""])
    err = capsys.readouterr().err
    assert empty == generate.main([*args, "--prompt", "\n"]) and len(empty[0]) == 8
    assert err == "note: the prompt is empty and the vocabulary has no <BOS>: starting from a line break\n"
    no_newline = char_ckpt(tmp_path / "flat.ckpt", "abc ")
    line = refused(capsys, generate.main, ["--ckpt", no_newline, "--prompt", ""], only=True)
    assert line == ("error: an empty prompt needs a <BOS> or a line break in the checkpoint's "
                    "vocabulary, and this one has neither; give some text to continue")


def test_drop_unknown_leaving_nothing_is_one_line(tmp_path, capsys):
    ckpt = char_ckpt(tmp_path / "char.ckpt")
    line = refused(capsys, generate.main, ["--ckpt", ckpt, "--prompt", "ZZQ", "--drop_unknown"], only=True)
    assert line == ("error: prompt 'ZZQ': nothing is left once --drop_unknown leaves out the 3 "
                    "characters the checkpoint's vocabulary lacks; give some text it knows")


@pytest.mark.parametrize("value", ["1e-46", "1e-308", "5e-324"])
def test_a_temperature_float32_makes_zero_is_one_line_in_generate_and_on_the_page(tmp_path, capsys, value):
    from succu.serve.streams import Served

    ckpt = char_ckpt(tmp_path / "char.ckpt")
    message = (f"temperature must be at least 1.401e-45, the smallest float32 above 0 (the logits "
               f"are float32), got {float(value):g} (small values such as 0.1 approach greedy decoding)")
    line = refused(capsys, generate.main, ["--ckpt", ckpt, "--prompt", "on", "--temperature", value], only=True)
    assert line == f"error: {message}"
    with pytest.raises(ValueError) as page:  # what the page shows as its error line
        Served.load(ckpt).parse({"prompt": "on", "temperature": value})
    assert str(page.value) == message
    check_temperature(MIN_TEMPERATURE)  # the smallest float32 still samples (near greedy)
    assert float(torch.tensor(MIN_TEMPERATURE, dtype=torch.float32)) == MIN_TEMPERATURE == 2.0**-149


# ---- fit: trainer settings and config files, refused before any folder -------------------------
@pytest.mark.parametrize("flag, value, message", [
    ("max_steps", "-5", "--trainer.max_steps must be -1 (no limit) or a whole number >= 0, got -5"),
    ("val_check_interval", "0", "--trainer.val_check_interval must be a whole number of steps >= 1 "
     "(with --trainer.check_val_every_n_epoch N also a fraction of an epoch in (0, 1]), got 0"),
    ("max_epochs", "-2", "--trainer.max_epochs must be -1 (no limit) or a whole number >= 0, got -2"),
    ("limit_val_batches", "-1", "--trainer.limit_val_batches must be a whole number of batches >= 0 "
     "or a fraction in [0, 1], got -1"),
    ("accumulate_grad_batches", "0", "--trainer.accumulate_grad_batches must be a whole number >= 1, got 0"),
    ("gradient_clip_val", "-1", "--trainer.gradient_clip_val must be a finite number >= 0, got -1"),
])
def test_trainer_settings_that_cannot_run_are_one_line_before_any_run_folder(tmp_path, capsys, flag,
                                                                            value, message):
    root = tmp_path / "run"
    for logger in ("false", "true"):  # with loggers, a version_0 was left behind
        line = refused(capsys, fit.main, ["--config", SUCCULM, *TINY, "--trainer.logger", logger,
                                          "--trainer.default_root_dir", str(root),
                                          f"--trainer.{flag}", value], only=True)
        assert line == f"error: {message}"
        assert not root.exists()


def test_what_lightning_refuses_building_the_trainer_is_one_line_and_leaves_no_version(tmp_path, capsys):
    root = tmp_path / "run"
    line = refused(capsys, fit.main, ["--config", SUCCULM, *TINY, "--trainer.logger", "true",
                                      "--trainer.default_root_dir", str(root),
                                      "--trainer.fast_dev_run", "-1"], only=True)
    assert line == "error: trainer: fast_dev_run=-1 is not a valid configuration. It should be >= 0."
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("text, message", [
    ("a: &x [*x]\n", "a YAML alias refers to the value that holds it (an anchor used inside itself), "
                     "which never ends; write the value out instead"),
    ("trainer: &t\n  max_steps: 2\n  again: *t\n", "a YAML alias refers to the value that holds it"),
    ("trainer: {max_steps: 3\n", "not valid YAML: while parsing a flow mapping"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, n in zip("abcdef", "bcdefg")), "its aliases expand to more than 1,000,000 values"),
])
def test_a_config_that_never_ends_or_is_not_yaml_is_one_line_naming_it(tmp_path, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    for argv in (["--config", str(config)], ["fit", f"--config={config}"]):
        line = refused(capsys, fit.main, argv, only=True)
        assert line.startswith(f"error: {config}: {message}"), line


# ---- a full disk ---------------------------------------------------------------------------------
class FullDisk(io.RawIOBase):
    """A file whose disk fills after `room` bytes: write raises ENOSPC, as the OS does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()
        super().close()


def test_torch_saves_unexpected_pos_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.ckpt"
    atomic_write(target, lambda f: torch.save({"w": torch.zeros(10)}, f))
    with pytest.raises(NoSpaceError) as exc:
        atomic_write(target, lambda f: torch.save({"w": torch.ones(100_000)}, FullDisk(f, 20_000)))
    assert str(exc.value) == (f"[Errno {errno.ENOSPC}] no space left on device; the previous file (if "
                              f"any) is kept: free some space and run again: '{target}'")
    assert torch.equal(torch.load(target)["w"], torch.zeros(10))  # the previous one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]  # no temporary file left
    assert no_space(RuntimeError("unexpected pos 5493952 vs 5493844")) is None
    quota = no_space(OSError(errno.EDQUOT, "Disk quota exceeded"), "x.ckpt")
    assert quota.filename == "x.ckpt" and quota.strerror.startswith("disk quota exceeded")


def test_a_full_disk_during_a_fit_is_one_line_naming_the_checkpoint(tmp_path, capsys, monkeypatch):
    """last.ckpt at step 2; at step 4 the disk is full: one line, the step-2 last.ckpt kept."""
    import os

    from succu.modules.succulm import SuccuLMModule

    full, fdopen, step = threading.Event(), os.fdopen, SuccuLMModule.training_step

    def filling(fd, *args, **kwargs):
        f = fdopen(fd, *args, **kwargs)
        return FullDisk(f, 4096) if full.is_set() else f

    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            full.set()
        return step(self, batch, batch_idx)

    monkeypatch.setattr(os, "fdopen", filling)
    monkeypatch.setattr(SuccuLMModule, "training_step", training_step)
    root = tmp_path / "run"
    line = refused(capsys, fit.main, ["--config", SUCCULM, *TINY, "--trainer.max_steps", "6",
                                      "--trainer.val_check_interval", "2",
                                      "--trainer.default_root_dir", str(root)], only=True)
    folder = os.path.realpath(root / "checkpoints")
    assert line.startswith(f"error: {folder}/") and line.endswith(
        ".ckpt: no space left on device; the previous file (if any) is kept: free some space and run again")
    assert read_checkpoint(root / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert not [p for p in (root / "checkpoints").iterdir() if p.name.endswith(".tmp")]


# ---- a fit's work kept: the learning rate on resume, run folders without loggers --------------
def test_a_learning_rate_given_on_resume_applies_from_the_first_step(tmp_path, capsys, monkeypatch):
    from succu.modules.succulm import SuccuLMModule

    seen: dict[int, list[float]] = {}
    step = SuccuLMModule.training_step

    def training_step(self, batch, batch_idx):
        seen[self.global_step] = [g["lr"] for g in self.trainer.optimizers[0].param_groups]
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SuccuLMModule, "training_step", training_step)
    root = tmp_path / "run"
    args = ["--config", SUCCULM, *TINY, "--trainer.val_check_interval", "2",
            "--trainer.default_root_dir", str(root), "--model.init_args.warmup_steps", "2"]
    fit.main([*args, "--trainer.max_steps", "4"])
    assert capsys.readouterr().err.count("note: resumed") == 0
    seen.clear()
    cli = fit.main([*args, "--trainer.max_steps", "8", "--ckpt_path", "last",
                    "--model.init_args.optimizer.init_args.lr", "0.0005",
                    "--model.init_args.optimizer.init_args.weight_decay", "0.2"])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: resumed")]
    assert notes == ["note: resumed with the config's optimizer settings, not the checkpoint's: "
                     "lr from 0.003 to 0.0005; weight_decay from 0.3 to 0.2"]
    module = cli.model
    assert sorted(seen) == [4, 5, 6, 7]  # the resumed steps, each at the new peak's schedule
    for s, lrs in seen.items():
        expected = 0.0005 * warmup_cosine(s, 2, 8, module.min_lr_ratio)
        assert lrs == [pytest.approx(expected, rel=1e-12)] * 2, s
    groups = cli.trainer.optimizers[0].param_groups
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]  # the no-decay group stays at 0


def test_fits_without_loggers_on_one_root_each_get_their_own_checkpoints(tmp_path):
    root = tmp_path / "run"
    for steps in (2, 3, 1):
        fit.main(["--config", SUCCULM, *TINY, "--trainer.max_steps", str(steps),
                  "--trainer.default_root_dir", str(root)])
    folders = [root / "checkpoints", root / "version_0" / "checkpoints", root / "version_1" / "checkpoints"]
    assert [read_checkpoint(f / "last.ckpt")["global_step"] for f in folders] == [2, 3, 1]
    assert runs.find_last_checkpoint([root]) == str(folders[2] / "last.ckpt")


def test_checkpoint_folders_claimed_at_once_are_distinct(tmp_path):
    barrier, claimed = threading.Barrier(6), []

    def claim():
        barrier.wait()
        claimed.append(runs.claim_checkpoint_folder(tmp_path / "run")[0])

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 6 and tmp_path / "run" / "checkpoints" in claimed
    assert all(folder.is_dir() and not any(folder.iterdir()) for folder in claimed)


# ---- Ctrl+C ------------------------------------------------------------------------------------
def test_ctrl_c_in_generate_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    ckpt = char_ckpt(tmp_path / "char.ckpt")

    def interrupted(self, *args, **kwargs):
        yield "on"
        raise KeyboardInterrupt

    monkeypatch.setattr(Decoding, "stream", interrupted)
    with pytest.raises(SystemExit) as exc:
        generate.main(["--ckpt", ckpt, "--prompt", "the "])
    out, err = capsys.readouterr()
    assert exc.value.code == 130 and err == "interrupted\n" and out == "the  -> on\n"
    monkeypatch.setenv("SUCCU_DEBUG", "1")
    with pytest.raises(KeyboardInterrupt):
        generate.main(["--ckpt", ckpt, "--prompt", "the "])


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn")),
                    reason='the serve extra is not installed: pip install -e ".[serve]"')
def test_ctrl_c_in_serve_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    from succu.serve import __main__ as serve
    from succu.serve import app

    def serve_forever(served, host, port):
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "serve_forever", serve_forever)
    with pytest.raises(SystemExit) as exc:
        serve.main(["--ckpt", char_ckpt(tmp_path / "char.ckpt"), "--port", "0"])
    assert exc.value.code == 130 and capsys.readouterr().err == "interrupted\n"
