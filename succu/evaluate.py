"""`python -m succu.evaluate --ckpt PATH --text FILE`: score text with a checkpoint alone.

    python -m succu.evaluate --ckpt runs/gpt_shakespeare_char/version_0/checkpoints/last.ckpt --text my.txt
    python -m succu.evaluate --ckpt CKPT --corpus shakespeare      # the test split of its own data
    python -m succu.evaluate --ckpt CKPT --corpus                  # every corpus it was trained on
    python -m succu.evaluate --ckpt CKPT --corpus --data_path mytext=my.txt   # your own text's test split

Reports, per text or corpus, the loss (mean nats per scored token), the perplexity (its exp) and
bits per character (total nats / (ln 2 x characters of the scored text as the tokenizer reads it,
special tokens counting none but <UNK>, which counts as the word it stands for); for a
character tokenizer that is loss / ln 2).

--text FILE is read as UTF-8 and tokenised with the checkpoint's own tokenizer. Words a word
vocabulary lacks are scored as `<UNK>` (a note counts them); characters a character vocabulary
lacks are an error naming and counting them, or left out with --drop_unknown. The token sequence
(after `<BOS>` when the tokenizer has one) is cut into windows of the model's block_size that start
every --stride tokens (default: block_size, i.e. non-overlapping chunks, the context a validation
window gives); each token is scored exactly once, by the first window that reaches it, so a
smaller stride gives later tokens more context.

The file is streamed: read twice in pieces of about a megabyte (once to count its tokens and the
pieces the vocabulary lacks, so a refusal comes before any scoring; once to score), each piece
cut where the ids of both sides join to those of the whole, and windows are cut from the ids as
they are reached, so memory does not grow with the text and the scores equal those of the whole
text at once. Only a regular file is read (a device or a pipe may never end), of at most
--max_bytes (default 1,000,000,000).

--corpus [NAME] rebuilds the datamodule the checkpoint was trained on
(`succu.checkpoint.load_datamodule`; its recorded paths are not reused: --data_path NAME=PATH,
--data_dir, --cache_dir) and scores its test split (--split val for validation), the same batches
`fit test` scores (and validation's are the fit's: the same windows give its val/loss). Data with
no test split is scored on validation, with a note. It names the file(s) each corpus is read from
and checks them against the fingerprint (size, sha256) the checkpoint recorded: another text is
refused in one line naming both; a checkpoint written before fingerprints is scored with a note
that its text could not be checked.

A gated model (GatedGPT) runs at --alpha: one number in [0, 1] for a two-source dial, K
comma-separated shares summing to 1 for a K-source one (--alpha 0.2,0.3,0.5). Without it (a note
says so) --text runs at the middle of the dial (0.5; 1/K each over K sources), and --corpus scores
each corpus at its own end (alpha = k for two sources, the corner e_k for K), as val/loss and
`fit test` do.
"""

from __future__ import annotations

import argparse
import codecs
import io
import math
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from succu.checkpoint_files import read_checkpoint
from succu.contracts import IGNORE_INDEX, NamedCorpora
from succu.decoding import Decoding
from succu.devices import check_device
from succu.dial import Position, centre, own_end, parse_position, position_for, position_label
from succu.errors import fail, run_cli
from succu.generate import note, say_unknown
from succu.inference import load_model
from succu.progress import progress
from succu.sweep import add_location_arguments
from succu.tokenizers import CorpusTokenizer

ALL = "*"  # --corpus without a name
CHUNK_BYTES = 1 << 20  # --text is read and tokenised about this many bytes at a time
MAX_BYTES = 1_000_000_000  # --max_bytes's default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m succu.evaluate", description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="path to a succu checkpoint (.ckpt)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="a UTF-8 text file to score")
    what.add_argument("--corpus", nargs="?", const=ALL, metavar="NAME",
                      help="score a corpus of the checkpoint's own data (all of them without NAME)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="--corpus: which split")
    p.add_argument("--stride", type=int, default=None,
                   help="--text: tokens between window starts (default: block_size, non-overlapping)")
    p.add_argument("--drop_unknown", action="store_true",
                   help="--text: leave out characters the vocabulary lacks (default: refuse them)")
    p.add_argument("--alpha", default=None,
                   help="dial position of gated models: a number in [0, 1] for two sources, or K "
                        "comma-separated shares summing to 1 (e.g. 0.2,0.3,0.5) for K (default: "
                        f"the middle, {position_label(centre(2))} or 1/K each, for --text; each corpus's own "
                        "end for --corpus)")
    p.add_argument("--batch_size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--max_bytes", type=int, default=MAX_BYTES,
                   help=f"--text: refuse a file larger than this (default {MAX_BYTES:,} bytes)")
    p.add_argument("--device", default="cpu", help="torch device to run on")
    add_location_arguments(p)
    return p


@dataclass
class Score:
    """Summed nats over scored tokens, and the characters those tokens spell."""

    nats: float = 0.0
    tokens: int = 0
    characters: int = 0

    def add(self, other: Score) -> None:
        self.nats += other.nats
        self.tokens += other.tokens
        self.characters += other.characters

    def line(self, name: str) -> str:
        loss = self.nats / max(1, self.tokens)
        bpc = self.nats / (math.log(2) * self.characters) if self.characters else float("nan")
        return (f"{name}: loss {loss:.4f} nats/token, perplexity {math.exp(min(loss, 50.0)):.3f}, "
                f"{bpc:.4f} bits/character ({self.tokens:,} tokens, {self.characters:,} characters)")

    def as_dict(self) -> dict[str, float]:
        loss = self.nats / max(1, self.tokens)
        bpc = self.nats / (math.log(2) * self.characters) if self.characters else float("nan")
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "bpc": bpc,
                "tokens": self.tokens, "characters": self.characters}


@torch.no_grad()
def score_batch(module: Decoding, batch: dict[str, torch.Tensor], kwargs: dict[str, Any]) -> Score:
    """Nats of the batch's labels (-100: not scored) and the characters of its scored tokens."""
    inputs, labels = batch["input_ids"].to(module.device), batch["labels"].to(module.device)
    logits = module(inputs, **kwargs).float()
    nats = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
    tok = module.tokenizer
    special = set(tok.special_ids) - {tok.unk_id}  # <UNK> holds a word's place (evaluate_text)
    chars = sum(len(tok.decode([i for i in row if i != IGNORE_INDEX and i not in special]))
                for row in labels.tolist())
    return Score(float(nats), int((labels != IGNORE_INDEX).sum()), chars)


def text_batches(ids, block: int, stride: int, batch_size: int, pad: int):
    """Windows of `block` tokens starting every `stride` tokens, batched; each target is scored
    once, by the first window that holds it (labels -100 elsewhere and on padding)."""
    yield from stream_batches([np.asarray(ids, dtype=np.int64)], len(ids), block, stride, batch_size, pad)


def stream_batches(chunks: Iterable[np.ndarray], n_ids: int, block: int, stride: int, batch_size: int,
                   pad: int) -> Iterator[dict[str, torch.Tensor]]:
    """`text_batches` of the `n_ids` ids that `chunks` hold in order, read as the windows reach
    them: only the ids from the current window's start on are kept (a chunk and a window)."""
    source = iter(chunks)
    buf, base = np.zeros(0, dtype=np.int64), 0  # buf holds ids[base:base + len(buf)]
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    scored = 0  # targets ids[1:scored] already scored by an earlier window
    for start in range(0, n_ids - 1, stride):
        end = min(start + block, n_ids - 1)
        while base + len(buf) < end + 1:
            chunk = next(source, None)
            if chunk is None:
                raise ValueError(f"the text ended after {base + len(buf):,} of the {n_ids:,} tokens counted "
                                 "before scoring (did it change while it was read?)")
            buf = np.concatenate([buf, np.asarray(chunk, dtype=np.int64)])
        labels = buf[start + 1 - base:end + 1 - base].copy()
        labels[:max(0, scored - start)] = IGNORE_INDEX
        rows.append((buf[start - base:end - base], labels))
        scored = end
        if len(rows) == batch_size:
            yield window_batch(rows, pad)
            rows = []
        if end == n_ids - 1:
            break
        buf, base = buf[start + stride - base:], start + stride  # the next window starts there
    if rows:
        yield window_batch(rows, pad)
    if any(len(chunk) for chunk in source):
        raise ValueError(f"the text holds more than the {n_ids:,} tokens counted before scoring "
                         "(did it change while it was read?)")


def window_batch(rows: list[tuple[np.ndarray, np.ndarray]], pad: int) -> dict[str, torch.Tensor]:
    """Rows of (inputs, labels), padded to the longest: inputs with `pad`, labels with -100."""
    width = max(len(x) for x, _ in rows)
    inputs = np.full((len(rows), width), pad, dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for i, (x, y) in enumerate(rows):
        inputs[i, :len(x)], labels[i, :len(y)] = x, y
    return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}


def window_count(n_ids: int, block: int, stride: int) -> int:
    """How many windows `text_batches` cuts from `n_ids` tokens: one start every `stride`
    tokens until a window reaches the last target."""
    targets = n_ids - 1
    return 1 if targets <= block else -(-(targets - block) // stride) + 1


def check_text_file(path: str, max_bytes: int) -> None:
    """A regular file of at most `max_bytes`: a device, FIFO or socket may never end."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        fail(f"--text {path} does not exist")
    if stat.S_ISDIR(info.st_mode):
        fail(f"--text {path} is a folder; give a text file")
    if not stat.S_ISREG(info.st_mode):
        fail(f"--text {path} is not a regular file (a device, pipe or socket may never end); give a text file")
    if info.st_size > max_bytes:
        fail(f"--text {path} has {info.st_size:,} bytes, more than --max_bytes {max_bytes:,} "
             "(give a larger --max_bytes to score it)")


# A place where every tokenizer's ids of the text before it and after it join to the ids of the
# whole: after a newline that follows a non-space, or before one space, each between a letter or
# digit and a letter or digit (the surface rules, word splitting and byte-level BPE's
# pre-tokenisation keep to either side of both).
CUT = re.compile(r"(?<=\S\n)(?=[^\W_])|(?<=[^\W_])(?= [^\W_])")


def last_cut(text: str, start: int) -> int:
    """Where the last `CUT` at or after `start` falls (0: none; the end of the text is searched
    first)."""
    for lo in dict.fromkeys((max(start, len(text) - 4096), start)):
        last = 0
        for match in CUT.finditer(text, lo):
            last = match.start()
        if last:
            return last
    return 0


def text_pieces(path: str, max_bytes: int, chunk: int | None = None) -> Iterator[str]:
    """The file's text, as `Path.read_text(encoding="utf-8")` reads it (newlines translated),
    in pieces of about `chunk` bytes (default CHUNK_BYTES) cut at `CUT` (a piece grows until
    it holds one)."""
    chunk = chunk or CHUNK_BYTES
    utf8 = codecs.getincrementaldecoder("utf-8")()
    decoder = io.IncrementalNewlineDecoder(utf8, translate=True)
    rest, offset = "", 0
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            pending = len(utf8.getstate()[0])  # bytes of a character the last read cut
            try:
                new = decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                fail(f"--text {path} is not UTF-8 text (byte {offset - pending + err.start}: {err.reason})")
            offset += len(data)
            if offset > max_bytes:
                fail(f"--text {path} grew past --max_bytes {max_bytes:,} while it was read")
            if not data:
                rest += new
                break
            searched, rest = max(0, len(rest) - 2), rest + new  # the old text held no cut
            cut = last_cut(rest, searched)
            if cut:
                yield rest[:cut]
                rest = rest[cut:]
    if rest:
        yield rest


@dataclass
class TextTokens:
    """What the first pass over a text found: its token count (`<BOS>` included) and the
    pieces its vocabulary lacks."""

    n_ids: int
    unknown: Counter[str]


def encode_piece(tok: CorpusTokenizer, piece: str, drop: bool) -> np.ndarray:
    if drop and tok.unk_id is None and tok.unknown(piece):
        piece = tok.without_unknown(piece)
    return tok.encode_batch([piece])[0]


def count_tokens(tok: CorpusTokenizer, path: str, max_bytes: int, drop: bool) -> TextTokens:
    """The first pass: unknown pieces counted, ids counted (none when unknown characters will be
    refused)."""
    unknown: Counter[str] = Counter()
    n_ids = 0 if tok.bos_id is None else 1
    for piece in text_pieces(path, max_bytes):
        found = tok.unknown(piece)
        unknown.update(found)
        if not found or tok.unk_id is not None or drop:  # else it is refused, uncounted
            n_ids += len(encode_piece(tok, piece, drop))
    return TextTokens(n_ids, unknown)


def text_ids(tok: CorpusTokenizer, path: str, max_bytes: int, drop: bool) -> Iterator[np.ndarray]:
    """The second pass: `<BOS>` (when the tokenizer has one), then the ids of each piece."""
    if tok.bos_id is not None:
        yield np.array([tok.bos_id], dtype=np.int64)
    for piece in text_pieces(path, max_bytes):
        yield encode_piece(tok, piece, drop)


def unknown_note(tok: CorpusTokenizer, counts: Counter[str], what: str, drop: bool) -> int:
    """Say what the text held that the vocabulary lacks (`succu.generate.say_unknown`), refusing
    unknown characters unless `drop`; returns the characters that words read as <UNK> have beyond
    the five of "<UNK>" (bits per character counts the text as written)."""
    say_unknown(tok, counts, what, drop)
    if counts and tok.unk_id is not None:
        return sum((len(word) - len(tok.vocab[tok.unk_id])) * n for word, n in counts.items())
    return 0


def evaluate_text(args: argparse.Namespace, module: Decoding, kwargs: dict[str, Any]) -> dict[str, Score]:
    """Score a text file in two streamed passes (count, then score): memory does not grow with
    the text."""
    block = module.model.cfg.block_size
    stride = block if args.stride is None else args.stride
    if not 1 <= stride <= block:
        fail(f"--stride must be between 1 and the model's block_size {block}, got {stride}")
    check_text_file(args.text, args.max_bytes)
    tok = module.tokenizer
    counted = count_tokens(tok, args.text, args.max_bytes, args.drop_unknown)
    unk_chars = unknown_note(tok, counted.unknown, str(args.text), args.drop_unknown)
    if counted.n_ids < 2:
        fail(f"{args.text} has {counted.n_ids} token(s) after tokenising; at least 2 are needed to score one")
    pad = tok.pad_id or 0
    # Characters are counted on decoded ids, where <UNK> spells "<UNK>": count the words it stands
    # for instead (each is scored: every word follows <BOS> or another word).
    total = Score(characters=unk_chars)
    batches = -(-window_count(counted.n_ids, block, stride) // args.batch_size)
    ids = text_ids(tok, args.text, args.max_bytes, args.drop_unknown)
    for batch in progress(stream_batches(ids, counted.n_ids, block, stride, args.batch_size, pad),
                          f"evaluate {args.text}", batches):
        total.add(score_batch(module, batch, kwargs))
    return {args.text: total}


def held_out_batches(args: argparse.Namespace, datamodule) -> tuple[str, list[dict[str, torch.Tensor]]]:
    """(split, batches): the datamodule's test batches, or validation's with --split val or when
    it has no test split."""
    if args.split == "test":
        try:
            return "test", list(datamodule.test_dataloader())
        except ValueError as err:
            note(f"{err}; scoring the validation split instead")
    return "val", list(datamodule.val_dataloader())


def evaluate_corpus(args: argparse.Namespace, module: Decoding, kwargs: dict[str, Any]) -> dict[str, Score]:
    # The checkpoint's data is a LightningDataModule: only scoring it imports Lightning (--text
    # does not).
    from succu.checkpoint import load_datamodule

    datamodule = load_datamodule(args.ckpt, module, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                 data_paths=args.data_paths, **untested_split(args.ckpt))
    names = list(datamodule.corpora) if isinstance(datamodule, NamedCorpora) else [type(datamodule).__name__]
    if args.corpus != ALL and args.corpus not in names:
        fail(f"--corpus {args.corpus}: the checkpoint's data has {', '.join(names)} "
             "(--corpus alone scores all of them)")
    scores = {name: Score() for name in names}
    split, batches = held_out_batches(args, datamodule)
    for batch in progress(batches, f"evaluate ({split})"):  # one corpus each, named by `source`
        name = names[int(batch["source"][0])] if "source" in batch else names[0]
        if args.corpus in (ALL, name):
            scores[name].add(score_batch(module, batch, kwargs or module.eval_kwargs(batch)))
    return {f"{name} ({split})": s for name, s in scores.items() if args.corpus in (ALL, name)}


def untested_split(ckpt: str) -> dict[str, float]:
    """A checkpoint written before text corpora had a test split (no `test_fraction` recorded)
    trained on what is now the test share: rebuild its data without one (validation is scored)."""
    hparams = read_checkpoint(ckpt).get("datamodule_hyper_parameters") or {}
    splits = hparams.get("splits", hparams)  # the text datamodules' group, or their flat settings
    text_data = isinstance(splits, dict) and "val_fraction" in splits
    return {"test_fraction": 0.0} if text_data and "test_fraction" not in splits else {}


def dial(args: argparse.Namespace, module: Decoding, position: Position | None) -> dict[str, Any]:
    """The dial's forward arguments: `position` fitted to the model's sources, the middle for
    --text without one, none for --corpus without one (each batch at its corpus's own end)."""
    if position is not None and not module.has_dial:
        fail(f"--alpha needs a gated model; {args.ckpt} holds {type(module.model).__name__}")
    if not module.has_dial:
        return {}
    name, k = type(module.model).__name__, module.model.n_sources
    if position is not None:
        return {"alpha": position_for(position, k)}
    ends = "alpha=k" if k == 2 else "the corner e_k"
    if args.corpus is not None:  # as fit test and val/loss score it
        note(f"{name} has a dial and no --alpha was given: scoring each corpus at its own end of "
             f"the dial (corpus k at {ends}), as val/loss and fit test do")
        return {}  # evaluate_corpus asks module.eval_kwargs per batch
    middle = module.dial_kwargs({})["alpha"]
    corners = ("--alpha 0 or 1 for either corpus's end" if k == 2
               else f"--alpha {position_label(own_end(0, k))} for a corner")
    note(f"{name} has a dial and no --alpha was given: evaluating at alpha={position_label(middle)}, "
         f"the middle ({corners})")
    return {"alpha": middle}


def compute_scores(args: argparse.Namespace) -> dict[str, Any]:
    """The scores asked for; bad input raises (run_cli turns it into one line)."""
    if args.text is not None and args.data_paths:
        fail("--data_path names a corpus's text for --corpus; --text scores its file as it is")
    position = None if args.alpha is None else parse_position(args.alpha)  # before the load
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.max_bytes < 1:
        raise ValueError(f"--max_bytes must be a positive integer, got {args.max_bytes}")
    module = load_model(args.ckpt, map_location=check_device(args.device))
    kwargs = dial(args, module, position)
    run = evaluate_text if args.text is not None else evaluate_corpus
    return run(args, module, kwargs)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = build_parser()
    parser.error = fail  # type: ignore[method-assign]  # one line, not argparse's usage block
    args = parser.parse_args(argv)
    scores = run_cli(lambda: compute_scores(args))
    for name, score in scores.items():
        print(score.line(name), flush=True)
    return {name: score.as_dict() for name, score in scores.items()}


if __name__ == "__main__":
    main(sys.argv[1:])
