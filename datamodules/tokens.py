"""Token ids of text corpora: one shared tokenizer, ids tokenised once and cached on disk.

One tokenizer serves every corpus in use: char over all their text, byte-level BPE trained on
their training splits, or words (`succu.tokenizers.WordTokenizer`) of their training splits. It is cached as JSON under a key of the corpora (source fingerprint, split
settings, surface rules) and the tokenizer settings. Each split's ids are tokenised once with
`datasets.map` (batched) into a flat uint16/uint32 file under a key of the corpus and the
tokenizer's state, so a second run reads the arrays and tokenises nothing.

A cache carries its own check: meta.json holds each file's token count, dtype and SHA-256. Every
start checks meta.json and the sizes; the checksums are compared whenever the files changed since
they last matched (their stamps in verified.json). A damaged, partial or pre-checksum cache, or an
unreadable cached tokenizer, is rebuilt from the text with a note naming it: never trained on.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from succu.io import atomic_write
from succu.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    CorpusTokenizer,
    WordTokenizer,
    normalize_text,
    split_words,
    tokenizer_from_state,
)

EOS = "<EOS>"
TOKENIZER_KINDS = ("char", "bpe", "word")
VERIFIED = "verified.json"  # a token cache's file stamps when their checksums last matched


@dataclass(frozen=True)
class Tokens:
    """How text becomes token ids, and where they are cached.

    Attributes:
        tokenizer_kind: "char" (every character of the corpora in use), "bpe" (byte-level BPE
            trained on the training splits) or "word" (every word of the training splits,
            lowercased, `. , ? !` apart; others read as `<UNK>`; `<PAD> <BOS> <EOS> <UNK>` first).
        bpe_vocab_size: BPE vocabulary size, specials included.
        cache_dir: tokenizer and token cache (default: $SUCCU_CACHE_DIR or ~/.cache/succu).
    """

    tokenizer_kind: str = "char"
    bpe_vocab_size: int = 1024
    cache_dir: str | None = None


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def token_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def tokenizer_path(cache_dir: Path, tokens: Tokens, corpus_keys: list[dict[str, Any]]) -> Path:
    """Where the tokenizer of these corpora (`corpus_keys`, in order) and settings is cached."""
    kind = tokens.tokenizer_kind
    key = {
        "kind": kind, "corpora": corpus_keys,
        "bpe_vocab_size": tokens.bpe_vocab_size if kind == "bpe" else None,
    }
    return cache_dir / "tokenizers" / f"{kind}-{digest(key)}.json"


def load_or_build_tokenizer(path: Path, build: Callable[[], CorpusTokenizer]) -> CorpusTokenizer:
    """The tokenizer cached at `path`, built and cached first when there is none; a cached file
    that cannot be read as a tokenizer is rebuilt, with a note on stderr naming it."""
    if path.is_file():
        try:
            return tokenizer_from_state(json.loads(path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            problem = f"not valid JSON ({err})"
        except ValueError as err:
            problem = str(err)
        print(f"note: tokenizer cache {path}: {problem}; rebuilding it from the text", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
    tok = build()
    # First writer wins, and everyone reads the file: DDP ranks agree on one tokenizer.
    atomic_write(path, json.dumps(tok.state_dict()).encode(), exclusive=True)
    return tokenizer_from_state(json.loads(path.read_text(encoding="utf-8")))


def build_tokenizer(tokens: Tokens, texts: Callable[[tuple[str, ...]], Iterable[str]],
                    specials: list[str], rules: Sequence[str]) -> CorpusTokenizer:
    """A new tokenizer: char over every split's text (`texts(sides)`), BPE trained on the training
    splits, or their words; `rules` are the surface rules it applies to raw prompts."""
    if tokens.tokenizer_kind == "char":
        return CharTokenizer.from_texts(texts(("train", "val", "test")), specials, rules)
    if tokens.tokenizer_kind == "word":  # its specials include <EOS>
        return WordTokenizer.from_words((w for text in texts(("train",)) for w in split_words(text)), rules)
    return BPETokenizer.train(texts(("train",)), tokens.bpe_vocab_size, specials, rules)


def token_dir(cache_dir: Path, name: str, corpus_key: dict[str, Any], tokenizer_digest: str) -> Path:
    """The folder of corpus `name`'s cached ids under this tokenizer (by the digest of its state)."""
    key = {"corpus": corpus_key, "tokenizer": tokenizer_digest}
    return cache_dir / "tokens" / f"{name}-{digest(key)}"


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


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


def write_token_cache(folder: Path, splits: dict[str, Any], sides: tuple[str, ...], tokenizer: CorpusTokenizer,
                      documents: bool, rules: Sequence[str], corpus_key: dict[str, Any]) -> None:
    """Tokenise the `sides` of one corpus's splits into `folder`: `<side>.bin` each, then
    `meta.json` (dtype, lengths, the SHA-256 of each file, key), written last: a folder with
    meta.json is complete, and `cache_problem` can tell an intact one from a damaged one."""
    meta: dict[str, Any] = {"dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name, "sha256": {}}
    for stale in ("meta.json", VERIFIED):  # a rebuild: no reader pairs old meta with new ids
        (folder / stale).unlink(missing_ok=True)
    for side in sides:
        ids = tokenize_documents(splits[side], tokenizer, documents, rules)
        data = ids.tobytes()
        atomic_write(folder / f"{side}.bin", data)
        meta[side] = int(len(ids))
        meta["sha256"][side] = hashlib.sha256(data).hexdigest()
    meta["key"] = {"corpus": corpus_key, "tokenizer": tokenizer.kind}
    atomic_write(folder / "meta.json", json.dumps(meta, indent=1).encode())
    stamp_verified(folder, meta["sha256"], sides)  # hashed as written: not read again to check


def read_meta(folder: Path, sides: Sequence[str]) -> dict[str, Any]:
    """The token cache's meta.json, its fields checked: a ValueError says what is wrong."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError("meta.json is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"meta.json is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("dtype") not in ("uint16", "uint32"):
        raise ValueError("meta.json names no token dtype (uint16 or uint32)")
    if not isinstance(meta.get("sha256"), dict):
        raise ValueError("meta.json has no checksums (a cache written before they were recorded)")
    for side in sides:
        count, checksum = meta.get(side), meta["sha256"].get(side)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0 or not isinstance(checksum, str):
            raise ValueError(f"meta.json has no token count and checksum for {side}.bin")
    return meta


def check_sizes(folder: Path, meta: dict[str, Any], sides: Sequence[str]) -> None:
    """Each `<side>.bin` holds exactly the bytes meta.json counts (a ValueError says which not)."""
    itemsize = np.dtype(meta["dtype"]).itemsize
    for side in sides:
        path = folder / f"{side}.bin"
        if not path.is_file():
            raise ValueError(f"{side}.bin is missing")
        size, expected = path.stat().st_size, meta[side] * itemsize
        if size != expected:
            raise ValueError(f"{side}.bin has {size:,} bytes where meta.json counts {meta[side]:,} "
                             f"{meta['dtype']} ids ({expected:,} bytes)")


def file_stamps(folder: Path, sides: Sequence[str]) -> dict[str, list[int]]:
    """Size, modification and change times (ns) and inode of each `<side>.bin`: any write to a
    file changes its change time, which no user can set back."""
    stamps = {}
    for side in sides:
        info = (folder / f"{side}.bin").stat()
        stamps[side] = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
    return stamps


def stamp_verified(folder: Path, checksums: dict[str, str], sides: Sequence[str]) -> None:
    """Record that the files match `checksums` as they are now (a read-only cache records
    nothing: it is hashed again next time)."""
    record = {"sha256": {side: checksums[side] for side in sides}, "files": file_stamps(folder, sides)}
    try:
        atomic_write(folder / VERIFIED, json.dumps(record).encode())
    except OSError:
        pass


def verified_before(folder: Path, checksums: dict[str, str], sides: Sequence[str]) -> bool:
    """Whether the files are unchanged since their checksums last matched these."""
    try:
        record = json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    expected = {"sha256": {side: checksums[side] for side in sides}, "files": file_stamps(folder, sides)}
    return record == expected


def cache_problem(folder: Path, sides: Sequence[str]) -> str | None:
    """What is wrong with the token cache in `folder` (None: complete and intact). Its meta.json
    and the size of each `<side>.bin` are checked every time; the SHA-256 of each file against the
    one meta.json recorded once per change of the files (`VERIFIED` holds their stamps when they
    last matched), so a garbled id is caught before it is trained on, and an unchanged cache is
    not read twice."""
    try:
        meta = read_meta(folder, sides)
        check_sizes(folder, meta, sides)
    except ValueError as err:
        return str(err)
    if verified_before(folder, meta["sha256"], sides):
        return None
    for side in sides:
        if file_sha256(folder / f"{side}.bin") != meta["sha256"][side]:
            return f"{side}.bin does not match the checksum meta.json recorded (its ids were changed)"
    stamp_verified(folder, meta["sha256"], sides)
    return None


def read_token_array(folder: Path, side: str) -> np.ndarray:
    """The cached ids of one split, memory-mapped (its meta and size checked: a ValueError names
    the folder; `cache_problem` verifies the ids themselves)."""
    try:
        meta = read_meta(folder, (side,))
        check_sizes(folder, meta, (side,))
    except ValueError as err:
        raise ValueError(f"token cache {folder}: {err}; delete the folder to rebuild it") from None
    if meta[side] == 0:  # an empty file cannot be mapped
        return np.zeros(0, dtype=meta["dtype"])
    return np.memmap(folder / f"{side}.bin", dtype=meta["dtype"], mode="r", shape=(meta[side],))
