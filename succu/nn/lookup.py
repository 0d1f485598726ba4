"""Nearest-code lookup: which row of a code table C (V x d) is closest to each query q (N x d).

Every backend answers `search(queries, k) -> (squared L2 distances, ids)`, both (N, k), nearest
first, and `nearest(queries) -> ids (N,)`; the distances are always recomputed exactly for the ids
returned, so backends differ only in which ids they find.

    matmul      exact. argmin_y ||q - c_y||^2 = argmax_y (q . c_y - ||c_y||^2 / 2), since ||q||^2 is
                the same for every y: one (N, d) x (d, V) matmul per block of queries, never a
                per-row cdist.
    faiss_flat  exact, faiss `IndexFlatL2` (needs `pip install faiss-cpu`; imported lazily).
    faiss_hnsw  approximate, faiss `IndexHNSWFlat` (M links per node, efSearch candidates).
    digit_hash  approximate, the digit-weighted locality hash of the noise-embedding LM post
                (ablation, below).

The digit hash, made precise. Coordinates are rescaled to u in [0, 1) by the table's range and
read as `n_digits` digits in base `base` (default decimal, as in the post):
digit_j(u) = floor(u base^(j+1)) mod base, j = 0 (most significant), 1, ...

* Score (the post's "hamming distance with each digit from left to right penalised by a
  factor f, rewarding numeric closeness of each digit"):
      S(q, c) = sum_i sum_j f^(-j) |digit_j(q_i) - digit_j(c_i)|,       f = `digit_factor`.
  With f = base it is an L1 distance that ignores carries: 0.19 and 0.20 are 0.01 apart but score
  |1 - 2| + |9 - 0| / 10 = 1.9 (as if 0.19 apart), one place where the hash loses recall.
* Tables: `n_tables` hash functions (two, as in cuckoo hashing, and a query probes both). Table t
  reads the leading digit of `n_coords` coordinates drawn from a seeded generator; the key is
  those digits as one base-`base` number. Codes are sorted by key, so one bucket is a contiguous
  run and codes whose leading digits agree sit together ("similar values stored near each other").
  Unlike cuckoo hashing every code is kept in every table (buckets, not single slots): a nearest-
  neighbour search needs every near key, not one exact key.
* Multi-probe: with `probes=1` a query also visits, for each hashed coordinate, the bucket whose
  digit differs by one towards the query's second digit (the numerically nearest neighbour cell).
* Candidates (the union over tables and probes) are ranked by S (`rerank="digits"`, as in the post)
  or by exact L2 (`rerank="l2"`); a query whose buckets are all empty is answered by a full scan.
`n_coords` defaults to the number that makes the mean bucket hold about `bucket_size` codes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


class Lookup:
    """Base class: a code table and a nearest-neighbour search over its rows."""

    name = "base"
    exact = False

    def __init__(self, codes: torch.Tensor):
        if codes.dim() != 2 or codes.size(0) < 1:
            raise ValueError(
                f"codes must be a non-empty (V, d) matrix, got shape {tuple(codes.shape)}"
            )
        self.codes = codes.detach().float().contiguous()

    def candidates(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """(N, k') ids; -1 pads rows with fewer than k' results. Backends implement this."""
        raise NotImplementedError

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact squared L2 distances and ids of the k nearest codes found, nearest first."""
        queries = self._check(queries)
        k = min(k, self.codes.size(0))
        ids = self.candidates(queries, k).to(torch.long)
        valid = ids >= 0
        rows = self.codes[ids.clamp(min=0)]  # (N, k', d)
        dist = ((queries[:, None, :] - rows) ** 2).sum(-1).masked_fill(~valid, float("inf"))
        dist, order = dist.sort(dim=1)
        return dist[:, :k], ids.gather(1, order)[:, :k]

    def nearest(self, queries: torch.Tensor) -> torch.Tensor:
        """Id of the nearest code found for each query, (N,)."""
        return self.search(queries, 1)[1][:, 0]

    def _check(self, queries: torch.Tensor) -> torch.Tensor:
        if queries.dim() != 2 or queries.size(1) != self.codes.size(1):
            raise ValueError(
                f"queries must be (N, {self.codes.size(1)}), got shape {tuple(queries.shape)}"
            )
        return queries.detach().float().to(self.codes.device)


def snap_scores(queries: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """q . c_y - ||c_y||^2 / 2, (N, V): larger is nearer (the matmul form of -||q - c_y||^2 / 2)."""
    return queries @ codes.t() - 0.5 * (codes * codes).sum(-1)


class MatmulLookup(Lookup):
    """Exact: top-k of q C^T - ||C||^2 / 2, in blocks of queries so the score matrix stays small.

    Args:
        codes: the (V, d) code table.
        block_elements: largest (queries x V) score block computed at once.
    """

    name, exact = "matmul", True

    def __init__(self, codes: torch.Tensor, block_elements: int = 1 << 24):
        super().__init__(codes)
        self.half_norms = 0.5 * (self.codes * self.codes).sum(-1)
        self.block = max(1, block_elements // self.codes.size(0))

    def candidates(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        out = []
        for start in range(0, queries.size(0), self.block):
            scores = queries[start : start + self.block] @ self.codes.t() - self.half_norms
            out.append(scores.topk(k, dim=1).indices if k > 1 else scores.argmax(1, keepdim=True))
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def import_faiss() -> Any:
    """faiss, imported only when a faiss backend is built (it is an optional dependency)."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("the faiss lookup backends need faiss: pip install faiss-cpu") from err
    return faiss


class FaissLookup(Lookup):
    """A faiss index over the codes; subclasses say which (`make_index`)."""

    def __init__(self, codes: torch.Tensor, threads: int | None = None):
        super().__init__(codes)
        self.faiss = import_faiss()
        if threads is not None:
            self.faiss.omp_set_num_threads(threads)
        self.index = self.make_index(self.codes.size(1))
        self.index.add(self.codes.cpu().numpy())

    def make_index(self, d: int) -> Any:
        raise NotImplementedError

    def candidates(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        _, ids = self.index.search(np.ascontiguousarray(queries.cpu().numpy()), k)
        return torch.from_numpy(ids)


class FaissFlatLookup(FaissLookup):
    """Exact brute force in faiss (`IndexFlatL2`).

    Args:
        codes: the (V, d) code table.
        threads: faiss OpenMP threads (None: faiss's default).
    """

    name, exact = "faiss_flat", True

    def make_index(self, d: int) -> Any:
        return self.faiss.IndexFlatL2(d)


class FaissHNSWLookup(FaissLookup):
    """Approximate: a hierarchical navigable small-world graph (`IndexHNSWFlat`).

    Args:
        codes: the (V, d) code table.
        m: links per node.
        ef_construction: candidate list while building.
        ef_search: candidate list while searching (recall against speed).
        threads: faiss OpenMP threads (None: faiss's default).
    """

    name = "faiss_hnsw"

    def __init__(
        self,
        codes: torch.Tensor,
        m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
        threads: int | None = None,
    ):
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        super().__init__(codes, threads=threads)

    def make_index(self, d: int) -> Any:
        index = self.faiss.IndexHNSWFlat(d, self.m)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def candidates(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        self.index.hnsw.efSearch = max(self.ef_search, k)
        return super().candidates(queries, k)


class DigitHashLookup(Lookup):
    """The noise-embedding LM post's digit-weighted locality hash (maths: the module docstring).

    Args:
        codes: the (V, d) code table.
        base: digit base (10: the post's decimal digits).
        n_digits: digits per coordinate read by the score.
        digit_factor: f; digit j weighs f^-j.
        n_tables: hash functions (2: cuckoo hashing's two), each probed by every query.
        n_coords: coordinates hashed per table (None: about `bucket_size` codes per bucket).
        bucket_size: target mean bucket size when n_coords is None.
        probes: 0 probes the query's own bucket; 1 also the nearest cell of each hashed coordinate.
        rerank: "digits" ranks candidates by the digit score S, "l2" by exact distance.
        seed: seed of the hashed coordinates.
    """

    name = "digit_hash"

    def __init__(
        self,
        codes: torch.Tensor,
        base: int = 10,
        n_digits: int = 3,
        digit_factor: float = 10.0,
        n_tables: int = 2,
        n_coords: int | None = None,
        bucket_size: int = 32,
        probes: int = 1,
        rerank: str = "digits",
        seed: int = 0,
    ):
        super().__init__(codes)
        if rerank not in ("digits", "l2"):
            raise ValueError(f"rerank must be 'digits' or 'l2', got {rerank!r}")
        if probes not in (0, 1):
            raise ValueError(f"probes must be 0 or 1, got {probes}")
        V, d = self.codes.shape
        self.base, self.n_digits, self.probes, self.rerank = base, n_digits, probes, rerank
        self.weights = (digit_factor ** -np.arange(n_digits)).astype(np.float32)
        c = self.codes.cpu().numpy()
        # Rescale by the table's range so centred codes (or trained ones) read as [0, 1) too.
        self.lo, span = c.min(0).astype(np.float64), (c.max(0) - c.min(0)).astype(np.float64)
        self.scale = np.where(span > 0, 1.0 / np.maximum(span, 1e-12), 1.0)
        self.code_np = c
        self.code_digits = self.digits(c)  # (V, d, D) int16: differences stay signed
        # S(q, c) = |digits(q) - digits(c)| . w over (coordinate, digit) pairs: one matvec.
        self.flat_weights = np.tile(self.weights, d)
        if n_coords is None:
            n_coords = max(1, round(math.log(max(V / bucket_size, 1.0)) / math.log(base)))
        rng = np.random.default_rng(seed)
        self.coords = [rng.choice(d, size=min(n_coords, d), replace=False) for _ in range(n_tables)]
        self.tables = [self._table(self.code_digits[:, cols, 0]) for cols in self.coords]
        self.fallbacks = 0  # queries answered by a full scan (every bucket they probed was empty)

    def digits(self, x: np.ndarray) -> np.ndarray:
        """(N, d) values -> (N, d, n_digits) digits, most significant first."""
        # float64 and a clip just below 1, so the table's maximum reads as 0.999.. not 1.000.
        u = np.clip((x.astype(np.float64) - self.lo) * self.scale, 0.0, 1.0 - 1e-9)
        powers = float(self.base) ** np.arange(1, self.n_digits + 1)
        return (np.floor(u[..., None] * powers) % self.base).astype(np.int16)

    def _key(self, leading: np.ndarray) -> np.ndarray:
        """Leading digits (..., n_coords) read as one base-`base` number."""
        place = self.base ** np.arange(leading.shape[-1], dtype=np.int64)
        return (leading.astype(np.int64) * place).sum(-1)

    def _table(self, leading: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sorted keys, code ids in key order): a bucket is a contiguous run of equal keys."""
        keys = self._key(leading)
        order = np.argsort(keys, kind="stable")
        return keys[order], order

    def probe_keys(self, q_digits: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(N, P) keys to visit in one table: the own cell, then one neighbour per coordinate."""
        lead = q_digits[:, cols, 0].astype(np.int64)  # (N, c)
        keys = [self._key(lead)]
        if self.probes:
            # Step towards the query's second digit: the cell it is numerically nearest to.
            if self.n_digits > 1:
                step = np.where(q_digits[:, cols, 1] >= self.base // 2, 1, -1)
            else:
                step = np.ones_like(lead)
            for i in range(len(cols)):
                moved = lead.copy()
                moved[:, i] += step[:, i]
                ok = (moved[:, i] >= 0) & (moved[:, i] < self.base)
                keys.append(np.where(ok, self._key(np.clip(moved, 0, self.base - 1)), -1))
        return np.stack(keys, axis=1)

    def candidates(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        q = queries.cpu().numpy()
        q_digits = self.digits(q)
        spans = []
        for cols, (keys, _) in zip(self.coords, self.tables):
            probe = self.probe_keys(q_digits, cols)
            spans.append(
                (np.searchsorted(keys, probe, "left"), np.searchsorted(keys, probe, "right"))
            )
        out = np.full((q.shape[0], k), -1, dtype=np.int64)
        for n in range(q.shape[0]):
            pieces = [
                order[s:e]
                for (lefts, rights), (_, order) in zip(spans, self.tables)
                for s, e in zip(lefts[n], rights[n])
                if e > s
            ]
            cand = np.unique(np.concatenate(pieces)) if pieces else np.arange(self.code_np.shape[0])
            self.fallbacks += not pieces
            out[n, : min(k, cand.size)] = self.rank(q[n], q_digits[n], cand)[:k]
        return torch.from_numpy(out)

    def rank(self, q: np.ndarray, q_digits: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Candidates ordered by the digit score S (or by exact L2)."""
        if self.rerank == "l2":
            score = ((self.code_np[cand] - q) ** 2).sum(-1)
        else:
            diff = np.abs(self.code_digits[cand] - q_digits).reshape(cand.size, -1)
            score = diff.astype(np.float32) @ self.flat_weights
        return cand[np.argsort(score, kind="stable")]

    def digit_score(self, queries: torch.Tensor) -> torch.Tensor:
        """S(q, c) against every code, (N, V) (a full scan; tests and diagnostics)."""
        qd = self.digits(self._check(queries).cpu().numpy())
        diff = np.abs(qd[:, None] - self.code_digits[None])
        return torch.from_numpy((diff * self.weights).sum((2, 3)))


BACKENDS: dict[str, type[Lookup]] = {
    "matmul": MatmulLookup,
    "faiss_flat": FaissFlatLookup,
    "faiss_hnsw": FaissHNSWLookup,
    "digit_hash": DigitHashLookup,
}


def faiss_available() -> bool:
    try:
        import_faiss()
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    """Backends whose dependencies are installed (faiss ones only with faiss)."""
    return [n for n in BACKENDS if not n.startswith("faiss") or faiss_available()]


def make_lookup(kind: str, codes: torch.Tensor, **options: Any) -> Lookup:
    """Build the named backend over `codes`; options go to its constructor."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown lookup backend {kind!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[kind](codes, **options)
