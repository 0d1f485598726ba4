import math

import pytest
import torch

from succu.models.succulm import PROFILES, SuccuLM, SuccuLMConfig, sinusoidal_positions
from succu.modules.succulm import SuccuLMModule
from succu.optim import warmup_cosine
from succu.tokenizers import WordTokenizer
from tests.tiny import tiny_module


def tiny_cfg(**kw) -> SuccuLMConfig:
    return SuccuLMConfig(**{**dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=12,
                                   ffn_expansion=2), **kw})


def test_causality():
    torch.manual_seed(0)
    model = SuccuLM(tiny_cfg()).eval()
    ids = torch.randint(0, 23, (2, 12))
    base = model(ids)
    for t in (0, 5, 11):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % 23
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t]), f"positions before {t} saw the change"
        assert not torch.allclose(out[:, t], base[:, t])


def per_head_reference(attn, x):
    """The reference SuccuLM's loop over heads: separate q/k/v slices, one softmax per head."""
    B, T, C = x.shape
    H, d = attn.n_head, C // attn.n_head
    wq, wk, wv = attn.qkv.weight.split(C, 0)
    bq, bk, bv = attn.qkv.bias.split(C, 0)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    heads = []
    for h in range(H):
        s = slice(h * d, (h + 1) * d)
        q = x @ wq[s].T + bq[s]
        k = x @ wk[s].T + bk[s]
        v = x @ wv[s].T + bv[s]
        scores = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(mask, float("-inf"))
        heads.append(scores.softmax(-1) @ v)
    return attn.proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("keep_attention", [False, True])
def test_batched_attention_equals_per_head_reference(keep_attention):
    torch.manual_seed(1)
    model = SuccuLM(tiny_cfg(n_head=3, n_embd=12)).eval()
    attn = model.blocks[0].attn
    attn.keep_attention = keep_attention
    x = torch.randn(2, 9, 12)
    torch.testing.assert_close(attn(x), per_head_reference(attn, x), atol=1e-5, rtol=1e-5)


def test_output_is_tied_to_embedding():
    torch.manual_seed(2)
    model = SuccuLM(tiny_cfg()).eval()
    ids = torch.randint(0, 23, (1, 5))
    hidden = {}
    model.ln_f.register_forward_hook(lambda m, i, o: hidden.setdefault("h", o))
    logits = model(ids)
    torch.testing.assert_close(logits, hidden["h"] @ model.embed.weight.T)
    names = [n for n, _ in model.named_parameters()]
    assert not any("lm_head" in n or "out" == n.split(".")[-1] for n in names)
    assert sum(p.numel() for p in model.parameters() if p.shape == model.embed.weight.shape) == \
        model.embed.weight.numel()


def test_sinusoidal_positions_match_formula():
    pe = sinusoidal_positions(10, 6)
    assert pe[3, 2] == pytest.approx(math.sin(3 / 10000 ** (2 / 6)), abs=1e-6)
    assert pe[3, 3] == pytest.approx(math.cos(3 / 10000 ** (2 / 6)), abs=1e-6)
    assert sinusoidal_positions(4, 5).shape == (4, 5)  # odd widths work too


def test_upper_middle_profile_has_the_reference_shapes():
    model = SuccuLM(SuccuLMConfig(profile="upper_middle", vocab_size=160, block_size=29))
    assert len(model.blocks) == 4
    assert model.blocks[0].ffn[0].weight.shape == (200, 50)
    assert model.blocks[0].ffn[2].weight.shape == (50, 200)
    with pytest.raises(ValueError, match="unknown SuccuLM profile 'huge'"):
        SuccuLMConfig(profile="huge")
    assert set(PROFILES) >= {"tiny", "upper_middle"}
    # A single field overrides the profile; the config keeps its None fields for a later profile.
    small = SuccuLMConfig(profile="tiny", n_embd=40)
    assert small.n_layer is None and small.resolved().n_layer == PROFILES["tiny"]["n_layer"]
    assert small.resolved().n_embd == 40


def test_kv_cache_logits_equal_full_recompute():
    torch.manual_seed(3)
    model = SuccuLM(tiny_cfg()).eval()
    ids = torch.randint(0, 23, (2, 10))
    full = model(ids)
    cache = model.new_kv_cache()
    parts = [model(ids[:, :4], kv_cache=cache), model(ids[:, 4:7], kv_cache=cache)]
    parts += [model(ids[:, t : t + 1], kv_cache=cache) for t in range(7, 10)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def make_module(**kw) -> SuccuLMModule:
    torch.manual_seed(4)
    words = [f"w{i}" for i in range(19)]
    module = tiny_module(SuccuLMModule, vocab_size=23, block_size=24, n_layer=2, n_head=2, n_embd=12,
                           ffn_expansion=2, **kw)
    module.tokenizer = WordTokenizer.from_words(words)
    return module.eval()


def test_greedy_generation_with_cache_equals_recompute():
    module = make_module()
    prompt = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 10]])
    cached = module.generate(prompt, 15, greedy=True, use_cache=True)
    full = module.generate(prompt, 15, greedy=True, use_cache=False)
    assert cached.shape == (2, 19)
    assert torch.equal(cached, full)
    # Past block_size the window slides; both paths still agree.
    long_cached = module.generate(prompt, 40, greedy=True, use_cache=True)
    long_full = module.generate(prompt, 40, greedy=True, use_cache=False)
    assert long_cached.shape == (2, 44) and torch.equal(long_cached, long_full)


def test_sampling_is_seeded_and_top_k_restricts():
    module = make_module()
    prompt = torch.tensor([[1, 5]])
    a = module.generate(prompt, 10, generator=torch.Generator().manual_seed(7))
    b = module.generate(prompt, 10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]])
    picks = {int(module.pick(logits, 1.0, 2, False, torch.Generator().manual_seed(s))) for s in range(50)}
    assert picks <= {1, 2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0), "temperature must be > 0, got 0.0"),
        (dict(temperature=-1.0), "temperature must be > 0, got -1.0"),
        (dict(top_k=0), "top_k must be a positive integer"),
    ],
)
def test_bad_sampling_options(kwargs, message):
    module = make_module()
    with pytest.raises(ValueError, match=message):
        module.generate(torch.tensor([[1]]), 3, **kwargs)


def test_negative_max_new_tokens():
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0, got -2"):
        make_module().generate(torch.tensor([[1]]), -2)


def test_unknown_prompt_words_become_unk():
    module = make_module()
    ids = module.prompt_ids("w1 zebra w2?")
    tok = module.tokenizer
    assert ids == [tok.bos_id, tok.stoi["w1"], tok.unk_id, tok.stoi["w2"], tok.stoi["?"] if "?" in tok.stoi else tok.unk_id]
    assert isinstance(module.complete(["zebra zebra"], max_new_tokens=3)[0], str)


def test_diagnostics_report_every_block():
    model = SuccuLM(tiny_cfg()).eval()
    ids = torch.randint(0, 23, (2, 7))
    stats = model.diagnostics(ids, torch.ones(2, 7, dtype=torch.bool))
    assert len(stats["attention"]) == 2 and stats["attention"][0].shape == (2, 2, 7, 7)
    torch.testing.assert_close(stats["attention"][0].sum(-1), torch.ones(2, 2, 7))
    assert -1.0 <= float(stats["block1/ffn_cos"]) <= 1.0
    assert float(stats["block0/resid_norm"]) > 0
    assert not model.blocks[0].record  # recording is switched off again


def test_embeddings_of_wrong_width_are_refused():
    model = SuccuLM(tiny_cfg())
    with pytest.raises(ValueError, match=r"width \[5\] but the model's n_embd is 12"):
        model.load_embeddings({"a": [0.0] * 5}, ["a"])
    assert model.load_embeddings({"b": [1.0] * 12}, ["a", "b"]) == 1
    assert torch.equal(model.embed.weight[1], torch.ones(12))


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_param_groups_split_matrices_and_vectors():
    module = make_module()
    decay, no_decay = module.param_groups()
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.parameters()))


STAGES = [str(__import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / name)
          for name in ("succulm_stage1.yaml", "succulm_stage2.yaml")]
QUICK = ["--model.init_args.model.profile", "tiny", "--model.init_args.model.n_embd", "8",
         "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.logger",
         "false", "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1",
         "--trainer.callbacks", "[]"]


def test_prepared_embeddings_two_stages(tmp_path, capsys):
    """Stage 1 (sophia a character) writes {word: vector}; stage 2 (sophia hidden) starts from
    exactly those rows, every word of its vocabulary, and refuses a file lacking one."""
    import json

    from succu import fit

    emb = tmp_path / "succulm_embeddings.json"
    one = fit.main(["--config", STAGES[0], *QUICK, "--trainer.default_root_dir",
                    str(tmp_path / "one"), "--model.init_args.save_embeddings", str(emb)])
    assert one.datamodule.world == "with_sophia"
    vectors = json.loads(emb.read_text())
    assert list(vectors) == one.model.tokenizer.vocab and "sophia" in vectors
    torch.testing.assert_close(torch.tensor(list(vectors.values())), one.model.model.embed.weight,
                               rtol=0, atol=0)
    two = fit.main(["--config", STAGES[1], *QUICK, "--trainer.default_root_dir",
                    str(tmp_path / "two"), "--model.init_args.init_embeddings", str(emb),
                    "--model.init_args.optimizer.init_args.lr", "0.0"])
    assert two.datamodule.world == "standard" and two.model.tokenizer == one.model.tokenizer
    assert two.model.model.embed.weight.requires_grad  # not frozen
    torch.testing.assert_close(two.model.model.embed.weight, one.model.model.embed.weight,
                               rtol=0, atol=0)
    del vectors["sophia"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(vectors))
    with pytest.raises(SystemExit):
        fit.main(["--config", STAGES[1], *QUICK, "--trainer.default_root_dir",
                  str(tmp_path / "three"), "--model.init_args.init_embeddings", str(partial)])
    assert "no vector for 1 vocabulary words" in capsys.readouterr().err


def test_frozen_words_keep_their_loaded_rows(tmp_path, capsys):
    """Stage 2 with sophia frozen: her row ends the fit bitwise as loaded, through gradient and
    weight decay (lr > 0), while every other row moves; an unknown word is one line naming it."""
    from succu import fit

    emb = tmp_path / "succulm_embeddings.json"
    one = fit.main(["--config", STAGES[0], *QUICK, "--trainer.default_root_dir",
                    str(tmp_path / "one"), "--model.init_args.save_embeddings", str(emb)])
    loaded = one.model.model.embed.weight.detach().clone()
    two = fit.main(["--config", STAGES[1], *QUICK, "--trainer.default_root_dir", str(tmp_path / "two"),
                    "--model.init_args.init_embeddings", str(emb), "--model.init_args.frozen_words",
                    '["sophia"]', "--model.init_args.optimizer.init_args.weight_decay", "0.5"])
    sophia = two.model.tokenizer.vocab.index("sophia")
    after = two.model.model.embed.weight.detach()
    assert torch.equal(after[sophia], loaded[sophia])
    moved = (after != loaded).any(-1)
    assert moved.sum() == len(after) - 1 and not moved[sophia]
    with pytest.raises(SystemExit):
        fit.main(["--config", STAGES[1], *QUICK, "--trainer.default_root_dir", str(tmp_path / "three"),
                  "--model.init_args.init_embeddings", str(emb), "--model.init_args.frozen_words",
                  '["sofia"]'])
    assert "frozen_words ['sofia'] are not in the vocabulary" in capsys.readouterr().err
