"""DDP on CPU (gloo, 2 processes): what each rank drew, that weights agree, that logged numbers are
global; the refusals; the cluster configs (ddp.yaml, ddp_cpu.yaml, slurm.sbatch).

The two-rank fits run `python -m succu.fit ... --trainer.accelerator=cpu --trainer.devices=2
--trainer.strategy=ddp` (configs/cluster/ddp_cpu.yaml) in a child process, because Lightning's
DDP launcher re-runs the command line once per extra rank; a `tests.ddp_probe.Probe` callback
writes each rank's facts to files. Default suite: ~45 s for the GatedGPT and SuccuLM fits on the
2-core box; torchrun is marked slow (~25 s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import types
from pathlib import Path

import pytest
import torch

from callbacks import distributed  # noqa: E402
from callbacks.distributed import DistributedTraining, rank_seed  # noqa: E402
from succu import fit  # noqa: E402
from succu.devices import check_devices  # noqa: E402
from tests.ddp_probe import (  # noqa: E402
    PYTHON,
    REPO,
    WITH_PROBE,
    child_env,
    gated_args,
    read_probe,
    run_fit,
    succulm_args,
)

CLUSTER = REPO / "configs" / "cluster"
DDP_CPU_YAML = str(CLUSTER / "ddp_cpu.yaml")
BASE_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "succu-token-cache"


def by_step(records: list[dict], kind: str) -> dict[int, dict]:
    return {r["step"]: r for r in records if r["kind"] == kind}


def assert_ranks_agree_on_weights(probe: dict) -> None:
    w0, w1 = by_step(probe[0], "weights"), by_step(probe[1], "weights")
    assert w0.keys() == w1.keys() and len(w0) >= 3
    for step in w0:
        assert w0[step]["digest"] == w1[step]["digest"], f"ranks differ after step {step}"
    assert by_step(probe[0], "end")[max(w0)]["digest"] == by_step(probe[1], "end")[max(w0)]["digest"]


def assert_logged_val_is_rank_mean(probe: dict) -> None:
    """val/loss on the dashboard is the mean over ranks: token-weighted where the module logs
    per batch with batch_size = tokens (the base module; Lightning sums both sides over ranks),
    plain where it logs one value per rank (GatedGPT's own-end loss)."""
    v0, v1 = by_step(probe[0], "val"), by_step(probe[1], "val")
    assert v0.keys() == v1.keys() and v0
    for step in v0:
        own = (v0[step]["own"], v1[step]["own"])
        assert own[0] != own[1]  # each rank validated its own share of the windows
        tokens = (v0[step]["own_tokens"], v1[step]["own_tokens"])
        if tokens[0] is None:
            mean = sum(own) / 2
        else:
            mean = (own[0] * tokens[0] + own[1] * tokens[1]) / (tokens[0] + tokens[1])
        for rank_view in (v0[step], v1[step]):  # every rank holds the same, reduced, number
            assert rank_view["logged"]["val/loss"] == pytest.approx(mean, rel=1e-5, abs=1e-6)


# ---- two ranks ----------------------------------------------------------------------------------
def test_gated_gpt_on_two_cpu_ranks(tmp_path, cache_dir):
    """GatedGPT + AlphaBetaSampling under DDP, with the dashboard callbacks and a recording logger."""
    overlay = tmp_path / "extras.yaml"
    overlay.write_text(
        "trainer:\n"
        "  logger:\n"
        "    class_path: tests.ddp_probe.RecordingLogger\n"
        f"    init_args: {{save_dir: {tmp_path / 'run'}}}\n"
        "  callbacks+:\n"  # abcgpt_char.yaml ships the generation table, histogram and sweep
        "    - class_path: tests.ddp_probe.Probe\n"
    )
    args = gated_args(tmp_path / "run", cache_dir, steps=6, val_every=3)
    args += ["--config", DDP_CPU_YAML, "--config", str(overlay)]
    run_fit(args, child_env(tmp_path / "probe", SUCCU_RECORD_DIR=str(tmp_path / "record")))
    probe = read_probe(tmp_path / "probe")
    assert set(probe) == {0, 1} and all(r["world"] == 2 for r in probe[0])
    b0, b1 = by_step(probe[0], "batch"), by_step(probe[1], "batch")
    assert b0.keys() == b1.keys() == set(range(6))
    # Different streams per rank, from one seed: windows, alpha, corpus, torch's generator.
    assert all(b0[s]["rows"] != b1[s]["rows"] for s in b0)
    assert [b["alpha"] for b in b0.values()] != [b["alpha"] for b in b1.values()]
    assert [b["source"] for b in b0.values()] != [b["source"] for b in b1.values()]
    assert all(b0[s]["dropout_draw"] != b1[s]["dropout_draw"] for s in b0)
    for b in (*b0.values(), *b1.values()):  # the shipped recipe: one alpha and corpus per row
        assert all(0 <= a <= 1 for a in b["alpha"]) and set(b["source"]) <= {0, 1}
    assert_ranks_agree_on_weights(probe)
    assert_logged_val_is_rank_mean(probe)
    for step, view in by_step(probe[0], "val").items():  # the per-alpha grid is global too
        assert view["logged"] == by_step(probe[1], "val")[step]["logged"]

    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "record").glob("*.json")]
    keys = {k for _, m in record["metrics"] for k in m}
    assert {"dist/effective_batch", "dist/world_size", "dist/tokens_per_s", "dist/rank0/rss_mb",
            "dist/rank1/rss_mb", "train/alpha", "val/loss"} <= keys
    effective = [m["dist/effective_batch"] for _, m in record["metrics"] if "dist/effective_batch" in m]
    assert effective == [8.0]  # 4 per device x 2 devices x 1 node x 1 accumulation
    assert all(m["dist/tokens_per_s"] > 0 for _, m in record["metrics"] if "dist/tokens_per_s" in m)
    assert {t["key"] for t in record["tables"]} == {"samples/generations", "sweep/alpha"}
    assert {i["key"] for i in record["images"]} == {"train/alpha_hist", "sweep/alpha_plot"}
    assert any("config" in h for h in record["hparams"])  # the resolved config reached the logger


def test_succulm_on_two_cpu_ranks(tmp_path):
    """A map-style loader: Lightning's DistributedSampler gives each rank its own shard."""
    args = succulm_args(tmp_path / "run", steps=4, val_every=2) + ["--config", DDP_CPU_YAML, *WITH_PROBE]
    out = run_fit(args, child_env(tmp_path / "probe"))
    probe = read_probe(tmp_path / "probe")
    assert set(probe) == {0, 1}
    b0, b1 = by_step(probe[0], "batch"), by_step(probe[1], "batch")
    assert b0.keys() == b1.keys() == set(range(4))
    assert all(b0[s]["rows"] != b1[s]["rows"] for s in b0)
    assert_ranks_agree_on_weights(probe)
    assert_logged_val_is_rank_mean(probe)
    assert "effective batch 16" in out.stderr + out.stdout


@pytest.mark.slow
def test_torchrun_launches_the_same_config(tmp_path, cache_dir):
    """`torchrun --standalone --nproc_per_node=2 -m succu.fit ...` (~25 s): Lightning sees
    TorchElasticEnvironment and launches nothing itself."""
    torchrun = shutil.which("torchrun", path=str(Path(PYTHON).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    args = gated_args(tmp_path / "run", cache_dir, steps=4, val_every=2) + [
        "--config", DDP_CPU_YAML, *WITH_PROBE]
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "succu.fit", *args],
                          cwd=REPO, env=child_env(tmp_path / "probe"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    probe = read_probe(tmp_path / "probe")
    assert set(probe) == {0, 1}
    assert_ranks_agree_on_weights(probe)


# ---- refusals -------------------------------------------------------------------------------------
def test_devices_that_are_not_there_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        check_devices("gpu", 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices("gpu", 2)
    check_devices("auto", "auto")
    check_devices("cuda", "0,1")
    with pytest.raises(ValueError, match=r"asks for 4 CUDA devices but this machine shows 2"):
        check_devices("gpu", 4)
    with pytest.raises(ValueError, match=r"names devices \[3\]"):
        check_devices("gpu", [0, 3])
    with pytest.raises(ValueError, match="asks for no device"):
        check_devices("gpu", 0)
    with pytest.warns(UserWarning, match="CPU processes on"):
        check_devices("cpu", (os.cpu_count() or 1) + 1)


def test_several_nodes_need_a_launcher(monkeypatch):
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "LOCAL_RANK", "GROUP_RANK", "TORCHELASTIC_RUN_ID",
                "NODE_RANK", "MASTER_ADDR", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="num_nodes=2 but no launcher"):
        check_devices("cpu", 1, num_nodes=2)
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    check_devices("cpu", 1, num_nodes=2)


SUCCULM = str(REPO / "configs" / "succulm.yaml")
TINY = ["--model.init_args.model.profile", "tiny", "--data.init_args.batch_size", "8",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_cli_refuses_a_gpu_request_without_gpus(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(SystemExit) as exc:
        fit.main(["--config", SUCCULM, *TINY, "--trainer.accelerator", "gpu", "--trainer.devices", "2"])
    assert exc.value.code == 2
    assert "trainer.accelerator=gpu but no CUDA device is visible" in error_line(capsys.readouterr().err)


def test_global_batch_must_divide_and_sets_the_per_device_batch(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    extra = ["--trainer.callbacks+=callbacks.distributed.DistributedTraining",
             "--trainer.accumulate_grad_batches", "2", "--trainer.max_steps", "2",
             "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
             "--trainer.num_sanity_val_steps", "0"]
    with pytest.raises(SystemExit) as exc:
        fit.main(["--config", SUCCULM, *TINY, *extra, "--trainer.callbacks.init_args.global_batch_size", "7"])
    assert exc.value.code == 2
    line = error_line(capsys.readouterr().err)
    assert "global_batch_size=7 does not divide by devices x nodes x accumulate_grad_batches" in line
    assert "= 2" in line
    cli = fit.main(["--config", SUCCULM, *TINY, *extra, "--trainer.callbacks.init_args.global_batch_size", "12"])
    (cb,) = [c for c in cli.trainer.callbacks if isinstance(c, DistributedTraining)]
    assert cli.datamodule.batch_size == 6  # 12 / (1 device x 1 node x 2 micro-batches)
    assert cb.layout["effective_batch"] == 12
    assert float(cli.trainer.callback_metrics["dist/effective_batch"]) == 12


def test_map_style_loader_without_distributed_sampler_is_refused():
    from torch.utils.data import DataLoader

    cb = DistributedTraining()
    trainer = types.SimpleNamespace(world_size=2, train_dataloader=DataLoader(list(range(8)), shuffle=True))
    with pytest.raises(ValueError, match="every rank would train on the same rows"):
        cb.check_sampler(trainer)
    trainer.world_size = 1
    cb.check_sampler(trainer)


def test_rank_seeds_differ_by_rank_and_step_and_repeat():
    seeds = {rank_seed(7, r, s) for r in range(4) for s in range(50)}
    assert len(seeds) == 200
    assert rank_seed(7, 1, 3) == rank_seed(7, 1, 3) and rank_seed(7, 1, 3) != rank_seed(8, 1, 3)


# ---- the cluster configs --------------------------------------------------------------------------
@pytest.mark.parametrize("cluster", ["ddp.yaml", "ddp_cpu.yaml"])
@pytest.mark.parametrize("base", BASE_CONFIGS, ids=lambda p: p.stem)
def test_cluster_yaml_parses_on_top_of_every_experiment(base, cluster, capsys):
    with pytest.raises(SystemExit) as exc:
        fit.main(["--config", str(base), "--config", str(CLUSTER / cluster), "--print_config"])
    assert exc.value.code == 0
    import yaml

    config = yaml.safe_load(capsys.readouterr().out)
    trainer = config["trainer"]
    assert trainer["strategy"] == "ddp"
    paths = [c["class_path"] for c in trainer["callbacks"]]
    assert paths[-1] == "callbacks.distributed.DistributedTraining"  # appended, not replacing
    base_callbacks = yaml.safe_load(base.read_text())["trainer"].get("callbacks", [])
    assert paths[:-1] == [c["class_path"] for c in base_callbacks]
    assert trainer["precision"] == ("bf16-mixed" if cluster == "ddp.yaml" else "32-true")


def test_ddp_yaml_keeps_bf16_autocast_on_a_cpu_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cli = fit.SuccuCLI(fit.LanguageModule, fit.L.LightningDataModule, subclass_mode_model=True,
                       subclass_mode_data=True, auto_configure_optimizers=False, run=False,
                       args=["--config", SUCCULM, "--config", str(CLUSTER / "ddp.yaml"), *TINY])
    trainer = cli.trainer
    # Honest precision: what the config asks for, on the CPU too (torch.autocast("cpu")).
    assert trainer.precision == "bf16-mixed" and trainer.num_devices == 1
    assert type(trainer.precision_plugin).__name__ == "MixedPrecision"
    assert trainer.precision_plugin.device == "cpu"
    assert type(trainer.strategy).__name__ == "DDPStrategy"
    kinds = {type(c).__name__ for c in trainer.callbacks}
    assert {"DistributedTraining", "PreemptionCheckpoint"} <= kinds


def test_slurm_script_builds_a_command_that_parses(tmp_path):
    script = CLUSTER / "slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for directive in ("--requeue", "--signal=TERM@", "--ntasks-per-node=", "--gres=gpu:"):
        assert f"#SBATCH {directive}" in text
    # Fake srun (runs the command once, printing the resolved config) and scontrol (records).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                                  'exec "$@" --print_config\n')
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/scontrol.log\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = child_env(None, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHON=PYTHON, SLURM_JOB_ID="42",
                    SLURM_NNODES="1", SLURM_NTASKS_PER_NODE="1", SLURM_SUBMIT_DIR=str(REPO))
    proc = subprocess.run(["bash", str(script), "configs/succulm.yaml", "--trainer.max_steps", "7"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import yaml

    config = yaml.safe_load(proc.stdout[proc.stdout.index("\n") + 1:])
    assert config["ckpt_path"] == "last"
    assert config["trainer"]["strategy"] == "ddp" and config["trainer"]["max_steps"] == 7
    assert config["trainer"]["num_nodes"] == 1 and str(config["trainer"]["devices"]) == "1"
    assert not (tmp_path / "scontrol.log").exists()  # a finished run is not requeued


def test_distributed_module_has_no_wandb_import():
    names = ("callbacks.generations", "callbacks.alpha_histogram", "callbacks.sweep_report")
    for module in (distributed, *(__import__(name, fromlist=["x"]) for name in names)):
        assert "import wandb" not in Path(module.__file__).read_text()
