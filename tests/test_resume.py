"""Exact resume: a fit killed mid-run (SIGKILL, SIGTERM) and continued with `--ckpt_path last`
ends with the weights of an uninterrupted run, dial and window streams included.

Each fit runs `python -m succu.fit` in a child process on configs/abcgpt_char.yaml at toy size
(GatedGPT: the alpha callback's draws and the datamodule's windows are both part of the state).
`last.ckpt` is rewritten at every validation (every 2 steps here). Default suite: ~60 s on the
2-core box (one reference run, two kills, two resumes); the DDP variant is marked slow (~70 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from succu import fit as succu_fit  # noqa: E402
from succu import runs  # noqa: E402
from tests.ddp_probe import (  # noqa: E402
    DDP_CPU,
    REPO,
    WITH_PROBE,
    child_env,
    fit_command,
    gated_args,
    read_probe,
    run_fit,
)
from tests.paths import touch
from tests.tiny import tiny_module

STEPS = 12
RUN = ["--trainer.callbacks+=callbacks.distributed.DistributedTraining", *WITH_PROBE]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Token caches shared by the child processes of every test in the session."""
    return tmp_path_factory.getbasetemp() / "succu-token-cache"


def reference_run(tmp: Path, cache: Path, ddp: bool) -> tuple[dict, dict]:
    root, probe = tmp / "reference", tmp / "reference-probe"
    run_fit(gated_args(root, cache, steps=STEPS, val_every=2) + (DDP_CPU if ddp else []) + RUN,
            child_env(probe))
    return torch.load(probe / "final_rank0.pt"), read_probe(probe)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    return reference_run(tmp_path_factory.mktemp("resume"), cache_dir, ddp=False)


def steps_done(probe: Path) -> int:
    records = read_probe(probe).get(0, [])
    return max((r["step"] for r in records if r["kind"] == "weights"), default=0)


def kill_and_resume(tmp: Path, cache: Path, sig: signal.Signals, ddp: bool = False,
                    at_step: int = 5) -> tuple[int, int, dict, dict, str]:
    """Start a slowed-down fit, signal it after `at_step` steps, then resume it to the end.

    Returns (exit status, step in last.ckpt, final weights, probe records of the resumed run,
    output of the signalled run).
    """
    root, probe = tmp / "run", tmp / "probe-killed"
    args = gated_args(root, cache, steps=STEPS, val_every=2) + (DDP_CPU if ddp else []) + RUN
    proc = subprocess.Popen(fit_command(*args), cwd=REPO, env=child_env(probe, SUCCU_PROBE_SLEEP="0.4"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while steps_done(probe) < at_step or not (root / "checkpoints" / "last.ckpt").is_file():
            assert proc.poll() is None, f"the fit ended before it was signalled:\n{proc.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "the fit made no progress"
            time.sleep(0.05)
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)  # every rank dies at once, as on a lost node
        else:
            proc.send_signal(sig)  # rank 0, as a scheduler or torchrun would; it tells the others
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    killed_at = steps_done(probe)
    assert killed_at < STEPS, "the signal came too late to interrupt the fit"
    saved = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    resumed = tmp / "probe-resumed"
    run_fit(args + ["--ckpt_path", "last"], child_env(resumed))
    return proc.returncode, saved, torch.load(resumed / "final_rank0.pt"), read_probe(resumed), out


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def assert_same_streams(resumed: dict, reference: dict, from_step: int) -> None:
    """The resumed steps drew the reference's rows, alphas and corpora, rank by rank."""
    for rank, records in resumed.items():
        mine = [(r["step"], r["rows"], r["alpha"], r["source"]) for r in records if r["kind"] == "batch"]
        ref = [(r["step"], r["rows"], r["alpha"], r["source"]) for r in reference[rank]
               if r["kind"] == "batch" and r["step"] >= from_step]
        assert mine == ref


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, cache_dir, reference):
    status, saved, final, probe, _ = kill_and_resume(tmp_path, cache_dir, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert saved in (2, 4, 6, 8, 10)  # the last validation's last.ckpt; the steps after it are redone
    assert_same_weights(final, reference[0])
    assert_same_streams(probe, reference[1], saved)


def test_sigterm_saves_the_current_step_and_resume_matches(tmp_path, cache_dir, reference):
    status, saved, final, probe, out = kill_and_resume(tmp_path, cache_dir, signal.SIGTERM)
    assert status == succu_fit.SIGTERM_EXIT, out[-3000:]
    assert "Traceback" not in out and "stopped by SIGTERM" in out
    first = min(r["step"] for r in probe[0] if r["kind"] == "batch")
    assert first == saved >= 5  # nothing lost: the checkpoint holds the step SIGTERM interrupted
    assert_same_weights(final, reference[0])
    assert_same_streams(probe, reference[1], saved)


@pytest.mark.slow
def test_ddp_sigterm_then_resume_matches_an_uninterrupted_ddp_run(tmp_path, cache_dir):
    """Two gloo ranks (~70 s): SIGTERM to rank 0 reaches both, both stop at one step, last.ckpt
    holds it, and the resumed pair ends where an uninterrupted pair ends."""
    ref_final, ref_probe = reference_run(tmp_path / "ref", cache_dir, ddp=True)
    status, saved, final, probe, out = kill_and_resume(tmp_path / "killed", cache_dir, signal.SIGTERM,
                                                       ddp=True)
    assert status == succu_fit.SIGTERM_EXIT, out[-3000:]
    assert set(probe) == {0, 1}
    assert_same_weights(final, ref_final)
    assert_same_streams(probe, ref_probe, saved)


# ---- `--ckpt_path last` ---------------------------------------------------------------------------
def test_last_is_the_newest_last_checkpoint_under_the_run_folders(tmp_path):
    old = touch(tmp_path / "version_0" / "checkpoints" / "last.ckpt", 1000)
    assert runs.find_last_checkpoint([tmp_path]) == str(old)
    new = touch(tmp_path / "version_1" / "checkpoints" / "last.ckpt", 2000)
    touch(tmp_path / "version_1" / "checkpoints" / "best-step=4.ckpt", 3000)  # not a "last"
    touch(tmp_path / "version_1" / "checkpoints" / ".last.ckpt.abc.tmp", 4000)  # a torn write
    assert runs.find_last_checkpoint([tmp_path, tmp_path / "missing"]) == str(new)
    hpc = touch(tmp_path / "hpc_ckpt_1.ckpt", 5000)  # SLURM's requeue checkpoint counts too
    assert runs.find_last_checkpoint([tmp_path]) == str(hpc)
    assert runs.find_last_checkpoint([tmp_path / "empty"]) is None


def test_ckpt_path_last_finds_the_previous_version_folder(tmp_path, monkeypatch, cache_dir):
    """With a CSV logger every run gets a fresh version_N; `last` still continues version_0."""
    monkeypatch.chdir(tmp_path)
    args = gated_args(tmp_path, cache_dir, steps=4, val_every=2)
    args[args.index("--trainer.logger") + 1] = "lightning.pytorch.loggers.CSVLogger"
    args += ["--trainer.logger.save_dir", str(tmp_path), "--trainer.logger.name", "run"]
    first = succu_fit.main(args)
    assert first.trainer.global_step == 4
    second = succu_fit.main([*args, "--trainer.max_steps", "6", "--ckpt_path", "last"])
    assert second.trainer.ckpt_path == str(tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt")
    assert second.trainer.global_step == 6
    assert (tmp_path / "run" / "version_1" / "checkpoints" / "last.ckpt").is_file()
    # Nothing to continue: a warning and a fresh start, so job scripts can always pass `last`.
    fresh = succu_fit.main([*args, "--trainer.default_root_dir", str(tmp_path / "new"),
                            "--trainer.logger.save_dir", str(tmp_path / "new"), "--ckpt_path", "last"])
    assert fresh.trainer.ckpt_path is None and fresh.trainer.global_step == 4


def test_succulm_resumed_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    """The succulent pairs' shuffle is resumable: epoch order from (seed, epoch), position from
    the batches already trained on. 20 steps span two epochs (batch 64: 14 batches each)."""
    import lightning as L

    from datamodules.succulent import SuccuPairsDataModule
    from succu.modules.succulm import SuccuLMModule
    from succu.runs import AtomicCheckpointIO
    from tests.ddp_probe import StopAt

    def run(root, stop_at=None, ckpt_path=None):
        L.seed_everything(0, verbose=False)
        dm = SuccuPairsDataModule(batch_size=64)
        module = tiny_module(SuccuLMModule, vocab_size=dm.vocab_size, block_size=dm.block_size, profile="tiny",
                               warmup_steps=2)
        trainer = L.Trainer(
            accelerator="cpu", max_steps=20, logger=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            plugins=[AtomicCheckpointIO()],
            callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=root, filename="last",
                                                           every_n_train_steps=1,
                                                           enable_version_counter=False),
                       *([StopAt(stop_at)] if stop_at else [])],
        )
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module.state_dict()

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=17)  # mid-way through the second epoch
    resumed = run(tmp_path / "b", ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)
