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
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from succu.checkpoint import load_datamodule, load_module
from succu.checkpoint_files import read_checkpoint
from succu.contracts import NamedCorpora
from succu.devices import check_device
from succu.dial import Position, centre, own_end, parse_position, position_for, position_label
from succu.errors import fail, run_cli
from succu.generate import note, resolve_unknown
from succu.modules.base import IGNORE_INDEX, LanguageModule
from succu.progress import progress
from succu.sweep import add_location_arguments

ALL = "*"  # --corpus without a name


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
def score_batch(module: LanguageModule, batch: dict[str, torch.Tensor], kwargs: dict[str, Any]) -> Score:
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


def text_batches(ids: list[int], block: int, stride: int, batch_size: int, pad: int):
    """Windows of `block` tokens starting every `stride` tokens, batched; each target is scored
    once, by the first window that holds it (labels -100 elsewhere and on padding)."""
    rows, scored = [], 0  # scored: targets ids[1:scored] already scored by an earlier window
    for start in range(0, len(ids) - 1, stride):
        end = min(start + block, len(ids) - 1)
        labels = ids[start + 1:end + 1]
        skip = max(0, scored - start)
        rows.append((ids[start:end], [IGNORE_INDEX] * skip + labels[skip:]))
        scored = end
        if end == len(ids) - 1:
            break
    for k in range(0, len(rows), batch_size):
        chunk = rows[k:k + batch_size]
        width = max(len(x) for x, _ in chunk)
        yield {
            "input_ids": torch.tensor([x + [pad] * (width - len(x)) for x, _ in chunk]),
            "labels": torch.tensor([y + [IGNORE_INDEX] * (width - len(y)) for _, y in chunk]),
        }


def window_count(n_ids: int, block: int, stride: int) -> int:
    """How many windows `text_batches` cuts from `n_ids` tokens: one start every `stride`
    tokens until a window reaches the last target."""
    targets = n_ids - 1
    return 1 if targets <= block else -(-(targets - block) // stride) + 1


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"--text {path} does not exist")
    except IsADirectoryError:
        fail(f"--text {path} is a folder; give a text file")
    except UnicodeDecodeError as err:
        fail(f"--text {path} is not UTF-8 text (byte {err.start}: {err.reason})")


def encode_text(module: LanguageModule, text: str, path: str, drop: bool) -> tuple[list[int], int]:
    """(`<BOS>` (when the tokenizer has one) + the text's ids, the characters that words read as
    <UNK> have beyond the five of "<UNK>" (bits per character counts the text as written))."""
    tok = module.tokenizer
    text, counts = resolve_unknown(tok, text, str(path), drop)
    unk_chars = 0
    if counts and tok.unk_id is not None:
        unk_chars = sum((len(word) - len(tok.vocab[tok.unk_id])) * n for word, n in counts.items())
    ids = ([] if tok.bos_id is None else [tok.bos_id]) + tok.encode(text)
    if len(ids) < 2:
        fail(f"{path} has {len(ids)} token(s) after tokenising; at least 2 are needed to score one")
    return ids, unk_chars


def evaluate_text(args: argparse.Namespace, module: LanguageModule, kwargs: dict[str, Any]) -> dict[str, Score]:
    block = module.model.cfg.block_size
    stride = block if args.stride is None else args.stride
    if not 1 <= stride <= block:
        fail(f"--stride must be between 1 and the model's block_size {block}, got {stride}")
    ids, unk_chars = encode_text(module, read_text(args.text), args.text, args.drop_unknown)
    pad = module.tokenizer.pad_id or 0
    # Characters are counted on decoded ids, where <UNK> spells "<UNK>": count the words it stands
    # for instead (each is scored: every word follows <BOS> or another word).
    total = Score(characters=unk_chars)
    batches = -(-window_count(len(ids), block, stride) // args.batch_size)
    for batch in progress(text_batches(ids, block, stride, args.batch_size, pad),
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


def evaluate_corpus(args: argparse.Namespace, module: LanguageModule, kwargs: dict[str, Any]) -> dict[str, Score]:
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


def dial(args: argparse.Namespace, module: LanguageModule, position: Position | None) -> dict[str, Any]:
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
    module = load_module(args.ckpt, map_location=check_device(args.device))
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
