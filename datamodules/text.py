"""Text corpora for language modelling: load, split, normalise, tokenise once, cut windows.

The pipeline, per corpus (see `CorpusSpec`; shakespeare.py and tinystories.py register theirs):

    source   a local file (`data_paths`, `$SUCCU_DATA_DIR`, or the default data folders) by
             default; the hub (`datasets.load_dataset(hub_id)`; a URL loads as a raw text file)
             only when asked: `source="hub"`, or `"auto"` (the hub when no local file is found).
             Even then nothing touches the network when HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set.
    split    deterministic, three ways: train, val, test. Document corpora (TinyStories) split by
             a salted CRC32 of each story, so no story (nor any duplicate of it) is on two sides;
             running text (Shakespeare) keeps a contiguous tail for val, nanoGPT's 90/10, and the
             test share just before it. The test share comes out of training, never out of val:
             validation windows are the same as before test splits existed.
    surface  `fold_ascii` (curly quotes, dashes, ellipses to ASCII) and `abc_style` (abcGPT's
             lowercase form with spaced punctuation), each switchable.
    tokens   one tokenizer shared by every corpus in use (char over all their text, or BPE trained
             on the training splits), cached as JSON; ids tokenised once with `datasets.map`
             (batched) into a flat uint16/uint32 file under a key of source, split, surface rules
             and tokenizer, so a second run reads the arrays and tokenises nothing.
    batches  training rows are block_size + 1 windows at random offsets (nanoGPT); batch k on rank
             r is drawn from a `torch.Generator` seeded by (seed, r, k), so a run is reproducible,
             ranks differ, and resuming needs only the count of batches consumed (the datamodule's
             `state_dict`). Validation uses fixed, evenly spaced windows: val loss is comparable
             across runs and models; test uses as many windows, over the test share. With several
             corpora each row is labelled with `source`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from succu.contracts import BatchSized, NamedCorpora, TextSplits, TrainingTokenCounts
from succu.data import ResumableTraining, pin_memory
from succu.dial import DialSampler
from succu.io import atomic_write
from succu.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    CorpusTokenizer,
    check_normalizers,
    normalize_text,
    tokenizer_from_state,
)

EOS = "<EOS>"
TRUTHY = {"1", "on", "yes", "true"}
# Looked in, in order, when neither a data path nor data_dir / $SUCCU_DATA_DIR is given; relative
# to the working directory (a checkout's root, with the shared corpora beside it), never to where
# the package is installed.
DEFAULT_DATA_DIRS = (Path("data"), Path("..") / "shared" / "data")
TOKENIZER_KINDS = ("char", "bpe")
SOURCES = ("local", "hub", "auto")


class CorpusError(FileNotFoundError):
    """A corpus that cannot be found or loaded; the message is one line naming the fix."""


# ---- corpora ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus comes from and how it splits.

    Attributes:
        name: the corpus name used in configs and in `source` labels.
        filenames: local file names looked up in the data folders (first one named in errors).
        hub_id: a dataset id on the Hugging Face hub, or an http(s) URL of a raw text file.
        hub_split: the split loaded from the hub (slicing like "train[:10%]" works).
        text_field: the text column of the hub dataset.
        separator: documents separator in the local file; None for running text.
    """

    name: str
    filenames: tuple[str, ...]
    hub_id: str | None = None
    hub_split: str = "train"
    text_field: str = "text"
    separator: str | None = None

    @property
    def documents(self) -> bool:
        """Document corpora split by document and end each one with `<EOS>`."""
        return self.separator is not None


CORPORA: dict[str, CorpusSpec] = {}


def register_corpus(spec: CorpusSpec) -> CorpusSpec:
    CORPORA[spec.name] = spec
    return spec


def import_failure(module: str, err: ImportError) -> ImportError:
    """One line: which corpus module failed to import, and why."""
    return ImportError(f"importing {module} failed: {type(err).__name__}: {' '.join(str(err).split())}")


def corpus_spec(name: str) -> CorpusSpec:
    """The registered spec; `datamodules.<name>` is imported on first use to register it."""
    if name not in CORPORA:
        module = f"datamodules.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if not (module + ".").startswith(f"{err.name}."):  # it is there; what it imports is not
                raise import_failure(module, err) from err
        except ImportError as err:
            raise import_failure(module, err) from err
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {sorted(CORPORA)}")
    return CORPORA[name]


def hub_offline() -> bool:
    """True when the environment forbids the hub (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE)."""
    flags = (os.environ.get(k, "") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    return any(f.strip().lower() in TRUTHY for f in flags)


@dataclass(frozen=True)
class Source:
    """A resolved corpus location: kind is "file" or "hub" (a hub id or a URL, and its split)."""

    kind: str
    location: str
    split: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        if self.kind == "file":
            stat = Path(self.location).stat()
            return {"file": self.location, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return {"hub": self.location, "split": self.split}


def resolve_source(
    spec: CorpusSpec,
    data_path: str | None = None,
    data_dir: str | None = None,
    source: str = "local",
    hub_id: str | None = None,
    setting: str = "data_path",
    hub_split: str | None = None,
) -> Source:
    """Pick the local file or the hub. `setting` is the config key named in errors.

    "local" (the default) never touches the network: a run downloads only when its config asks
    for the hub (`source: hub`, or `auto` to fall back to it when no local file is found).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    hint = f"set {setting}=/path/to/{spec.filenames[0]} (or $SUCCU_DATA_DIR)"
    if data_path:
        path = Path(data_path).expanduser()
        if not path.is_file():
            raise CorpusError(f"{spec.name}: {setting} {path} does not exist; {hint}")
        return Source("file", str(path.resolve()))
    data_dir = data_dir or os.environ.get("SUCCU_DATA_DIR")
    dirs = [Path(data_dir).expanduser()] if data_dir else list(DEFAULT_DATA_DIRS)
    if source != "hub":
        for folder in dirs:
            for filename in spec.filenames:
                if (folder / filename).is_file():
                    return Source("file", str((folder / filename).resolve()))
    where = ", ".join(str(d) for d in dirs)
    hub = hub_id or spec.hub_id
    if source == "local" or hub is None:
        hub_hint = f", or source=hub to download {hub}" if hub else ""
        raise CorpusError(f"{spec.name}: no {'/'.join(spec.filenames)} in {where}; {hint}{hub_hint}")
    if hub_offline():
        raise CorpusError(
            f"{spec.name}: the hub ({hub}) is offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE) and no "
            f"local copy was found in {where}; {hint}"
        )
    return Source("hub", hub, hub_split or spec.hub_split)


def read_corpus_file(spec: CorpusSpec, path: Path, setting: str) -> str:
    """A local corpus file's text; an empty or non-UTF-8 (binary) file is one error naming it
    (otherwise: "vocab_size must be positive, got 0" or a codec error without the file)."""
    hint = f"set {setting}=/path/to/{spec.filenames[0]} (UTF-8 text)"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{spec.name}: {path} is not UTF-8 text (byte {err.start} cannot be "
                          f"decoded: binary or another encoding?); {hint}") from None
    if not text.strip():
        raise CorpusError(f"{spec.name}: {path} is empty; {hint}")
    return text


def load_documents(spec: CorpusSpec, src: Source, setting: str = "data_path") -> Any:
    """The corpus as a `datasets.Dataset` with one `text` row per document (running text: one row)."""
    import datasets

    if src.kind == "file":
        text = read_corpus_file(spec, Path(src.location), setting)
        rows = text.split(spec.separator) if spec.documents else [text]
        return datasets.Dataset.from_dict({"text": rows})
    try:
        if re.match(r"https?://", src.location):
            ds = datasets.load_dataset(
                "text", data_files=src.location, sample_by="document", split="train"
            )
        else:
            ds = datasets.load_dataset(src.location, split=src.split or spec.hub_split)
    except Exception as err:  # network, auth, missing dataset: one line with the way out
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CorpusError(
            f"{spec.name}: could not load {src.location} from the hub ({type(err).__name__}: "
            f"{first}); set {setting}=/path/to/{spec.filenames[0]} to use a local copy"
        ) from err
    if spec.text_field != "text":
        ds = ds.rename_column(spec.text_field, "text")
    return ds.select_columns(["text"])


def split_side(text: str, val_fraction: float, salt: int, test_fraction: float = 0.0) -> str:
    """Document-level split by a salted CRC32 of the (stripped) text, uniform u in [0, 1): val
    below val_fraction (as before test splits existed), test in the next test_fraction, else train."""
    u = zlib.crc32(text.encode("utf-8"), salt & 0xFFFFFFFF) / 2**32
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def split_corpus(
    spec: CorpusSpec, docs: Any, val_fraction: float, split_seed: int, rules: Sequence[str],
    test_fraction: float = 0.0,
) -> dict[str, Any]:
    """{"train", "val", "test"} Datasets of normalised texts (documents stripped); val is the
    same whatever test_fraction is: the test share is carved from what would be training."""
    import datasets

    if not spec.documents:
        text = "".join(docs["text"])
        cut = int(len(text) * (1.0 - val_fraction))
        test_cut = int(len(text) * (1.0 - val_fraction - test_fraction))
        parts = {"train": text[:test_cut], "test": text[test_cut:cut], "val": text[cut:]}
        # Paragraph chunks (split after blank lines) so `map` batches; they concatenate exactly.
        return {
            name: datasets.Dataset.from_dict(
                {"text": [c for c in re.split(r"(?<=\n\n)", normalize_text(part, rules)) if c]}
            )
            for name, part in parts.items()
        }
    idx: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for start, batch in zip(range(0, len(docs), 4096), docs.iter(batch_size=4096)):
        for i, text in enumerate(batch["text"]):
            text = text.strip()
            if text:
                idx[split_side(text, val_fraction, split_seed, test_fraction)].append(start + i)
    return {name: docs.select(rows) for name, rows in idx.items()}


def document_texts(ds: Any, documents: bool, rules: Sequence[str], batch_size: int = 1024):
    """Yield normalised texts of a split (documents stripped; chunks were normalised already)."""
    for batch in ds.iter(batch_size=batch_size):
        for text in batch["text"]:
            yield normalize_text(text.strip(), rules).strip() if documents else text


# ---- tokenising and the on-disk cache ------------------------------------------------------
def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def token_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def tokenize_documents(ds: Any, tokenizer: CorpusTokenizer, documents: bool, rules: Sequence[str]):
    """All ids of a split as one flat array, tokenised with `datasets.map` (batched, in memory).

    Each document is normalised, stripped, encoded and followed by `<EOS>`; running-text chunks
    (normalised when split) are encoded as they are.
    """
    import datasets
    import pyarrow.compute as pc

    dtype = token_dtype(tokenizer.vocab_size)
    eos = tokenizer.token_id(EOS)

    def encode(batch: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
        texts = batch["text"]
        if documents:
            texts = [normalize_text(t.strip(), rules).strip() for t in texts]
        ids = tokenizer.encode_batch(texts, normalized=True)
        if documents:
            ids = [np.append(a, eos) for a in ids]
        return {"ids": [a.astype(dtype) for a in ids]}

    features = datasets.Features({"ids": datasets.List(datasets.Value(np.dtype(dtype).name))})
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        out = ds.map(
            encode, batched=True, batch_size=1000, remove_columns=ds.column_names,
            features=features, keep_in_memory=True, new_fingerprint=f"succu-{id(tokenizer)}",
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    column = out.data.column("ids")
    if column.num_chunks == 0 or len(out) == 0:
        return np.zeros(0, dtype=dtype)
    return pc.list_flatten(column).to_numpy().astype(dtype, copy=False)


# Independent random streams of one batch index (distributed.py's per-step torch seed uses 3).
WINDOW_STREAM, DIAL_STREAM = 0, 2


def window_seed(seed: int, rank: int, index: int, stream: int = WINDOW_STREAM) -> int:
    """A 63-bit seed for batch `index` of `stream` on `rank`: independent draws, random access."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, rank, index, stream]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def cut_windows(arrays: Sequence[np.ndarray], sources: torch.Tensor, offsets: torch.Tensor, block: int):
    """Rows arrays[sources[i]][offsets[i] : offsets[i] + block + 1] as an int64 (B, block + 1)."""
    rows = np.empty((len(offsets), block + 1), dtype=np.int64)
    span = np.arange(block + 1)
    src, off = sources.numpy(), offsets.numpy()
    for s in np.unique(src):
        pick = src == s
        rows[pick] = arrays[s][off[pick][:, None] + span]
    return torch.from_numpy(rows)


def as_batch(rows: torch.Tensor, sources: torch.Tensor | None) -> dict[str, torch.Tensor]:
    batch = {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, 1:].contiguous()}
    if sources is not None:
        batch["source"] = sources.long()
    return batch


class RandomWindows(IterableDataset):
    """An epoch of `length` batches of random windows, starting at `cursor["consumed"]`.

    Batch k depends on (seed, rank, k) only. With DataLoader workers, worker w makes batches
    k = start + w, start + w + W, ... which the loader hands back in order.
    """

    def __init__(self, sampler: WindowSampler, length: int, cursor: dict[str, int]):
        self.sampler, self.length, self.cursor = sampler, length, cursor

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        start = self.cursor["consumed"]
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k in range(start + worker, start + self.length, workers):
            yield self.sampler.batch(k)


@dataclass
class WindowSampler:
    """Draws batches of windows over K token arrays (rows labelled with `source` when labelled)."""

    arrays: list[np.ndarray]
    block_size: int
    batch_size: int
    seed: int
    rank: int
    weights: torch.Tensor
    labelled: bool
    dial: DialSampler | None = None

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Training batch `index`: rows of corpora drawn by `weights`, or by the dial when one is
        installed (then the batch carries `alpha`: (B,), or (1,) for one position per batch)."""
        g = torch.Generator().manual_seed(window_seed(self.seed, self.rank, index, WINDOW_STREAM))
        n, alpha = self.batch_size, None
        if self.dial is not None:
            alpha, sources = self.dial.draw(window_seed(self.seed, self.rank, index, DIAL_STREAM), n)
            alpha = alpha if self.dial.per_sample else alpha[:1]
        elif len(self.arrays) == 1:
            sources = torch.zeros(n, dtype=torch.long)
        else:
            sources = torch.multinomial(self.weights, n, replacement=True, generator=g)
        spans = torch.tensor([len(a) - self.block_size for a in self.arrays], dtype=torch.float64)
        offsets = (torch.rand(n, generator=g, dtype=torch.float64) * spans[sources]).long()
        rows = cut_windows(self.arrays, sources, offsets, self.block_size)
        batch = as_batch(rows, sources if self.labelled or alpha is not None else None)
        if alpha is not None:
            batch["alpha"] = alpha
        return batch


def fixed_batches(
    arrays: Sequence[np.ndarray], block: int, n_windows: int, batch_size: int, labelled: bool
) -> list[dict[str, torch.Tensor]]:
    """Evenly spaced windows over each array, batched per corpus (a batch never mixes sources)."""
    batches = []
    for s, arr in enumerate(arrays):
        last = len(arr) - block - 1
        count = min(n_windows, last + 1)
        offsets = torch.from_numpy(np.linspace(0, last, count).round().astype(np.int64))
        for chunk in offsets.split(batch_size):
            sources = torch.full((len(chunk),), s, dtype=torch.long)
            batches.append(as_batch(cut_windows(arrays, sources, chunk, block), sources if labelled else None))
    return batches


class BatchList(Dataset):
    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


# ---- the datamodule --------------------------------------------------------------------------
class TextDataModule(ResumableTraining, NamedCorpora, BatchSized, TrainingTokenCounts, TextSplits):
    """K named text corpora, one shared tokenizer, random training windows, fixed val windows.

    Args:
        corpora: corpus names (registered `CorpusSpec`s, e.g. shakespeare, tinystories).
        block_size: tokens per training/validation row (windows are block_size + 1 long).
        batch_size: rows per training batch.
        tokenizer_kind: "char" (every character of the corpora in use) or "bpe" (byte-level BPE
            trained on the training splits).
        bpe_vocab_size: BPE vocabulary size, specials included.
        data_paths: local file per corpus name; overrides the folder search and the hub.
        data_dir: folder with the corpus files (default: $SUCCU_DATA_DIR, else ./data and
            ../shared/data beside the repository).
        source: "local" (default: never the network), "hub" (download from `hub_ids`), or "auto"
            (a local file if found, else the hub).
        hub_ids: hub dataset id (or raw-text URL) per corpus name, overriding the defaults.
        hub_splits: hub split per corpus name (e.g. "train[:50000]"), overriding the defaults.
        val_fraction: share held out: the tail of running text, a hashed share of documents.
        test_fraction: share held out for test (`fit test`, `python -m succu.evaluate --corpus`),
            taken from training: the stretch of running text just before the val tail, the next
            hashed share of documents. 0 means no test split.
        split_seed: salt of the document split hash.
        abc_style: corpora given abcGPT's surface form (lowercase, spaced punctuation).
        fold_ascii: fold curly quotes, dashes and ellipses to ASCII in every corpus.
        val_windows: fixed evenly spaced validation windows per corpus.
        val_batch_size: rows per validation batch (default: batch_size).
        batches_per_epoch: training batches that make an epoch (windows are drawn forever).
        weights: sampling weight per corpus for training rows (default: uniform).
        seed: window seed (default: the global seed, $PL_GLOBAL_SEED, else 0); combined with the
            global rank so DDP ranks draw different windows.
        num_workers: DataLoader workers (0 is right for in-memory windows).
        cache_dir: tokenizer and token cache (default: $SUCCU_CACHE_DIR or ~/.cache/succu).
        label_source: add `source` (B,) to batches (default: when there are several corpora).
    """

    def __init__(
        self,
        corpora: list[str],
        block_size: int = 64,
        batch_size: int = 12,
        tokenizer_kind: str = "char",
        bpe_vocab_size: int = 1024,
        data_paths: dict[str, str] | None = None,
        data_dir: str | None = None,
        source: str = "local",
        hub_ids: dict[str, str] | None = None,
        hub_splits: dict[str, str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.05,
        split_seed: int = 0,
        abc_style: list[str] | None = None,
        fold_ascii: bool = True,
        val_windows: int = 256,
        val_batch_size: int | None = None,
        batches_per_epoch: int = 250,
        weights: list[float] | None = None,
        seed: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        label_source: bool | None = None,
    ):
        super().__init__()
        self.specs = [corpus_spec(name) for name in corpora]
        self.check_arguments(
            corpora, tokenizer_kind, (val_fraction, test_fraction), weights,
            {"abc_style": abc_style, "data_paths": data_paths, "hub_ids": hub_ids, "hub_splits": hub_splits},
        )
        self.corpora = list(corpora)
        self.block_size = block_size
        self.batch_size = batch_size
        self.tokenizer_kind = tokenizer_kind
        self.bpe_vocab_size = bpe_vocab_size
        self.data_paths = dict(data_paths or {})
        self.data_dir = data_dir
        self.source = source
        self.hub_ids = dict(hub_ids or {})
        self.hub_splits = dict(hub_splits or {})
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.abc_style = list(abc_style or [])
        self.fold_ascii = fold_ascii
        self.val_windows = val_windows
        self.val_batch_size = val_batch_size or batch_size
        self.batches_per_epoch = batches_per_epoch
        self.weights = torch.tensor(weights or [1.0] * len(corpora), dtype=torch.float64)
        self.seed = seed
        self.num_workers = num_workers
        self.cache_dir = Path(
            cache_dir or os.environ.get("SUCCU_CACHE_DIR") or Path.home() / ".cache" / "succu"
        ).expanduser()
        self.label_source = len(corpora) > 1 if label_source is None else label_source
        self._tokenizer: CorpusTokenizer | None = None
        self._sources: dict[str, Source] = {}
        self._splits: dict[str, dict[str, Any]] = {}
        self.train_arrays: list[np.ndarray] = []
        self.val_arrays: list[np.ndarray] = []
        self._val_batches: list[dict[str, torch.Tensor]] | None = None
        self._test_batches: list[dict[str, torch.Tensor]] | None = None
        self._sampler: WindowSampler | None = None
        self._tokenizer_digest: str | None = None
        self._tokenizer_digest_of: CorpusTokenizer | None = None
        self._dial: DialSampler | None = None

    @staticmethod
    def check_arguments(corpora, kind, fractions, weights, per_corpus: dict[str, Any]) -> None:
        if not corpora or len(set(corpora)) != len(corpora):
            raise ValueError(f"corpora must be a non-empty list of distinct names, got {corpora}")
        if kind not in TOKENIZER_KINDS:
            raise ValueError(f"tokenizer_kind must be one of {TOKENIZER_KINDS}, got {kind!r}")
        val_fraction, test_fraction = fractions
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if not (0.0 <= test_fraction and val_fraction + test_fraction < 1.0):
            raise ValueError(f"test_fraction must be >= 0 and leave training data beside "
                             f"val_fraction={val_fraction}, got {test_fraction}")
        if weights is not None and (len(weights) != len(corpora) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"weights must be {len(corpora)} non-negative numbers, got {weights}")
        for what, names in per_corpus.items():
            unknown = sorted(set(names or []) - set(corpora))
            if unknown:
                raise ValueError(f"{what} names corpora not in use: {unknown} (corpora: {corpora})")

    # ---- settings ------------------------------------------------------------------------------
    def setting(self, name: str) -> str:
        """The config key that sets a corpus's local file (named in error messages)."""
        return f"data_paths.{name}"

    def rules(self, name: str) -> list[str]:
        rules = (["fold_ascii"] if self.fold_ascii else []) + (["abc_style"] if name in self.abc_style else [])
        return check_normalizers(rules)

    def shared_rules(self) -> list[str]:
        """Rules every corpus shares: the tokenizer applies them to raw prompts."""
        common = set(self.rules(self.corpora[0]))
        for name in self.corpora[1:]:
            common &= set(self.rules(name))
        return check_normalizers(common)

    def source_of(self, name: str) -> Source:
        if name not in self._sources:
            spec = corpus_spec(name)
            self._sources[name] = resolve_source(
                spec, self.data_paths.get(name), self.data_dir, self.source,
                self.hub_ids.get(name), self.setting(name), self.hub_splits.get(name),
            )
        return self._sources[name]

    def corpus_key(self, name: str) -> dict[str, Any]:
        return {
            "corpus": name, "source": self.source_of(name).fingerprint(), "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction, "split_seed": self.split_seed, "rules": self.rules(name),
        }

    def splits(self, name: str) -> dict[str, Any]:
        """{"train", "val", "test"} datasets of a corpus, loaded once per datamodule until tokenised."""
        if name not in self._splits:
            spec = corpus_spec(name)
            docs = load_documents(spec, self.source_of(name), self.setting(name))
            self._splits[name] = split_corpus(spec, docs, self.val_fraction, self.split_seed,
                                              self.rules(name), self.test_fraction)
        return self._splits[name]

    def split_texts(self, side: str) -> dict[str, str]:
        """Each corpus's `side` split ("train", "val", "test") as one text, normalised by its
        rules: documents stripped, one per line (as `document_texts` gives them); running text as
        it is (its chunks were normalised when split)."""
        if side not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {side!r}")
        texts = {}
        for spec in self.specs:
            docs = self.splits(spec.name)[side]
            texts[spec.name] = "\n".join(document_texts(docs, True, self.rules(spec.name))) \
                if spec.documents else "".join(docs["text"])
        return texts

    # ---- tokenizer -----------------------------------------------------------------------------
    @property
    def tokenizer(self) -> CorpusTokenizer:
        """Built on first use (read from the cache when there), so `vocab_size` works before setup."""
        if self._tokenizer is None:
            self._tokenizer = self.load_or_build_tokenizer()
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def tokenizer_path(self) -> Path:
        key = {
            "kind": self.tokenizer_kind, "corpora": [self.corpus_key(n) for n in self.corpora],
            "bpe_vocab_size": self.bpe_vocab_size if self.tokenizer_kind == "bpe" else None,
        }
        return self.cache_dir / "tokenizers" / f"{self.tokenizer_kind}-{digest(key)}.json"

    def load_or_build_tokenizer(self) -> CorpusTokenizer:
        path = self.tokenizer_path()
        if not path.is_file():
            tok = self.build_tokenizer()
            # First writer wins, and everyone reads the file: DDP ranks agree on one tokenizer.
            atomic_write(path, json.dumps(tok.state_dict()).encode(), exclusive=True)
        return tokenizer_from_state(json.loads(path.read_text()))

    def build_tokenizer(self) -> CorpusTokenizer:
        specials = [EOS] if any(s.documents for s in self.specs) else []
        rules = self.shared_rules()

        def texts(sides: tuple[str, ...]):
            for spec in self.specs:
                for side in sides:
                    yield from document_texts(self.splits(spec.name)[side], spec.documents, self.rules(spec.name))

        if self.tokenizer_kind == "char":  # every character of the corpus, as before test splits
            return CharTokenizer.from_texts(texts(("train", "val", "test")), specials, rules)
        return BPETokenizer.train(texts(("train",)), self.bpe_vocab_size, specials, rules)

    # ---- token cache -----------------------------------------------------------------------------
    def token_dir(self, name: str) -> Path:
        tok = self.tokenizer
        if self._tokenizer_digest_of is not tok:  # the digest of a BPE state is worth keeping
            self._tokenizer_digest, self._tokenizer_digest_of = digest(tok.state_dict()), tok
        key = {"corpus": self.corpus_key(name), "tokenizer": self._tokenizer_digest}
        return self.cache_dir / "tokens" / f"{name}-{digest(key)}"

    def prepare_data(self) -> None:
        """Tokenise every corpus not cached yet (the only step that downloads or writes caches)."""
        for spec in self.specs:
            folder = self.token_dir(spec.name)
            if (folder / "meta.json").is_file():
                continue
            meta: dict[str, Any] = {"dtype": np.dtype(token_dtype(self.vocab_size)).name}
            for side in self.sides():
                ids = tokenize_documents(
                    self.splits(spec.name)[side], self.tokenizer, spec.documents, self.rules(spec.name)
                )
                atomic_write(folder / f"{side}.bin", ids.tobytes())
                meta[side] = int(len(ids))
            meta["key"] = {"corpus": self.corpus_key(spec.name), "tokenizer": self.tokenizer.kind}
            atomic_write(folder / "meta.json", json.dumps(meta, indent=1).encode())
        self._splits.clear()  # the texts are on disk as ids now

    def sides(self) -> tuple[str, ...]:
        return ("train", "val", "test") if self.test_fraction > 0 else ("train", "val")

    def load_arrays(self, side: str) -> list[np.ndarray]:
        arrays = []
        for name in self.corpora:
            folder = self.token_dir(name)
            meta = json.loads((folder / "meta.json").read_text())
            arr = np.memmap(folder / f"{side}.bin", dtype=meta["dtype"], mode="r", shape=(meta[side],))
            if len(arr) <= self.block_size + 1:
                raise ValueError(
                    f"{name} {side} split has {len(arr)} tokens, too few for block_size={self.block_size}"
                )
            arrays.append(arr)
        return arrays

    def setup(self, stage: str | None = None) -> None:
        if self.train_arrays:
            return
        if not all((self.token_dir(n) / "meta.json").is_file() for n in self.corpora):
            self.prepare_data()  # called without a Trainer (scripts, tests)
        self.train_arrays = self.load_arrays("train")
        self.val_arrays = self.load_arrays("val")

    # ---- batches -------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        if self.trainer is not None:
            return self.trainer.global_rank
        return int(os.environ.get("RANK", 0))

    def window_seed_base(self) -> int:
        return self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

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
        data = RandomWindows(self.sampler(), self.batches_per_epoch, self.train_cursor)
        return DataLoader(data, batch_size=None, num_workers=self.num_workers,
                          pin_memory=pin_memory(self.trainer))

    def val_batches(self) -> list[dict[str, torch.Tensor]]:
        if self._val_batches is None:
            self.setup()
            self._val_batches = fixed_batches(
                self.val_arrays, self.block_size, self.val_windows, self.val_batch_size, self.label_source
            )
        return self._val_batches

    def val_dataloader(self) -> DataLoader:
        return DataLoader(BatchList(self.val_batches()), batch_size=None, num_workers=0,
                          pin_memory=pin_memory(self.trainer))

    def test_batches(self) -> list[dict[str, torch.Tensor]]:
        """As many fixed windows as validation (val_windows per corpus), over the test share."""
        if self.test_fraction <= 0:
            raise ValueError(f"{'/'.join(self.corpora)} has no test split (test_fraction=0); set "
                             "data.init_args.test_fraction, or use validate for the val split")
        if self._test_batches is None:
            self.setup()
            self._test_batches = fixed_batches(
                self.load_arrays("test"), self.block_size, self.val_windows, self.val_batch_size,
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
