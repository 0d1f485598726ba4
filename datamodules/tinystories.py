"""TinyStories (roneneldan/TinyStories): short stories, split by story, each ended by `<EOS>`."""

from __future__ import annotations

from typing import Any

from datamodules.corpora import CorpusSpec, Sources, register_corpus
from datamodules.text import DEFAULT_SOURCES, TextDataModule, settings

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

    Every other argument is TextDataModule's (windows, tokens, splits, ...).

    Args:
        data_path: local file of stories separated by `<|endoftext|>` lines (TinyStories-train.txt
            or a prefix of it); overrides the folder search and the hub.
        hub_id: hub dataset id (default roneneldan/TinyStories).
        hub_split: split loaded from the hub; slicing such as "train[:50000]" works.
        abc_style: abcGPT's surface form (lowercase, spaces around . , ! ? ; :).
        sources: as TextDataModule's; `data_path`, `hub_id` and `hub_split` set its entries for
            tinystories.
    """

    def __init__(
        self,
        data_path: str | None = None,
        hub_id: str | None = None,
        hub_split: str | None = None,
        abc_style: bool = False,
        sources: Sources = DEFAULT_SOURCES,
        **kwargs: Any,
    ):
        name = TINYSTORIES.name
        super().__init__(
            corpora=[name],
            sources=settings(sources, DEFAULT_SOURCES).with_corpus(name, data_path, hub_id, hub_split),
            abc_style=[name] if abc_style else [],
            **kwargs,
        )
        # Recorded in checkpoints, so analysis tools can rebuild this data from a checkpoint alone.
        self.record_settings()

    def setting(self, name: str) -> str:
        return "data_path"
