"""The contracts between the parts: config objects passed whole, declared capabilities (the
layering is tests/test_layers.py)."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from succu.contracts import (
    BlockDiagnostics,
    CapabilityError,
    DialModel,
    KeyRuleStop,
    KVCacheModel,
    LatentReadout,
    QAProbes,
    require,
)
from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.models.gpt import GPT, GPTConfig
from succu.models.hypersurface import HypersurfaceLM
from succu.models.noise_lm import NoiseLM, NoiseLMConfig
from succu.models.succulm import SuccuLM
from succu.modules.base import LanguageModule
from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule
from succu.modules.hypersurface import HypersurfaceModule
from succu.modules.noise_lm import NoiseLMModule
from succu.modules.noise_transformer import NoiseTransformerModule
from succu.modules.succulm import SuccuLMModule

REPO = Path(__file__).resolve().parents[1]
MODULES = [GPTModule, GatedGPTModule, HypersurfaceModule, NoiseLMModule, NoiseTransformerModule,
           SuccuLMModule]


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_every_hyperparameter_is_declared_once(cls):
    """A module's signature (its own and its base's) names no field of its model's config."""
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    params = set(inspect.signature(cls.__init__).parameters)
    params |= set(inspect.signature(LanguageModule.__init__).parameters)
    assert "model" in params
    assert not fields & params, f"{cls.__name__} repeats config fields {sorted(fields & params)}"


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_module_takes_its_config_whole_and_stores_it_as_plain_data(cls):
    config = cls.config_class(vocab_size=11, block_size=8)
    module = cls(model=config)
    assert module.hparams["model"] == dataclasses.asdict(config)
    assert isinstance(module.model.cfg, cls.config_class)
    # The plain-data form a checkpoint stores builds the same module (Lightning's loaders use it).
    assert cls(model=dataclasses.asdict(config)).hparams["model"] == dataclasses.asdict(config)
    with pytest.raises(TypeError, match=f"takes model: {cls.config_class.__name__}, got list"):
        cls(model=[1, 2])


def test_config_field_docstrings_show_in_help():
    out = subprocess.run(
        [sys.executable, "-m", "succu.fit", "--model.help", "succu.modules.gated_gpt.GatedGPTModule"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    ).stdout
    assert "--model.model.n_layer" in out and "transformer blocks" in out
    assert "--model.model.narrowness" in out and "tent width factor" in out
    assert "--model.eval_alphas" in out and "--model.optimizer" in out


def test_capabilities_are_declared_not_guessed():
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))
    gated = GatedGPT(GatedGPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))
    noise = NoiseLM(NoiseLMConfig(vocab_size=11, block_size=8, code_dim=8))
    assert isinstance(gpt, KVCacheModel) and not isinstance(gpt, DialModel)
    assert isinstance(gated, KVCacheModel) and isinstance(gated, DialModel) and gated.n_sources == 2
    assert not isinstance(noise, KVCacheModel)
    assert not GPTModule(GPTConfig(vocab_size=11)).has_dial
    assert GatedGPTModule(GatedGPTConfig(vocab_size=11)).has_dial
    # What the probes and tools ask for (callbacks.diagnostics, generate --stop key).
    assert issubclass(SuccuLM, BlockDiagnostics) and issubclass(HypersurfaceLM, LatentReadout)
    assert not issubclass(GPT, (BlockDiagnostics, LatentReadout))
    assert issubclass(NoiseLMModule, KeyRuleStop) and issubclass(NoiseTransformerModule, KeyRuleStop)
    assert not any(issubclass(c, KeyRuleStop) for c in (GPTModule, SuccuLMModule, GatedGPTModule))


def test_a_missing_capability_is_one_line_naming_both(tmp_path):
    from datamodules.mixture import MixtureDataModule
    from datamodules.tokens import Tokens
    from succu.analysis import tt_sweep

    data = MixtureDataModule(tokens=Tokens(cache_dir=str(tmp_path)))
    with pytest.raises(CapabilityError) as err:
        require(data, QAProbes, "the TT corruption study")
    message = str(err.value)
    assert "\n" not in message
    assert message == ("the TT corruption study needs a datamodule with question-answer probes: "
                       "prompts to talk to and scored QA pairs; MixtureDataModule has none")
    with pytest.raises(CapabilityError, match="MixtureDataModule has none"):
        tt_sweep.make_probe(data, None)
