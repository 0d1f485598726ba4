"""Question answering probes: greedy exact match and the "talk" session of the SuccuLM articles."""

from __future__ import annotations

from dataclasses import dataclass

from succu.contracts import QAProbes, require
from succu.modules.base import LanguageModule
from succu.tokenizers import split_words


@dataclass
class QAResult:
    exact_match: float
    rows: list[tuple[str, str, str]]  # (question, expected, answer)


def qa_exact_match(module: LanguageModule, pairs: list[tuple[str, str]]) -> QAResult:
    """Greedy answers to each question; a hit is a token-for-token match with the expected answer."""
    if not pairs:
        return QAResult(float("nan"), [])
    answers = module.complete([q for q, _ in pairs], greedy=True)
    rows = [(q, a, got) for (q, a), got in zip(pairs, answers)]
    hits = sum(split_words(a) == split_words(got) for _, a, got in rows)
    return QAResult(hits / len(rows), rows)


def talk(module: LanguageModule, prompts: list[str], **sampling) -> list[tuple[str, str]]:
    """Continuations of each prompt (greedy unless sampling options say otherwise)."""
    sampling.setdefault("greedy", True)
    return list(zip(prompts, module.complete(prompts, **sampling)))


def report(module: LanguageModule, datamodule) -> str:
    """The end-of-fit talk session: probe prompts, then train and held-out QA exact match."""
    datamodule = require(datamodule, QAProbes, "the talk session")
    lines = ["", "== talk (greedy) =="]
    for prompt, answer in talk(module, list(datamodule.probe_prompts)):
        lines.append(f"  {prompt!r:45} -> {answer!r}")
    for name, pairs in (("train_qa", datamodule.train_qa), ("heldout_qa", datamodule.heldout_qa)):
        pairs = list(pairs)
        if pairs:
            result = qa_exact_match(module, pairs)
            hits = round(result.exact_match * len(pairs))
            lines.append(f"{name} exact match: {result.exact_match:.1%} ({hits}/{len(pairs)})")
    return "\n".join(lines)
