"""KneserNeyLM: an n-gram language model with interpolated Kneser-Ney smoothing, the count baseline
of succu. Nothing is trained by gradients: training adds the counts of the n-grams in each batch,
and a prediction is a smoothed ratio of counts.

Notation: V tokens; an order-k n-gram g = w_1 .. w_k, its context h = w_1 .. w_(k-1), and
h' = w_2 .. w_(k-1), the context one token shorter.

    c(g)          raw count: occurrences of g inside the training rows (never across two rows)
    N1+(. g)      continuation count: distinct tokens v with c(v g) > 0 (left contexts of g)
    a_k(g)        the count order k uses: c(g) at the top order of a prediction, N1+(. g) below
    a_k(h .)      = sum_w a_k(h w),    N1+(h .) = #{w : a_k(h w) > 0}

Interpolated Kneser-Ney (Chen & Goodman 1998, one discount D_k per order), from the bottom up:

    p_0(w)     = 1 / V                                                   uniform
    p_k(w | h) = max(a_k(h w) - D_k, 0) / a_k(h .) + D_k N1+(h .) / a_k(h .) * p_(k-1)(w | h')
    p_k(w | h) = p_(k-1)(w | h')                          when a_k(h .) = 0 (h never seen)

Each seen continuation gives up D_k, and the lower order spreads exactly that mass, so every p_k
sums to 1. The unigram (k = 1, empty h) interpolates with the uniform p_0, so a token never seen
keeps a probability > 0. The discount is Ney's estimate D_k = n1 / (n1 + 2 n2), n_r the number of
k-grams with a_k = r (raw and continuation counts each get their own), kept inside
`ESTIMATE_RANGE` (0.5 when n1 + 2 n2 = 0); or one fixed D in (0, 1) for every order.

Windows: position t of a (B, T) window predicts x_(t+1) from x_(max(0, t-n+2)) .. x_t, tokens of the
window only, as a causal transformer with block_size T sees them. With all n-1 context tokens
this is the order-n model; near the window start, with t+1 < n-1 of them, it is the model of
order t+2 (raw counts at its top), the same estimate an order-(t+2) model would give.

Storage: an order-k n-gram is one int64 key, its tokens as base-V digits (w_1 V^(k-1) + ... +
w_k), so the continuations of a context h are the contiguous key range [h V, h V + V); V^n must
fit in int64. Each order keeps sorted unique keys with their counts. `update` buffers new keys;
they are merged (np.unique, searchsorted, np.insert) every `MERGE_EVERY` buffered keys and before
any query, and the n-grams a merge adds raise the continuation counts of their suffixes. A query
is vectorised per order over the distinct contexts of the batch: two searchsorted per context,
prefix sums for a_k(h .), and one scatter of the seen continuations into a dense (contexts, V)
table. Counts live in numpy on the CPU whatever the device of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

INT64_MAX = 2**63 - 1
ESTIMATE_RANGE = (0.05, 0.95)  # estimated discounts are clipped into this range
FALLBACK_DISCOUNT = 0.5  # estimated discount of a level with no count equal to 1 or 2
MERGE_EVERY = 1 << 18  # buffered keys (all orders together) that trigger a merge


def max_order(vocab_size: int) -> int:
    """The largest order n whose keys fit in int64 (V^n <= 2^63 - 1)."""
    if vocab_size < 2:
        return 62  # keys are 0: any order fits; 62 keeps loops finite
    n = 0
    while vocab_size ** (n + 1) <= INT64_MAX:
        n += 1
    return n


def check_keys_fit(vocab_size: int, order: int) -> None:
    """Refuse an order whose n-gram keys (base-V digits) would overflow int64."""
    if vocab_size > 0 and vocab_size**order > INT64_MAX:
        raise ValueError(
            f"order {order} with vocab_size {vocab_size} needs keys up to {vocab_size}^{order}, "
            f"more than int64 holds; order <= {max_order(vocab_size)} fits"
        )


@dataclass
class NgramConfig:
    """The n-gram model's order and smoothing; the names every succu model shares.

    Attributes:
        vocab_size: vocabulary size V (linked from the datamodule); V^order must fit in int64.
        block_size: context length of the windows (linked from the datamodule); generation
            slides a window of this many tokens. The model itself reads at most order - 1 of them.
        order: n: the model conditions on the previous n - 1 tokens (1: unigram).
        discount: None: one discount per order estimated from the count-of-counts,
            D = n1 / (n1 + 2 n2) (Ney et al.); else this fixed D in (0, 1) for every order.
    """

    vocab_size: int = 0
    block_size: int = 64
    order: int = 8
    discount: float | None = None

    def __post_init__(self) -> None:
        if self.vocab_size < 0:
            raise ValueError(f"vocab_size must be >= 0 (0: linked from the data), got {self.vocab_size}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {self.block_size}")
        if self.order < 1:
            raise ValueError(f"order must be at least 1, got {self.order}")
        if self.discount is not None and not 0.0 < self.discount < 1.0:
            raise ValueError(f"discount must be in (0, 1) or None (estimated per order), got {self.discount}")
        check_keys_fit(self.vocab_size, self.order)


@dataclass
class Level:
    """One order's counts as a query reads them: sorted keys, counts, prefix sums, discount."""

    keys: np.ndarray
    counts: np.ndarray
    cums: np.ndarray  # cums[i] = counts[:i].sum()
    discount: float


def estimate_discount(counts: np.ndarray) -> float:
    """Ney's D = n1 / (n1 + 2 n2) from the count-of-counts, clipped into ESTIMATE_RANGE."""
    n1, n2 = int(np.count_nonzero(counts == 1)), int(np.count_nonzero(counts == 2))
    if n1 + 2 * n2 == 0:
        return FALLBACK_DISCOUNT
    return float(np.clip(n1 / (n1 + 2 * n2), *ESTIMATE_RANGE))


def ngram_keys(rows: np.ndarray, order: int, vocab_size: int) -> list[np.ndarray]:
    """Keys of every n-gram of orders 1..order inside a row of `rows` (B, L) (int64), without
    n-grams that contain a negative id (not a token: padding, ignored labels). Element k-1 holds
    order k's keys, duplicates included."""
    valid = rows >= 0
    tokens = np.where(valid, rows, 0)
    key, ok = tokens, valid
    out = [key[ok]]
    for k in range(2, order + 1):
        # key[:, j] covers tokens j .. j+k-2; append token j+k-1 as the lowest digit
        key = key[:, :-1] * vocab_size + tokens[:, k - 1:]
        ok = ok[:, :-1] & valid[:, k - 1:]
        out.append(key[ok])
    return out


def add_counts(keys: np.ndarray, counts: np.ndarray, new: np.ndarray, new_counts: np.ndarray):
    """Merge sorted unique `new` keys with `new_counts` into sorted unique `keys` / `counts`.

    Returns (keys, counts, fresh): the merged arrays and the keys of `new` not there before.
    """
    at = np.searchsorted(keys, new)
    found = at < len(keys)
    found[found] = keys[at[found]] == new[found]
    counts = counts.copy()
    counts[at[found]] += new_counts[found]
    fresh = ~found
    keys = np.insert(keys, at[fresh], new[fresh])
    counts = np.insert(counts, at[fresh], new_counts[fresh])
    return keys, counts, new[fresh]


def continuation_counts(keys: np.ndarray, radix: int) -> tuple[np.ndarray, np.ndarray]:
    """N1+(. g) of every g from the sorted unique keys of the n-grams one order higher: the
    number of those keys whose suffix (key mod radix, the first token dropped) is g."""
    return np.unique(keys % radix, return_counts=True)


def interpolate(level: Level, contexts: np.ndarray, lower: np.ndarray, vocab_size: int) -> np.ndarray:
    """p_k(. | h) (U, V) for U distinct context keys h, given p_(k-1)(. | h') as `lower` (U, V):
    the discounted seen continuations plus the backoff mass D N1+(h .) / a_k(h .) times `lower`
    (all of `lower` where h was never seen)."""
    lo = np.searchsorted(level.keys, contexts * vocab_size)
    hi = np.searchsorted(level.keys, contexts * vocab_size + vocab_size)
    total = (level.cums[hi] - level.cums[lo]).astype(np.float64)
    seen = total > 0
    safe = np.where(seen, total, 1.0)
    gamma = np.where(seen, level.discount * (hi - lo) / safe, 1.0)
    probs = gamma[:, None] * lower
    lens = hi - lo
    rows = np.repeat(np.arange(len(contexts)), lens)
    starts = np.cumsum(lens) - lens
    j = np.arange(int(lens.sum())) - np.repeat(starts - lo, lens)  # key index of each entry
    kept = np.maximum(level.counts[j] - level.discount, 0.0) / safe[rows]
    probs[rows, level.keys[j] % vocab_size] += kept  # one entry per (row, w): no repeats
    return probs


class KneserNeyLM(nn.Module):
    """Interpolated Kneser-Ney n-gram model (module docstring): `update` counts, `forward` scores.

    No parameters and no gradients; the counts are the state (`state_dict` holds them as plain
    int64 tensors under `_extra_state`, so a checkpoint loads with weights_only=True).
    """

    def __init__(self, cfg: NgramConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {cfg.vocab_size}")
        check_keys_fit(cfg.vocab_size, cfg.order)
        self.cfg = cfg
        n = cfg.order
        self.radix = [cfg.vocab_size**k for k in range(n + 1)]  # Python ints: no overflow
        empty = np.zeros(0, dtype=np.int64)
        # Index k holds order k (index 0 unused); continuation counts exist for orders < n.
        self.keys = [empty] * (n + 1)
        self.counts = [empty] * (n + 1)
        self.cont_keys = [empty] * n
        self.cont_counts = [empty] * n
        self.pending: list[list[np.ndarray]] = [[] for _ in range(n + 1)]
        self.n_pending = 0
        self.levels: dict[tuple[str, int], Level] = {}  # query tables, rebuilt after a merge

    # ---- counting ------------------------------------------------------------------------
    def check_ids(self, ids: np.ndarray, allow_negative: bool) -> None:
        low = ids.min(initial=0)
        if ids.max(initial=0) >= self.cfg.vocab_size or (low < 0 and not allow_negative):
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")

    @torch.no_grad()
    def update(self, ids: torch.Tensor) -> None:
        """Add the counts of every n-gram (orders 1..n) lying inside a row of `ids` (B, L).

        Rows are windows of the training stream: n-grams are not counted across rows, and a
        negative id (padding, an ignored label) is no token: n-grams containing one are skipped.
        """
        rows = torch.as_tensor(ids).detach().cpu().numpy().astype(np.int64, copy=False)
        if rows.ndim != 2:
            raise ValueError(f"update takes ids of shape (B, L), got {tuple(rows.shape)}")
        self.check_ids(rows, allow_negative=True)
        for k, keys in enumerate(ngram_keys(rows, self.cfg.order, self.cfg.vocab_size), start=1):
            if keys.size:
                self.pending[k].append(keys)
                self.n_pending += keys.size
        self.levels = {}
        if self.n_pending >= MERGE_EVERY:
            self.merge()

    def merge(self) -> None:
        """Fold the buffered keys into the sorted count arrays (and the continuation counts)."""
        if not self.n_pending:
            return
        for k in range(1, self.cfg.order + 1):
            if not self.pending[k]:
                continue
            new, new_counts = np.unique(np.concatenate(self.pending[k]), return_counts=True)
            self.keys[k], self.counts[k], fresh = add_counts(self.keys[k], self.counts[k], new, new_counts)
            if k >= 2 and fresh.size:  # each new k-gram v g is one more left context of g
                suffix, times = continuation_counts(fresh, self.radix[k - 1])
                self.cont_keys[k - 1], self.cont_counts[k - 1], _ = add_counts(
                    self.cont_keys[k - 1], self.cont_counts[k - 1], suffix, times)
        self.pending = [[] for _ in range(self.cfg.order + 1)]
        self.n_pending = 0
        self.levels = {}

    def num_params(self) -> int:
        """Stored n-gram counts (distinct n-grams of every order), not trained weights: the size
        of what a checkpoint holds. (Continuation counts are derived from them.)"""
        self.merge()
        return sum(int(k.size) for k in self.keys[1:])

    # ---- scoring -------------------------------------------------------------------------
    def level(self, kind: str, k: int) -> Level:
        """Order k's counts as queries read them: "raw" c(g) or "cont" N1+(. g)."""
        if (kind, k) not in self.levels:
            self.merge()
            keys, counts = (self.keys[k], self.counts[k]) if kind == "raw" else (
                self.cont_keys[k], self.cont_counts[k])
            cums = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            fixed = self.cfg.discount
            discount = estimate_discount(counts) if fixed is None else fixed
            self.levels[(kind, k)] = Level(keys, counts, cums, discount)
        return self.levels[(kind, k)]

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, T, V), float32, of the next token at every position of the
        windows `input_ids` (B, T) (module docstring); each row sums to 1 in probability."""
        x = input_ids.detach().cpu().numpy().astype(np.int64, copy=False)
        if x.ndim != 2:
            raise ValueError(f"input_ids must have shape (B, T), got {tuple(x.shape)}")
        self.check_ids(x, allow_negative=False)
        logp = self.log_probs(x)
        return torch.from_numpy(logp).to(input_ids.device)

    def log_probs(self, x: np.ndarray) -> np.ndarray:
        """forward's work on numpy ids (B, T): orders 1..n bottom up, each over the distinct
        (context, raw-or-continuation) pairs of the positions that reach it."""
        V, n = self.cfg.vocab_size, self.cfg.order
        B, T = x.shape
        out = np.empty((B, T, V), dtype=np.float32)
        t = np.broadcast_to(np.arange(T), (B, T))
        top = np.minimum(t + 2, n)  # the order that scores each position
        table = np.full((1, V), 1.0 / V)  # p_0
        row = np.zeros((B, T), dtype=np.int64)  # each position's row of `table`
        ctx = np.zeros((B, T), dtype=np.int64)  # key of each position's order-k context
        self.merge()
        for k in range(1, min(n, T + 1) + 1):  # position T-1 reaches order T+1 at most
            if k >= 2:  # prepend token t-k+2 as the highest digit of the context
                ctx[:, k - 2:] += x[:, : T - k + 2] * self.radix[k - 2]
            active = t >= k - 2
            is_top = top[active] == k
            pair, pos, inv = np.unique(ctx[active] * 2 + is_top, return_index=True, return_inverse=True)
            contexts, raw = pair // 2, pair % 2 == 1
            lower = table[row[active][pos]]
            new = np.empty((len(pair), V))
            for kind, pick in (("raw", raw), ("cont", ~raw)):
                if pick.any():
                    new[pick] = interpolate(self.level(kind, k), contexts[pick], lower[pick], V)
            table = new
            row[active] = inv.reshape(-1)
            done = active & (top == k)
            out[done] = np.log(table[row[done]])
        return out

    # ---- checkpoint state ----------------------------------------------------------------
    def get_extra_state(self) -> dict[str, torch.Tensor]:
        """The raw counts as plain int64 tensors: `orders` = [V, n], `keys_k` and `counts_k`."""
        self.merge()
        state = {"orders": torch.tensor([self.cfg.vocab_size, self.cfg.order])}
        for k in range(1, self.cfg.order + 1):
            state[f"keys_{k}"] = torch.tensor(self.keys[k])
            state[f"counts_{k}"] = torch.tensor(self.counts[k])
        return state

    def set_extra_state(self, state: object) -> None:
        """Load counts written by `get_extra_state`; continuation counts are rebuilt from them.
        A state of another vocabulary or order, or damaged arrays, is a RuntimeError."""
        n, V = self.cfg.order, self.cfg.vocab_size
        if not isinstance(state, dict) or "orders" not in state:
            raise RuntimeError("n-gram state: expected a dict with 'orders', 'keys_k', 'counts_k'")
        saved = [int(v) for v in torch.as_tensor(state["orders"]).tolist()]
        if saved != [V, n]:
            raise RuntimeError(f"n-gram state is for vocab_size {saved[0]}, order {saved[-1]}; "
                               f"this model has vocab_size {V}, order {n}")
        keys, counts = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for k in range(1, n + 1):
            if f"keys_{k}" not in state or f"counts_{k}" not in state:
                raise RuntimeError(f"n-gram state lacks keys_{k} or counts_{k}")
            key_k, count_k = (torch.as_tensor(state[f"{name}_{k}"]).cpu().numpy().astype(np.int64)
                              for name in ("keys", "counts"))
            check_counts(k, key_k, count_k, self.radix[k])
            keys.append(key_k)
            counts.append(count_k)
        self.keys, self.counts = keys, counts
        for k in range(1, n):
            self.cont_keys[k], self.cont_counts[k] = continuation_counts(keys[k + 1], self.radix[k])
        self.pending = [[] for _ in range(n + 1)]
        self.n_pending = 0
        self.levels = {}


def check_counts(k: int, keys: np.ndarray, counts: np.ndarray, radix: int) -> None:
    """Saved order-k counts must be sorted unique keys in [0, V^k) with positive counts."""
    problem = None
    if keys.ndim != 1 or keys.shape != counts.shape:
        problem = f"keys {tuple(keys.shape)} and counts {tuple(counts.shape)} differ in shape"
    elif keys.size and (keys[0] < 0 or keys[-1] >= radix or np.any(np.diff(keys) <= 0)):
        problem = "keys are not sorted unique n-gram keys of this vocabulary"
    elif np.any(counts < 1):
        problem = "counts below 1"
    if problem:
        raise RuntimeError(f"n-gram state, order {k}: {problem}")
