"""TinyStories (roneneldan/TinyStories): short stories, split by story, each ended by `<EOS>`."""

from __future__ import annotations

from typing import Any

from datamodules.text import CorpusSpec, TextDataModule, register_corpus

TINYSTORIES = register_corpus(
    CorpusSpec(
        name="tinystories",
        filenames=("tinystories.txt", "TinyStories-train.txt"),
        hub_id="roneneldan/TinyStories",
        hub_split="train",
        separator="<|endoftext|>",
    )
)


class TinyStoriesDataModule(TextDataModule):
    """TinyStories: stories are whole on one side of the split (a hash of each story decides).

    Every other argument is TextDataModule's (block_size, batch_size, tokenizer_kind, ...).

    Args:
        data_path: local file of stories separated by `<|endoftext|>` lines (TinyStories-train.txt
            or a prefix of it); overrides the folder search and the hub.
        hub_id: hub dataset id (default roneneldan/TinyStories).
        hub_split: split loaded from the hub; slicing such as "train[:50000]" works.
        abc_style: abcGPT's surface form (lowercase, spaces around . , ! ? ; :).
    """

    def __init__(
        self,
        data_path: str | None = None,
        hub_id: str | None = None,
        hub_split: str | None = None,
        abc_style: bool = False,
        **kwargs: Any,
    ):
        name = TINYSTORIES.name
        super().__init__(
            corpora=[name],
            data_paths={name: data_path} if data_path else None,
            hub_ids={name: hub_id} if hub_id else None,
            hub_splits={name: hub_split} if hub_split else None,
            abc_style=[name] if abc_style else [],
            **kwargs,
        )
        # Recorded in checkpoints, so analysis tools can rebuild this data from a checkpoint alone.
        self.save_hyperparameters()

    def setting(self, name: str) -> str:
        return "data_path"
