"""Your own text as a corpus: a file, several files or a folder of .txt files, under your name.

    python -m succu.fit --config configs/gpt_text.yaml --data.init_args.data_path my.txt

One corpus through TextDataModule's pipeline (source, split, tokens, windows), with a test share
by default. Several corpora of your own (the dial's sources) are TextDataModule's or
MixtureDataModule's `corpora` with their files in `sources.data_paths`: any name that is not a
registered corpus is your own text under that name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datamodules.corpora import Sources
from datamodules.text import DEFAULT_SOURCES, TextDataModule, settings


def default_name(data_path: str | list[str] | None) -> str:
    """The corpus name of a path: a file's name without its suffix, a folder's name (of the first
    entry of a list), characters other than letters, digits, '_', '.' and '-' as '_'."""
    if not data_path:
        raise ValueError("OwnTextDataModule needs your text: data_path, a UTF-8 file, a folder of .txt "
                         "files or a list of them (--data.init_args.data_path my.txt)")
    first = Path(data_path[0] if isinstance(data_path, list) else data_path).expanduser().resolve()
    base = first.name if first.is_dir() else first.stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".-") or "text"


class OwnTextDataModule(TextDataModule):
    """One corpus of your own text, split into train, val and test (test_fraction 0.05).

    Every other argument is TextDataModule's (windows, tokens, splits, ...): char, BPE or word
    tokens (`tokens.tokenizer_kind`), the split shares (`splits`).

    Args:
        data_path: your text: a UTF-8 file, a folder (its .txt files, sorted, subfolders
            included) or a list of files and folders, read in that order. Without it, `name`'s
            text is looked up in the data folders (`<name>.txt` or a folder `<name>` in
            `sources.data_dir`, $SUCCU_DATA_DIR, ./data or ../shared/data), as tools that rebuild
            the data from a checkpoint do (they never reuse a recorded path).
        name: the corpus name in metrics, caches and checkpoints (default: the file's name
            without its suffix, or the folder's name; of the first entry of a list).
        separator: None: running text, the files joined in order (validation is the tail tenth,
            test the share just before it); a string: documents, cut at each occurrence and at
            every file's end, each wholly on one side of the split (a hash of its text decides)
            and ended by `<EOS>`; "": each file is one document.
        abc_style: abcGPT's surface form (lowercase, spaces around . , ! ? ; :).
        sources: as TextDataModule's; `data_path` and `separator` set its entries for this corpus.
    """

    def __init__(
        self,
        data_path: str | list[str] | None = None,
        name: str | None = None,
        separator: str | None = None,
        abc_style: bool = False,
        sources: Sources = DEFAULT_SOURCES,
        **kwargs: Any,
    ):
        name = name or default_name(data_path)
        super().__init__(
            corpora=[name],
            sources=settings(sources, DEFAULT_SOURCES).with_corpus(name, data_path=data_path, separator=separator),
            abc_style=[name] if abc_style else [],
            **kwargs,
        )
        # Recorded in checkpoints, so analysis tools can rebuild this data from a checkpoint alone
        # (the name as resolved: they never see the path it came from).
        self.record_settings(name=name)

    def setting(self, name: str) -> str:
        return "data_path"
