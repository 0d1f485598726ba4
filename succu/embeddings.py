"""Token embeddings as plain JSON: the `{word: [floats]}` files SuccuLM's reference code loads.

Reading and writing live here, in the core, so a model module can take an embeddings file without
importing a datamodule.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from succu.io import atomic_write, load_json
from succu.tokenizers import Tokenizer


def write_embeddings_json(path: str | Path, tokenizer: Tokenizer, weight: torch.Tensor) -> Path:
    """Write an embedding matrix as the reference's `{word: [floats]}` file (row i = token id i)."""
    if weight.dim() != 2 or weight.shape[0] != len(tokenizer):
        raise ValueError(
            f"weight must be ({len(tokenizer)}, d) for this tokenizer, got {tuple(weight.shape)}"
        )
    rows = weight.detach().float().cpu().tolist()
    path = Path(path)
    # Atomic (temporary file, fsync, rename): the second stage of prepared embeddings reads this
    # file, and a fit killed while writing must not leave it half written. json writes a float
    # with repr, which reads back to the same float32 value, so a file round-trips exactly.
    atomic_write(path, (json.dumps(dict(zip(tokenizer.vocab, rows))) + "\n").encode("utf-8"))
    return path


def read_embeddings_json(path: str | Path) -> dict[str, list[float]]:
    """Read a `{word: [floats]}` file; all vectors must be non-empty and share one width."""
    path = Path(path)
    expected = "a JSON object {word: [float, ...]} with vectors of one width"
    data = load_json(path, expected)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected {expected}")
    widths = set()
    for word, vec in data.items():
        if not (
            isinstance(vec, list)
            and vec
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in vec)
        ):
            raise ValueError(f"{path}: expected {expected}; the entry for {word!r} is not")
        widths.add(len(vec))
    if len(widths) > 1:
        raise ValueError(f"{path}: vectors have different widths {sorted(widths)}; expected one")
    return {word: [float(x) for x in vec] for word, vec in data.items()}
