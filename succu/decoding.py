"""Decoding: continuing and scoring text with any succu network, in plain torch.

`Decoding` is what a trained language model does once it exists, whoever holds it: the
LightningModule that trains it (`succu.modules.base.LanguageModule`) and the checkpoint loaded
without Lightning for the commands that only use it (`succu.inference.InferenceLM`: generate,
evaluate, serve, export). A host sets `model` (the network: `forward(input_ids, *, kv_cache=None,
alpha=...) -> logits`), `tokenizer` and `device`.

Generation feeds the prompt once and then one token per step through the model's KV cache
(`succu.contracts.KVCacheModel`); past `block_size` the window slides, recomputed over the last
`block_size` tokens, exactly as nanoGPT's full recomputation reads it. Each step's logits become
one token by `pick`: the argmax (`greedy`), or one draw from the tempered, top-k and nucleus-cut
distribution (`succu.sampling.sampling_probs`) with the caller's seeded generator. A model with a
dial (`succu.contracts.DialModel`) runs at the middle of its dial unless given `alpha`, and scores
each corpus at that corpus's own end.

The noise-embedding LMs add two rules: `KeyRuleDecoding` stops an answer by the statistics (key)
rule through a stub search, and `SnapGreedy` makes greedy decoding the hard snap to the nearest
code (NoiseLM's own rule) instead of the argmax of the relaxed distribution.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from succu import dial
from succu.contracts import DialModel, KeyRuleStop, KVCacheModel
from succu.dial_streams import Pieces
from succu.nn.noise import (
    SEARCHES,
    SearchResult,
    calibrate_tolerance,
    running_mean_var,
    stop_mismatch,
    stub_search,
    tree_search,
)
from succu.nn.utils import eval_mode
from succu.sampling import check_sampling, sampling_probs
from succu.tokenizers import Tokenizer

STOP_TOL = 1e-3  # the key rule's tolerance on the mismatch D before `calibrate_stop` sets it


class Decoding:
    """Generation and held-out scoring for a host holding `model`, `tokenizer` and `device`."""

    model: torch.nn.Module
    tokenizer: Tokenizer | None
    device: torch.device

    @property
    def has_dial(self) -> bool:
        """Whether the model declares a dial (GatedGPT): generation and sweeps take `alpha`."""
        return isinstance(self.model, DialModel)

    def eval_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Forward arguments that score a held-out batch: a dial model scores each corpus at its
        own end of the dial (corpus k at alpha = k for two sources, the corner e_k for K); other
        models take none. Held-out batches hold one corpus each, named by `source`."""
        if not self.has_dial:
            return {}
        corpus = int(batch["source"][0]) if "source" in batch else 0
        return {"alpha": dial.own_end(corpus, self.model.n_sources)}

    def known_tokenizer(self) -> Tokenizer:
        """The tokenizer, or one error saying where one comes from."""
        if self.tokenizer is None:
            raise RuntimeError("this module has no tokenizer; fit it or load it from a checkpoint")
        return self.tokenizer

    def prompt_ids(self, text: str) -> list[int]:
        """`<BOS>` (when the tokenizer has one) followed by the encoded prompt."""
        tok = self.known_tokenizer()
        return ([] if tok.bos_id is None else [tok.bos_id]) + tok.encode(text)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        eos_id: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        **model_kwargs: Any,
    ) -> torch.Tensor:
        """Continue each row of `input_ids` (B, T); returns (B, T + n) with n <= max_new_tokens.

        Rows that emit `eos_id` are padded with it afterwards; generation stops when every row has.
        With the KV cache each step feeds one token; past the model's block_size the context window
        slides (the last block_size tokens), exactly as full recomputation does. A model with a
        dial runs at `alpha=` (default: the middle of the dial, `dial_kwargs`). Sampling divides
        the logits by `temperature`, keeps the `top_k` most likely tokens, then the nucleus of
        `top_p` (`sampling_probs`); `greedy` takes the argmax instead.
        """
        steps = self.steps(input_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, greedy=greedy, eos_id=eos_id, use_cache=use_cache, generator=generator,
                           **model_kwargs)
        return torch.cat([input_ids, *(nxt[:, None] for nxt in steps)], dim=1)

    def dial_kwargs(self, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        """`model_kwargs` with the default dial position filled in: a model with a dial runs at
        the middle of it (`succu.dial.centre`) when no `alpha` is given."""
        if self.has_dial and model_kwargs.get("alpha") is None:
            return {**model_kwargs, "alpha": dial.centre(self.model.n_sources)}
        return model_kwargs

    def steps(self, input_ids: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
              top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
              eos_id: int | None = None, use_cache: bool = True,
              generator: torch.Generator | None = None, **model_kwargs: Any):
        """An iterator over the next token of every row, (B,), one step at a time (what `generate`
        collects and `stream` prints as it comes). Settings are checked now, not at the first step.
        `generator` may be a list, one per equal group of rows (`pick`).
        """
        check_sampling(temperature, top_k, max_new_tokens, top_p)
        return self._steps(input_ids, max_new_tokens, temperature, top_k, top_p, greedy, eos_id,
                           use_cache, generator, self.dial_kwargs(model_kwargs))

    def _steps(self, input_ids, max_new_tokens, temperature, top_k, top_p, greedy, eos_id,
               use_cache, generator, model_kwargs):
        block = self.model.cfg.block_size
        cached = use_cache and isinstance(self.model, KVCacheModel)
        kv = {}  # a model without a cache takes no kv_cache argument at all
        seq, cache, fresh = input_ids, None, input_ids
        done = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            if not cached or cache is None or len(cache) + fresh.size(1) > block:
                # Full (re)computation over the last block_size tokens; with a cache this happens
                # once at the start and then only when the window has to slide.
                fresh = seq[:, -block:]
                cache = self.model.new_kv_cache() if cached else None
                kv = {"kv_cache": cache} if cached else {}
            nxt = self.next_token(fresh, model_kwargs, temperature, top_k, greedy, generator, kv,
                                  top_p=top_p)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            fresh = nxt[:, None]
            yield nxt
            if eos_id is not None and bool(done.all()):
                break

    def next_token(self, fresh, model_kwargs, temperature, top_k, greedy, generator, kv, top_p=None):
        """The next token of every row (B,) from the tokens the model has not seen yet (`fresh`:
        the whole window, or one token with a KV cache). A model with its own decoding rule
        overrides this (`SnapGreedy`)."""
        # Modes are set per step, not held across a yield: the caller's code runs in between.
        with torch.no_grad(), eval_mode(self.model):
            logits = self.model(fresh, **kv, **model_kwargs)[:, -1, :].float()
        return self.pick(logits, temperature, top_k, greedy, generator, top_p=top_p)

    @staticmethod
    def pick(
        logits: torch.Tensor,
        temperature: float,
        top_k: int | None,
        greedy: bool,
        generator: torch.Generator | None,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """The next token of every row of `logits` (B, V): the argmax with `greedy`, else one draw
        from `sampling_probs`. A list of G generators splits the rows into G equal groups in
        order, each drawn from its own generator as that group alone would be (several dial
        positions in one batch: `succu.dial_streams`)."""
        if greedy:
            return logits.argmax(dim=-1)
        if isinstance(generator, list):
            groups = logits.split(logits.size(0) // len(generator))
            return torch.cat([Decoding.pick(rows, temperature, top_k, False, g, top_p)
                              for rows, g in zip(groups, generator, strict=True)])
        probs = sampling_probs(logits, temperature, top_k, top_p)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def complete(self, prompts: list[str], max_new_tokens: int | None = None, **kwargs: Any) -> list[str]:
        """Decode continuations of text prompts; prompts of equal length are batched together."""
        tok = self.tokenizer
        encoded = [self.prompt_ids(p) for p in prompts]
        out: list[str] = [""] * len(prompts)
        by_len: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            by_len.setdefault(len(ids), []).append(i)
        for length, rows in by_len.items():
            batch = torch.tensor([encoded[i] for i in rows], device=self.device)
            seq = self.generate(batch, self.budget(length, max_new_tokens), eos_id=tok.eos_id, **kwargs)
            for row, i in zip(seq[:, length:].tolist(), rows):
                out[i] = tok.decode(self.strip_special(row))
        return out

    def budget(self, prompt_length: int, max_new_tokens: int | None) -> int:
        """New tokens to generate: as asked, else up to the model's block_size."""
        if max_new_tokens is not None:
            return max_new_tokens
        return max(0, self.model.cfg.block_size - prompt_length)

    def stream(self, prompt: str, max_new_tokens: int | None = None, **kwargs: Any) -> Iterator[str]:
        """Continue one text prompt, yielding the text as it is generated (joined, it is what
        `complete` returns for the same sampling generator): up to the first EOS, padding dropped.

        Each new piece is decoded after a few already shown tokens and only the difference is
        yielded, so word spacing and punctuation come out right; a byte-level BPE token that ends
        inside a character waits for the rest of it.
        """
        tok = self.tokenizer
        ids = self.prompt_ids(prompt)
        seq = torch.tensor([ids], device=self.device)
        pieces = Pieces(tok)
        for nxt in self.steps(seq, self.budget(len(ids), max_new_tokens), eos_id=tok.eos_id, **kwargs):
            token = int(nxt[0])
            if token == tok.eos_id:
                break
            piece = pieces.add(token)
            if piece is not None:
                yield piece
        rest = pieces.flush()
        if rest is not None:
            yield rest

    def strip_special(self, ids: list[int]) -> list[int]:
        """Cut at the first EOS and drop padding; other specials stay visible (the sophia trap)."""
        tok = self.tokenizer
        if tok.eos_id is not None and tok.eos_id in ids:
            ids = ids[: ids.index(tok.eos_id)]
        return [i for i in ids if i != tok.pad_id]


class SnapGreedy(Decoding):
    """Greedy decoding by the model's hard snap (`succu.nn.noise.CodeSnap.snap_decode`: the most
    probable candidate snapped to the nearest code), not the argmax of the relaxed mixture;
    sampling is unchanged (NoiseLM, the write-up's rule)."""

    def next_token(self, fresh, model_kwargs, temperature, top_k, greedy, generator, kv, top_p=None):
        if greedy:
            with torch.no_grad(), eval_mode(self.model):
                return self.model.snap_decode(fresh)
        return super().next_token(fresh, model_kwargs, temperature, top_k, greedy, generator, kv,
                                  top_p=top_p)


class KeyRuleDecoding(Decoding, KeyRuleStop):
    """Answers stopped by the statistics (key) rule, for the noise-embedding LMs.

    The host sets `stop_tol` (the rule's tolerance on the mismatch D), `stop_weight` (the weight
    of D in the stub search's score; None: 1 / stop_tol) and `hparams` (where `calibrate_stop`
    records the tolerance it sets, so a checkpoint keeps it).
    """

    stop_tol: float
    stop_weight: float | None
    hparams: Any

    def next_log_probs(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, L) ids -> (n, V) log p of the next token (the last block_size tokens are read)."""
        return self.model(rows[:, -self.model.cfg.block_size :])[:, -1]

    @torch.no_grad()
    def answer_ids(
        self,
        prompts: list[str],
        rule: str = "eos",
        beams: int = 1,
        max_new_tokens: int | None = None,
        search: str = "beam",
        budget: int = 200,
    ) -> list[list[int]]:
        """Greedy answers as id lists (no specials), stopped by EOS (`rule="eos"`) or by the key
        rule (`rule="key"`: EOS banned; `search` "beam" keeps `beams` stubs, "minimax" and
        "alphabeta" search `beams` children per stub depth first within `budget` expansions)."""
        if rule not in ("eos", "key"):
            raise ValueError(f"rule must be 'eos' or 'key', got {rule!r}")
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        with eval_mode(self.model):
            encoded = [self.prompt_ids(p) for p in prompts]
            lengths = [
                max_new_tokens or max(1, self.model.cfg.block_size - len(ids)) for ids in encoded
            ]
            if rule == "eos":
                return self._eos_answers(encoded, lengths)
            return [
                self.key_search(ids, n, beams, search, budget)[0].tokens
                for ids, n in zip(encoded, lengths)
            ]

    def _eos_answers(self, encoded: list[list[int]], budget: list[int]) -> list[list[int]]:
        """Greedy until EOS, prompts of one length batched (as `complete` does)."""
        eos = self.known_tokenizer().eos_id
        out: list[list[int]] = [[] for _ in encoded]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, ids in enumerate(encoded):
            groups.setdefault((len(ids), budget[i]), []).append(i)
        for (length, steps), rows in groups.items():
            batch = torch.tensor([encoded[i] for i in rows], device=self.device)
            seq = self.generate(batch, steps, greedy=True, eos_id=eos)
            for row, i in zip(seq[:, length:].tolist(), rows):
                out[i] = self.strip_special(row)
        return out

    def key_search(
        self, prompt: list[int], max_new_tokens: int, beams: int = 1, search: str = "beam",
        budget: int = 200,
    ) -> tuple[SearchResult, int]:
        """The statistics stop rule on one prompt, EOS and the other specials banned; returns the
        result and the number of next-token evaluations it took."""
        tok = self.known_tokenizer()
        ids = torch.tensor([prompt], device=self.device)
        mean_hat, var_hat = (
            t[0] for t in self.model.stop_target(ids[:, -self.model.cfg.block_size :])
        )
        weight = (
            self.stop_weight if self.stop_weight is not None else 1.0 / max(self.stop_tol, 1e-12)
        )
        common = dict(max_new_tokens=max_new_tokens, tol=self.stop_tol, weight=weight,
                      banned=tok.special_ids)
        codes = self.model.codes.detach()
        rows = 0  # next-token evaluations, counted the same way for every search

        def counted(ids: torch.Tensor) -> torch.Tensor:
            nonlocal rows
            rows += ids.size(0)
            return self.next_log_probs(ids)

        if search == "beam":
            result = stub_search(counted, prompt, codes, mean_hat, var_hat, beams=beams, **common)
        else:
            result, _ = tree_search(counted, prompt, codes, mean_hat, var_hat,
                                    prune=search == "alphabeta", branch=beams, budget=budget,
                                    **common)
        return result, rows

    @torch.no_grad()
    def stop_profile(self, pairs: list[tuple[str, str]]) -> tuple[list[float], list[float]]:
        """Teacher-forced mismatch of each (prompt, answer): D at the answer's true length, and the
        smallest D at any shorter length (inf for one-token answers)."""
        tok = self.known_tokenizer()
        codes = self.model.codes.detach()
        end, before = [], []
        with eval_mode(self.model):
            for prompt, answer in pairs:
                ids = torch.tensor([self.prompt_ids(prompt)], device=self.device)
                mean_hat, var_hat = self.model.stop_target(ids[:, -self.model.cfg.block_size :])
                c = codes[torch.tensor(tok.encode(answer), device=self.device)]  # (m, d)
                # Moments of the answer's first 1..m codes: one sequence of running statistics.
                mean, var = (t[0] for t in running_mean_var(c[None]))
                D = stop_mismatch(mean, var, mean_hat, var_hat).tolist()
                end.append(D[-1])
                before.append(min(D[:-1], default=float("inf")))
        return end, before

    def calibrate_stop(self, pairs: list[tuple[str, str]]) -> float:
        """Set `stop_tol` to the tolerance that stops most `pairs` exactly (teacher-forced)."""
        self.stop_tol = calibrate_tolerance(*self.stop_profile(pairs))
        self.hparams["stop_tol"] = self.stop_tol
        return self.stop_tol

