"""Text corpora: where each comes from, and how it splits into train, val and test.

source   local files (`data_paths`: a file, a folder of .txt files or a list; else the corpus's
         file in `$SUCCU_DATA_DIR` or the default data folders) by default; the hub
         (`datasets.load_dataset(hub_id)`; a URL loads as a raw text file) only when asked:
         `source="hub"`, or `"auto"` (the hub when no local file is found). Even then nothing
         touches the network when HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set.
split    deterministic, three ways: train, val, test. Document corpora (TinyStories) split by a
         salted CRC32 of each story, so no story (nor any duplicate of it) is on two sides;
         running text (Shakespeare) keeps a contiguous tail for val, nanoGPT's 90/10, and the test
         share just before it. The test share comes out of training, never out of val: the
         validation split does not depend on test_fraction.
surface  `fold_ascii` (curly quotes, dashes, ellipses to ASCII) and `abc_style` (abcGPT's
         lowercase form with spaced punctuation), each switchable (`succu.tokenizers`): running
         text is normalised as it splits, documents as they are read (`document_texts`).

A named corpus is a registered `CorpusSpec` (shakespeare.py, tinystories.py and kjv.py register
theirs; `registered_corpus(name)` imports `datamodules.<name>` on first use). Any other name is the
user's own text (`own_corpus`): the files given for it, else `<name>.txt` or a folder `<name>` in
the data folders; running text, or documents cut at a separator the user gives. A source's text
fingerprint (`Source.text_fingerprint`: size and sha256 of the raw bytes of its files, in order)
is what checkpoints record, so tools refuse to score a text the model did not train on.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from succu.tokenizers import normalize_text

TRUTHY = {"1", "on", "yes", "true"}
# Looked in, in order, when neither a data path nor data_dir / $SUCCU_DATA_DIR is given; relative
# to the working directory (a checkout's root, with the shared corpora beside it), never to where
# the package is installed.
DEFAULT_DATA_DIRS = (Path("data"), Path("..") / "shared" / "data")
SOURCES = ("local", "hub", "auto")
# An own corpus's name: it names cache folders and metrics (val/loss/<name>).
CORPUS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class CorpusError(FileNotFoundError):
    """A corpus that cannot be found or loaded: one line, `<corpus>: <reason>; <hint>`. `reason`
    is kept apart, so a tool can give its own way out (evaluate: `--data_path NAME=PATH`)."""

    def __init__(self, corpus: str, reason: str, hint: str = ""):
        super().__init__(f"{corpus}: {reason}" + (f"; {hint}" if hint else ""))
        self.corpus, self.reason = corpus, reason


@dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus comes from and how it splits.

    Attributes:
        name: the corpus name used in configs and in `source` labels.
        filenames: local file names looked up in the data folders (first one named in errors).
        hub_id: a dataset id on the Hugging Face hub, or an http(s) URL of a raw text file.
        hub_split: the split loaded from the hub (slicing like "train[:10%]" works).
        text_field: the text column of the hub dataset.
        separator: documents separator in the local files (each file's end ends a document too;
            "": each file is one document); None for running text (files joined in order).
        own: a user's own text (`own_corpus`), not a registered corpus: its separator enters the
            cache keys, and its default location may be a folder.
    """

    name: str
    filenames: tuple[str, ...]
    hub_id: str | None = None
    hub_split: str = "train"
    text_field: str = "text"
    separator: str | None = None
    own: bool = False

    @property
    def documents(self) -> bool:
        """Document corpora split by document and end each one with `<EOS>`."""
        return self.separator is not None


@dataclass(frozen=True)
class Sources:
    """Where the corpora's text comes from; by default local files only, never the network.

    Attributes:
        data_paths: the text of each corpus, by name: a local file, a folder (its .txt files,
            sorted, subfolders included) or a list of files and folders, read in order;
            overrides the folder search and the hub. A name that is not a registered corpus is
            the user's own text under that name.
        data_dir: folder with the corpus files (default: $SUCCU_DATA_DIR, else ./data and
            ../shared/data beside the repository).
        source: "local" (never the network), "hub" (download from `hub_ids`), or "auto" (a local
            file if found, else the hub).
        hub_ids: hub dataset id (or raw-text URL) per corpus name, overriding the defaults.
        hub_splits: hub split per corpus name (e.g. "train[:50000]"), overriding the defaults.
        separators: how each own corpus (by name) is cut into documents: at each occurrence of
            this string and at every file's end ("": each file is one document); a corpus not
            named here is running text. Registered corpora have their own rule.
    """

    data_paths: dict[str, str | list[str]] | None = None
    data_dir: str | None = None
    source: str = "local"
    hub_ids: dict[str, str] | None = None
    hub_splits: dict[str, str] | None = None
    separators: dict[str, str] | None = None

    def with_corpus(self, name: str, data_path: str | list[str] | None = None, hub_id: str | None = None,
                    hub_split: str | None = None, separator: str | None = None) -> Sources:
        """These sources with corpus `name`'s files, hub id, hub split and separator set where given."""
        def add(entries: dict[str, Any] | None, value: Any, given: bool) -> dict[str, Any] | None:
            return {**(entries or {}), name: value} if given else entries

        return replace(self, data_paths=add(self.data_paths, data_path, bool(data_path)),
                       hub_ids=add(self.hub_ids, hub_id, bool(hub_id)),
                       hub_splits=add(self.hub_splits, hub_split, bool(hub_split)),
                       separators=add(self.separators, separator, separator is not None))

    def resolve(self, spec: CorpusSpec, setting: str) -> Source:
        """Where corpus `spec` is read from (`setting`: the config key named in errors)."""
        name = spec.name
        return resolve_source(spec, (self.data_paths or {}).get(name), self.data_dir, self.source,
                              (self.hub_ids or {}).get(name), setting, (self.hub_splits or {}).get(name))


@dataclass(frozen=True)
class Splits:
    """How each corpus splits into train, val and test.

    Attributes:
        val_fraction: share held out for validation: the tail of running text, a hashed share
            of documents.
        test_fraction: share held out for test (`fit test`, `python -m succu.evaluate --corpus`),
            taken from training: the stretch of running text just before the val tail, the next
            hashed share of documents. 0 means no test split.
        split_seed: salt of the document split hash.
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.05
    split_seed: int = 0

    def check(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not (0.0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1.0):
            raise ValueError(f"test_fraction must be >= 0 and leave training data beside "
                             f"val_fraction={self.val_fraction}, got {self.test_fraction}")

    def sides(self) -> tuple[str, ...]:
        """The splits a corpus has: train and val, and test when test_fraction > 0."""
        return ("train", "val", "test") if self.test_fraction > 0 else ("train", "val")

    def split(self, spec: CorpusSpec, docs: Any, rules: Sequence[str]) -> dict[str, Any]:
        """{"train", "val", "test"} Datasets of a corpus's documents (see `split_corpus`)."""
        return split_corpus(spec, docs, self.val_fraction, self.split_seed, rules, self.test_fraction)


CORPORA: dict[str, CorpusSpec] = {}


def register_corpus(spec: CorpusSpec) -> CorpusSpec:
    CORPORA[spec.name] = spec
    return spec


def import_failure(module: str, err: ImportError) -> ImportError:
    """One line: which corpus module failed to import, and why."""
    return ImportError(f"importing {module} failed: {type(err).__name__}: {' '.join(str(err).split())}")


def registered_corpus(name: str) -> CorpusSpec | None:
    """The registered spec of that name, or None; `datamodules.<name>` is imported on first use
    to register it."""
    if name not in CORPORA and name.isidentifier():
        module = f"datamodules.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if not (module + ".").startswith(f"{err.name}."):  # it is there; what it imports is not
                raise import_failure(module, err) from err
        except ImportError as err:
            raise import_failure(module, err) from err
    return CORPORA.get(name)


def known_corpora() -> list[str]:
    """Every registered corpus, imported or not: each module of the `datamodules` package is
    imported first (one that fails to import is passed over: this only lists names)."""
    import datamodules

    for info in pkgutil.iter_modules(datamodules.__path__):
        try:
            importlib.import_module(f"datamodules.{info.name}")
        except Exception:  # noqa: BLE001 - a broken module says so when it is asked for by name
            continue
    return sorted(CORPORA)


def corpus_spec(name: str) -> CorpusSpec:
    """The registered spec (see `registered_corpus`); an unknown name lists every corpus."""
    spec = registered_corpus(name)
    if spec is None:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {known_corpora()}")
    return spec


def own_corpus(name: str, separator: str | None = None) -> CorpusSpec:
    """A user's own text under `name`: the files given for it, else `<name>.txt` or a folder
    `<name>` in the data folders; running text, or documents cut at `separator` ("": one per file)."""
    if not CORPUS_NAME.fullmatch(name):
        raise ValueError(f"corpus name {name!r}: use letters, digits, '_', '.' and '-' (it names "
                         "cache folders and metrics), starting with a letter, digit or '_'")
    return CorpusSpec(name=name, filenames=(f"{name}.txt", name), separator=separator, own=True)


def hub_offline() -> bool:
    """True when the environment forbids the hub (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE)."""
    flags = (os.environ.get(k, "") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    return any(f.strip().lower() in TRUTHY for f in flags)


@dataclass(frozen=True)
class Source:
    """A resolved corpus location: kind is "file" (`files`, read in order; `location` is the file,
    folder or list the user gave) or "hub" (a hub id or a URL, and its split)."""

    kind: str
    location: str
    split: str | None = None
    files: tuple[str, ...] = ()

    def cache_key(self) -> dict[str, Any]:
        """What the token cache is keyed by: the files' paths, sizes and modification times."""
        if self.kind == "file":
            stats = [Path(f).stat() for f in self.files]
            if len(self.files) == 1:
                return {"file": self.files[0], "size": stats[0].st_size, "mtime_ns": stats[0].st_mtime_ns}
            return {"files": list(self.files), "sizes": [s.st_size for s in stats],
                    "mtime_ns": [s.st_mtime_ns for s in stats]}
        return {"hub": self.location, "split": self.split}

    def text_fingerprint(self) -> dict[str, Any] | None:
        """{"size", "sha256", "files"}: the size and sha256 of the raw bytes of the files in
        order (one file: what `sha256sum` prints) and their number; None for the hub."""
        if self.kind != "file":
            return None
        digest, size = hashlib.sha256(), 0
        for name in self.files:
            with open(name, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        return {"size": size, "sha256": digest.hexdigest(), "files": len(self.files)}

    def describe(self) -> str:
        """Where the text is read from, for messages."""
        if self.kind == "hub":
            return f"{self.location} (hub, {self.split})"
        return self.location if len(self.files) == 1 else f"{self.location} ({len(self.files)} files)"


def path_hint(spec: CorpusSpec, setting: str) -> str:
    if spec.own:
        return f"set {setting} to a UTF-8 text file, a folder of .txt files or a list of them"
    return f"set {setting}=/path/to/{spec.filenames[0]} (or $SUCCU_DATA_DIR)"


def text_files(spec: CorpusSpec, path: Path, setting: str) -> list[str]:
    """The files a given path stands for: itself, or a folder's .txt files (sorted, subfolders
    included, hidden ones left out)."""
    if path.is_file():
        return [str(path.resolve())]
    if not path.is_dir():
        raise CorpusError(spec.name, f"{setting} {path} does not exist", path_hint(spec, setting))
    files = sorted(str(f.resolve()) for f in path.rglob("*.txt")
                   if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts))
    if not files:
        raise CorpusError(spec.name, f"{setting} {path} is a folder without .txt files", path_hint(spec, setting))
    return files


def local_source(spec: CorpusSpec, paths: list[Path], setting: str) -> Source:
    files = [f for path in paths for f in text_files(spec, path, setting)]
    location = ", ".join(str(p.resolve()) for p in paths)
    return Source("file", location, files=tuple(files))


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
    hint = path_hint(spec, setting)
    if data_path:
        paths = data_path if isinstance(data_path, list) else [data_path]
        return local_source(spec, [Path(p).expanduser() for p in paths], setting)
    data_dir = data_dir or os.environ.get("SUCCU_DATA_DIR")
    dirs = [Path(data_dir).expanduser()] if data_dir else list(DEFAULT_DATA_DIRS)
    if source != "hub":
        for folder in dirs:
            for filename in spec.filenames:
                if (folder / filename).is_file() or (spec.own and (folder / filename).is_dir()):
                    return local_source(spec, [folder / filename], setting)
    where = ", ".join(str(d) for d in dirs)
    if spec.own:
        raise CorpusError(spec.name, f"no text for corpus {spec.name!r}: no path given for it, no "
                          f"{spec.name}.txt or folder {spec.name} in {where}, and it is not a registered "
                          f"corpus ({', '.join(known_corpora())})", hint)
    hub = hub_id or spec.hub_id
    if source == "local" or hub is None:
        hub_hint = f", or source=hub to download {hub}" if hub else ""
        raise CorpusError(spec.name, f"no {'/'.join(spec.filenames)} in {where}", hint + hub_hint)
    if hub_offline():
        raise CorpusError(spec.name, f"the hub ({hub}) is offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE) "
                          f"and no local copy was found in {where}", hint)
    return Source("hub", hub, hub_split or spec.hub_split)


def read_corpus_file(spec: CorpusSpec, path: Path, setting: str, empty_ok: bool = False) -> str:
    """A local corpus file's text; an empty (unless `empty_ok`) or non-UTF-8 (binary) file is one
    error naming it (otherwise: "vocab_size must be positive, got 0" or a codec error without the
    file)."""
    hint = f"{path_hint(spec, setting)} (UTF-8 text)"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(spec.name, f"{path} is not UTF-8 text (byte {err.start} cannot be decoded: "
                          "binary or another encoding?)", hint) from None
    if not (empty_ok or text.strip()):
        raise CorpusError(spec.name, f"{path} is empty", hint)
    return text


def file_rows(spec: CorpusSpec, texts: list[str]) -> list[str]:
    """Documents cut at the separator and at every file's end ("": a file each); running text:
    the files joined in order, a newline after a file that lacks one."""
    if spec.documents:
        return [doc for text in texts for doc in (text.split(spec.separator) if spec.separator else [text])]
    ends = ["" if t.endswith("\n") or i == len(texts) - 1 else "\n" for i, t in enumerate(texts)]
    return ["".join(t + end for t, end in zip(texts, ends))]


def load_documents(spec: CorpusSpec, src: Source, setting: str = "data_path") -> Any:
    """The corpus as a `datasets.Dataset` with one `text` row per document (running text: one row)."""
    import datasets

    if src.kind == "file":
        several = len(src.files) > 1
        texts = [read_corpus_file(spec, Path(f), setting, empty_ok=several) for f in src.files]
        if not any(t.strip() for t in texts):
            raise CorpusError(spec.name, f"every file of {src.describe()} is empty", path_hint(spec, setting))
        return datasets.Dataset.from_dict({"text": file_rows(spec, texts)})
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
            spec.name, f"could not load {src.location} from the hub ({type(err).__name__}: {first})",
            f"set {setting}=/path/to/{spec.filenames[0]} to use a local copy"
        ) from err
    if spec.text_field != "text":
        ds = ds.rename_column(spec.text_field, "text")
    return ds.select_columns(["text"])


def split_side(text: str, val_fraction: float, salt: int, test_fraction: float = 0.0) -> str:
    """Document-level split by a salted CRC32 of the (stripped) text, uniform u in [0, 1): val
    below val_fraction, test in the next test_fraction, else train."""
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

