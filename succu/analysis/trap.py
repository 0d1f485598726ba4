"""The sophia trap: does a (damaged) model emit words it was never taught, or special tokens?

SuccuLM's output layer is tied to its embedding, so every vocabulary entry has a row the final
hidden state can drift towards, including words that no training label ever targets (the hidden
word `sophia` of the succulent world). A healthy model gives those rows ~zero probability; a model
whose last FFN is squeezed starts sampling them. Likewise `<BOS>`, `<PAD>` and `<UNK>` are inputs
or fillers, never targets, and a model that emits them is broken.

What is measured (on the probe prompts, sampled at temperature T from seeded generators)
    A generation is the raw sampled ids after the prompt, up to (not including) the first `<EOS>`
    or the token budget. Counting happens on these ids, before any decoding: `complete()` would
    cut at EOS and drop `<PAD>`, hiding exactly the leaks we want (a `<PAD>` before EOS is a leak).

        hidden_rate        = generations containing >= 1 hidden token / generations
        hidden_token_rate  = hidden tokens / generated tokens
        special_rate       = generations containing >= 1 of <BOS> <PAD> <UNK> / generations
        special_token_rate = those tokens / generated tokens

    Hidden tokens are the vocabulary entries (specials excluded) that never occur as a training
    target; the datamodule computes them (`hidden_token_ids`) or they are found by one pass over its
    training labels. QA exact match (greedy, token for token) comes from `succu.analysis.qa`.

    Given a `Meter` (succu.analysis.meter: the world's grammar and facts), the same generations
    are also judged: grammar_rate, oot_rate (out-of-template words), fact_rate and
    false_fact_rate, carried in `TrapCounts.meter`.

Shared by the SophiaTrapDetection callback and the `python -m succu.sweep tt` corruption study.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from succu.analysis.meter import Meter, MeterCounts
from succu.analysis.qa import qa_exact_match
from succu.contracts import QAProbes
from succu.modules.base import IGNORE_INDEX, LanguageModule

LEAK_TOKENS = ("<BOS>", "<PAD>", "<UNK>")


@dataclass
class Generation:
    prompt: str
    seed: int
    sample: int
    ids: list[int]  # raw generated ids, up to the first EOS
    text: str  # decoded with specials visible
    hidden: int = 0
    special: int = 0


@dataclass
class TrapCounts:
    """Counts over a set of generations; add two with `+` (e.g. several seeds)."""

    generations: int = 0
    tokens: int = 0
    hidden_generations: int = 0
    hidden_tokens: int = 0
    special_generations: int = 0
    special_tokens: int = 0
    offenders: list[Generation] = field(default_factory=list)
    meter: MeterCounts | None = None  # the grammar and fact meter's counts, when one was given

    def __add__(self, other: TrapCounts) -> TrapCounts:
        fields = ("generations", "tokens", "hidden_generations", "hidden_tokens",
                  "special_generations", "special_tokens")
        merged = {f: getattr(self, f) + getattr(other, f) for f in fields}
        meters = [m for m in (self.meter, other.meter) if m is not None]
        return TrapCounts(**merged, offenders=self.offenders + other.offenders,
                          meter=sum(meters, MeterCounts()) if meters else None)

    @staticmethod
    def _rate(num: int, den: int) -> float:
        return num / den if den else 0.0

    @property
    def hidden_rate(self) -> float:
        return self._rate(self.hidden_generations, self.generations)

    @property
    def hidden_token_rate(self) -> float:
        return self._rate(self.hidden_tokens, self.tokens)

    @property
    def special_rate(self) -> float:
        return self._rate(self.special_generations, self.generations)

    @property
    def special_token_rate(self) -> float:
        return self._rate(self.special_tokens, self.tokens)

    def rates(self, prefix: str = "trap/") -> dict[str, float]:
        rates = {f"{prefix}{k}": getattr(self, k) for k in
                 ("hidden_rate", "hidden_token_rate", "special_rate", "special_token_rate")}
        return rates | (self.meter.rates(prefix) if self.meter is not None else {})


# ----------------------------------------------------------------------------- what to count
def leak_token_ids(tokenizer) -> list[int]:
    """Ids of `<BOS>`, `<PAD>`, `<UNK>` in this vocabulary (EOS is the legitimate stop)."""
    ids = (tokenizer.token_id(t) for t in LEAK_TOKENS)
    return sorted(i for i in ids if i is not None)


def hidden_token_ids(datamodule) -> list[int]:
    """Vocabulary ids never seen as a training target (specials excluded).

    Uses the datamodule's own `hidden_token_ids` when it has QA probes (SuccuPairsDataModule),
    else one pass over its training labels.
    """
    if isinstance(datamodule, QAProbes):
        return sorted(int(i) for i in datamodule.hidden_token_ids)
    seen = torch.zeros(datamodule.vocab_size, dtype=torch.bool)
    for batch in datamodule.train_dataloader():
        labels = batch["labels"]
        seen[labels[labels != IGNORE_INDEX]] = True
    specials = set(datamodule.tokenizer.special_ids)
    return [i for i in range(datamodule.vocab_size) if not seen[i] and i not in specials]


# ----------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_generations(module: LanguageModule, prompts: Sequence[str], *, temperature: float,
                       seed: int, samples: int = 1,
                       max_new_tokens: int | None = None) -> list[Generation]:
    """`samples` continuations of each prompt from a generator seeded with `seed`.

    Rows of equal prompt length are batched (in order of first appearance, so the draw order, hence
    the result, depends only on prompts, seed and model). Returns raw ids cut at the first EOS.
    """
    tok = module.tokenizer
    generator = torch.Generator(device=module.device).manual_seed(seed)
    rows = [(p, s, module.prompt_ids(p)) for p in prompts for s in range(samples)]
    by_len: dict[int, list[int]] = {}
    for i, (_, _, ids) in enumerate(rows):
        by_len.setdefault(len(ids), []).append(i)
    out: list[Generation | None] = [None] * len(rows)
    for length, members in by_len.items():
        batch = torch.tensor([rows[i][2] for i in members], device=module.device)
        budget = max_new_tokens if max_new_tokens is not None else module.model.cfg.block_size - length
        seq = module.generate(batch, max(0, budget), temperature=temperature, eos_id=tok.eos_id,
                              generator=generator)
        for i, new in zip(members, seq[:, length:].tolist()):
            if tok.eos_id is not None and tok.eos_id in new:
                new = new[: new.index(tok.eos_id)]
            out[i] = Generation(rows[i][0], seed, rows[i][1], new, tok.decode(new))
    return out  # type: ignore[return-value]


def count_trap(generations: Iterable[Generation], hidden_ids: Iterable[int],
               leak_ids: Iterable[int]) -> TrapCounts:
    """Count hidden and special tokens in raw generated ids; fills each Generation's counts."""
    hidden, leak = set(hidden_ids), set(leak_ids)
    counts = TrapCounts()
    for g in generations:
        g.hidden = sum(i in hidden for i in g.ids)
        g.special = sum(i in leak for i in g.ids)
        counts.generations += 1
        counts.tokens += len(g.ids)
        counts.hidden_tokens += g.hidden
        counts.special_tokens += g.special
        counts.hidden_generations += g.hidden > 0
        counts.special_generations += g.special > 0
        if g.hidden or g.special:
            counts.offenders.append(g)
    return counts


def probe_trap(module: LanguageModule, prompts: Sequence[str], hidden_ids: Iterable[int], *,
               temperature: float = 0.6, seeds: Sequence[int] = (0,), samples: int = 1,
               max_new_tokens: int | None = None, meter: Meter | None = None) -> list[TrapCounts]:
    """Trap counts for each seed (sum them for the pooled rates, spread them for error bars);
    with a `meter`, each also carries the grammar and fact counts of the same generations."""
    leak, hidden = leak_token_ids(module.tokenizer), list(hidden_ids)
    vocab = module.tokenizer.vocab
    per_seed = []
    for seed in seeds:
        gens = sample_generations(module, prompts, temperature=temperature, seed=seed,
                                  samples=samples, max_new_tokens=max_new_tokens)
        counts = count_trap(gens, hidden, leak)
        if meter is not None:
            counts.meter = meter.count([vocab[i] for i in g.ids] for g in gens)
        per_seed.append(counts)
    return per_seed


def qa_metrics(module: LanguageModule, train_qa: Sequence[tuple[str, str]],
               heldout_qa: Sequence[tuple[str, str]] = (), prefix: str = "trap/") -> dict[str, float]:
    """Greedy exact match on the training QA (`qa_exact`) and the held-out QA (`qa_exact_heldout`)."""
    metrics = {}
    if train_qa:
        metrics[f"{prefix}qa_exact"] = qa_exact_match(module, list(train_qa)).exact_match
    if heldout_qa:
        metrics[f"{prefix}qa_exact_heldout"] = qa_exact_match(module, list(heldout_qa)).exact_match
    return metrics


def offender_rows(counts: TrapCounts, limit: int | None = None) -> list[list]:
    """The offending generations as table rows: prompt, seed, sample, output, hidden, special."""
    rows = [[g.prompt, g.seed, g.sample, g.text, g.hidden, g.special] for g in counts.offenders]
    return rows[:limit] if limit is not None else rows


OFFENDER_COLUMNS = ["prompt", "seed", "sample", "generation", "hidden", "special"]
