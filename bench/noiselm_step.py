"""NoiseLM's training step time over its matched GPT's, same data, same process, interleaved.

    python bench/noiselm_step.py [--threads 1] [--steps 20] [--rounds 5] [--data succulent tinystories]

The two sides are the NoiseLM study's pair on each dataset (studies/noiselm.py):
configs/noiselm_writeup_<data>.yaml against configs/noiselm_gpt_<data>.yaml, built from those
files' model and optimizer fields, on batches of the config's own datamodule (the first
`--steps` training batches, shared by both sides). A step is what the Trainer's step does for
each module: the module's training loss (NoiseLM: NLL plus the stop head's loss), backward,
gradient clipping at the configs' 1.0 (NoiseLM clips its LM and its stop head each on its own),
the optimizer's update (the configs' foreach AdamW) and zero_grad. The sides alternate step by
step after a warm-up round, so a busy neighbour slows both alike; the median step time of each
is compared (target: NoiseLM / GPT <= 3).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import statistics
import time
from functools import partial
from pathlib import Path

from _common import add_thread_arg, offline, setup_threads

offline()

import torch  # noqa: E402
import yaml  # noqa: E402

from succu.modules.noise_lm import NoiseModule  # noqa: E402
from succu.optim import AdamW  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIDES = {"NoiseLM": "noiselm_writeup_{}.yaml", "GPT": "noiselm_gpt_{}.yaml"}


def load_class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def build(config: dict, dm) -> tuple[object, torch.optim.Optimizer, float]:
    """(module, its optimizer, clip value) as `python -m succu.fit` builds them from `config`."""
    spec = config["model"]
    cls = load_class(spec["class_path"])
    args = spec.get("init_args", {})
    fields = {**args.get("model", {}), "vocab_size": dm.vocab_size, "block_size": dm.block_size}
    opt_args = args.get("optimizer", {}).get("init_args", {})
    module = cls(model=cls.config_class(**fields), optimizer=partial(AdamW, **opt_args))
    module.tokenizer = dm.tokenizer
    module.model.train()
    return module, AdamW(module.param_groups(), **opt_args), config["trainer"]["gradient_clip_val"]


def datamodule(config: dict):
    spec = config["data"]
    dm = load_class(spec["class_path"])(**spec.get("init_args", {}))
    dm.setup("fit")
    return dm


def step_fn(module, optimizer, clip: float):
    """One training step of `module` on a batch, as the Trainer runs it (logging aside)."""
    noise = isinstance(module, NoiseModule)  # NLL + stop loss, clipped in two groups

    def step(batch: dict[str, torch.Tensor]) -> None:
        if noise:
            loss = module.losses(batch)["loss"]
        else:
            loss = module.loss(module(batch["input_ids"]), batch["labels"])
        loss.backward()
        if noise:
            module.configure_gradient_clipping(optimizer, clip)
        else:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench(data: str, steps: int, rounds: int) -> float:
    configs = {side: yaml.safe_load((CONFIGS / name.format(data)).read_text())
               for side, name in SIDES.items()}
    dm = datamodule(configs["NoiseLM"])
    batches = list(itertools.islice(dm.train_dataloader(), steps))
    steps_of = {}
    for side, config in configs.items():
        torch.manual_seed(0)
        steps_of[side] = step_fn(*build(config, dm))
    results: dict[str, list[float]] = {side: [] for side in SIDES}
    for r in range(rounds + 1):  # round 0 warms both up
        for batch in batches:  # the sides alternate step by step
            for side, step in steps_of.items():
                t0 = time.perf_counter()
                step(batch)
                if r:
                    results[side].append(time.perf_counter() - t0)
    B, T = batches[0]["input_ids"].shape
    ms = {side: statistics.median(t) * 1e3 for side, t in results.items()}
    print(f"{data}: batch {B} x {T}, vocab {dm.vocab_size}")
    for side in SIDES:
        print(f"  {side + ' step:':14s} {ms[side]:7.2f} ms (median of {len(results[side])}; "
              f"{SIDES[side].format(data)})")
    ratio = ms["NoiseLM"] / ms["GPT"]
    print(f"  ratio NoiseLM / GPT: {ratio:.2f}  (target <= 3)", flush=True)
    return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--steps", type=int, default=20, help="timed steps per side and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--data", nargs="+", default=["succulent", "tinystories"],
                   choices=["succulent", "tinystories"])
    args = p.parse_args()
    setup_threads(args.threads)
    for data in args.data:
        bench(data, args.steps, args.rounds)


if __name__ == "__main__":
    main()
