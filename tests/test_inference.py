"""Checkpoints loaded without Lightning (`succu.inference`) equal the LightningModule they were
saved from: the same allow-list, weights, logits, sampled and greedy text, and stop rule; and
the commands that only use a model (generate, evaluate --text, export, serve) import no
Lightning, CLI machinery or W&B.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from succu.checkpoint import MODULES, class_path, load_module
from succu.checkpoint_files import CHECKPOINT_KEY, read_checkpoint, state_sha256
from succu.decoding import KeyRuleDecoding, SnapGreedy
from succu.inference import NETWORKS, InferenceLM, load_model
from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule
from succu.modules.hypersurface import HypersurfaceModule
from succu.modules.ngram import NgramModule
from succu.modules.noise_lm import NoiseLMModule
from succu.modules.noise_transformer import NoiseTransformerModule
from succu.modules.succulm import SuccuLMModule
from succu.nn.tt import compress_linears
from succu.tokenizers import CharTokenizer
from tests.paths import REPO
from tests.tiny import tiny_module, write_checkpoint

TEXT = "the cat sat on the mat. a dog ran after the cat, and the cat ran up a tree!\n"
CHAR = CharTokenizer.from_texts([TEXT], specials=["<BOS>", "<EOS>"])
V = CHAR.vocab_size
GPT = dict(vocab_size=V, block_size=12, n_layer=2, n_head=2, n_embd=16)
# name: (module class, config fields and module arguments, TT layers)
CASES = {
    "gpt": (GPTModule, GPT, None),
    "gated": (GatedGPTModule, GPT, None),
    "gated-k3": (GatedGPTModule, dict(GPT, n_sources=3, eval_alphas=[[1, 0, 0], [0, 0, 1]]), None),
    "succulm": (SuccuLMModule, dict(vocab_size=V, block_size=12, profile="tiny"), None),
    "succulm-tt": (SuccuLMModule, dict(vocab_size=V, block_size=12, profile="small"),
                   {"blocks.1.ffn.0": dict(in_modes=(4, 8), out_modes=(8, 8), bond_dims=3)}),
    "hypersurface": (HypersurfaceModule, dict(GPT, variant="lowrank", rank=2), None),
    "noiselm": (NoiseLMModule, dict(vocab_size=V, block_size=12, code_dim=6, n_noise=2,
                                    stop_tol=0.05, stop_weight=3.0), None),
    "noise-transformer": (NoiseTransformerModule, dict(GPT, code_dim=6), None),
    "ngram": (NgramModule, dict(vocab_size=V, block_size=12, order=3), None),
}
DECODING_RULES = (SnapGreedy, KeyRuleDecoding)
LIGHTNING = ("lightning", "lightning_fabric", "pytorch_lightning", "wandb", "jsonargparse", "torchmetrics")


def build(name: str):
    """A tiny module of the case with weights spread wide (clear greedy winners)."""
    cls, fields, tt = CASES[name]
    torch.manual_seed(sorted(CASES).index(name))
    module = tiny_module(cls, **fields)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    if tt:
        compress_linears(module.model, tt)
    if isinstance(module, NgramModule):  # counts of the text, so the model is not uniform
        ids = torch.tensor([CHAR.encode(TEXT)])
        module.model.update(ids)  # merged when the state dict is taken
    return module.eval()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inference")
    return {name: write_checkpoint(root / f"{name}.ckpt", build(name), CHAR) for name in CASES}


def test_networks_are_the_modules_allow_list():
    """Every LightningModule a checkpoint may name loads without Lightning, into the network and
    Config that class builds, decoded by the same rules."""
    assert set(NETWORKS) == set(MODULES)
    assert {cls for cls, _, _ in CASES.values()} == set(MODULES.values())  # a case of each
    for name, (cls, fields, _) in CASES.items():
        spec = NETWORKS[class_path(cls)]
        assert spec.config is cls.config_class, name
        assert type(tiny_module(cls, **fields).model) is spec.network, name
        for rule in DECODING_RULES:
            assert issubclass(cls, rule) == issubclass(spec.decoding, rule), (name, rule.__name__)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_loaded_model_equals_its_module(ckpts, name):
    """Same weights, same logits, the same text sampled with a seed and decoded greedily."""
    module, lm = load_module(ckpts[name]), load_model(ckpts[name])
    assert isinstance(lm, InferenceLM) and not lm.training
    assert lm.state_dict().keys() == module.state_dict().keys()
    assert state_sha256(lm.state_dict()) == state_sha256(module.state_dict())  # every entry's bytes
    assert lm.tokenizer == module.tokenizer == CHAR
    ids = torch.tensor([lm.prompt_ids("the cat ")])
    kwargs = lm.dial_kwargs({})
    assert kwargs == module.dial_kwargs({})
    if name == "gated":
        assert kwargs == {"alpha": 0.5}
    with torch.no_grad():
        assert torch.equal(lm.model(ids, **kwargs), module.model(ids, **kwargs))
    for settings in (dict(greedy=True), dict(temperature=0.9, top_k=5), dict(top_p=0.8)):
        texts = [m.complete(["the cat ", "a dog"], max_new_tokens=20,
                            generator=torch.Generator().manual_seed(7), **settings)
                 for m in (lm, module)]
        assert texts[0] == texts[1], settings
    streamed = "".join(lm.stream("the cat ", max_new_tokens=20, generator=torch.Generator().manual_seed(3)))
    assert streamed == module.complete(["the cat "], max_new_tokens=20, generator=torch.Generator().manual_seed(3))[0]


def test_the_stop_rule_and_its_settings_come_from_the_checkpoint(ckpts):
    """A noise LM's key rule reads the tolerance and weight its checkpoint records and answers
    exactly as the module does; NoiseLM decodes greedily by its snap, the transformer variant by
    the argmax of its mixture (`SnapGreedy` on one only)."""
    for name in ("noiselm", "noise-transformer"):
        module, lm = load_module(ckpts[name]), load_model(ckpts[name])
        assert isinstance(lm, KeyRuleDecoding)
        assert (lm.stop_tol, lm.stop_weight) == (module.stop_tol, module.stop_weight)
        assert isinstance(lm, SnapGreedy) == (name == "noiselm")
        prompt = lm.prompt_ids("the cat")
        for search in ("beam", "alphabeta"):
            got, want = lm.key_search(prompt, 6, 2, search), module.key_search(prompt, 6, 2, search)
            assert (got[0].tokens, got[1]) == (want[0].tokens, want[1]), (name, search)
    noise = load_model(ckpts["noiselm"])
    assert (noise.stop_tol, noise.stop_weight) == (0.05, 3.0)
    ids = torch.tensor([noise.prompt_ids("the cat")])
    with torch.no_grad():
        snapped = noise.model.snap_decode(ids)
    assert torch.equal(noise.generate(ids, 1, greedy=True)[:, -1], snapped)


def test_a_tt_layout_is_rebuilt_before_the_weights(ckpts):
    from succu.nn.tt import TTLinear

    lm = load_model(ckpts["succulm-tt"])
    assert isinstance(lm.model.get_submodule("blocks.1.ffn.0"), TTLinear)
    assert read_checkpoint(ckpts["succulm-tt"])[CHECKPOINT_KEY]["tt_layers"] == lm.checkpoint()[CHECKPOINT_KEY]["tt_layers"]


def test_a_loaded_models_checkpoint_is_the_one_it_was_read_from(ckpts):
    """`InferenceLM.checkpoint` (what `export --format succu` writes) records the same module
    class, tokenizer, weights and their checksum, and a config that builds the same network."""
    for name in ("gated-k3", "noiselm", "succulm-tt"):
        original = read_checkpoint(ckpts[name])
        again = load_model(ckpts[name]).checkpoint()
        for key in ("module", "tokenizer", "sha256"):
            assert again[CHECKPOINT_KEY][key] == original[CHECKPOINT_KEY][key], (name, key)
        assert again["hyper_parameters"]["model"] == original["hyper_parameters"]["model"]


def test_the_commands_that_use_a_model_import_no_lightning(ckpts, tmp_path):
    """generate, evaluate --text, both exports and the served page's stream run on a checkpoint
    in a fresh interpreter that ends with no Lightning, W&B, jsonargparse or torchmetrics loaded."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 3)
    script = f"""
import sys, threading
from succu import evaluate, export, generate
from succu.serve.streams import PanesStream, Served
ckpt = {ckpts["gated"]!r}
generate.main(["--ckpt", {ckpts["gpt"]!r}, "--prompt", "the", "--max_new_tokens", "5"])
generate.main(["--ckpt", ckpt, "--prompt", "the", "--max_new_tokens", "5"])
# The size check neither draws nn.init's values on the meta device nor computes GatedGPT's
# specialties there: torch's meta kernels would import its compiler stack (about a second).
assert "torch._dynamo" not in sys.modules and "sympy" not in sys.modules
generate.main(["--ckpt", {ckpts["noiselm"]!r}, "--prompt", "the", "--stop", "key", "--max_new_tokens", "4"])
evaluate.main(["--ckpt", ckpt, "--text", {str(text)!r}])
export.main(["--ckpt", ckpt, {str(tmp_path / "hf")!r}, "--alpha", "0.5"])
export.main(["--ckpt", ckpt, {str(tmp_path / "st")!r}, "--format", "succu"])
served = Served.load(ckpt)
served.claim()
events = []
worker = PanesStream(served, served.parse_panes({{"prompt": "the", "alpha": "0;1", "max_new_tokens": "5"}}),
                     lambda event, data: events.append(event)).start()
worker.thread.join(60)
assert events.count("done") == 2 and "error" not in events, events
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({LIGHTNING!r}))
print("LOADED", loaded)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout[-500:]
