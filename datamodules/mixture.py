"""K named corpora in one datamodule: one shared tokenizer, rows labelled with their `source`."""

from __future__ import annotations

from typing import Any

from datamodules.text import TextDataModule


class MixtureDataModule(TextDataModule):
    """Several corpora mixed row by row; `source` (B,) names each row's corpus by its index.

    TextDataModule with two defaults changed, for abcGPT's dial: the corpora are TinyStories and
    Shakespeare, and Shakespeare is put in abcGPT's surface form. Training rows draw their corpus
    from `weights` (uniform by default), or from the dial that AlphaBetaSampling installs;
    validation batches are fixed windows of one corpus each, labelled, so a module can log
    per-corpus losses. Every other argument is TextDataModule's (windows, tokens, splits, ...).

    Args:
        corpora: corpus names; a row's `source` is its index in this list.
        abc_style: corpora put in abcGPT's surface form (lowercase, spaced punctuation); by
            default Shakespeare, as abcGPT does.
    """

    def __init__(
        self,
        corpora: list[str] | None = None,
        abc_style: list[str] | None = None,
        **kwargs: Any,
    ):
        corpora = list(corpora) if corpora is not None else ["tinystories", "shakespeare"]
        if abc_style is None:
            abc_style = [c for c in corpora if c == "shakespeare"]
        super().__init__(corpora=corpora, abc_style=abc_style, label_source=True, **kwargs)
        # Recorded in checkpoints, so analysis tools can rebuild this data from a checkpoint alone.
        self.record_settings()
