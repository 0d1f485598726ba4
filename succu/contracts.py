"""What a model, a module or a datamodule offers, declared by inheritance, checked by `isinstance`.

A feature is never guessed from an attribute's presence: a model that keeps a KV cache subclasses
`KVCacheModel`, a model with a dial subclasses `DialModel`, and so on. A renamed method then fails
loudly (the base raises NotImplementedError) instead of silently switching a feature off, and a
tool asked for a capability that a checkpoint lacks says which one in one line (`require`).

These are plain mixins with no state of their own, so models (pure torch), LightningModules and
datamodules can all inherit them; nothing here imports Lightning. Probes and tools ask for them:
`callbacks.diagnostics` for `BlockDiagnostics` or `LatentReadout`, `generate --stop key` for
`KeyRuleStop`, `callbacks.qa` for `QAProbes`, the grammar meter for `WorldKnowledge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from succu.dial import DialSampler

T = TypeVar("T")


class CapabilityError(ValueError):
    """A tool asked an object for something it does not declare (one line, names both)."""


def require(obj: Any, capability: type[T], what: str) -> T:
    """`obj` as a `capability`, or a CapabilityError saying that `what` needs it."""
    if not isinstance(obj, capability):
        summary = capability.__doc__.splitlines()[0].rstrip(".")
        raise CapabilityError(
            f"{what} needs {summary[0].lower()}{summary[1:]}; {type(obj).__name__} has none"
        )
    return obj


# ---- models ---------------------------------------------------------------------------------
class KVCacheModel:
    """A model with a key/value cache for incremental decoding.

    `forward(input_ids, kv_cache=cache)` reads and extends the cache; generation feeds one token
    per step after the prompt.
    """

    def new_kv_cache(self) -> Any:
        raise NotImplementedError


class DialModel:
    """A model with a dial over named sources (the corpora of its training mixture).

    `forward(input_ids, alpha=..., source=...)` takes the dial position and, in training, the
    source of each row. Over two sources the position is one number in [0, 1] (the corpus-1
    share), or one per row (B,); over K > 2 it is a point of the simplex, K shares summing to 1,
    (K,) or one per row (B, K). `n_sources` is the number of corpora the dial spans.
    """

    @property
    def n_sources(self) -> int:
        raise NotImplementedError


class BlockDiagnostics:
    """A model that reports per-block statistics and attention maps of a forward pass.

    `diagnostics(input_ids, mask)` runs the model once and gives scalars named
    `block<i>/<statistic>` (averaged over the positions the (B, T) `mask` selects) and
    `attention`: one (B, n_head, T, T) map per block.
    """

    def diagnostics(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, Any]:
        raise NotImplementedError


class LatentReadout:
    """A model that reads its logits against token latents through a per-context transform.

    `latents` (V, d) is the token table; `transform(input_ids)` the transform T_t of every
    position (None where the model has none); `readout_table(transform)` the table the logits are
    read against; `forward(input_ids, transform=T)` runs with T in place of T_t. The latent
    measurements (`succu.analysis.latents`) need nothing else.
    """

    latents: torch.Tensor

    def transform(self, input_ids: torch.Tensor) -> Any:
        raise NotImplementedError

    def readout_table(self, transform: Any) -> torch.Tensor:
        raise NotImplementedError


# ---- LightningModules -----------------------------------------------------------------------
class KeyRuleStop:
    """A module that can stop generating by its statistics (key) rule.

    `key_search(prompt, max_new_tokens, beams, search, budget)` answers one prompt (token ids)
    greedily with EOS and the other specials banned, stopping where the rule says, through a stub
    search ("beam", or depth first: "minimax", "alphabeta"); it returns the result (`tokens`,
    `stopped`) and the number of next-token evaluations it took.
    """

    def key_search(self, prompt: list[int], max_new_tokens: int, beams: int = 1,
                   search: str = "beam", budget: int = 200) -> tuple[Any, int]:
        raise NotImplementedError


# ---- datamodules ----------------------------------------------------------------------------
# The label of a position that carries no loss (padding, a prompt's tokens): what batches hold
# there and what every loss ignores (torch's cross_entropy default).
IGNORE_INDEX = -100


class NamedCorpora:
    """A datamodule over named corpora whose batches label each row's corpus with `source`.

    `corpora` names them in index order; `corpus_weights` is the training share of each (zero for
    a corpus used only out of domain); `install_dial` makes training batches carry `alpha` and
    draw each row's corpus from the dial (a `succu.dial.DialSampler`; None removes it).
    """

    corpora: list[str]

    @property
    def corpus_weights(self) -> list[float]:
        raise NotImplementedError

    def install_dial(self, sampler: DialSampler | None) -> None:
        raise NotImplementedError


def in_domain_corpora(datamodule: Any) -> set[int] | None:
    """The corpora a model trains on, by index (a positive `corpus_weights` share), of a
    datamodule over several named corpora; None (every corpus is in domain) for any other."""
    if isinstance(datamodule, NamedCorpora) and len(datamodule.corpora) > 1:
        return {i for i, w in enumerate(datamodule.corpus_weights) if w > 0}
    return None


@dataclass(frozen=True)
class WorldGrammar:
    """What a world knows about its text, as plain data.

    Attributes:
        word_class: slot words and their class ({"ruby": "NAME", "red": "ADJ", ...}).
        sentences: every sentence the world's templates make, each a tuple of words.
        statements: clause words (no final punctuation) -> (relation, entity, value) it states.
        facts: (relation, entity) -> the world's value.
    """

    word_class: dict[str, str]
    sentences: tuple[tuple[str, ...], ...]
    statements: dict[tuple[str, ...], tuple[str, str, str]]
    facts: dict[tuple[str, str], str]


class WorldKnowledge:
    """A datamodule whose data come from a generator that can judge generated text.

    `world_grammar()` is the grammar and facts of the world it serves, as a `WorldGrammar`; the
    grammar and fact meter (`succu.analysis.meter`) reads text with it.
    """

    def world_grammar(self) -> WorldGrammar:
        raise NotImplementedError


class TextSplits:
    """A datamodule that can give the normalised text of each corpus's train/val/test split.

    `split_texts(side)` maps each corpus name, in index order, to its `side` split ("train",
    "val" or "test") as one string in the surface form the model trains on (the corpus's
    normalisation rules applied; documents one per line). Analysis tools that read text rather
    than token windows (the voice meter) use it.
    """

    def split_texts(self, side: str) -> dict[str, str]:
        raise NotImplementedError


@dataclass(frozen=True)
class CorpusText:
    """Which text a corpus is read from, and its fingerprint.

    Attributes:
        name: the corpus name.
        origin: where the text is read from, for messages (a file, a folder or list and its file
            count, a hub dataset).
        setting: the datamodule setting that names its text (e.g. `data_path`), for hints.
        size: bytes of its files, in order (None: a hub dataset, which has no files to hash).
        sha256: hex sha256 of those bytes (one file: what `sha256sum` prints).
        files: how many files.
        problem: why no text can be read (no file found, the hub offline); None when it can.
    """

    name: str
    origin: str
    setting: str
    size: int | None = None
    sha256: str | None = None
    files: int | None = None
    problem: str | None = None

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps: the name and the fingerprint, plain data, no path."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "files": self.files}


class TextFingerprints:
    """A datamodule that says which text each of its corpora is read from, with a fingerprint.

    `corpus_texts()` is a `CorpusText` per corpus, in index order. A checkpoint records their
    `record()`s (`LanguageModule.on_save_checkpoint`); tools that score a corpus compare them with
    the text they are about to read and refuse another (`succu.checkpoint.check_corpus_text`).
    """

    def corpus_texts(self) -> list[CorpusText]:
        raise NotImplementedError


class TrainingTokenCounts:
    """A datamodule that counts each vocabulary id over the text it trains on.

    `training_token_counts()` is a (vocab_size,) int64 tensor over the training split of every
    corpus with a positive training weight: what tells a rare or unseen token from a common one.
    """

    def training_token_counts(self) -> torch.Tensor:
        raise NotImplementedError


class QAProbes:
    """A datamodule with question-answer probes: prompts to talk to and scored QA pairs.

    `probe_prompts` are what a trained model is shown after fit; `train_qa` and `heldout_qa` are
    (question, answer) pairs scored greedily (`succu.analysis.qa`); `dev_qa` is a QA development
    split disjoint from both, to choose a checkpoint by (it may be empty); `hidden_token_ids` are
    vocabulary ids never used as a training target (the sophia trap).
    """

    probe_prompts: Sequence[str]
    train_qa: Sequence[tuple[str, str]]
    dev_qa: Sequence[tuple[str, str]]
    heldout_qa: Sequence[tuple[str, str]]
    hidden_token_ids: Sequence[int]


class BatchSized:
    """A datamodule whose training batch size (rows per device) is the attribute `batch_size`.

    Scale-out tools may set it (a global batch split over devices) before the loaders are built.
    """

    batch_size: int


class InitialEmbeddings:
    """A datamodule that brings token vectors to initialise a model's embedding."""

    def embedding_weight(self) -> torch.Tensor | None:
        raise NotImplementedError
