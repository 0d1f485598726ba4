"""tinyshakespeare (karpathy/char-rnn): 1 MB of running text, split by a contiguous tail."""

from __future__ import annotations

from typing import Any

from datamodules.corpora import CorpusSpec, Sources, Splits, register_corpus
from datamodules.text import DEFAULT_SOURCES, TextDataModule, settings

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)

SHAKESPEARE = register_corpus(
    CorpusSpec(
        name="shakespeare",
        filenames=("tinyshakespeare.txt", "shakespeare.txt", "input.txt"),
        hub_id=SHAKESPEARE_URL,
    )
)
# nanoGPT's 90/10: no test share unless asked for.
SHAKESPEARE_SPLITS = Splits(test_fraction=0.0)


class ShakespeareDataModule(TextDataModule):
    """tinyshakespeare as nanoGPT's shakespeare_char: train on the first 90%, validate on the tail.

    Every other argument is TextDataModule's (windows, tokens, ...); with the char tokenizer the
    vocabulary is nanoGPT's 65 characters.

    Args:
        data_path: local copy of the tinyshakespeare text; overrides the folder search and the hub.
        hub_id: where the hub path loads from (default: the char-rnn input.txt URL).
        abc_style: abcGPT's surface form (lowercase, spaces around . , ! ? ; :), off by default so
            the numbers compare with nanoGPT's.
        splits: as TextDataModule's, but test_fraction is 0 by default, to keep nanoGPT's 90/10
            split (and its val losses comparable), so `fit test` asks for a test share (carved
            from the training text just before the val tail).
        sources: as TextDataModule's; `data_path` and `hub_id` set its entries for shakespeare.
    """

    def __init__(
        self,
        data_path: str | None = None,
        hub_id: str | None = None,
        abc_style: bool = False,
        splits: Splits = SHAKESPEARE_SPLITS,
        sources: Sources = DEFAULT_SOURCES,
        **kwargs: Any,
    ):
        name = SHAKESPEARE.name
        super().__init__(
            corpora=[name],
            splits=settings(splits, SHAKESPEARE_SPLITS),
            sources=settings(sources, DEFAULT_SOURCES).with_corpus(name, data_path=data_path, hub_id=hub_id),
            abc_style=[name] if abc_style else [],
            **kwargs,
        )
        # Recorded in checkpoints, so analysis tools can rebuild this data from a checkpoint alone.
        self.record_settings()

    def setting(self, name: str) -> str:
        return "data_path"
