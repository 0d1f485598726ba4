"""DDP scaling of the baby GPT: tokens/s with 1 and with 2 processes, and the efficiency.

    python bench/ddp_scaling.py [--threads 1] [--steps 30] [--warmup 5] [--rounds 2] [--device auto]

The baby GPT of configs/gpt_shakespeare_char.yaml (4 layers, 4 heads, 128 wide, block 64, batch 12
per process, AdamW, gradient clipping 1.0) on random character ids (throughput does not depend on
the text). One process trains the plain model; two processes train it under
torch.nn.parallel.DistributedDataParallel (gloo on CPU, NCCL on GPUs), each on its own batches,
gradients all-reduced every step: what `configs/cluster/ddp_cpu.yaml` / `ddp.yaml` run. Each side
times `--steps` steps after `--warmup` untimed ones, between barriers; the runs alternate
(1, 2, 1, 2, ...) for `--rounds` rounds and the medians are reported:

    tokens/s (1 process), tokens/s (2 processes, all ranks together),
    scaling efficiency = tps2 / (2 x tps1)   (1.0: perfect; DDP adds the all-reduce)

Every process uses `--threads` torch threads (default 1). On a 2-core CPU the two processes take
both cores, so anything else running on the machine slows the 2-process figure (the load average
is printed). On a machine with 2+ GPUs the same command uses one GPU per process.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

VOCAB = 65  # tinyshakespeare's characters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def worker(rank: int, world: int, args: argparse.Namespace, port: int, results) -> None:
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    from succu.models.gpt import GPT, GPTConfig

    device = torch.device(f"cuda:{rank}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=args.block_size, n_layer=4, n_head=4,
                          n_embd=128, dropout=0.0, bias=False)).to(device)
    train = model
    if world > 1:
        train = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    g = torch.Generator().manual_seed(1000 + rank)  # each rank its own batches
    batches = [torch.randint(0, VOCAB, (args.batch_size, args.block_size + 1), generator=g)
               for _ in range(8)]

    def step(i: int) -> None:
        rows = batches[i % len(batches)].to(device, non_blocking=True)
        logits = train(rows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if world > 1:
            dist.barrier()

    for i in range(args.warmup):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    sync()
    seconds = time.perf_counter() - start
    results.put((rank, args.steps * args.batch_size * args.block_size, seconds))
    if world > 1:
        dist.destroy_process_group()


def run(world: int, args: argparse.Namespace) -> float:
    """Global tokens/s of `world` processes (tokens of all ranks / the slowest rank's time)."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, args, port, results)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a {world}-process run failed (exit code {p.exitcode})")
    rows = [results.get() for _ in range(world)]
    return sum(r[1] for r in rows) / max(r[2] for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--rounds", type=int, default=2, help="1-process / 2-process run pairs")
    p.add_argument("--batch_size", type=int, default=12, help="rows per process and step")
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args()
    args.device = pick_device(args.device)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"torch threads per process: {args.threads}", flush=True)
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        print(f"only {torch.cuda.device_count()} GPU visible: the 2-process run needs 2; use --device cpu")
        return
    backend = "nccl" if args.device == "cuda" else "gloo"
    print(f"baby GPT (4 layers, 4 heads, 128 wide, block {args.block_size}), batch {args.batch_size} "
          f"per process, {args.steps} timed steps after {args.warmup}, device {args.device}, "
          f"DDP backend {backend}, {args.rounds} rounds", flush=True)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for world in (1, 2):
            rates[world].append(run(world, args))
    tps1, tps2 = statistics.median(rates[1]), statistics.median(rates[2])
    fmt = ", ".join
    print(f"1 process:    {tps1:10.0f} tokens/s   (rounds: {fmt(f'{r:.0f}' for r in rates[1])})")
    print(f"2 processes:  {tps2:10.0f} tokens/s   (rounds: {fmt(f'{r:.0f}' for r in rates[2])}; "
          "both ranks together)")
    print(f"scaling efficiency tps2 / (2 x tps1): {tps2 / (2 * tps1):.2f}  (speed-up {tps2 / tps1:.2f}x)")
    if args.device == "cpu":
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"note: {os.cpu_count()} CPU cores here, load average {load0:.1f} before and {load:.1f} "
              "after; the 2-process figure competes with anything else running on the machine")


if __name__ == "__main__":
    main()
