"""Memory of `python -m succu.evaluate --text` against the text's size: it streams its windows.

    python bench/evaluate_memory.py [--small_mb 5] [--large_mb 50] [--block_size 128] [--batch_size 64]

Writes a small and a large text (the shared corpora repeated, ../shared/data or $SUCCU_DATA_DIR),
and a tiny character GPT checkpoint of their characters (untrained: memory does not depend on the
weights' values), then scores each text in its own `python -m succu.evaluate` process and prints
that process's own peak resident memory (`tests.child`) and the ratio large / small. Target: the large
text's peak within 1.5x of the small one's (memory independent of the text's length).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import offline

offline()

import torch  # noqa: E402

from succu.modules.gpt import GPTModule  # noqa: E402
from succu.tokenizers import CharTokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.child import run_python  # noqa: E402

FILES = ("tinyshakespeare.txt", "tinystories.txt", "kjv.txt")


def corpus_text() -> str:
    folders = [Path(p) for p in (os.environ.get("SUCCU_DATA_DIR"), REPO / "data", REPO.parent / "shared" / "data") if p]
    for folder in folders:
        texts = [(folder / name).read_text(encoding="utf-8") for name in FILES if (folder / name).is_file()]
        if texts:
            return "\n".join(texts)
    sys.exit(f"no corpus files ({', '.join(FILES)}) in {', '.join(map(str, folders))}")


def write_text(path: Path, text: str, megabytes: float) -> int:
    """`text` repeated to about `megabytes` MB (whole lines); returns the bytes written."""
    raw = text.encode("utf-8")
    target = int(megabytes * 1e6)
    with open(path, "wb") as f:
        written = 0
        while written < target:
            piece = raw[: target - written]
            piece = piece[: piece.rfind(b"\n") + 1] or piece
            f.write(piece)
            written += len(piece)
    return written


def write_checkpoint(path: Path, text: str, block_size: int) -> None:
    """A tiny untrained char GPT over the text's characters, saved as succu.fit saves one."""
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts([text])
    module = GPTModule(model=GPTModule.config_class(vocab_size=tok.vocab_size, block_size=block_size,
                                                    n_layer=1, n_head=2, n_embd=32))
    module.tokenizer = tok
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small_mb", type=float, default=5)
    p.add_argument("--large_mb", type=float, default=50)
    p.add_argument("--block_size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64)
    args = p.parse_args()
    text = corpus_text()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "tiny.ckpt"
        write_checkpoint(ckpt, text, args.block_size)
        for mb in (args.small_mb, args.large_mb):
            path = Path(tmp) / f"text_{mb:g}mb.txt"
            size = write_text(path, text, mb)
            rss, seconds, line = run_one(ckpt, path, args.batch_size)
            rows.append(rss)
            print(f"{size / 1e6:6.1f} MB text: max RSS {rss:7.1f} MB, {seconds:6.1f} s  ({line})", flush=True)
    ratio = rows[1] / rows[0]
    print(f"max RSS ratio {args.large_mb:g} MB / {args.small_mb:g} MB text: {ratio:.2f}x "
          f"(target <= 1.5x) {'PASS' if ratio <= 1.5 else 'FAIL'}")


def run_one(ckpt: Path, text: Path, batch_size: int) -> tuple[float, float, str]:
    """One evaluate process: its own peak memory in MB, its wall seconds, its score line."""
    child = run_python(["-m", "succu.evaluate", "--ckpt", str(ckpt), "--text", str(text),
                        "--batch_size", str(batch_size)], cwd=REPO)
    if child.returncode != 0:
        sys.exit(f"succu.evaluate failed on {text}:\n{child.stderr}")
    return child.peak_bytes / 2**20, child.seconds, child.stdout.strip()


if __name__ == "__main__":
    main()
