"""`python -m succu.export`: GPT-2 folders transformers loads, the safetensors form, torch.export.

Models here are tiny and random, their weights spread wide (N(0, 0.2)) so that greedy decoding has
clear winners; checkpoints are written as `python -m succu.fit` writes them. The transformers side
needs the export-test extra and skips, saying so, without it; the rest needs only safetensors.
"""

from __future__ import annotations

import ast
import json
import random
import sys
from pathlib import Path

import pytest
import torch

from succu import export, generate
from succu.checkpoint import load_module
from succu.checkpoint_files import CheckpointError
from succu.models.gated_gpt import AtPosition
from succu.modules.base import LanguageModule
from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule
from succu.modules.hypersurface import HypersurfaceModule
from succu.modules.ngram import NgramModule
from succu.modules.noise_lm import NoiseLMModule
from succu.modules.noise_transformer import NoiseTransformerModule
from succu.modules.succulm import SuccuLMModule
from succu.nn.tt import compress_linears
from succu.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer, normalize_text, split_words
from tests.tiny import tiny_module, write_checkpoint

RULES = ["fold_ascii", "abc_style"]  # the abcGPT corpora's surface rules
TEXT = ("Once upon a time, the King said: \u201cHello!\u201d \u2014 and the Queen smiled\u2026\n"
        "  ROMEO. What light through yonder window breaks?  \n\tA dog; a cat.\n")
CHAR = CharTokenizer.from_texts([normalize_text(TEXT, RULES)], specials=["<EOS>"], normalizers=RULES)
WORDS = WordTokenizer.from_words(split_words("is ruby a boy? ruby is a girl. the cat is red, not blue!"))
SPREAD = 0.2  # clear greedy winners, and float rounding still well inside the 1e-5 tolerance
BLOCK = 80  # prompt and 50 new tokens fit: a GPT-2 cannot look past its position table
NEW_TOKENS = 50
GPT_SIZES = dict(block_size=BLOCK, n_layer=2, n_head=2, n_embd=32)
K3 = "0.2,0.3,0.5"

# name: (module class, tokenizer, config fields, --alpha, TT layers)
CASES = {
    "gpt": (GPTModule, CHAR, dict(GPT_SIZES, bias=True), None, None),
    "gated-0": (GatedGPTModule, CHAR, GPT_SIZES, "0", None),
    "gated-0.3": (GatedGPTModule, CHAR, GPT_SIZES, "0.3", None),
    "gated-1": (GatedGPTModule, CHAR, GPT_SIZES, "1", None),
    "gated-k3": (GatedGPTModule, CHAR, dict(GPT_SIZES, n_sources=3, eval_alphas=[[1, 0, 0], [0, 0, 1]]),
                 K3, None),
    "control-0": (GatedGPTModule, CHAR, dict(GPT_SIZES, dial="control_code"), "0", None),
    "control-1": (GatedGPTModule, CHAR, dict(GPT_SIZES, dial="control_code"), "1", None),
    "succulm": (SuccuLMModule, WORDS, dict(block_size=BLOCK, profile="small"), None, None),
    "succulm-tt": (SuccuLMModule, WORDS, dict(block_size=BLOCK, profile="small"), None,
                   {"blocks.1.ffn.0": dict(in_modes=(4, 8), out_modes=(8, 8), bond_dims=3)}),
}
PROMPTS = {CHAR.kind: "The King said \u201cHELLO\u201d", WORDS.kind: "Is Ruby a boy?"}


def spread(module: LanguageModule, seed: int, tok=None) -> LanguageModule:
    """Weights ~ N(0, SPREAD), gains ~ 1 + N(0, 0.1), biases ~ N(0, 0.1): far from the small init.
    The specials' rows of the (tied) token table are zero: their logit is exactly 0, below the
    best of the others, so greedy decoding never stops early and all 50 tokens are compared."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() >= 2:
                p.copy_(SPREAD * noise)
            else:
                gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln1.weight", "ln2.weight", "ln_f.weight"))
                p.copy_(float(gain) + 0.1 * noise)
        if tok is not None:
            table = module.model.embed if isinstance(module, SuccuLMModule) else module.model.transformer.wte
            table.weight[tok.special_ids] = 0.0
    return module.eval()


def build(name: str) -> LanguageModule:
    cls, tok, config, _, tt = CASES[name]
    module = tiny_module(cls, vocab_size=tok.vocab_size, **config)
    spread(module, seed=sorted(CASES).index(name), tok=tok)
    if tt:
        compress_linears(module.model, tt)
    return module


def dial(alpha: str | None) -> dict:
    """The forward's keyword for an --alpha as typed."""
    if alpha is None:
        return {}
    values = tuple(float(a) for a in alpha.split(","))
    return {"alpha": values[0] if len(values) == 1 else values}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("export")
    return {name: write_checkpoint(root / f"{name}.ckpt", build(name), CASES[name][1]) for name in CASES}


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip(
        "transformers", reason='the export-test extra is not installed: pip install -e ".[export-test]"')


@pytest.fixture(scope="module")
def safetensors():
    return pytest.importorskip("safetensors", reason='the export extra is not installed: pip install -e ".[export]"')


@pytest.fixture(scope="module")
def exported(ckpts, transformers, tmp_path_factory) -> dict[str, tuple]:
    """name -> (succu module, transformers model, transformers tokenizer) of every case."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, ckpt in ckpts.items():
        alpha = CASES[name][3]
        export.main(["--ckpt", ckpt, str(root / name), *(["--alpha", alpha] if alpha else [])])
        model = transformers.AutoModelForCausalLM.from_pretrained(root / name).eval()
        tok = transformers.AutoTokenizer.from_pretrained(root / name)
        out[name] = (load_module(ckpt), model, tok)
    return out


# ---- the GPT-2 folder ------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_transformers_gives_the_same_logits(exported, name):
    module, model, _ = exported[name]
    assert type(model).__name__ == "GPT2LMHeadModel"
    ids = torch.randint(0, module.tokenizer.vocab_size, (3, BLOCK), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = module.model(ids, **dial(CASES[name][3])), model(ids).logits
    assert (ours - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("name", CASES)
def test_greedy_generation_is_the_same(exported, name):
    module, model, tok = exported[name]
    prompt = PROMPTS[module.tokenizer.kind]
    ids = torch.tensor([module.prompt_ids(prompt)])
    inputs = tok(prompt, return_tensors="pt")
    assert sorted(inputs) == ["attention_mask", "input_ids"] and inputs["input_ids"].tolist() == ids.tolist()
    # EOS and padding as the folder sets them (generation_config.json), EOS as succu stops at it.
    ours = module.generate(ids, NEW_TOKENS, greedy=True, eos_id=module.tokenizer.eos_id,
                           **dial(CASES[name][3]))
    theirs = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, repetition_penalty=1.0)
    assert ours.shape[1] == ids.shape[1] + NEW_TOKENS  # see `spread`: no early EOS
    assert theirs.tolist() == ours.tolist()


def test_the_folder_holds_what_transformers_reads(exported, ckpts, tmp_path):
    _, model, tok = exported["succulm"]
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.transformer.wte.weight
    assert model.config.activation_function == "relu" and model.config.n_positions == BLOCK
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<BOS>", "<EOS>", "<PAD>", "<UNK>")
    assert model.generation_config.eos_token_id == WORDS.eos_id
    assert model.generation_config.pad_token_id == WORDS.pad_id
    _, model, tok = exported["gated-0"]
    assert model.config.activation_function == "gelu"  # exact GELU, as nn.GELU()
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<EOS>", "<EOS>", None)
    export.main(["--ckpt", ckpts["gpt"], str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]


def test_the_tokenizer_keeps_the_surface_rules(exported):
    """Curly quotes, dashes and the ellipsis folded; abc_style's lowercase and spacing."""
    _, _, tok = exported["gpt"]
    for text in ["He said \u201cHello\u201d \u2014 and\u2026", "THE KING.  said,hello!\n  A ; cat",
                 "\tROMEO:  What?\n\n  light", TEXT]:
        ids = tok(text)["input_ids"]
        assert ids == CHAR.encode(text), text
        assert tok.decode(ids) == CHAR.decode(CHAR.encode(text))
    with pytest.raises(Exception, match="Missing \\[UNK\\] token"):  # no id for it, as in succu
        tok("\u00e9")
    _, _, tok = exported["succulm"]
    text = "Is RUBY a boy? Ruby is a zebra, not a girl!"
    assert tok(text)["input_ids"] == [WORDS.bos_id, *WORDS.encode(text)]  # prompt_ids: <BOS> first
    assert tok(text, add_special_tokens=False)["input_ids"] == WORDS.encode(text)
    assert tok.decode(WORDS.encode(text)) == WORDS.decode(WORDS.encode(text))


def test_a_byte_level_bpe_keeps_its_merges_and_rules(transformers, tmp_path):
    bpe = BPETokenizer.train([normalize_text(TEXT, RULES)] * 3, 300, ["<EOS>"], RULES)
    module = spread(tiny_module(GPTModule, vocab_size=bpe.vocab_size, **GPT_SIZES), seed=5)
    export.main(["--ckpt", write_checkpoint(tmp_path / "bpe.ckpt", module, bpe), str(tmp_path / "out")])
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    for text in ["The King said \u201cHELLO\u201d\u2026", "caf\u00e9 \u2014 na\u00efve  \tROMEO!"]:
        assert tok(text)["input_ids"] == bpe.encode(text)


def test_hf_tokenizers_encode_like_succus_own():
    """`to_hf` against succu's encode on random text over the characters the rules treat specially
    (curly quotes, dashes, Greek capital sigma, every kind of Python whitespace); the tokenizers
    library only, no transformers."""
    rng = random.Random(0)
    alphabet = [*"abXY .,!?;:'\"\t\n\r-", "\u201c", "\u201d", "\u2019", "\u2014", "\u2026", "\u03a3",
                "\u0391", "\u0301", "\x1c", "\x85", "\u3000", "\u00a0", "\u0130", "\u00c9"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(400)]
    for rules in ([], ["fold_ascii"], RULES):
        char = CharTokenizer.from_texts([normalize_text(t, rules) for t in texts], normalizers=rules)
        bpe = BPETokenizer.train([normalize_text(t, rules) for t in texts], 280, normalizers=rules)
        for tok in (char, bpe):
            hf = tok.to_hf()
            assert [hf.encode(t).ids for t in texts] == [tok.encode(t) for t in texts], (tok.kind, rules)
    words = WordTokenizer.from_words(w for t in texts[:200] for w in split_words(t))
    hf = words.to_hf()
    assert [hf.encode(t).ids for t in texts] == [words.encode(t) for t in texts]
    assert ([hf.decode(words.encode(t), skip_special_tokens=False) for t in texts]
            == [words.decode(words.encode(t)) for t in texts])


def test_succu_itself_never_imports_transformers():
    """The core install has no transformers: succu writes the folder without it, and imports
    safetensors only inside the functions that need it (the export extra)."""
    for path in Path(export.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        everywhere = {(a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
                      for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        top = {(a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
               for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        assert "transformers" not in everywhere and "safetensors" not in top, path


# ---- refusals ----------------------------------------------------------------------------------
def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        export.main(argv)
    assert exc.value.code == 2
    return error_line(capsys.readouterr().err)


@pytest.mark.parametrize(("name", "alpha", "message"), [
    ("gated-0", None, "error: GatedGPT has a dial over 2 sources: --format hf exports one position "
                      "of it, give --alpha (a number in [0, 1], e.g. 0.5)"),
    ("gated-k3", None, "give --alpha (3 shares summing to 1, e.g. 1,0,0)"),
    ("gated-0", "1.5", "error: alpha must be in [0, 1], got 1.5"),
    ("gated-k3", "0.2,0.3,0.6", "error: alpha must be 3 non-negative shares summing to 1 (within "
                                "1e-06), got 0.2,0.3,0.6 (sum 1.1)"),
    ("gated-k3", "0.5", "error: alpha 0.5 is one number, but this dial spans 3 sources"),
    ("control-0", "0.5,0.5,0", "error: alpha 0.5,0.5,0 has 3 shares, but this dial spans 2 sources"),
    ("gpt", "0.5", "--alpha needs a gated model"),
])
def test_a_dial_position_is_required_and_checked(ckpts, tmp_path, capsys, name, alpha, message):
    line = refused(["--ckpt", ckpts[name], str(tmp_path / "out"), *(["--alpha", alpha] if alpha else [])],
                   capsys)
    assert line.startswith(message) or message in line
    assert not (tmp_path / "out").exists()  # nothing is written before the input is accepted


@pytest.mark.parametrize(("cls", "config", "reason"), [
    (NoiseLMModule, dict(code_dim=8), "NoiseLM cannot be written as a GPT-2: it has no transformer"),
    (NgramModule, dict(order=3), "KneserNeyLM cannot be written as a GPT-2: an n-gram model's"),
    (HypersurfaceModule, dict(n_layer=1, n_head=2, n_embd=16, n_hyper_layer=1),
     "HypersurfaceLM cannot be written as a GPT-2: a hypernetwork transforms the token latents"),
    (NoiseTransformerModule, dict(n_layer=1, n_head=2, n_embd=16, code_dim=8),
     "NoiseTransformerLM cannot be written as a GPT-2: its next token comes from a hidden Markov"),
])
def test_other_models_are_refused_saying_why(tmp_path, capsys, cls, config, reason):
    ckpt = write_checkpoint(tmp_path / "m.ckpt", tiny_module(cls, vocab_size=CHAR.vocab_size, block_size=16,
                                                       **config), CHAR)
    line = refused(["--ckpt", ckpt, str(tmp_path / "out")], capsys)
    assert line.startswith(f"error: {reason}") and line.endswith("(--format succu writes any model)")


def test_an_unwritable_out_is_one_line(ckpts, safetensors, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = refused(["--ckpt", ckpts["gpt"], str(blocker)], capsys)
    assert line == f"error: OUT {blocker}: exists and is not a folder"
    line = refused(["--ckpt", ckpts["gpt"], str(blocker / "out")], capsys)
    assert line.startswith(f"error: OUT {blocker / 'out'}: not a writable folder")


def test_bad_flags_are_one_line(ckpts, tmp_path, capsys):
    assert "--alpha is for --format hf" in refused(
        ["--ckpt", ckpts["gated-0"], str(tmp_path), "--format", "succu", "--alpha", "0"], capsys)
    assert "invalid choice: 'onnx'" in refused(["--ckpt", ckpts["gpt"], str(tmp_path), "--format", "onnx"], capsys)
    assert "checkpoint not found" in refused(["--ckpt", str(tmp_path / "nope.ckpt"), str(tmp_path)], capsys)


def test_one_format_is_not_written_over_the_other(ckpts, safetensors, tmp_path, capsys):
    export.main(["--ckpt", ckpts["gpt"], str(tmp_path / "hf")])
    assert refused(["--ckpt", ckpts["gpt"], str(tmp_path / "hf"), "--format", "succu"], capsys) == (
        f"error: OUT {tmp_path / 'hf'} holds a --format hf export (config.json); write --format "
        "succu into another folder")


def test_a_missing_extra_is_one_line_naming_the_install(ckpts, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # `import safetensors` now fails
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    line = refused(["--ckpt", ckpts["gpt"], str(tmp_path)], capsys)
    assert line == ('error: the safetensors form needs the export extra (safetensors is not '
                    'installed): pip install -e ".[export]"')


# ---- the safetensors form ------------------------------------------------------------------------
def every_model(tmp_path: Path) -> dict[str, tuple[str, dict]]:
    """A checkpoint of each architecture (and the input its forward takes)."""
    v = CHAR.vocab_size
    ngram = tiny_module(NgramModule, vocab_size=v, block_size=16, order=3)
    ngram.model.update(torch.randint(0, v, (4, 16), generator=torch.Generator().manual_seed(0)))
    modules = {
        "gated-k3": (build("gated-k3"), {"alpha": (0.2, 0.3, 0.5)}),
        "succulm-tt": (build("succulm-tt"), {}),
        "hypersurface": (tiny_module(HypersurfaceModule, vocab_size=v, block_size=16, n_layer=1,
                                     n_head=2, n_embd=16, n_hyper_layer=1), {}),
        "noise_lm": (tiny_module(NoiseLMModule, vocab_size=v, block_size=16, code_dim=8), {}),
        "noise_transformer": (tiny_module(NoiseTransformerModule, vocab_size=v, block_size=16,
                                          n_layer=1, n_head=2, n_embd=16, code_dim=8), {}),
        "ngram": (ngram, {}),
    }
    return {name: (write_checkpoint(tmp_path / f"{name}.ckpt", m.eval(), WORDS if "succulm" in name else CHAR,
                              corpora=["tinystories", "shakespeare", "kjv"]), kw)
            for name, (m, kw) in modules.items()}


def test_the_safetensors_form_loads_back_identical(safetensors, tmp_path):
    for name, (ckpt, kw) in every_model(tmp_path).items():
        folder = tmp_path / f"{name}-folder"
        export.main(["--ckpt", ckpt, str(folder), "--format", "succu"])
        assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "succu.json"]
        original, loaded = load_module(ckpt), load_module(folder)
        assert loaded.tokenizer == original.tokenizer and type(loaded) is type(original)
        ids = torch.randint(0, original.tokenizer.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(loaded(ids, **kw), original(ids, **kw)), name
        meta = json.loads((folder / "succu.json").read_text())
        assert meta["datamodule_hyper_parameters"] == {"corpora": ["tinystories", "shakespeare", "kjv"]}
    assert json.loads((tmp_path / "succulm-tt-folder" / "succu.json").read_text())["succu"]["tt_layers"]


def test_tools_take_the_folder_and_check_it(ckpts, safetensors, tmp_path, capsys):
    folder = tmp_path / "gpt"
    export.main(["--ckpt", ckpts["gpt"], str(folder), "--format", "succu"])
    args = ["--prompt", "the king", "--max_new_tokens", "5", "--greedy"]
    assert generate.main(["--ckpt", str(folder), *args]) == generate.main(["--ckpt", ckpts["gpt"], *args])
    meta = json.loads((folder / "succu.json").read_text())
    assert meta["tied"] == {"model.lm_head.weight": "model.transformer.wte.weight"}
    capsys.readouterr()

    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one bit pattern changed in the last tensor
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(SystemExit):
        generate.main(["--ckpt", str(folder), *args])
    assert "its SHA-256 is not the one succu.json records" in error_line(capsys.readouterr().err)

    export.main(["--ckpt", ckpts["gpt"], str(folder), "--format", "succu"])
    meta["succu"]["module"] = "os.system"
    (folder / "succu.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="names module class 'os.system', which is not one of succu's"):
        load_module(folder)
    with pytest.raises(CheckpointError, match="is a folder without succu.json"):
        load_module(tmp_path)


# ---- torch.export --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gated-0.3", "gated-k3", "control-1"])
def test_a_fixed_position_exports_with_torch_export(name):
    model = build(name).model
    alpha = dial(CASES[name][3])["alpha"]
    ids = torch.randint(0, CHAR.vocab_size, (3, BLOCK), generator=torch.Generator().manual_seed(2))
    batch = torch.export.Dim("batch")
    program = torch.export.export(AtPosition(model, alpha), (ids[:2],),
                                  dynamic_shapes={"input_ids": {0: batch}})
    with torch.no_grad():  # another batch size than the example's
        assert torch.allclose(program.module()(ids), model(ids, alpha=alpha), rtol=0, atol=1e-6)


def test_a_position_off_the_dial_is_refused_before_tracing():
    with pytest.raises(ValueError, match="alpha must be 3 non-negative shares summing to 1"):
        AtPosition(build("gated-k3").model, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        AtPosition(build("gated-0").model, 1.5)
