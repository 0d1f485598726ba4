"""HypersurfaceLM: causal transforms, identity at init, exact orthogonality, frozen latents, O(V d)
logits, KV cache, parameter budget, latent measurements, and a fit with per-corpus val losses."""

from __future__ import annotations

import dataclasses
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from callbacks.diagnostics import Diagnostics
from succu.analysis.latents import (
    coherence,
    context_average_ablation,
    corpus_losses,
    gram_distance,
    latent_geometry,
    mean_transform,
    validation_diagnostics,
)
from succu.models.hypersurface import (
    BASELINES,
    VARIANTS,
    HypersurfaceConfig,
    HypersurfaceLM,
    Transform,
    skew_unit,
)
from succu.modules.hypersurface import RARITY, HypersurfaceModule, rarity_classes
from tests.tiny import tiny_module

V, D = 40, 32


def tiny(variant: str = "film", **overrides) -> HypersurfaceLM:
    torch.manual_seed(0)
    fields = dict(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=D, variant=variant, rank=2)
    return HypersurfaceLM(HypersurfaceConfig(**{**fields, **overrides})).eval()


def trained_like(variant: str, **overrides) -> HypersurfaceLM:
    """A model whose transforms are far from the identity (random emitter weights)."""
    model = tiny(variant, **overrides)
    if model.hyper is not None:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            model.hyper.emit.weight.copy_(torch.randn(model.hyper.emit.weight.shape, generator=g) * 0.1)
            model.hyper.emit.bias.copy_(torch.randn(model.hyper.emit.bias.shape, generator=g) * 0.1)
    if model.static_delta is not None:
        with torch.no_grad():
            model.static_delta.normal_(std=0.1)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_transform_at_t_never_sees_positions_after_t(variant):
    model = trained_like(variant)
    ids = torch.randint(0, V, (3, 16))
    changed = ids.clone()
    changed[:, 9:] = torch.randint(0, V, (3, 7))
    dense_a = model.transform(ids).dense(D)
    dense_b = model.transform(changed).dense(D)
    torch.testing.assert_close(dense_a[:, :9], dense_b[:, :9])
    assert not torch.allclose(dense_a[:, 9:], dense_b[:, 9:])
    # The prefix alone gives the same transforms: nothing after t was read.
    torch.testing.assert_close(model.transform(ids[:, :9]).dense(D), dense_a[:, :9])
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("variant", VARIANTS + ("b2",))
def test_every_variant_is_the_identity_at_init_so_the_model_equals_b1(variant):
    model = tiny(variant)
    ids = torch.randint(0, V, (2, 16))
    transform = model.transform(ids)
    e = torch.randn(2, 16, D)
    torch.testing.assert_close(transform.apply(e), e, atol=0, rtol=0)
    torch.testing.assert_close(transform.dense(D).expand(2, 16, D, D), torch.eye(D).expand(2, 16, D, D))
    b1 = tiny("b1")
    missing, unexpected = b1.load_state_dict(model.state_dict(), strict=False)
    assert missing == ["lm_head.weight"]  # B1's own head starts as a copy of E
    assert all(k.startswith(("hyper.", "static_delta")) for k in unexpected)
    torch.testing.assert_close(model(ids), b1(ids))
    b0 = tiny("b0")
    b0.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(model(ids), b0(ids))


@pytest.mark.parametrize("rank", [1, 3])
def test_orthogonal_variant_is_exactly_orthogonal_and_keeps_the_gram_matrix(rank):
    model = trained_like("orthogonal", rank=rank)
    ids = torch.randint(0, V, (2, 16))
    transform = model.transform(ids)
    t = transform.dense(D)
    assert t.shape == (2, 16, D, D)
    assert (t - torch.eye(D)).abs().max() > 0.05  # far from the identity
    torch.testing.assert_close(t.transpose(-1, -2) @ t, torch.eye(D).expand_as(t), atol=1e-5, rtol=0)
    # It is the Cayley transform (I + A)^-1 (I - A) of A = U P^T - P U^T.
    m = transform.left
    a = m @ skew_unit(rank) @ m.transpose(-1, -2)
    torch.testing.assert_close(a, -a.transpose(-1, -2))
    cayley = torch.linalg.solve(torch.eye(D) + a, torch.eye(D) - a)
    torch.testing.assert_close(t, cayley, atol=1e-5, rtol=1e-4)
    e = model.latents
    rows = transform.rows(e)  # (2, 16, V, D)
    gram = rows @ rows.transpose(-1, -2)
    torch.testing.assert_close(gram, (e @ e.t()).expand_as(gram), atol=1e-5, rtol=1e-4)
    assert coherence(rows).sub(coherence(e)).abs().max() < 1e-5


def test_lowrank_and_film_are_the_stated_maps():
    low = trained_like("lowrank")
    ids = torch.randint(0, V, (1, 8))
    tr = low.transform(ids)
    assert tr.left.shape == (1, 8, D, 2) and tr.shift is None
    torch.testing.assert_close(tr.dense(D), torch.eye(D) + tr.left @ tr.right.transpose(-1, -2))
    film = trained_like("film").transform(ids)
    assert film.left is None
    x = torch.randn(1, 8, D)
    torch.testing.assert_close(film.apply(x), film.scale * x + film.shift)
    torch.testing.assert_close(film.apply_t(x), film.scale * x)


@pytest.mark.parametrize("variant", VARIANTS + BASELINES)
def test_latents_receive_no_gradient_except_in_b0(variant):
    model = tiny(variant).train()
    model(torch.randint(0, V, (2, 16))).logsumexp(-1).mean().backward()
    names = dict(model.named_parameters())
    if variant == "b0":
        assert "latents" in names and model.latents.grad is not None
        return
    assert "latents" not in names and "latents" in dict(model.named_buffers())
    assert not model.latents.requires_grad and model.latents.grad is None
    assert "latents" in model.state_dict()  # frozen, but it travels in the checkpoint
    before = model.latents.clone()
    module = tiny_module(HypersurfaceModule, vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=D, variant=variant)
    opt = torch.optim.AdamW(module.param_groups(), lr=0.1)
    module.model(torch.randint(0, V, (2, 16))).logsumexp(-1).mean().backward()
    opt.step()
    assert all(p is not module.model.latents for g in opt.param_groups for p in g["params"])
    torch.testing.assert_close(module.model.latents, before)


@pytest.mark.parametrize("variant", VARIANTS + ("b2",))
def test_o_vd_logits_equal_the_explicit_t_e_computation(variant):
    model = trained_like(variant)
    ids = torch.randint(0, V, (2, 16))
    q, transform = model.features(ids)
    explicit = torch.einsum("...vd,...d->...v", transform.rows(model.latents), q)  # rows T_t e_v + b_t
    torch.testing.assert_close(model(ids), explicit, atol=1e-5, rtol=1e-4)
    # The input side is the same map: T_t e_{id_t} + b_t is row id_t of T_t E.
    rows = transform.rows(model.latents)
    if rows.dim() == 2:
        rows = rows.expand(2, 16, V, D)
    picked = rows.gather(2, ids[..., None, None].expand(2, 16, 1, D)).squeeze(2)
    torch.testing.assert_close(transform.apply(model.latents[ids]), picked, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS + BASELINES)
def test_kv_cache_gives_the_same_logits_as_full_recompute(variant):
    model = trained_like(variant)
    ids = torch.randint(0, V, (2, 16))
    full = model(ids)
    cache = model.new_kv_cache()
    pieces = [model(ids[:, :5], kv_cache=cache)]
    for start, end in ((5, 6), (6, 9), *((t, t + 1) for t in range(9, 16))):
        pieces.append(model(ids[:, start:end], kv_cache=cache))
    assert len(cache) == 16
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


@pytest.mark.parametrize("variant", ["orthogonal", "b1"])
def test_generation_with_cache_matches_recompute_past_the_block(variant):
    module = tiny_module(HypersurfaceModule, vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=D, variant=variant)
    if module.model.hyper is not None:
        torch.nn.init.normal_(module.model.hyper.emit.weight, std=0.1)
    prompt = torch.randint(0, V, (2, 5))
    cached = module.generate(prompt, 30, greedy=True)  # the window slides past block_size
    plain = module.generate(prompt, 30, greedy=True, use_cache=False)
    assert cached.shape == (2, 35) and torch.equal(cached, plain)


def test_baselines_with_the_hypernetworks_blocks_match_the_parameter_budget():
    cfg = dict(vocab_size=74, block_size=64, n_head=4, n_embd=64)
    variants = {v: HypersurfaceLM(HypersurfaceConfig(variant=v, n_layer=3, **cfg)).num_params() for v in VARIANTS}
    assert len(set(variants.values())) == 1  # rank 1: film, lowrank, orthogonal all emit 2d numbers
    for b in BASELINES:
        n = HypersurfaceLM(HypersurfaceConfig(variant=b, n_layer=4, **cfg)).num_params()
        assert abs(n / variants["film"] - 1) < 0.03


def test_config_is_checked_and_a_dial_is_refused():
    with pytest.raises(ValueError, match="variant"):
        HypersurfaceConfig(vocab_size=5, variant="nope")
    with pytest.raises(ValueError, match="rank"):
        HypersurfaceConfig(vocab_size=5, rank=0)
    with pytest.raises(ValueError, match="n_hyper_layer"):
        HypersurfaceConfig(vocab_size=5, variant="film", n_hyper_layer=0)
    model = tiny("film")
    ids = torch.randint(0, V, (2, 8))
    with pytest.raises(TypeError, match="alpha"):  # only models that declare a dial take one
        model(ids, alpha=0.3)


def test_geometry_measures():
    eye = torch.eye(8)
    assert float(coherence(eye)) == 0.0 and float(gram_distance(eye)) == 0.0
    same = torch.ones(5, 3)
    assert float(coherence(same)) == pytest.approx(1.0) and float(gram_distance(same)) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(200, 1024, generator=g)
    assert float(gram_distance(rand)) == pytest.approx(1 / math.sqrt(1024), rel=0.1)
    model = trained_like("lowrank")
    stats = latent_geometry(model, torch.randint(0, V, (2, 16)), max_contexts=7)
    assert set(stats) == {"coherence/E", "gram/E", "coherence/TE", "gram/TE"}
    assert stats["coherence/TE"] != pytest.approx(stats["coherence/E"])


def test_context_average_ablation():
    batches = [{"input_ids": torch.randint(0, V, (2, 16)), "labels": torch.randint(0, V, (2, 16))} for _ in range(2)]
    for b in BASELINES:
        assert context_average_ablation(tiny(b), batches)["delta"] == 0.0
    at_init = context_average_ablation(tiny("film"), batches)  # T_t = I everywhere: T_bar = I
    assert at_init["delta"] == pytest.approx(0.0, abs=1e-6)
    model = trained_like("lowrank")
    t_bar = mean_transform(model, batches)
    explicit = torch.cat([model.transform(b["input_ids"]).dense(D).flatten(0, 1) for b in batches]).mean(0)
    torch.testing.assert_close(t_bar.matrix, explicit, atol=1e-6, rtol=1e-5)
    film = trained_like("film")
    shifts = torch.cat([film.transform(b["input_ids"]).shift.flatten(0, 1) for b in batches]).mean(0)
    torch.testing.assert_close(mean_transform(film, batches).shift, shifts)
    out = context_average_ablation(model, batches)
    assert out["delta"] != 0.0 and math.isfinite(out["loss_ctx_avg"])
    # A context-free Transform broadcasts over every position.
    assert model(batches[0]["input_ids"], transform=Transform(matrix=torch.eye(D))).shape == (2, 16, V)


def test_module_hyperparameters_mirror_the_config():
    module = tiny_module(HypersurfaceModule, vocab_size=50, block_size=32, n_layer=1, n_head=2, n_embd=16, variant="lowrank", rank=2)
    assert module.model.cfg == HypersurfaceConfig(50, 32, 1, 2, 16, 0.0, False, "lowrank", 2, 1, 0)
    assert module.hparams["model"] == dataclasses.asdict(module.model.cfg)
    assert {"model", "rare_threshold", "warmup_steps", "min_lr_ratio"} == set(module.hparams)


def test_fit_logs_in_and_out_of_domain_losses_and_diagnostics(tmp_path, monkeypatch, shared_data):
    from datamodules.mixture import MixtureDataModule
    from datamodules.windows import Windows

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("SUCCU_DATA_DIR", str(shared_data))
    L.seed_everything(0, verbose=False)
    dm = MixtureDataModule(corpora=["tinystories", "shakespeare"], weights=[1, 0], abc_style=[], windows=Windows(block_size=32, batch_size=8, val_windows=16))
    module = tiny_module(HypersurfaceModule,
        vocab_size=dm.vocab_size, block_size=dm.block_size, n_layer=1, n_head=2, n_embd=32,
        variant="orthogonal", warmup_steps=2, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
    )
    trainer = L.Trainer(
        max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, val_check_interval=6,
        check_val_every_n_epoch=None, num_sanity_val_steps=0, enable_checkpointing=False,
        callbacks=[Diagnostics()],
    )
    trainer.fit(module, datamodule=dm)
    m = trainer.callback_metrics
    diag = {"diag/coherence/E", "diag/gram/E", "diag/coherence/TE", "diag/gram/TE", "diag/ctx_avg/loss_delta"}
    assert {"val/loss/tinystories", "val/loss/shakespeare", "val/ppl/shakespeare"} | diag <= set(m)
    # The callback measures the first in-domain validation batch (TinyStories) of the last weights.
    first = dm.val_batches()[0]
    assert int(first["source"][0]) == 0
    for name, value in validation_diagnostics(module.model, first).items():
        assert float(m[f"diag/{name}"]) == pytest.approx(value, rel=1e-5, abs=1e-7)
    assert float(m["val/loss"]) == pytest.approx(float(m["val/loss/tinystories"]))  # in-domain only
    assert float(m["val/ppl"]) == pytest.approx(math.exp(float(m["val/loss"])), rel=1e-5)
    assert float(m["diag/gram/TE"]) == pytest.approx(float(m["diag/gram/E"]), abs=1e-5)  # orthogonal
    losses = corpus_losses(module.model, dm.val_batches())
    assert losses[1] == pytest.approx(float(m["val/loss/shakespeare"]), rel=1e-5)
    path = tmp_path / "hs.ckpt"
    trainer.save_checkpoint(path)
    loaded = HypersurfaceModule.load_from_checkpoint(path)
    assert loaded.tokenizer == dm.tokenizer and loaded.model.cfg == module.model.cfg
    ids = dm.val_batches()[0]["input_ids"][:2]
    torch.testing.assert_close(loaded.model.eval()(ids), module.model.eval()(ids))


def test_input_only_transforms_the_lookups_and_leaves_the_readout_untouched():
    model = trained_like("lowrank", input_only=True)
    assert model.lm_head is not None and model.hyper is not None
    torch.testing.assert_close(tiny("film", input_only=True).lm_head.weight, model.latents)  # W = E at init
    ids = torch.randint(0, V, (2, 16))
    q, transform = model.features(ids)
    logits = model(ids)
    # The logits are the trained head's reading of the body's states, whatever T_t is...
    torch.testing.assert_close(logits, q @ model.lm_head.weight.t())
    other = Transform(scale=torch.full((D,), 3.0), shift=torch.ones(D))
    torch.testing.assert_close(model.readout(q, other), model.readout(q, transform))
    # ...while the input side does see T_t: the identity in its place changes the logits.
    identity = Transform(scale=torch.ones(D))
    assert not torch.allclose(model(ids, transform=identity), logits, atol=1e-4)
    # And it trains: the head gets a gradient, the frozen latents none.
    model.train()
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    assert model.lm_head.weight.grad is not None and model.latents.grad is None


def test_input_only_needs_a_context_transform():
    with pytest.raises(ValueError, match="input_only applies to the variants"):
        HypersurfaceConfig(vocab_size=V, variant="b1", input_only=True)


def test_mlp_hidden_sets_every_block_width_and_is_checked():
    model = tiny("lowrank", mlp_hidden=24)
    widths = {b.mlp.c_fc.out_features for b in [*model.transformer.h, *model.hyper.h]}
    assert widths == {24}
    assert {b.mlp.c_fc.out_features for b in tiny("film").transformer.h} == {4 * D}
    with pytest.raises(ValueError, match="mlp_hidden must be at least 1, got 0"):
        HypersurfaceConfig(vocab_size=V, mlp_hidden=0)


def test_rarity_classes():
    counts = torch.tensor([0, 1, 9, 10, 50, 0])
    assert rarity_classes(counts, 10).tolist() == [0, 1, 1, 2, 2, 0]
    assert RARITY == ("unseen", "rare", "common")


def rarity_fit(tmp_path, variant: str, steps: int, **model):
    """A tiny character-level fit on a two-corpus folder whose rare tokens are known by hand
    (`model`: further HypersurfaceConfig fields)."""
    from datamodules.corpora import Sources, Splits
    from datamodules.mixture import MixtureDataModule
    from datamodules.tokens import Tokens
    from datamodules.windows import Windows

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "tinyshakespeare.txt").write_text("ccccc" + "abab abba baab " * 400)  # c: 5 times, in training
    (data / "kjv.txt").write_text("abcd dcba cdq " * 400)
    dm = MixtureDataModule(corpora=["shakespeare", "kjv"], weights=[1, 0], abc_style=[], windows=Windows(block_size=8, batch_size=4, val_windows=8), tokens=Tokens(cache_dir=str(tmp_path / "cache")), splits=Splits(test_fraction=0.1), sources=Sources(data_dir=str(data)))
    module = tiny_module(HypersurfaceModule, vocab_size=dm.vocab_size, block_size=8, n_layer=1,
                         n_head=2, n_embd=16, variant=variant, warmup_steps=0,
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2), **model)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0,
                        enable_checkpointing=False)
    before = module.model.latents.clone()
    trainer.fit(module, datamodule=dm)
    return dm, module, trainer, before


def test_rare_token_split_counts_tokens_correctly_on_a_tiny_corpus(tmp_path):
    dm, module, trainer, _ = rarity_fit(tmp_path, "film", steps=2)
    tok = dm.tokenizer
    train = "".join(dm.tokenizer.decode(a.tolist()) for a, w in zip(dm.train_arrays, dm.weights) if w > 0)
    counts = dm.training_token_counts()
    for ch in "abc q":  # by hand, on the decoded training text of the in-domain corpus
        assert int(counts[tok.token_id(ch)]) == train.count(ch)
    assert int(counts[tok.token_id("c")]) == 5 and int(counts[tok.token_id("q")]) == 0
    metrics = trainer.test(module, datamodule=dm, verbose=False)[0]
    for corpus in ("shakespeare", "kjv"):
        labels = torch.cat([b["labels"] for b in dm.test_batches()
                            if dm.corpora[int(b["source"][0])] == corpus])
        labels = labels[labels != -100]
        c = counts[labels]
        expect = {"unseen": int((c == 0).sum()), "rare": int((c < 10).sum()), "common": int((c >= 10).sum())}
        for name, n in expect.items():
            assert metrics.get(f"test/tokens/{corpus}/{name}", 0.0) == n
    assert metrics["test/tokens/kjv/unseen"] > 0 and metrics["test/tokens/kjv/rare"] > metrics["test/tokens/kjv/unseen"]
    # The classes' token-weighted losses add up to the corpus loss.
    n = {k: metrics[f"test/tokens/kjv/{k}"] for k in ("rare", "common")}
    pooled = sum(metrics[f"test/loss/kjv/{k}"] * n[k] for k in n) / sum(n.values())
    assert pooled == pytest.approx(metrics["test/loss/kjv"], rel=1e-5)
    assert metrics["test/loss"] == pytest.approx(metrics["test/loss/shakespeare"])  # in-domain only
    assert metrics["test/ppl"] == pytest.approx(math.exp(metrics["test/loss"]), rel=1e-6)


@pytest.mark.parametrize("variant", ["film", "b1", "b2"])
def test_frozen_latents_are_bit_identical_after_training(tmp_path, variant):
    _, module, trainer, before = rarity_fit(tmp_path, variant, steps=5)
    assert trainer.global_step == 5
    assert torch.equal(module.model.latents, before)
    path = tmp_path / "after.ckpt"
    trainer.save_checkpoint(path)
    loaded = HypersurfaceModule.load_from_checkpoint(path)
    assert torch.equal(loaded.model.latents, before)


def reference_logits(model: HypersurfaceLM, ids: torch.Tensor) -> torch.Tensor:
    """The logits without an output bias, from the model's parts with the table formed explicitly:
    W q (a trained head), q . (T_t e_v + b_t) (a transform), else q . e_v."""
    q, transform = model.features(ids)
    if model.lm_head is not None:
        return q @ model.lm_head.weight.t()
    if transform is None:
        return q @ model.latents.t()
    return torch.einsum("...vd,...d->...v", transform.rows(model.latents), q)


ALL_MODELS = [(v, {}) for v in VARIANTS + BASELINES] + [(v, {"input_only": True}) for v in VARIANTS]


@pytest.mark.parametrize(("variant", "extra"), ALL_MODELS)
def test_output_bias_adds_to_the_logits_and_is_nothing_when_off_or_zero(variant, extra):
    plain = trained_like(variant, **extra)
    ids = torch.randint(0, V, (2, 16))
    # Off (the default): no parameter, the state dict of before, and the logits of the reference.
    assert plain.output_bias is None and "output_bias" not in plain.state_dict()
    torch.testing.assert_close(plain(ids), reference_logits(plain, ids), atol=1e-5, rtol=1e-4)
    biased = tiny(variant, output_bias=True, **extra)
    missing, unexpected = biased.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["output_bias"] and unexpected == []
    # At zero (its init) the logits are the no-bias model's, bit for bit; else they move by c.
    assert torch.equal(biased.output_bias, torch.zeros(V)) and biased.output_bias.requires_grad
    assert torch.equal(biased(ids), plain(ids))
    with torch.no_grad():
        biased.output_bias.normal_(generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(biased(ids), plain(ids) + biased.output_bias)
    assert biased.num_params() == plain.num_params() + V


@pytest.mark.parametrize("variant", ["film", "b1", "b2"])
def test_output_bias_trains_while_the_frozen_table_stays_bit_identical(tmp_path, variant):
    _, module, trainer, before = rarity_fit(tmp_path, variant, steps=5, output_bias=True)
    assert trainer.global_step == 5
    net = module.model
    assert torch.equal(net.latents, before) and "latents" not in dict(net.named_parameters())
    assert not torch.equal(net.output_bias, torch.zeros_like(net.output_bias))
    path = tmp_path / "after.ckpt"
    trainer.save_checkpoint(path)
    loaded = HypersurfaceModule.load_from_checkpoint(path).model
    assert loaded.cfg.output_bias and torch.equal(loaded.output_bias, net.output_bias)
    assert torch.equal(loaded.latents, before)


@pytest.mark.parametrize("variant", VARIANTS)
def test_input_only_variant_at_init_is_b1(variant):
    model = tiny(variant, input_only=True)
    b1 = tiny("b1")
    missing, unexpected = b1.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and all(k.startswith("hyper.") for k in unexpected)
    ids = torch.randint(0, V, (2, 16))
    torch.testing.assert_close(model(ids), b1(ids), atol=0, rtol=0)
