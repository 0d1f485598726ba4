"""Plain GPT (nanoGPT architecture): layout, init, causality, KV cache, and fitting in Lightning."""

from __future__ import annotations

import dataclasses
import math

import lightning as L
import pytest
import torch

from succu.checkpoint_files import CHECKPOINT_KEY
from succu.models.gpt import GPT, GPTConfig
from succu.modules.gpt import GPTModule
from tests.tiny import tiny_module


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    fields = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
    return GPT(GPTConfig(**{**fields, **overrides})).eval()


def test_baby_config_has_nanogpts_parameter_count_and_layout():
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    assert round(model.num_params() / 1e6, 2) == 0.80  # nanoGPT prints "number of parameters: 0.80M"
    full = GPT(GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384))
    assert round(full.num_params() / 1e6, 2) == 10.65
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    names = dict(model.named_parameters())
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.3.ln_1.weight",
                 "transformer.h.0.attn.qkv.weight", "transformer.h.0.attn.proj.weight",
                 "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight",
                 "transformer.ln_f.weight"):
        assert name in names
    assert not any(n.endswith("bias") for n in names)  # bias=False: none in Linear or LayerNorm
    assert names["transformer.h.0.mlp.c_fc.weight"].shape == (512, 128)


def test_bias_switch_and_scaled_residual_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=8, n_head=4, n_embd=256, bias=True))
    params = dict(model.named_parameters())
    assert "transformer.h.0.attn.qkv.bias" in params and "transformer.ln_f.bias" in params
    assert torch.count_nonzero(params["transformer.h.0.mlp.c_fc.bias"]) == 0
    residual = 0.02 / math.sqrt(2 * 8)
    proj = torch.cat([params[f"transformer.h.{i}.mlp.c_proj.weight"].flatten() for i in range(8)])
    assert proj.std().item() == pytest.approx(residual, rel=0.05)
    assert params["transformer.h.0.attn.proj.weight"].std().item() == pytest.approx(residual, rel=0.1)
    assert params["transformer.h.0.mlp.c_fc.weight"].std().item() == pytest.approx(0.02, rel=0.05)


def test_causality_future_tokens_do_not_change_past_logits():
    model = tiny()
    ids = torch.randint(0, 40, (3, 16))
    changed = ids.clone()
    changed[:, 9:] = torch.randint(0, 40, (3, 7))
    a, b = model(ids), model(changed)
    assert a.shape == (3, 16, 40)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_kv_cache_gives_the_same_logits_as_full_recompute():
    model = tiny()
    ids = torch.randint(0, 40, (2, 16))
    full = model(ids)
    cache = model.new_kv_cache()
    pieces = [model(ids[:, :5], kv_cache=cache)]  # a prompt chunk, then chunks of 1 and 3 tokens
    for start, end in ((5, 6), (6, 9), *((t, t + 1) for t in range(9, 16))):
        pieces.append(model(ids[:, start:end], kv_cache=cache))
    assert len(cache) == 16
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)


def test_a_plain_model_takes_no_dial_and_overlong_input_is_refused():
    model = tiny()
    ids = torch.randint(0, 40, (2, 8))
    with pytest.raises(TypeError, match="alpha"):  # only models that declare a dial take one
        model(ids, alpha=0.3)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_kv_cache()
    model(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


def test_dropout_only_in_training():
    model = tiny(dropout=0.5)
    ids = torch.randint(0, 40, (2, 16))
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


def test_generation_with_cache_matches_recompute_past_the_block():
    module = tiny_module(GPTModule, vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)
    prompt = torch.randint(0, 40, (2, 5))
    cached = module.generate(prompt, 30, greedy=True)  # 35 > block_size: the window slides
    plain = module.generate(prompt, 30, greedy=True, use_cache=False)
    assert cached.shape == (2, 35) and torch.equal(cached, plain)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = module.generate(prompt, 12, temperature=0.8, top_k=5, generator=g1)
    b = module.generate(prompt, 12, temperature=0.8, top_k=5, generator=g2, use_cache=False)
    assert torch.equal(a, b)


def test_module_hyperparameters_mirror_the_config():
    module = tiny_module(GPTModule, vocab_size=50, block_size=32, n_layer=1, n_head=2, n_embd=16, dropout=0.1, bias=True)
    assert module.model.cfg == GPTConfig(50, 32, 1, 2, 16, 0.1, True)
    assert module.hparams["model"] == dataclasses.asdict(module.model.cfg)
    assert {"model", "warmup_steps", "min_lr_ratio"} == set(module.hparams)


def test_fit_on_shakespeare_learns_and_checkpoints_the_tokenizer(tmp_path, monkeypatch, shared_data):
    from datamodules.shakespeare import ShakespeareDataModule
    from datamodules.tokens import Tokens
    from datamodules.windows import Windows

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("SUCCU_DATA_DIR", str(shared_data))
    L.seed_everything(0, verbose=False)
    dm = ShakespeareDataModule(windows=Windows(block_size=32, batch_size=16, val_windows=32), tokens=Tokens(cache_dir=str(tmp_path / "cache")))
    module = tiny_module(GPTModule,
        vocab_size=dm.vocab_size, block_size=dm.block_size, n_layer=1, n_head=2, n_embd=32,
        warmup_steps=5, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
    )
    trainer = L.Trainer(
        max_steps=40, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, val_check_interval=40,
        check_val_every_n_epoch=None, num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.callback_metrics["val/loss"] < 3.3 < math.log(65)  # well below uniform
    path = tmp_path / "gpt.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    assert ckpt[CHECKPOINT_KEY]["tokenizer"]["kind"] == "char"
    assert ckpt["ShakespeareDataModule"]["train_batches"] == 40
    loaded = GPTModule.load_from_checkpoint(path)
    assert loaded.tokenizer == dm.tokenizer
    text = loaded.complete(["ROMEO:"], max_new_tokens=10, greedy=True)[0]
    assert len(text) == 10
