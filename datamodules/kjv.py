"""The King James Bible as running text: a third voice for the dial and an out-of-domain corpus.

Any plain-text copy works: the shared `kjv.txt` (one verse per line, references removed) or
Project Gutenberg's eBook #10 (`source: hub` downloads it as a raw text file). Running text, so
it splits like Shakespeare: a contiguous tail for validation, the test share just before it.
"""

from __future__ import annotations

from datamodules.corpora import CorpusSpec, register_corpus

KJV_URL = "https://www.gutenberg.org/cache/epub/10/pg10.txt"

KJV = register_corpus(CorpusSpec(name="kjv", filenames=("kjv.txt", "pg10.txt"), hub_id=KJV_URL))
