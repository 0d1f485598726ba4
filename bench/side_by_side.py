"""The dial page's side by side: two panes at alpha 0 and 1 against one pane alone, 600 characters.

    python bench/side_by_side.py [--threads 1] [--chars 600] [--reps 3]

A GatedGPT of configs/abcgpt_char.yaml's size (4 layers, 4 heads, 128 wide, block 64, tents 1.5x
wide; random weights: speed does not depend on them) with a character vocabulary without an
end-of-text token, so every stream runs all its characters. Each side runs through the page's own
workers (`succu.serve.streams`, without HTTP) and is timed from start to its last event:

    one pane       a TokenStream at alpha 0
    side by side   a PanesStream at alpha 0 and 1: one batched forward pass per token
    two threads    two TokenStreams at once, as the page ran its panes before (reference)

The sides alternate within each repeat (the order rotating), after one warm-up repeat; the script
checks that the panes' texts are the lone streams' and prints each side's median wall and CPU time
(the process's, every thread) and their ratios to one pane, and the median of the repeats' own
side-by-side / one-pane ratios (target: <= 1.3). On a shared machine the CPU ratio is the steadier
figure: a busy neighbour stretches wall time, not the work done.
"""

from __future__ import annotations

import argparse
import statistics
import string
import time

import torch
from _common import add_thread_arg, setup_threads

from succu.models.gated_gpt import GatedGPTConfig
from succu.modules.gated_gpt import GatedGPTModule
from succu.serve.streams import PanesStream, Served, TokenStream
from succu.tokenizers import CharTokenizer

PROMPT = "once upon a time"


def served_model() -> Served:
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts([string.ascii_letters + string.digits + " .,;:!?'\"-\n"])
    config = GatedGPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=4, n_head=4,
                            n_embd=128, narrowness=1.5)
    module = GatedGPTModule(config)
    module.tokenizer = tok
    return Served(module, "random abcgpt_char-size GatedGPT", ["tinystories", "shakespeare"])


def timed(served: Served, make_workers) -> tuple[float, float, dict[int, str]]:
    """Wall and CPU seconds from starting the workers to their last event, each pane's text."""
    texts: dict[int, list[str]] = {}

    def emit_for(pane: int):
        def emit(event: str, data: dict) -> None:
            if event == "error":
                raise RuntimeError(data["message"])
            if event == "token":
                texts.setdefault(data.get("pane", pane), []).append(data["text"])
        return emit

    workers = make_workers(emit_for)
    start, cpu = time.perf_counter(), time.process_time()
    for w in workers:
        served.claim()
        w.start()
    for w in workers:
        w.thread.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, {p: "".join(t) for p, t in texts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--chars", type=int, default=600)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    setup_threads(args.threads)
    served = served_model()
    params = {"prompt": PROMPT, "max_new_tokens": str(args.chars), "temperature": "0.8", "seed": "0"}
    left, right = (served.parse({**params, "alpha": a}) for a in ("0", "1"))
    sides = {
        "one pane": lambda emit: [TokenStream(served, left, emit(0))],
        "side by side": lambda emit: [PanesStream(served, [left, right], emit(0))],
        "two threads": lambda emit: [TokenStream(served, left, emit(0)),
                                     TokenStream(served, right, emit(1))],
    }
    walls: dict[str, list[float]] = {name: [] for name in sides}
    cpus: dict[str, list[float]] = {name: [] for name in sides}
    texts: dict[str, dict[int, str]] = {}
    names = list(sides)
    for rep in range(args.reps + 1):  # rep 0 warms every side up
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            wall, cpu, texts[name] = timed(served, sides[name])
            if rep:
                walls[name].append(wall)
                cpus[name].append(cpu)
    assert texts["side by side"][0] == texts["one pane"][0] == texts["two threads"][0]
    assert texts["side by side"][1] == texts["two threads"][1]
    assert len(texts["one pane"][0]) == args.chars, "the stream ended before its characters"
    print(f"model: GatedGPT 4x128, block 64, random weights; prompt {PROMPT!r}, {args.chars} "
          f"characters per pane, temperature 0.8; {args.reps} repeats after a warm-up")
    wall_base, cpu_base = (statistics.median(t["one pane"]) for t in (walls, cpus))
    for name in sides:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        shown = ", ".join(f"{v:.2f}" for v in walls[name])
        print(f"{name:13s} wall {wall:6.2f} s ({wall / args.chars * 1e3:5.2f} ms/character; "
              f"repeats {shown}), CPU {cpu:6.2f} s; to one pane: wall {wall / wall_base:.2f}, "
              f"CPU {cpu / cpu_base:.2f}")
    paired = [b / a for a, b in zip(walls["one pane"], walls["side by side"])]
    print(f"side by side / one pane: wall {statistics.median(walls['side by side']) / wall_base:.2f}x "
          f"(each repeat's own: {', '.join(f'{r:.2f}' for r in paired)}, median "
          f"{statistics.median(paired):.2f}), CPU {statistics.median(cpus['side by side']) / cpu_base:.2f}x "
          "(target <= 1.3); the panes' texts equal the lone streams'")

if __name__ == "__main__":
    main()
