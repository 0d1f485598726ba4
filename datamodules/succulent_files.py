"""The reference's pair files: JSON lists of [s1, s2], read and written (plain Python).

`save_reference_files` writes a world's pairs in the reference's format, ready to edit and read back
through the DataModule's `data_dir`; the held-out QA goes to a third file of ours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from datamodules.succulent_tables import Pair
from succu.io import load_json

NORMAL_FILE = "succulm_normal_sentence_pairs.json"
QA_FILE = "succulm_question_answer_pairs.json"
HELDOUT_QA_FILE = "succulm_heldout_question_answer_pairs.json"  # ours, optional on read
EMBEDDINGS_FILE = "succulm_embeddings.json"


def read_pairs_json(path: str | Path, allow_empty: bool = False) -> list[Pair]:
    """A reference pair file: a JSON list of [s1, s2] string pairs (non-empty unless allowed:
    an empty training file would fail later without naming it)."""
    path = Path(path)
    expected = "a JSON list of [s1, s2] string pairs"
    data = load_json(path, expected)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected {expected}, got {type(data).__name__}")
    if not data and not allow_empty:
        raise ValueError(f"{path}: holds no pairs; expected {expected}, at least one")
    pairs = []
    for k, item in enumerate(data):
        if not (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(s, str) for s in item)
        ):
            raise ValueError(f"{path}: expected {expected}, item {k} is {item!r}")
        pairs.append((item[0], item[1]))
    return pairs


def _write_pairs_json(path: Path, pairs: Iterable[Pair]) -> Path:
    path.write_text(
        json.dumps([list(p) for p in pairs], indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return path


def save_reference_files(
    directory: str | Path,
    normal_pairs: Iterable[Pair],
    qa_pairs: Iterable[Pair],
    heldout_qa: Iterable[Pair] = (),
) -> list[Path]:
    """Write pairs in the reference's format, ready to edit and read back through `data_dir`.

    The held-out QA goes to a third file of ours (only when there is any); the reference's two
    files stay exactly its format.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [
        _write_pairs_json(directory / NORMAL_FILE, normal_pairs),
        _write_pairs_json(directory / QA_FILE, qa_pairs),
    ]
    heldout_qa = list(heldout_qa)
    if heldout_qa:
        paths.append(_write_pairs_json(directory / HELDOUT_QA_FILE, heldout_qa))
    return paths
