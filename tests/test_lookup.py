"""Nearest-code lookup backends: exact ones are exact, the digit hash reports its recall."""

import pytest
import torch

from succu.nn.lookup import (
    BACKENDS,
    DigitHashLookup,
    MatmulLookup,
    available_backends,
    make_lookup,
    snap_scores,
)


def brute_force(codes: torch.Tensor, queries: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The definition: the k smallest ||q - c_y||^2, one difference per (query, code) pair."""
    dist = ((queries[:, None, :].double() - codes[None].double()) ** 2).sum(-1)
    return dist.topk(k, dim=1, largest=False).indices


def table(V=300, d=16, n=64, noise=0.05, seed=0):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.rand(V, d, generator=gen)
    queries = codes[torch.randint(0, V, (n,), generator=gen)] + noise * torch.randn(
        n, d, generator=gen
    )
    return codes, queries


def test_matmul_snap_equals_brute_force_nearest_neighbour():
    codes, _ = table()
    queries = torch.rand(200, 16, generator=torch.Generator().manual_seed(1))  # far from any code
    assert torch.equal(snap_scores(queries, codes).argmax(1), brute_force(codes, queries)[:, 0])
    assert torch.equal(MatmulLookup(codes).nearest(queries), brute_force(codes, queries)[:, 0])


def test_matmul_top_k_in_small_blocks():
    codes, queries = table(noise=0.3)
    dist, ids = MatmulLookup(codes, block_elements=1000).search(queries, k=5)
    assert torch.equal(ids, brute_force(codes, queries, 5))
    assert torch.all(dist[:, :-1] <= dist[:, 1:])
    exact = ((queries[:, None] - codes[ids]) ** 2).sum(-1)
    torch.testing.assert_close(dist, exact)


@pytest.mark.parametrize("kind", ["faiss_flat", "faiss_hnsw"])
def test_faiss_backends_are_exact_on_small_cases(kind):
    pytest.importorskip("faiss")
    codes, queries = table(noise=0.2)
    backend = make_lookup(kind, codes, threads=1)
    assert torch.equal(backend.nearest(queries), brute_force(codes, queries)[:, 0])
    assert torch.equal(backend.search(queries, 3)[1], brute_force(codes, queries, 3))


def test_digit_hash_finds_exact_codes_and_reports_recall():
    codes, queries = table(V=500, d=32, n=200, noise=0.06)
    for rerank in ("digits", "l2"):
        backend = DigitHashLookup(codes, rerank=rerank)
        assert torch.equal(backend.nearest(codes), torch.arange(500))  # a code is its own nearest
        recall = float(
            (backend.nearest(queries) == brute_force(codes, queries)[:, 0]).float().mean()
        )
        print(f"digit_hash rerank={rerank}: recall@1 {recall:.3f} (V=500, d=32, noise 0.06)")
        assert recall >= 0.9


def test_digit_score_weights_digits_left_to_right():
    # Codes spanning [0, 1] exactly, so digits are the decimal digits of the values.
    codes = torch.tensor([[0.0], [1.0], [0.375]])
    backend = DigitHashLookup(codes, n_digits=3, digit_factor=10.0)
    score = backend.digit_score(torch.tensor([[0.25]]))[0]
    # 0.25 -> 2,5,0 and 0.375 -> 3,7,5: |2-3| + |5-7| / 10 + |0-5| / 100.
    assert float(score[2]) == pytest.approx(1.25)
    assert float(backend.digit_score(torch.tensor([[0.375]]))[0, 2]) == 0.0


def test_digit_hash_falls_back_to_a_full_scan_when_its_buckets_are_empty():
    codes = torch.tensor([[0.05, 0.05], [0.95, 0.95], [0.05, 0.95]])
    backend = DigitHashLookup(codes, n_coords=2, probes=0)
    assert int(backend.nearest(torch.tensor([[0.5, 0.5]]))[0]) in (0, 1, 2)
    assert backend.fallbacks == 1
    assert torch.equal(backend.nearest(torch.tensor([[0.9, 0.94]])), torch.tensor([1]))


def test_interface_and_errors():
    codes, queries = table()
    assert set(available_backends()) >= {"matmul", "digit_hash"}
    assert set(available_backends()) <= set(BACKENDS)
    with pytest.raises(ValueError, match="unknown lookup backend 'annoy'"):
        make_lookup("annoy", codes)
    with pytest.raises(ValueError, match=r"queries must be \(N, 16\)"):
        MatmulLookup(codes).search(torch.zeros(3, 5))
    dist, ids = make_lookup("digit_hash", codes).search(queries, k=2)
    assert dist.shape == ids.shape == (64, 2)


def test_faiss_missing_is_a_clear_import_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    assert "faiss_flat" not in available_backends()
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        make_lookup("faiss_flat", table()[0])
