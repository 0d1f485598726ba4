"""One prompt at several dial positions, in one forward pass per token for all of them.

A dial model (`succu.contracts.DialModel`) takes a position per row, so continuing the same
prompt at P positions is one batch of P rows (or P groups of rows): row i at position i, one KV
cache for the batch, one forward pass per token. Each position draws from a sampling generator of
its own, from its rows of the batch's logits (`Decoding.pick` with a list of generators),
so position i draws exactly the way a stream at position i alone draws with a generator of the
same seed. The logits themselves agree with the lone stream's up to float rounding: one position
folds its gates into the weights, one per row gates the activations. A token can therefore only
differ where a draw falls within rounding of the edge between two tokens; one position alone is
passed to the model as it is, with the lone stream's numbers exactly.

    `steps_at`          `Decoding.steps` for the same rows at each position: tokens (P, B)
    `stream_positions`  `Decoding.stream` at each position: (position, text piece) pairs
    `Pieces`            one row's tokens as text pieces (what `stream` yields; it uses it too)

The dial page's side-by-side panes (`succu.serve`), `python -m succu.generate --alpha_sweep` and
the voice meter (`succu.analysis.voice`) run their positions through it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from succu.contracts import DialModel, require
from succu.dial import Position


def dial_of(positions: Sequence[Position], rows: int, device: torch.device | str) -> dict[str, Any]:
    """The `alpha=` of a batch holding `rows` consecutive rows at each position in order: one
    position as it is (a float or K shares, the lone stream's exact numbers), several as one
    alpha per row, (P * rows,) over two sources or (P * rows, K) over K."""
    if len(positions) == 1:
        return {"alpha": positions[0]}
    alpha = torch.tensor(list(positions), dtype=torch.float32, device=device)
    return {"alpha": alpha.repeat_interleave(rows, dim=0)}


def steps_at(module: Any, input_ids: torch.Tensor, positions: Sequence[Position],
             max_new_tokens: int, *, generators: Sequence[torch.Generator],
             **kwargs: Any) -> Iterator[torch.Tensor]:
    """`module.steps(input_ids, max_new_tokens, ...)` at every one of `positions` at once, in one
    batch: each step's tokens as (P, B), row p the tokens at position p. Position p's rows draw
    from `generators[p]` as `module.steps(input_ids, generator=generators[p], alpha=positions[p])`
    does (up to the float rounding above). A module without a dial is one CapabilityError."""
    require(module.model, DialModel, "several dial positions at once")
    if len(generators) != len(positions) or not positions:
        raise ValueError(f"one sampling generator per dial position: {len(positions)} positions, "
                         f"{len(generators)} generators")
    rows = input_ids.repeat(len(positions), 1)  # position-major: every position's rows together
    dial = dial_of(positions, input_ids.size(0), input_ids.device)
    for nxt in module.steps(rows, max_new_tokens, generator=list(generators), **dial, **kwargs):
        yield nxt.view(len(positions), -1)


class Pieces:
    """One generated row's text as it grows: `add` each new token (EOS excluded) and get the new
    text, or None while there is nothing new to show; `flush` gives what is still held at the end.

    Each new piece is decoded after a few already shown tokens and only the difference is given,
    so word spacing and punctuation come out right; a byte-level BPE token that ends inside a
    character waits for the rest of it. Padding is dropped.
    """

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.shown: list[int] = []
        self.pending: list[int] = []

    def add(self, token: int) -> str | None:
        tok = self.tok
        if token == tok.pad_id:
            return None
        self.pending.append(token)
        before, text = tok.decode(self.shown), tok.decode(self.shown + self.pending)
        if text.endswith("\ufffd") or not text.startswith(before):
            return None
        self.shown, self.pending = (self.shown + self.pending)[-4:], []
        return text[len(before):]

    def flush(self) -> str | None:
        if not self.pending:
            return None
        text = self.tok.decode(self.shown + self.pending)[len(self.tok.decode(self.shown)):]
        self.shown, self.pending = (self.shown + self.pending)[-4:], []
        return text


def stream_positions(module: Any, prompt: str, positions: Sequence[Position],
                     max_new_tokens: int | None = None, *, generators: Sequence[torch.Generator],
                     **kwargs: Any) -> Iterator[tuple[int, str | None]]:
    """Continue one text prompt at each of `positions` at once: (p, piece) for each new piece of
    position p's text as it is generated (a step's positions in order), and (p, None) once p's
    text has ended (at its EOS, or at `max_new_tokens`, as `module.budget` counts it).

    Joined, position p's pieces are what `module.stream(prompt, max_new_tokens, alpha=positions[p],
    generator=generators[p], **kwargs)` yields (up to the float rounding above). A position that
    ends before the others keeps its row in the batch, its draws unused; its generator is put
    back where its text ended, so a generator used again afterwards continues as it would after
    the lone stream.
    """
    tok = module.tokenizer
    ids = module.prompt_ids(prompt)
    seq = torch.tensor([ids], device=module.device)
    budget = module.budget(len(ids), max_new_tokens)
    pieces = [Pieces(tok) for _ in positions]
    ended: dict[int, torch.Tensor] = {}  # position -> its generator's state where its text ended
    try:
        for nxt in steps_at(module, seq, positions, budget, generators=generators,
                            eos_id=tok.eos_id, **kwargs):
            for p, token in enumerate(nxt[:, 0].tolist()):
                if p in ended:
                    continue
                if token != tok.eos_id:
                    piece = pieces[p].add(token)
                    if piece is not None:
                        yield p, piece
                    continue
                ended[p] = generators[p].get_state()
                yield from finish(p, pieces[p])
        for p, row in enumerate(pieces):
            if p not in ended:
                yield from finish(p, row)
    finally:
        for p, state in ended.items():
            generators[p].set_state(state)


def finish(p: int, pieces: Pieces) -> Iterator[tuple[int, str | None]]:
    rest = pieces.flush()
    if rest is not None:
        yield p, rest
    yield p, None
