"""What the page serves, without the web: a loaded checkpoint, checked requests, stream workers.

A `Served` model is loaded once through the project's safe loader (`succu.inference.load_model`:
plain data, allow-listed classes, no Lightning) and shared read-only by every stream. A request (`parse`) is
checked before anything runs; each bad value is one ValueError naming it and what is allowed. A
`TokenStream` generates one continuation on its own thread with its own sampling generator, KV
cache and stop flag, so streams never share state: several tabs run side by side, and a stream
whose page went away (the dial moved, the tab closed) stops at its next token. The page's side by
side panes are one `PanesStream`: the same prompt at each pane's dial position, one row per pane
in one batch, one forward pass per token for all of them (`succu.dial_streams`), each pane's
pieces sent as they come and each pane's text what it would stream alone with the same seed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from succu.checkpoint_files import read_checkpoint
from succu.contracts import DialModel, KVCacheModel
from succu.dial import Position, parse_position, position_for, position_label
from succu.dial_streams import stream_positions
from succu.generate import unknown_summary
from succu.inference import InferenceLM, load_model
from succu.sampling import check_temperature

# New tokens per stream at most. Lower than `succu.generate`'s cap: each stream holds a worker
# thread, and a page is read as it streams (a few hundred characters fill the pane).
MAX_NEW_TOKENS = 2000
MAX_PROMPT_CHARS = 4000  # prompts come in a URL; longer ones slide out of any block_size here anyway
# Streams running at once. Each costs a thread and a share of the CPU; past this a request is
# refused with a message rather than slowing every open tab down.
MAX_STREAMS = 16
MAX_PANES = 4  # dial positions of one side-by-side stream (the page shows two)
DEFAULTS = {"temperature": "0.8", "top_p": "1", "max_new_tokens": "200", "seed": "0"}

Emit = Callable[[str, dict[str, Any]], None]  # (event name, JSON-able payload)


@dataclass(frozen=True)
class Request:
    """One checked stream request: the prompt as it will be encoded, and where on the dial."""

    prompt: str
    alpha: Position | None  # None: the model has no dial
    temperature: float
    top_p: float  # nucleus sampling; 1: every token
    max_new_tokens: int
    seed: int
    notes: tuple[str, ...] = ()  # what the server changed, shown on the page (unknown words)


def corpora_of(path: str | Path, k: int) -> list[str]:
    """The names of the dial's sources as the checkpoint's datamodule recorded them (plain
    strings only), else `source 0`, `source 1`, ...: they label the ends of the dial."""
    hparams = read_checkpoint(path).get("datamodule_hyper_parameters")
    names = hparams.get("corpora") if isinstance(hparams, dict) else None
    if isinstance(names, (list, tuple)) and len(names) == k and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"source {i}" for i in range(k)]


class Served:
    """A checkpoint loaded for serving: its module in eval mode, what the page needs to draw
    itself (`info`), request checks (`parse`) and the count of running streams."""

    def __init__(self, module: InferenceLM, name: str, corpora: list[str]):
        self.module = module.eval()
        self.name = name
        self.corpora = corpora
        self.k = module.model.n_sources if isinstance(module.model, DialModel) else 0
        self.cached = isinstance(module.model, KVCacheModel)
        self.slots = threading.BoundedSemaphore(MAX_STREAMS)
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0  # most streams that ran at once (tests read it as evidence of overlap)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Served:
        module = load_model(path, map_location=device)
        k = module.model.n_sources if isinstance(module.model, DialModel) else 0
        return cls(module, Path(path).name, corpora_of(path, k) if k else [])

    def info(self) -> dict[str, Any]:
        """What the page draws: the model, its dial (k = 0: none), the limits of each control."""
        centre = self.centre()
        return {
            "checkpoint": self.name, "model": type(self.module.model).__name__,
            "k": self.k, "corpora": self.corpora, "kv_cache": self.cached,
            "centre": None if centre is None else position_label(centre),
            "max_new_tokens": MAX_NEW_TOKENS, "max_prompt_chars": MAX_PROMPT_CHARS,
            "defaults": DEFAULTS, "block_size": self.module.model.cfg.block_size,
        }

    def centre(self) -> Position | None:
        """Where a request without alpha runs: the middle of the dial (the module's default)."""
        return self.module.dial_kwargs({})["alpha"] if self.k else None

    def parse(self, params: Mapping[str, str]) -> Request:
        """A checked request from the query's strings; every bad value is one ValueError."""
        prompt, notes = self.check_prompt(params.get("prompt", ""))
        temperature = number(params.get("temperature", DEFAULTS["temperature"]), "temperature")
        length = whole(params.get("max_new_tokens", DEFAULTS["max_new_tokens"]), "max_new_tokens")
        if not 1 <= length <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS} on this page, "
                             f"got {length}")
        seed = whole(params.get("seed", DEFAULTS["seed"]), "seed")
        if not 0 <= seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2^63 - 1, got {seed}")
        check_temperature(temperature)  # the same line as python -m succu.generate's
        top_p = number(params.get("top_p", DEFAULTS["top_p"]), "top_p")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p:g} (1 samples from every token, "
                             "0.9 from the most likely ones holding 90% of the probability)")
        return Request(prompt, self.check_alpha(params.get("alpha")), temperature, top_p, length,
                       seed, tuple(notes))

    def parse_panes(self, params: Mapping[str, str]) -> list[Request]:
        """The requests of one side-by-side stream: `alpha` holds the panes' dial positions,
        ';'-separated (1 to MAX_PANES); every other setting is shared. Only a model with a dial
        has panes; every bad value is one ValueError."""
        if not self.k:
            raise ValueError(f"side by side needs a gated model; this checkpoint holds "
                             f"{type(self.module.model).__name__}, which has no dial")
        texts = [t.strip() for t in params.get("alpha", "").split(";")]
        if not 1 <= len(texts) <= MAX_PANES or not all(texts):
            raise ValueError(f"alpha must be 1 to {MAX_PANES} dial positions separated by ';' "
                             f"(e.g. 0;1), got {params.get('alpha', '')!r}")
        first = self.parse({**params, "alpha": texts[0]})
        return [first, *(replace(first, alpha=self.check_alpha(t)) for t in texts[1:])]

    def check_prompt(self, text: str) -> tuple[str, list[str]]:
        """The prompt ready to encode: not empty, not huge, and every character known to the
        tokenizer (unknown words of a word vocabulary read as <UNK>, said in a note)."""
        if not text.strip():
            raise ValueError("the prompt is empty: type some text for the model to continue")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt has {len(text)} characters; at most {MAX_PROMPT_CHARS}")
        tok = self.module.tokenizer
        counts = tok.unknown(text)
        if counts and tok.unk_id is None:
            raise ValueError(f"the prompt has {sum(counts.values())} characters the checkpoint's "
                             f"vocabulary lacks: {unknown_summary(counts)}")
        notes = [f"read as <UNK>: {unknown_summary(counts)}"] if counts else []
        return text, notes

    def check_alpha(self, text: str | None) -> Position | None:
        """The dial position asked for, as this dial takes it (its centre when none is given)."""
        if not self.k:
            if text:
                raise ValueError(f"alpha needs a gated model; this checkpoint holds "
                                 f"{type(self.module.model).__name__}, which has no dial")
            return None
        if text is None or not text.strip():
            return self.centre()
        return position_for(parse_position(text.strip()), self.k)

    def describe(self, request: Request) -> dict[str, Any]:
        """The `start` event: what this stream runs with, the dial position above all."""
        out: dict[str, Any] = {"temperature": request.temperature, "top_p": request.top_p,
                               "seed": request.seed,
                               "max_new_tokens": request.max_new_tokens, "notes": list(request.notes)}
        if request.alpha is None:
            return {**out, "alpha": None, "label": "no dial"}
        shares = (1 - request.alpha, request.alpha) if self.k == 2 else request.alpha
        mix = " · ".join(f"{name} {share:.2f}" for name, share in zip(self.corpora, shares))
        label = position_label(request.alpha)
        return {**out, "alpha": label, "label": f"alpha = {label} ({mix})"}

    def claim(self) -> None:
        """Take a stream slot, or a ValueError when MAX_STREAMS are running."""
        if not self.slots.acquire(blocking=False):
            raise ValueError(f"{MAX_STREAMS} streams are already running: stop one (or close a "
                             "tab) and try again")
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def release(self) -> None:
        with self.lock:
            self.active -= 1
        self.slots.release()


def number(text: str, name: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {text!r}")
    return value


def whole(text: str, name: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class Worker:
    """A stream's worker thread: events go to `emit` as they happen, `stop()` ends it at its next
    token and nothing is emitted after it; a failure is one `error` {"message"} event. The caller
    has claimed a slot (`Served.claim`); the worker gives it back when it ends, however it ends.
    Subclasses generate (`generate`)."""

    def __init__(self, served: Served, emit: Emit):
        self.served, self.emit = served, emit
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="succu-stream", daemon=True)

    def start(self) -> Worker:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def send(self, event: str, data: dict[str, Any]) -> None:
        if not self.stopped.is_set():
            self.emit(event, data)

    def run(self) -> None:
        try:
            self.generate()
        except Exception as err:  # a stream's failure is told to its page; the server goes on
            self.send("error", {"message": one_line(err)})
        finally:
            self.served.release()

    def generate(self) -> None:
        raise NotImplementedError

    def generator(self, request: Request) -> torch.Generator:
        # Its own generator: streams running at once never draw from each other's randomness,
        # and the same seed gives the same text at any time, in any tab.
        return torch.Generator(device=self.served.module.device).manual_seed(request.seed)


def done_event(request: Request, chars: int, started: float) -> dict[str, Any]:
    alpha = None if request.alpha is None else position_label(request.alpha)
    return {"chars": chars, "seconds": round(time.perf_counter() - started, 3), "alpha": alpha}


class TokenStream(Worker):
    """One continuation generated on a worker thread of its own.

    Events: `token` {"text"} for each new piece, then `done` {"chars", "seconds", "alpha"} or
    `error` {"message"}.
    """

    def __init__(self, served: Served, request: Request, emit: Emit):
        super().__init__(served, emit)
        self.request = request

    def generate(self) -> None:
        module, req = self.served.module, self.request
        dial = {} if req.alpha is None else {"alpha": req.alpha}
        started, chars = time.perf_counter(), 0
        with torch.inference_mode():
            pieces = module.stream(req.prompt, req.max_new_tokens, temperature=req.temperature,
                                   top_p=req.top_p, use_cache=self.served.cached,
                                   generator=self.generator(req), **dial)
            for piece in pieces:
                if self.stopped.is_set():
                    return
                chars += len(piece)
                self.send("token", {"text": piece})
        self.send("done", done_event(req, chars, started))


class PanesStream(Worker):
    """Side by side: the same prompt and settings at each pane's dial position (`requests`, one
    per pane, from `Served.parse_panes`), one batched forward pass per token for every pane.

    Events carry the pane's index: `token` {"pane", "text"} as each pane's pieces come, `done`
    {"pane", "chars", "seconds", "alpha"} when a pane's text ends (panes may end apart, at their
    own EOS), or one `error` {"message"} for them all. Pane i's text is what a `TokenStream` at
    its position sends with the same seed. `stop()` stops every pane: the page's panes share the
    stream, and closing it (the page went away) ends them together.
    """

    def __init__(self, served: Served, requests: list[Request], emit: Emit):
        super().__init__(served, emit)
        self.requests = requests

    def generate(self) -> None:
        module, req = self.served.module, self.requests[0]
        started, chars = time.perf_counter(), [0] * len(self.requests)
        with torch.inference_mode():
            pieces = stream_positions(module, req.prompt, [r.alpha for r in self.requests],
                                      req.max_new_tokens, temperature=req.temperature,
                                      top_p=req.top_p, use_cache=self.served.cached,
                                      generators=[self.generator(r) for r in self.requests])
            for pane, piece in pieces:
                if self.stopped.is_set():
                    return
                if piece is None:
                    self.send("done", {"pane": pane, **done_event(self.requests[pane], chars[pane],
                                                                  started)})
                    continue
                chars[pane] += len(piece)
                self.send("token", {"pane": pane, "text": piece})
