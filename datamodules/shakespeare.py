"""tinyshakespeare (karpathy/char-rnn): 1 MB of running text, split by a contiguous tail."""

from __future__ import annotations

from typing import Any

from datamodules.text import CorpusSpec, TextDataModule, register_corpus

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


class ShakespeareDataModule(TextDataModule):
    """tinyshakespeare as nanoGPT's shakespeare_char: train on the first 90%, validate on the tail.

    Every other argument is TextDataModule's (block_size, batch_size, tokenizer_kind, ...); with
    the char tokenizer the vocabulary is nanoGPT's 65 characters.

    Args:
        data_path: local copy of the tinyshakespeare text; overrides the folder search and the hub.
        hub_id: where the hub path loads from (default: the char-rnn input.txt URL).
        abc_style: abcGPT's surface form (lowercase, spaces around . , ! ? ; :), off by default so
            the numbers compare with nanoGPT's.
        test_fraction: a test share carved from the training text just before the val tail; 0 by
            default, to keep nanoGPT's 90/10 split (and its val losses comparable), so `fit test`
            asks for it.
    """

    def __init__(
        self,
        data_path: str | None = None,
        hub_id: str | None = None,
        abc_style: bool = False,
        test_fraction: float = 0.0,
        **kwargs: Any,
    ):
        name = SHAKESPEARE.name
        super().__init__(
            corpora=[name],
            test_fraction=test_fraction,
            data_paths={name: data_path} if data_path else None,
            hub_ids={name: hub_id} if hub_id else None,
            abc_style=[name] if abc_style else [],
            **kwargs,
        )
        # Recorded in checkpoints, so analysis tools can rebuild this data from a checkpoint alone.
        self.save_hyperparameters()

    def setting(self, name: str) -> str:
        return "data_path"
