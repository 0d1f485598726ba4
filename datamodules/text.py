"""Text corpora for language modelling: TextDataModule, K named corpora behind one tokenizer.

The pipeline, per corpus, one module a stage:

    corpora.py   source (local files by default, the hub only when asked) and the deterministic
                 train / val / test split; surface rules (fold_ascii, abc_style) applied to the text.
                 A name that is not a registered corpus is the user's own text under that name.
    tokens.py    one tokenizer shared by every corpus in use, ids tokenised once and cached on disk.
    windows.py   random training windows drawn from (seed, rank, batch index); fixed, evenly
                 spaced validation and test windows; rows labelled with their corpus (`source`).

Settings come in groups along that pipeline, each a small dataclass: `windows` (Windows), `tokens`
(Tokens), `splits` (Splits), `sources` (Sources). In YAML a group is a nested mapping,
`data.init_args.windows.block_size: 64`; a group given in part keeps its other defaults. A
checkpoint records each group as the plain dict of its fields.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.corpora import (
    CorpusError,
    CorpusSpec,
    Source,
    Sources,
    Splits,
    document_texts,
    load_documents,
    own_corpus,
    registered_corpus,
)
from datamodules.tokens import (
    EOS,
    TOKENIZER_KINDS,
    Tokens,
    build_tokenizer,
    cache_problem,
    digest,
    load_or_build_tokenizer,
    read_token_array,
    token_dir,
    tokenizer_path,
    write_token_cache,
)
from datamodules.windows import BatchList, RandomWindows, Windows, WindowSampler, fixed_batches
from succu.contracts import (
    BatchSized,
    CorpusText,
    NamedCorpora,
    TextFingerprints,
    TextSplits,
    TrainingTokenCounts,
)
from succu.data import ResumableTraining, pin_memory
from succu.dial import DialSampler
from succu.tokenizers import CorpusTokenizer, check_normalizers

G = TypeVar("G")
GROUPS = ("windows", "tokens", "splits", "sources")  # TextDataModule's settings groups
# Their defaults: frozen, so one instance serves every call.
DEFAULT_WINDOWS, DEFAULT_TOKENS, DEFAULT_SPLITS, DEFAULT_SOURCES = Windows(), Tokens(), Splits(), Sources()


def settings(value: G | Mapping[str, Any], default: G) -> G:
    """A settings group: `value` itself, or a dict of some of its fields (what a checkpoint
    records, or a group given in part) over `default`."""
    if isinstance(value, Mapping):
        return dataclasses.replace(default, **value)
    if not isinstance(value, type(default)):
        raise TypeError(f"expected {type(default).__name__} or a dict of its fields, got {type(value).__name__}")
    return value


class TextDataModule(ResumableTraining, NamedCorpora, BatchSized, TrainingTokenCounts, TextSplits,
                     TextFingerprints):
    """K named text corpora, one shared tokenizer, random training windows, fixed val windows.

    Each settings group takes its dataclass or a dict of some of its fields (the rest keep their
    defaults). `block_size` and `batch_size` are also attributes: the CLI links the first into the
    model, scale-out tools may set the second (`BatchSized`).

    Args:
        corpora: corpus names: registered ones (shakespeare, tinystories, kjv), or any other name
            for your own text, given in `sources.data_paths` (else `<name>.txt` or a folder
            `<name>` in the data folders).
        windows: rows and batches: block_size, batch_size, val_windows, val_batch_size,
            batches_per_epoch, seed, num_workers.
        tokens: the tokenizer and its cache: tokenizer_kind, bpe_vocab_size, cache_dir.
        splits: the train / val / test split: val_fraction, test_fraction, split_seed.
        sources: where the text comes from: data_paths, data_dir, source, hub_ids, hub_splits,
            separators.
        abc_style: corpora given abcGPT's surface form (lowercase, spaced punctuation).
        fold_ascii: fold curly quotes, dashes and ellipses to ASCII in every corpus.
        weights: sampling weight per corpus for training rows (default: uniform).
        label_source: add `source` (B,) to batches (default: when there are several corpora).
    """

    def __init__(
        self,
        corpora: list[str],
        windows: Windows = DEFAULT_WINDOWS,
        tokens: Tokens = DEFAULT_TOKENS,
        splits: Splits = DEFAULT_SPLITS,
        sources: Sources = DEFAULT_SOURCES,
        abc_style: list[str] | None = None,
        fold_ascii: bool = True,
        weights: list[float] | None = None,
        label_source: bool | None = None,
    ):
        super().__init__()
        self.windows = settings(windows, DEFAULT_WINDOWS)
        self.tokens = settings(tokens, DEFAULT_TOKENS)
        self.splits = settings(splits, DEFAULT_SPLITS)
        self.sources = settings(sources, DEFAULT_SOURCES)
        self.check_arguments(corpora, weights, abc_style)
        self.specs = [self.spec_of(name) for name in corpora]
        self.corpora = list(corpora)
        self.block_size = self.windows.block_size
        self.batch_size = self.windows.batch_size
        self.val_batch_size = self.windows.val_batch_size or self.batch_size
        self.abc_style = list(abc_style or [])
        self.fold_ascii = fold_ascii
        self.weights = torch.tensor(weights or [1.0] * len(corpora), dtype=torch.float64)
        self.cache_dir = Path(
            self.tokens.cache_dir or os.environ.get("SUCCU_CACHE_DIR") or Path.home() / ".cache" / "succu"
        ).expanduser()
        self.label_source = len(corpora) > 1 if label_source is None else label_source
        self._tokenizer: CorpusTokenizer | None = None
        self._resolved: dict[str, Source] = {}
        self._datasets: dict[str, dict[str, Any]] = {}
        self.train_arrays: list[np.ndarray] = []
        self.val_arrays: list[np.ndarray] = []
        self._val_batches: list[dict[str, torch.Tensor]] | None = None
        self._test_batches: list[dict[str, torch.Tensor]] | None = None
        self._sampler: WindowSampler | None = None
        self._tokenizer_digest: str | None = None
        self._tokenizer_digest_of: CorpusTokenizer | None = None
        self._dial: DialSampler | None = None
        self._texts: list[CorpusText] | None = None
        self._verified: set[Path] = set()  # token caches checked (checksums) by this datamodule

    def record_settings(self, **resolved: Any) -> None:
        """Record the calling subclass's init arguments as its hyperparameters, as plain data: each
        settings group as the dict of its fields (checkpoints load with `weights_only`), and
        `resolved` arguments as `__init__` resolved them (a corpus name derived from a path)."""
        groups = {name: dataclasses.asdict(getattr(self, name)) for name in GROUPS}
        self.save_hyperparameters(ignore=list(groups), frame=inspect.currentframe().f_back)
        self.save_hyperparameters({**groups, **resolved})

    def check_arguments(self, corpora: list[str], weights: list[float] | None, abc_style: list[str] | None) -> None:
        if not corpora or len(set(corpora)) != len(corpora):
            raise ValueError(f"corpora must be a non-empty list of distinct names, got {corpora}")
        if self.tokens.tokenizer_kind not in TOKENIZER_KINDS:
            raise ValueError(f"tokenizer_kind must be one of {TOKENIZER_KINDS}, got {self.tokens.tokenizer_kind!r}")
        self.windows.check()
        self.splits.check()
        if weights is not None and (len(weights) != len(corpora) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"weights must be {len(corpora)} non-negative numbers, got {weights}")
        per_corpus = {"abc_style": abc_style, "data_paths": self.sources.data_paths,
                      "hub_ids": self.sources.hub_ids, "hub_splits": self.sources.hub_splits,
                      "separators": self.sources.separators}
        for what, names in per_corpus.items():
            unknown = sorted(set(names or []) - set(corpora))
            if unknown:
                raise ValueError(f"{what} names corpora not in use: {unknown} (corpora: {corpora})")

    def spec_of(self, name: str) -> CorpusSpec:
        """The registered corpus of that name, else the user's own text under it."""
        separator = (self.sources.separators or {}).get(name)
        spec = registered_corpus(name)
        if spec is None:
            return own_corpus(name, separator)
        if separator is not None:
            raise ValueError(f"separators: {name} is a registered corpus, with its own rule for "
                             "documents; give your text another name")
        return spec

    # ---- settings ------------------------------------------------------------------------------
    def setting(self, name: str) -> str:
        """The config key that sets a corpus's local file (named in error messages)."""
        return f"sources.data_paths.{name}"

    def rules(self, name: str) -> list[str]:
        rules = (["fold_ascii"] if self.fold_ascii else []) + (["abc_style"] if name in self.abc_style else [])
        return check_normalizers(rules)

    def shared_rules(self) -> list[str]:
        """Rules every corpus shares: the tokenizer applies them to raw prompts."""
        common = set(self.rules(self.corpora[0]))
        for name in self.corpora[1:]:
            common &= set(self.rules(name))
        return check_normalizers(common)

    def spec(self, name: str) -> CorpusSpec:
        return self.specs[self.corpora.index(name)]

    def source_of(self, name: str) -> Source:
        if name not in self._resolved:
            self._resolved[name] = self.sources.resolve(self.spec(name), self.setting(name))
        return self._resolved[name]

    def corpus_key(self, name: str) -> dict[str, Any]:
        key = {
            "corpus": name, "source": self.source_of(name).cache_key(),
            "val_fraction": self.splits.val_fraction, "test_fraction": self.splits.test_fraction,
            "split_seed": self.splits.split_seed, "rules": self.rules(name),
        }
        if self.spec(name).own:  # a registered corpus's documents rule is fixed in code
            key["separator"] = self.spec(name).separator
        return key

    def corpus_texts(self) -> list[CorpusText]:
        """Each corpus's text and its fingerprint, hashed once per datamodule (`TextFingerprints`);
        a corpus whose text cannot be found says why in `problem`."""
        if self._texts is None:
            texts = []
            for name in self.corpora:
                try:
                    src = self.source_of(name)
                except CorpusError as err:
                    texts.append(CorpusText(name, "", self.setting(name), problem=err.reason))
                    continue
                texts.append(CorpusText(name, src.describe(), self.setting(name), **(src.text_fingerprint() or {})))
            self._texts = texts
        return self._texts

    def corpus_splits(self, name: str) -> dict[str, Any]:
        """{"train", "val", "test"} datasets of a corpus, loaded once per datamodule until tokenised."""
        if name not in self._datasets:
            spec = self.spec(name)
            docs = load_documents(spec, self.source_of(name), self.setting(name))
            self._datasets[name] = self.splits.split(spec, docs, self.rules(name))
        return self._datasets[name]

    def split_texts(self, side: str) -> dict[str, str]:
        """Each corpus's `side` split ("train", "val", "test") as one text, normalised by its
        rules: documents stripped, one per line (as `document_texts` gives them); running text as
        it is (its chunks were normalised when split)."""
        if side not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {side!r}")
        texts = {}
        for spec in self.specs:
            docs = self.corpus_splits(spec.name)[side]
            texts[spec.name] = "\n".join(document_texts(docs, True, self.rules(spec.name))) \
                if spec.documents else "".join(docs["text"])
        return texts

    # ---- tokenizer and token cache ---------------------------------------------------------------
    @property
    def tokenizer(self) -> CorpusTokenizer:
        """Built on first use (read from the cache when there), so `vocab_size` works before setup."""
        if self._tokenizer is None:
            self._tokenizer = load_or_build_tokenizer(self.tokenizer_path(), self.build_tokenizer)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def tokenizer_path(self) -> Path:
        return tokenizer_path(self.cache_dir, self.tokens, [self.corpus_key(n) for n in self.corpora])

    def build_tokenizer(self) -> CorpusTokenizer:
        specials = [EOS] if any(s.documents for s in self.specs) else []

        def texts(sides: tuple[str, ...]):
            for spec in self.specs:
                for side in sides:
                    yield from document_texts(self.corpus_splits(spec.name)[side], spec.documents, self.rules(spec.name))

        return build_tokenizer(self.tokens, texts, specials, self.shared_rules())

    def token_dir(self, name: str) -> Path:
        tok = self.tokenizer
        if self._tokenizer_digest_of is not tok:  # the digest of a BPE state is worth keeping
            self._tokenizer_digest, self._tokenizer_digest_of = digest(tok.state_dict()), tok
        return token_dir(self.cache_dir, name, self.corpus_key(name), self._tokenizer_digest)

    def prepare_data(self) -> None:
        """Tokenise every corpus not cached yet (the only step that downloads or writes caches).
        A cache that is there is verified first (`cache_problem`: sizes and checksums); a damaged
        or partial one is rebuilt from the text, with a note on stderr naming it."""
        for spec in self.specs:
            folder = self.token_dir(spec.name)
            if folder in self._verified:
                continue
            problem = cache_problem(folder, self.splits.sides()) if folder.exists() else "new"
            if problem is None:
                self._verified.add(folder)
                continue
            if problem != "new":
                print(f"note: token cache {folder}: {problem}; rebuilding it from the text",
                      file=sys.stderr, flush=True)
            write_token_cache(folder, self.corpus_splits(spec.name), self.splits.sides(), self.tokenizer,
                              spec.documents, self.rules(spec.name), self.corpus_key(spec.name))
            self._verified.add(folder)
        self._datasets.clear()  # the texts are on disk as ids now

    def load_arrays(self, side: str) -> list[np.ndarray]:
        arrays = []
        for name in self.corpora:
            arr = read_token_array(self.token_dir(name), side)
            if len(arr) <= self.block_size + 1:
                raise ValueError(
                    f"{name} {side} split has {len(arr)} tokens, too few for block_size={self.block_size} "
                    f"(text: {self.source_of(name).describe()}): a longer text or a smaller block_size"
                )
            arrays.append(arr)
        return arrays

    def setup(self, stage: str | None = None) -> None:
        if self.train_arrays:
            return
        self.corpus_texts()  # fingerprinted once, as the data is set up: what checkpoints record
        if not all(self.token_dir(n) in self._verified for n in self.corpora):
            self.prepare_data()  # without a Trainer (scripts, tests), or on another rank: verified here
        self.train_arrays = self.load_arrays("train")
        self.val_arrays = self.load_arrays("val")

    # ---- batches -------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        if self.trainer is not None:
            return self.trainer.global_rank
        return int(os.environ.get("RANK", 0))

    def window_seed_base(self) -> int:
        return self.windows.seed if self.windows.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def sampler(self) -> WindowSampler:
        """The training window sampler for the current seed and rank (rebuilt when they change)."""
        seed, rank = self.window_seed_base(), self.rank
        if self._sampler is None or (self._sampler.seed, self._sampler.rank, self._sampler.dial) != (
            seed, rank, self._dial
        ):
            self.setup()
            self._sampler = WindowSampler(
                self.train_arrays, self.block_size, self.batch_size, seed, rank, self.weights,
                self.label_source, self._dial,
            )
        return self._sampler

    def train_dataloader(self) -> DataLoader:
        data = RandomWindows(self.sampler(), self.windows.batches_per_epoch, self.train_cursor)
        return DataLoader(data, batch_size=None, num_workers=self.windows.num_workers,
                          pin_memory=pin_memory(self.trainer))

    def val_batches(self) -> list[dict[str, torch.Tensor]]:
        if self._val_batches is None:
            self.setup()
            self._val_batches = fixed_batches(
                self.val_arrays, self.block_size, self.windows.val_windows, self.val_batch_size, self.label_source
            )
        return self._val_batches

    def val_dataloader(self) -> DataLoader:
        return DataLoader(BatchList(self.val_batches()), batch_size=None, num_workers=0,
                          pin_memory=pin_memory(self.trainer))

    def test_batches(self) -> list[dict[str, torch.Tensor]]:
        """As many fixed windows as validation (val_windows per corpus), over the test share."""
        if self.splits.test_fraction <= 0:
            raise ValueError(f"{'/'.join(self.corpora)} has no test split (test_fraction=0); set "
                             "data.init_args.splits.test_fraction, or use validate for the val split")
        if self._test_batches is None:
            self.setup()
            self._test_batches = fixed_batches(
                self.load_arrays("test"), self.block_size, self.windows.val_windows, self.val_batch_size,
                self.label_source,
            )
        return self._test_batches

    def test_dataloader(self) -> DataLoader:
        return DataLoader(BatchList(self.test_batches()), batch_size=None, num_workers=0,
                          pin_memory=pin_memory(self.trainer))

    @property
    def corpus_weights(self) -> list[float]:
        return self.weights.tolist()

    def training_token_counts(self) -> torch.Tensor:
        """How often each id occurs in the training split of the corpora with a positive weight."""
        self.setup()
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for arr, weight in zip(self.train_arrays, self.corpus_weights):
            if weight > 0:
                counts += np.bincount(np.asarray(arr), minlength=self.vocab_size)
        return torch.from_numpy(counts)

    def install_dial(self, sampler: DialSampler | None) -> None:
        """Draw each training row's corpus (and its `alpha`) from `sampler` (None: by weights)."""
        if sampler is not None and sampler.n_sources != len(self.corpora):
            raise ValueError(
                f"the dial spans {sampler.n_sources} sources but the data has {len(self.corpora)} "
                f"corpora: {self.corpora}"
            )
        self._dial = sampler
