"""The voice meter: which training corpus does a piece of text sound like?

A multinomial naive Bayes classifier over character n-grams (orders 1 to 4), in plain numpy: every
n-gram of a text is hashed into one table of 2^20 buckets (the order is part of the hash, so a
bigram and a trigram never share a bucket by construction, only by collision), each corpus gets
Laplace-smoothed bucket probabilities from its training split, and a text goes to the corpus
whose probabilities give its n-grams the highest likelihood (a uniform prior: a judgement of the
text, not of the corpora's sizes). Fitting on ~2.5M characters takes about a second; scoring a
200-character window a fraction of a millisecond.

It is fitted on the training splits only, in the surface form the model trains on (Shakespeare
in abcGPT's lowercase form, for instance), and checked on windows of the validation splits
(`window_accuracy`). `voice_shares` then reads a dial: at each alpha it samples N continuations
(fixed prompts, temperature 0.8, seeded) of a gated (or control-code) model and reports the
share of them judged to be each corpus; `python -m succu.sweep alpha --voice N` writes the table
and the plot. `VoiceMeter.score` is the continuous reading behind a judgement: a text's
log-likelihood ratio of one corpus over another, per character, and `score_spread` summarises
those scores at one dial position, so a blend of two voices and a switch between them differ. The positions are sampled together, one forward pass per token for several of them
(`succu.dial_streams`), each from its own seeded generator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from succu.contracts import TextSplits, require
from succu.dial import Position
from succu.dial_streams import steps_at
from succu.progress import progress

ORDERS = (1, 2, 3, 4)
BITS = 20
WINDOW = 200  # characters judged per text (validation windows and generated continuations)
MAX_ROWS = 256  # rows sampled in one forward pass when positions are sampled together
# Prompts every corpus could continue; each continuation is seeded, so the dial alone varies.
PROMPTS = ("the ", "and ", "he said ", "she ", "when ", "a ", "in the ", "then ")
_PRIME = np.uint64(0x100000001B3)  # FNV's 64-bit prime: mixes each code point into the hash
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits become the bucket


def ngram_buckets(text: str, orders: Sequence[int] = ORDERS, bits: int = BITS) -> np.ndarray:
    """The bucket of every n-gram of `text` for each order, as one uint64 array."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    parts = []
    with np.errstate(over="ignore"):  # the hash wraps around 2^64 by design
        for n in orders:
            count = len(codes) - n + 1
            if count <= 0:
                continue
            h = np.full(count, n, dtype=np.uint64)
            for i in range(n):
                h = h * _PRIME + codes[i : i + count]
            parts.append((h * _GOLDEN) >> np.uint64(64 - bits))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


@dataclass
class VoiceMeter:
    """Naive Bayes over hashed character n-grams; `names[k]` is corpus k's name.

    Attributes:
        names: the corpora, in the order of a dial's sources.
        log_probs: (K, 2^bits) log-probability of each bucket under each corpus.
        orders: the n-gram orders counted.
    """

    names: list[str]
    log_probs: np.ndarray
    orders: tuple[int, ...] = ORDERS

    @classmethod
    def fit(cls, texts: dict[str, str], orders: Sequence[int] = ORDERS, bits: int = BITS,
            smoothing: float = 1.0) -> VoiceMeter:
        """Count each corpus's n-grams in `texts` (name -> training text)."""
        if len(texts) < 2 or not all(texts.values()):
            raise ValueError(f"the voice meter needs at least two non-empty corpora, got {list(texts)}")
        size = 1 << bits
        counts = np.stack([np.bincount(ngram_buckets(t, orders, bits), minlength=size)
                           for t in texts.values()]).astype(np.float64)
        probs = (counts + smoothing) / (counts.sum(1, keepdims=True) + smoothing * size)
        return cls(list(texts), np.log(probs), tuple(orders))

    @property
    def bits(self) -> int:
        return int(self.log_probs.shape[1]).bit_length() - 1

    def scores(self, texts: Iterable[str]) -> np.ndarray:
        """(n, K) log-likelihood of each text under each corpus."""
        rows = [self.log_probs[:, ngram_buckets(t, self.orders, self.bits)].sum(1) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, len(self.names)))

    def judge(self, texts: Iterable[str]) -> np.ndarray:
        """(n,) the index of the corpus each text sounds like (ties: the lower index)."""
        return self.scores(texts).argmax(1)

    def score(self, texts: Iterable[str], toward: int = 1, against: int = 0) -> np.ndarray:
        """(n,) the voice score of each text: its log-likelihood ratio of corpus `toward` over
        corpus `against`, per character (nats; 0 for an empty text). Positive sounds like
        `toward`; the size says how far, so a blend of two voices scores between the two
        corpora's own texts, where `judge` would only say which side it falls on."""
        texts = list(texts)
        ratio = self.scores(texts)
        ratio = ratio[:, toward] - ratio[:, against] if len(texts) else np.zeros(0)
        return ratio / np.maximum(1, [len(t) for t in texts])

    def shares(self, texts: Sequence[str]) -> np.ndarray:
        """(K,) the share of `texts` judged to be each corpus (sums to 1)."""
        if not texts:
            raise ValueError("shares of no texts: give at least one")
        return np.bincount(self.judge(texts), minlength=len(self.names)) / len(texts)


def windows(text: str, length: int = WINDOW, count: int = 256) -> list[str]:
    """`count` evenly spaced windows of `length` characters (fewer when the text is short)."""
    last = len(text) - length
    if last < 0:
        return [text] if text else []
    starts = np.linspace(0, last, min(count, last + 1)).round().astype(int)
    return [text[s : s + length] for s in starts]


def window_accuracy(meter: VoiceMeter, texts: dict[str, str], length: int = WINDOW,
                    count: int = 256) -> dict[str, float]:
    """Accuracy on `count` windows of each corpus's (validation) text, per corpus and overall."""
    result, right, total = {}, 0, 0
    for k, name in enumerate(meter.names):
        judged = meter.judge(windows(texts[name], length, count))
        result[name] = float((judged == k).mean())
        right, total = right + int((judged == k).sum()), total + len(judged)
    result["all"] = right / total
    return result


def corpus_texts(datamodule, side: str) -> dict[str, str]:
    """Each corpus's `side` split ("train", "val", "test") as one text, in the surface form the
    model sees: what a datamodule declaring `succu.contracts.TextSplits` gives (a
    `datamodules.text.TextDataModule`); any other is one CapabilityError."""
    return require(datamodule, TextSplits, "the voice meter").split_texts(side)


def continuations(module, alpha: Position, n: int, prompts: Sequence[str] = PROMPTS,
                  length: int = WINDOW, temperature: float = 0.8, seed: int = 0) -> list[str]:
    """`n` sampled continuations of `prompts` (round robin) at `alpha`, `length` new tokens each,
    special tokens dropped (an EOS does not stop them). One seeded generator per call, so the
    dial position is the only thing that differs between two calls."""
    return samples(module, [alpha], n, prompts, length, temperature, seed)[0]


def samples(module, alphas: Sequence[Position], n: int, prompts: Sequence[str] = PROMPTS,
            length: int = WINDOW, temperature: float = 0.8, seed: int = 0) -> list[list[str]]:
    """`continuations` at each of `alphas` (a list per position), the positions sampled together:
    one forward pass per token for several positions (`succu.dial_streams`), each position
    drawing from its own generator as `continuations` at that position alone does."""
    out = [[""] * n for _ in alphas]
    for _ in sampling(module, alphas, n, prompts, length, temperature, seed, out):
        pass
    return out


def sampling_steps(module, n: int, prompts: Sequence[str] = PROMPTS, length: int = WINDOW) -> int:
    """How many generation steps `sampling` takes: `length` for each batch of prompts."""
    return len(prompt_batches(prompt_ids(module, n, prompts))) * length


def prompt_ids(module, n: int, prompts: Sequence[str]) -> list[list[int]]:
    """The encoded prompt of each of `n` samples: `prompts` that fit the vocabulary, round robin."""
    usable = [p for p in prompts if not module.tokenizer.unknown(p)]
    if not usable:
        raise ValueError(f"no voice prompt fits the model's vocabulary: {list(prompts)}")
    return [module.prompt_ids(usable[i % len(usable)]) for i in range(n)]


def prompt_batches(chosen: list[list[int]]) -> list[list[int]]:
    """The samples (indices) of each batch: prompts of the same length share one, so there are
    fewer, wider steps (past the block size every step recomputes the window, so the number of
    steps is what costs)."""
    return [[i for i, ids in enumerate(chosen) if len(ids) == size]
            for size in dict.fromkeys(len(ids) for ids in chosen)]


def sampling(module, alphas: Sequence[Position], n: int, prompts: Sequence[str], length: int,
             temperature: float, seed: int, out: list[list[str]]) -> Iterator[None]:
    """`samples` one generation step at a time: yields once per position after each step of
    each batch, and writes each batch's texts into `out[position]` when it ends. Each batch of
    prompts runs at several positions at once, at most MAX_ROWS rows together (a batch wider
    than that one position at a time)."""
    tok = module.tokenizer
    chosen = prompt_ids(module, n, prompts)
    generators = [torch.Generator(device=module.device).manual_seed(seed) for _ in alphas]
    special = set(tok.special_ids)
    for rows in prompt_batches(chosen):
        batch = torch.tensor([chosen[i] for i in rows], device=module.device)
        together = max(1, MAX_ROWS // len(rows))
        for first in range(0, len(alphas), together):
            group = range(first, min(first + together, len(alphas)))
            new = []  # kept on the device until the batch ends: no host sync per step
            for nxt in steps_at(module, batch, [alphas[a] for a in group], length,
                                generators=[generators[a] for a in group], temperature=temperature):
                new.append(nxt)
                for _ in group:
                    yield
            sampled = torch.stack(new, dim=-1).tolist() if new else [[[] for _ in rows] for _ in group]
            for a, texts in zip(group, sampled):
                for i, row in zip(rows, texts):
                    out[a][i] = tok.decode([t for t in row if t not in special])[:length]


def voice_texts(module, alphas: Sequence[Position], n: int = 64, prompts: Sequence[str] = PROMPTS,
                length: int = WINDOW, temperature: float = 0.8, seed: int = 0) -> list[list[str]]:
    """`samples` at each of `alphas`, showing the sampling's progress on standard error
    (`succu.progress`), step by step."""
    texts = [[""] * n for _ in alphas]
    steps = sampling(module, alphas, n, prompts, length, temperature, seed, texts)
    total = len(alphas) * sampling_steps(module, n, prompts, length)
    for _ in progress(steps, f"voice meter: {len(alphas)} positions x {n} samples, steps", total):
        pass
    return texts


def share_rows(meter: VoiceMeter, alphas: Sequence[Position], texts: Sequence[Sequence[str]]) -> list[dict]:
    """One row per alpha, {"alpha": alpha, <corpus name>: share judged that corpus, ...}."""
    rows = []
    for alpha, sampled in zip(alphas, texts):
        shares = meter.shares(sampled)
        rows.append({"alpha": alpha, **{name: float(s) for name, s in zip(meter.names, shares)}})
    return rows


def voice_shares(module, meter: VoiceMeter, alphas: Sequence[Position], n: int = 64,
                 prompts: Sequence[str] = PROMPTS, length: int = WINDOW, temperature: float = 0.8,
                 seed: int = 0) -> list[dict]:
    """At each alpha, the share of `n` continuations judged to be each corpus: one row per alpha,
    {"alpha": alpha, <corpus name>: share, ...}; each row's shares sum to 1."""
    return share_rows(meter, alphas, voice_texts(module, alphas, n, prompts, length, temperature, seed))


def score_spread(scores: Sequence[float], low: float, high: float) -> dict[str, float]:
    """The distribution of voice scores at one dial position, read against the two ends' typical
    scores `low` (corpus 0's voice) and `high` (corpus 1's): mean, sd, the 10/50/90% quantiles
    and "middle", the share of scores in the middle third between `low` and `high`. A blend of
    the two voices puts its scores there; a switch between them puts them near the ends (a
    bimodal spread: a mean in the middle, few scores in the middle third)."""
    x = np.asarray(scores, dtype=np.float64)
    lo, hi = min(low, high), max(low, high)
    third = (hi - lo) / 3
    middle = float(((x > lo + third) & (x < hi - third)).mean()) if len(x) else float("nan")
    q10, q50, q90 = np.quantile(x, [0.1, 0.5, 0.9]) if len(x) else (float("nan"),) * 3
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
            "q10": float(q10), "q50": float(q50), "q90": float(q90), "middle": middle}


def switch_middle(
    low_scores: Sequence[float], high_scores: Sequence[float], weight: float, low: float, high: float
) -> float:
    """The share of scores in the middle third between `low` and `high` (as `score_spread` counts
    it) that a pure switch would give: every generation in one end's voice, corpus 1's with
    probability `weight`, its score drawn from that end's own scores (`low_scores` at the corpus-0
    end, `high_scores` at the corpus-1 end). A measured share above it is what a blend adds."""
    def middle(x: Sequence[float]) -> float:
        return score_spread(x, low, high)["middle"]

    return weight * middle(high_scores) + (1 - weight) * middle(low_scores)
