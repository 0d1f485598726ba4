"""Data pipeline speed: tokenising the shared TinyStories file, and the loader's share of a step.

    python bench/data.py [--threads 1] [--bpe_vocab_size 1024] [--steps 200] [--rounds 3]

1. Char: load + split + vocabulary, then tokenisation with `datasets.map` into the on-disk cache,
   from an empty cache (target: tokenisation < 5 s), and the cached second load.
2. BPE: training on the training split plus tokenisation, from an empty cache (target < 30 s).
3. The loader's share of a baby-GPT training step (4 layers, 4 heads, 128 wide, block 64, batch 12;
   forward, backward, clipping, AdamW): fetching a batch and stepping alternate in one loop, for the
   Shakespeare loader and the two-corpus mixture loader, round by round; the first `--warmup`
   steps of each round are not timed. Target: share < 5%.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from _common import add_thread_arg, offline, setup_threads  # noqa: E402

offline()

import torch  # noqa: E402

from datamodules.mixture import MixtureDataModule  # noqa: E402
from datamodules.shakespeare import ShakespeareDataModule  # noqa: E402
from datamodules.tinystories import TinyStoriesDataModule  # noqa: E402
from datamodules.tokens import Tokens  # noqa: E402
from datamodules.windows import Windows  # noqa: E402
from succu.models.gpt import GPT, GPTConfig  # noqa: E402


def time_tokenising(kind: str, bpe_vocab_size: int) -> dict[str, float]:
    """Seconds for tokenizer (load, split, vocab or BPE training), tokenising, cached reload."""
    with tempfile.TemporaryDirectory() as cache:
        settings = Tokens(tokenizer_kind=kind, bpe_vocab_size=bpe_vocab_size, cache_dir=cache)
        dm = TinyStoriesDataModule(tokens=settings)
        t0 = time.perf_counter()
        vocab = dm.vocab_size
        t1 = time.perf_counter()
        dm.prepare_data()
        t2 = time.perf_counter()
        again = TinyStoriesDataModule(tokens=settings)
        again.setup("fit")
        t3 = time.perf_counter()
        tokens = sum(len(a) for a in again.train_arrays + again.val_arrays)
    return {"vocab": vocab, "tokenizer": t1 - t0, "tokenise": t2 - t1, "cached": t3 - t2, "tokens": tokens}


def loader_share(dm, steps: int, warmup: int) -> float:
    """Share of wall time spent fetching batches in a fetch / train-step loop."""
    dm.setup("fit")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=dm.vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    it = iter(dm.train_dataloader())
    fetch = total = 0.0
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        logits = model(batch["input_ids"])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if step >= warmup:
            fetch, total = fetch + (t1 - t0), total + (t2 - t0)
    return fetch / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_arg(p)
    p.add_argument("--bpe_vocab_size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    setup_threads(args.threads)

    char = time_tokenising("char", args.bpe_vocab_size)
    print(f"char on tinystories.txt: vocab {char['vocab']}, {char['tokens']:,} tokens")
    print(f"  load + split + vocabulary  {char['tokenizer']:6.2f} s")
    print(f"  tokenise (datasets.map)    {char['tokenise']:6.2f} s   (target < 5 s)")
    print(f"  total from empty cache     {char['tokenizer'] + char['tokenise']:6.2f} s")
    print(f"  second load (cached)       {char['cached']:6.3f} s   (reads the arrays, tokenises nothing)")
    bpe = time_tokenising("bpe", args.bpe_vocab_size)
    print(f"BPE on tinystories.txt: vocab {bpe['vocab']}, {bpe['tokens']:,} tokens")
    print(f"  load + split + BPE training {bpe['tokenizer']:6.2f} s")
    print(f"  tokenise (datasets.map)     {bpe['tokenise']:6.2f} s")
    print(f"  training + tokenising       {bpe['tokenizer'] + bpe['tokenise']:6.2f} s   (target < 30 s)")

    windows = Windows(block_size=64, batch_size=12, seed=0)
    with tempfile.TemporaryDirectory() as cache:
        loaders = {
            "shakespeare char": ShakespeareDataModule(windows=windows, tokens=Tokens(cache_dir=cache)),
            "mixture char": MixtureDataModule(windows=windows, tokens=Tokens(cache_dir=cache)),
        }
        shares: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(args.rounds):
            for name, dm in loaders.items():
                shares[name].append(loader_share(dm, args.steps, args.warmup))
    print(f"loader share of a baby-GPT step (batch 12 x 64, {args.steps} timed steps x {args.rounds} rounds)")
    for name, values in shares.items():
        rounds = ", ".join(f"{100 * v:.2f}%" for v in values)
        print(f"  {name:17s} {100 * statistics.median(values):5.2f}%   (rounds: {rounds}; target < 5%)")


if __name__ == "__main__":
    main()
