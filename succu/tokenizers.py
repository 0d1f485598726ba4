"""Tokenizers that travel inside checkpoints.

Every tokenizer is a plain object with `encode`, `decode`, a vocabulary list and a JSON-able
`state_dict()`; `tokenizer_from_state(state)` rebuilds any of them, so a checkpoint alone is enough
to talk to a model. Special tokens are optional: the word tokenizer has `<PAD> <BOS> <EOS> <UNK>`
(the SuccuLM convention), character tokenizers may have none.

The corpus tokenizers, `WordTokenizer`, `CharTokenizer` and `BPETokenizer` (byte-level, trained
locally with HF `tokenizers`), also carry the surface rules their training text went through
(`fold_ascii`, `abc_style`) and apply them in `encode`, so a raw prompt lands on the form the model
was trained on.

`to_hf()` gives each of them as a Hugging Face `tokenizers.Tokenizer` that encodes any text to
the same ids, its surface rules rebuilt as that library's normalizers (`hf_normalizers`): what
`python -m succu.export` writes as tokenizer.json.
"""

from __future__ import annotations

import functools
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

SPECIALS = ("<PAD>", "<BOS>", "<EOS>", "<UNK>")
PUNCTUATION = (".", ",", "?", "!")
SENTENCE_ENDS = frozenset({".", "?", "!"})


class Tokenizer:
    """A vocabulary with lookups both ways; subclasses define how text splits into pieces."""

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Tokenizer.registry[cls.kind] = cls

    def __init__(self, vocab: Iterable[str]):
        self.vocab = list(vocab)
        self.stoi = {tok: i for i, tok in enumerate(self.vocab)}
        if len(self.stoi) != len(self.vocab):
            raise ValueError("tokenizer vocabulary has duplicate entries")

    def __len__(self) -> int:
        return len(self.vocab)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.state_dict() == other.state_dict()

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_id(self, token: str) -> int | None:
        return self.stoi.get(token)

    @property
    def pad_id(self) -> int | None:
        return self.stoi.get("<PAD>")

    @property
    def bos_id(self) -> int | None:
        return self.stoi.get("<BOS>")

    @property
    def eos_id(self) -> int | None:
        return self.stoi.get("<EOS>")

    @property
    def unk_id(self) -> int | None:
        return self.stoi.get("<UNK>")

    @property
    def special_ids(self) -> list[int]:
        return [self.stoi[s] for s in SPECIALS if s in self.stoi]

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def unknown(self, text: str) -> Counter[str]:
        """Pieces of `text` outside the vocabulary, with counts (they encode to `<UNK>` when the
        tokenizer has one; a CharTokenizer without one refuses them)."""
        return Counter()

    def without_unknown(self, text: str) -> str:
        """`text` with the pieces `unknown` names removed (what `--drop_unknown` evaluates)."""
        return text

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab": list(self.vocab)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Tokenizer:
        return cls(state["vocab"])

    def to_hf(self) -> HFTokenizer:
        """This tokenizer as a Hugging Face `tokenizers.Tokenizer`: the same ids for any text,
        the specials registered as special tokens."""
        raise NotImplementedError


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer saved by `Tokenizer.state_dict()`."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in Tokenizer.registry:
        raise ValueError(
            f"unknown tokenizer kind {kind!r}; known kinds: {sorted(Tokenizer.registry)}"
        )
    try:
        return Tokenizer.registry[kind].from_state(state)
    except KeyError as err:  # a kind whose fields are not there: damaged, or the kind was changed
        raise ValueError(f"the saved {kind!r} tokenizer has no {err.args[0]!r} field (its fields: "
                         f"{sorted(state)}); the tokenizer state is damaged or its kind was changed") from None
    except Exception as err:  # noqa: BLE001 - the tokenizers library raises a bare Exception
        raise ValueError(f"the saved {kind!r} tokenizer cannot be rebuilt from its state: "
                         f"{' '.join(str(err).split()) or type(err).__name__}") from err


def split_words(sentence: str) -> list[str]:
    """SuccuLM's rule: lowercase, `. , ? !` become their own tokens, split on whitespace."""
    sentence = sentence.lower()
    for sign in PUNCTUATION:
        sentence = sentence.replace(sign, f" {sign} ")
    return [t for t in re.split(r"\s+", sentence.strip()) if t]


def split_sentences(words: Sequence[str]) -> tuple[list[tuple[str, ...]], tuple[str, ...]]:
    """(complete sentences, each ending with . ? or !; the unfinished rest, maybe empty)."""
    sentences, current = [], []
    for word in words:
        current.append(word)
        if word in SENTENCE_ENDS:
            sentences.append(tuple(current))
            current = []
    return sentences, tuple(current)


def join_words(words: Iterable[str]) -> str:
    """Inverse of `split_words` up to case: glue punctuation back onto the previous word."""
    text = " ".join(words)
    for sign in PUNCTUATION:
        text = text.replace(f" {sign}", sign)
    return text


# ---- text surface rules shared by the corpus tokenizers ----------------------------------------
# Curly quotes, dashes and the ellipsis folded to ASCII (TinyStories has a few; tinyshakespeare none).
ASCII_FOLD = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
        "\u2212": "-",
        "\u2026": "...",
    }
)
ABC_MARKS = ".,!?;:"
ABC_PUNCTUATION = re.compile(f"([{re.escape(ABC_MARKS)}])")
HORIZONTAL_SPACE = re.compile(r"[ \t]+")
SPACE_AROUND_NEWLINE = re.compile(r"[ \t]*\n[ \t]*")


def fold_ascii(text: str) -> str:
    """Curly quotes to ' and ", every dash to -, the ellipsis character to three dots."""
    return text.translate(ASCII_FOLD)


def abc_style(text: str) -> str:
    """The abcGPT surface form: lowercase, `. , ! ? ; :` padded with spaces, newlines kept.

    Runs of spaces/tabs collapse to one space and spaces next to a newline go, so the play keeps its
    line structure. The rule is idempotent.
    """
    text = ABC_PUNCTUATION.sub(r" \1 ", text.lower())
    text = HORIZONTAL_SPACE.sub(" ", text)
    return SPACE_AROUND_NEWLINE.sub("\n", text)


# Applied in this order whatever order a config lists them in.
NORMALIZERS = {"fold_ascii": fold_ascii, "abc_style": abc_style}


def check_normalizers(names: Iterable[str]) -> list[str]:
    """Validate rule names and return them in canonical order."""
    names = list(names)
    unknown = sorted(set(names) - set(NORMALIZERS))
    if unknown:
        raise ValueError(f"unknown normalisation rule(s) {unknown}; known: {list(NORMALIZERS)}")
    return [n for n in NORMALIZERS if n in names]


def normalize_text(text: str, names: Iterable[str]) -> str:
    for name in check_normalizers(names):
        text = NORMALIZERS[name](text)
    return text


# ---- the same rules as Hugging Face `tokenizers` normalizers (tokenizer.json) -----------------
# Python's str.lower() writes a capital sigma that ends a word as the final form (Unicode's
# Final_Sigma condition: a cased letter before it, none after, case-ignorable characters skipped);
# the library's Lowercase maps one character at a time, so those sigmas are replaced first.
FINAL_SIGMA = r"(?<=\p{Cased}\p{Case_Ignorable}*)\x{3a3}(?!\p{Case_Ignorable}*\p{Cased})"


def hf_lowercase() -> list[Any]:
    """str.lower() as normalizers."""
    from tokenizers import Regex, normalizers

    return [normalizers.Replace(Regex(FINAL_SIGMA), "\u03c2"), normalizers.Lowercase()]


@functools.cache
def python_space() -> str:
    """A character class of exactly what Python's `\\s` matches in text (str.isspace), for the
    library's regexes, whose own whitespace differs (the separators U+001C..U+001F)."""
    spaces = [c for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    return "[" + "".join(f"\\x{{{c:x}}}" for c in spaces) + "]"


def hf_normalizers(names: Iterable[str]) -> list[Any]:
    """The surface rules `names` as `tokenizers` normalizers, in NORMALIZERS' order."""
    from tokenizers import Regex, normalizers

    rules = {
        "fold_ascii": lambda: [normalizers.Replace(chr(c), to) for c, to in ASCII_FOLD.items()],
        "abc_style": lambda: [
            *hf_lowercase(),
            *(normalizers.Replace(mark, f" {mark} ") for mark in ABC_MARKS),
            normalizers.Replace(Regex(HORIZONTAL_SPACE.pattern), " "),
            normalizers.Replace(Regex(SPACE_AROUND_NEWLINE.pattern), "\n"),
        ],
    }
    return [n for name in check_normalizers(names) for n in rules[name]()]


class CorpusTokenizer(Tokenizer):
    """A tokenizer for text corpora that knows the surface rules its training text went through.

    `encode` applies those rules first, so a raw prompt lands on the model's surface form (curly
    quotes folded, or the abcGPT lowercase form); the data pipeline, which has normalised already,
    calls `encode_batch(..., normalized=True)` and gets numpy arrays.
    """

    def __init__(self, vocab: Iterable[str], normalizers: Iterable[str] = ()):
        super().__init__(vocab)
        self.normalizers = check_normalizers(normalizers)

    def normalize(self, text: str) -> str:
        return normalize_text(text, self.normalizers)

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0].tolist()

    def encode_batch(self, texts: list[str], *, normalized: bool = False) -> list[Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "normalizers": list(self.normalizers)}

    def hf_normalizer(self) -> Any:
        """The surface rules as one `tokenizers` normalizer (None without rules)."""
        from tokenizers import normalizers

        rules = hf_normalizers(self.normalizers)
        return normalizers.Sequence(rules) if rules else None


class WordTokenizer(CorpusTokenizer):
    """Whole-word vocabulary: specials `<PAD> <BOS> <EOS> <UNK>` first, then words sorted.

    This is the reference SuccuLM's `make_word2id`: ids are stable for a given word set, so an
    embeddings file `{word: vector}` or a pairs file from the reference maps onto the same ids.
    Words are `split_words`'s (lowercased, `. , ? !` on their own), after the surface rules when a
    text corpus has any. Unknown words encode to `<UNK>` rather than failing, so any prompt can be
    asked.
    """

    kind = "word"

    def __init__(self, vocab: Iterable[str], normalizers: Iterable[str] = ()):
        vocab = list(vocab)
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a WordTokenizer vocabulary must start with {list(SPECIALS)}")
        super().__init__(vocab, normalizers)

    @classmethod
    def from_words(cls, words: Iterable[str], normalizers: Iterable[str] = ()) -> WordTokenizer:
        rest = sorted(set(words) - set(SPECIALS))
        return cls([*SPECIALS, *rest], normalizers)

    def words(self, text: str) -> list[str]:
        return split_words(self.normalize(text))

    def encode(self, text: str) -> list[int]:
        unk = self.stoi["<UNK>"]
        return [self.stoi.get(w, unk) for w in self.words(text)]

    def encode_batch(self, texts: list[str], *, normalized: bool = False) -> list[Any]:
        unk = self.stoi["<UNK>"]
        split = split_words if normalized else self.words
        return [np.asarray([self.stoi.get(w, unk) for w in split(t)], dtype=np.int64) for t in texts]

    def unknown(self, text: str) -> Counter[str]:
        return Counter(w for w in self.words(text) if w not in self.stoi)

    def without_unknown(self, text: str) -> str:
        return join_words(w for w in self.words(text) if w in self.stoi)

    def decode(self, ids: Iterable[int]) -> str:
        return join_words(self.vocab[i] for i in ids)

    def state_dict(self) -> dict[str, Any]:
        # The succulent world's tokenizer has no surface rules: its state stays {kind, vocab}.
        return super().state_dict() if self.normalizers else Tokenizer.state_dict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WordTokenizer:
        return cls(state["vocab"], state.get("normalizers", ()))

    def to_hf(self) -> HFTokenizer:
        from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer(models.WordLevel(dict(self.stoi), unk_token="<UNK>"))
        # The surface rules first (when a text corpus has any), then split_words's own.
        hf.normalizer = normalizers.Sequence([*hf_normalizers(self.normalizers), *hf_lowercase(),
                                              *(normalizers.Replace(p, f" {p} ") for p in PUNCTUATION)])
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(python_space() + "+"), "removed")
        # join_words: a space before every word but the first, none before punctuation. Each
        # token gets a leading marker, punctuation loses it, Metaspace turns the rest into spaces
        # and drops the first token's.
        mark = "\u2581"
        hf.decoder = decoders.Sequence([
            decoders.Replace(Regex("^"), mark),
            *(decoders.Replace(mark + p, p) for p in PUNCTUATION),
            decoders.Metaspace(mark, "always", split=False),
        ])
        hf.add_special_tokens(list(SPECIALS))
        return hf


class CharTokenizer(CorpusTokenizer):
    """One id per character: optional specials first (e.g. `<EOS>` between documents), then the
    sorted characters of every corpus in use. Unknown characters are an error, not `<UNK>`: there
    is no id for them (`unknown` names them; `without_unknown` drops them).
    """

    kind = "char"

    def __init__(self, vocab: Iterable[str], normalizers: Iterable[str] = ()):
        super().__init__(vocab, normalizers)
        chars = [(i, t) for i, t in enumerate(self.vocab) if len(t) == 1]
        # Code point -> id lookup table: tokenising is one numpy gather per text.
        size = 1 + max((ord(t) for _, t in chars), default=0)
        self._lut = np.full(size, -1, dtype=np.int64)
        for i, t in chars:
            self._lut[ord(t)] = i

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], specials: Iterable[str] = (), normalizers: Iterable[str] = ()
    ) -> CharTokenizer:
        """Vocabulary of the given (already normalised) texts."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        specials = list(specials)
        return cls([*specials, *sorted(chars - set(specials))], normalizers)

    def encode_batch(self, texts: list[str], *, normalized: bool = False) -> list[Any]:
        out = []
        for text in texts:
            if not normalized:
                text = self.normalize(text)
            cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            ids = self._lut[np.minimum(cps, len(self._lut) - 1)]
            bad = (ids < 0) | (cps >= len(self._lut))
            if bad.any():
                missing = sorted({chr(c) for c in cps[bad]})
                raise ValueError(f"characters not in the vocabulary: {missing[:10]}")
            out.append(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def unknown(self, text: str) -> Counter[str]:
        # After the surface rules: a curly quote the rules fold to ASCII is not unknown.
        return Counter(c for c in self.normalize(text) if c not in self.stoi)

    def without_unknown(self, text: str) -> str:
        # The rules are idempotent, so encode() normalising this again changes nothing.
        return "".join(c for c in self.normalize(text) if c in self.stoi)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CharTokenizer:
        return cls(state["vocab"], state.get("normalizers", ()))

    def to_hf(self) -> HFTokenizer:
        from tokenizers import Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        # Every character its own piece, looked up whole; no <UNK>, so an unknown character is an
        # error there too (the library names its missing "[UNK]").
        hf = HFTokenizer(models.WordLevel(dict(self.stoi), unk_token="[UNK]"))
        hf.normalizer = self.hf_normalizer()
        hf.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), "isolated")
        hf.decoder = decoders.Fuse()  # characters join with nothing between them
        hf.add_special_tokens([t for t in self.vocab if len(t) != 1])
        return hf


class BPETokenizer(CorpusTokenizer):
    """Byte-level BPE trained locally with HF `tokenizers` (GPT-2 style: any text encodes, and
    decode(encode(text)) == text). The whole HF tokenizer JSON travels in the state.
    """

    kind = "bpe"

    def __init__(self, model_json: str, normalizers: Iterable[str] = ()):
        from tokenizers import Tokenizer as HFTokenizer

        self.model_json = model_json
        self.hf = HFTokenizer.from_str(model_json)
        vocab = [self.hf.id_to_token(i) for i in range(self.hf.get_vocab_size())]
        super().__init__(vocab, normalizers)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        specials: Iterable[str] = (),
        normalizers: Iterable[str] = (),
    ) -> BPETokenizer:
        """Train on an iterator of (already normalised) texts, e.g. a training split."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer)
        return cls(hf.to_str(), normalizers)

    def encode_batch(self, texts: list[str], *, normalized: bool = False) -> list[Any]:
        if not normalized:
            texts = [self.normalize(t) for t in texts]
        return [np.asarray(e.ids, dtype=np.int64) for e in self.hf.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "model": self.model_json}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BPETokenizer:
        return cls(state["model"], state.get("normalizers", ()))

    def to_hf(self) -> HFTokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import normalizers

        hf = HFTokenizer.from_str(self.model_json)
        rules = [r for r in (self.hf_normalizer(), hf.normalizer) if r is not None]
        if rules:  # the surface rules first, then whatever the trained model normalises itself
            hf.normalizer = rules[0] if len(rules) == 1 else normalizers.Sequence(rules)
        return hf
