"""What this machine can run: device requests checked before anything starts.

`check_devices` refuses, before the Trainer is built (`python -m succu.fit`), configurations that
cannot start: more accelerators than visible, an accelerator that is not there, several nodes
without a launcher. `check_device` does the same for the `--device` of the tools that load a
checkpoint (generate, evaluate, serve). Each refusal is one line naming the value.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch


def accelerator_kind(accelerator: Any) -> str:
    """"cuda", "mps", "cpu" or another name, resolving "auto" the way Lightning does."""
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__
    name = name.lower().replace("accelerator", "")
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    return "cuda" if name == "gpu" else name


def visible_devices(kind: str) -> int:
    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "mps":
        return int(torch.backends.mps.is_available())
    if kind == "cpu":
        return os.cpu_count() or 1
    return -1  # unknown: leave it to Lightning


def requested_devices(devices: Any, kind: str, visible: int) -> tuple[int, list[int] | None]:
    """(how many, which indices or None) for a Trainer `devices` value."""
    if devices in (None, "auto"):
        return (1 if kind == "cpu" else max(visible, 1)), None
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            devices = [int(d) for d in text.split(",") if d.strip()]
        else:
            devices = int(text)
    if isinstance(devices, int):
        return (visible if devices == -1 else devices), None
    indices = [int(d) for d in devices]
    return len(indices), indices


def launcher_detected() -> bool:
    """A launcher that starts the processes of the other nodes: srun, torchrun, or manual env."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    manual = "NODE_RANK" in os.environ and "MASTER_ADDR" in os.environ
    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect() or manual


def check_devices(accelerator: Any = "auto", devices: Any = "auto", num_nodes: int = 1) -> None:
    """Refuse, with one clear line, a device request that cannot start.

    GPUs: more requested than visible, or indices that do not exist. CPU: more processes than
    cores only warns (it runs, slowly). Several nodes need a launcher on every node.
    """
    kind = accelerator_kind(accelerator)
    visible = visible_devices(kind)
    count, indices = requested_devices(devices, kind, visible)
    where = f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}" if (
        "CUDA_VISIBLE_DEVICES" in os.environ) else "all devices visible"
    if kind in ("cuda", "mps") and visible == 0:
        raise ValueError(
            f"trainer.accelerator={accelerator} but no {kind.upper()} device is visible ({where}); "
            "use --trainer.accelerator cpu (with configs/cluster/ddp_cpu.yaml for several processes)"
        )
    if count < 1:
        raise ValueError(f"trainer.devices={devices!r} asks for no device")
    if kind in ("cuda", "mps"):
        if count > visible:
            raise ValueError(
                f"trainer.devices={devices!r} asks for {count} {kind.upper()} devices but this machine "
                f"shows {visible} ({where}); lower trainer.devices or use devices: auto"
            )
        bad = [i for i in indices or [] if not 0 <= i < visible]
        if bad:
            raise ValueError(f"trainer.devices={devices!r} names devices {bad}; visible are 0..{visible - 1}")
    elif kind == "cpu" and count > visible:
        warnings.warn(
            f"trainer.devices={count} CPU processes on {visible} cores: it runs, but every process "
            "competes for the same cores", stacklevel=2)
    if int(num_nodes) > 1 and not launcher_detected():
        raise ValueError(
            f"trainer.num_nodes={num_nodes} but no launcher starts the other nodes: run under srun "
            "(configs/cluster/slurm.sbatch) or torchrun --nnodes (docs/operations.md)"
        )


def check_device(name: str) -> str:
    """A `--device` value torch can use here, or a ValueError naming it (torch's own errors for a
    missing CUDA are an AssertionError or a RuntimeError deep inside the first transfer)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f"--device {name}: this machine has {count} usable CUDA device(s); "
                             "use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
    return name


def set_threads(n: int) -> int:
    """Pin torch's intra-op threads to n (and OMP_NUM_THREADS, for the processes this one starts);
    the count torch reports. On a shared machine one thread per process is the safe choice."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return torch.get_num_threads()
