"""A succu checkpoint as a plain-torch network and its tokenizer, loaded without Lightning.

Generating, scoring, serving and exporting need the network, its tokenizer and decoding
(`succu.decoding.Decoding`), and the checkpoint is already plain data. So the commands that only
use a trained model (`succu.generate`, `succu.evaluate`, `succu.serve`, `succu.export`) load it
here, as an `InferenceLM`: neither Lightning nor the CLI machinery nor W&B is imported, and a
command is ready soon after torch is. Training and resuming load the LightningModule
(`succu.checkpoint.load_module`) from the same file.

A checkpoint names the LightningModule class that trained it. `NETWORKS` maps each of succu's to
the network and Config that class builds and to how it decodes: the file picks a key, never what
is imported (the same allow-list as `succu.checkpoint.MODULES`; `tests/test_inference.py` holds
the two equal). Loading runs the same checks as the Lightning side, in the same order: settings
finite, the network built without memory and compared with the state dict (`check_sizes`), then
built for real with its tokenizer and TT layers, and its state dict loaded (`restored`).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from succu.checkpoint_files import (
    CHECKPOINT_KEY,
    CheckpointError,
    plain_arguments,
    read_checkpoint,
    restore_layers,
    saved_tokenizer,
    succu_record,
)
from succu.checkpoint_sizes import check_finite_settings, check_sizes
from succu.decoding import STOP_TOL, Decoding, KeyRuleDecoding, SnapGreedy
from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.models.gpt import GPT, GPTConfig
from succu.models.hypersurface import HypersurfaceConfig, HypersurfaceLM
from succu.models.ngram import KneserNeyLM, NgramConfig
from succu.models.noise_lm import NoiseLM, NoiseLMConfig
from succu.models.noise_transformer import NoiseTransformerConfig, NoiseTransformerLM
from succu.models.succulm import SuccuLM, SuccuLMConfig
from succu.tokenizers import Tokenizer

M = TypeVar("M", bound=nn.Module)


class InferenceLM(Decoding, nn.Module):
    """A checkpoint's network (`model`, built from `model_config`), tokenizer and recorded init
    arguments (`hparams`, plain data), for decoding and scoring: called, it is the network's
    forward. `module_path` names the LightningModule class that trained it; a checkpoint written
    from here (`checkpoint`) names it again."""

    def __init__(self, model_config: Any, model: nn.Module, tokenizer: Tokenizer | None,
                 hparams: dict[str, Any], module_path: str):
        super().__init__()
        self.model_config = model_config
        self.model = model
        self.tokenizer = tokenizer
        self.hparams = hparams
        self.module_path = module_path

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model(input_ids, **kwargs)

    @property
    def device(self) -> torch.device:
        """Where the weights are (the CPU for a model that holds no tensor)."""
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if first is None else first.device

    def checkpoint(self) -> dict[str, Any]:
        """What a checkpoint of this model holds for loading it again: the state dict, the init
        arguments as plain data (the network's config whole), the tokenizer and TT structure."""
        state = self.state_dict()
        hparams = {**self.hparams, "model": dataclasses.asdict(self.model_config)}
        return {"state_dict": state, "hyper_parameters": hparams,
                CHECKPOINT_KEY: succu_record(self.module_path, self, self.tokenizer, state)}


class KeyRuleLM(KeyRuleDecoding, InferenceLM):
    """A noise-embedding LM's checkpoint: its stop rule's settings are the ones it records."""

    def __init__(self, model_config: Any, model: nn.Module, tokenizer: Tokenizer | None,
                 hparams: dict[str, Any], module_path: str):
        super().__init__(model_config, model, tokenizer, hparams, module_path)
        self.stop_tol = float(hparams.get("stop_tol", STOP_TOL))
        self.stop_weight = hparams.get("stop_weight")


class SnapKeyRuleLM(SnapGreedy, KeyRuleLM):
    """NoiseLM's checkpoint: greedy decoding is its hard snap."""


@dataclass(frozen=True)
class Network:
    """What a LightningModule class builds: the network from its Config, decoded as `decoding`."""

    config: type
    network: type[nn.Module]
    decoding: type[InferenceLM] = InferenceLM


# The LightningModule classes a checkpoint may name, by dotted name, with what each builds. A
# project with its own LanguageModule adds it here and to `succu.checkpoint.MODULES`.
NETWORKS: dict[str, Network] = {
    "succu.modules.succulm.SuccuLMModule": Network(SuccuLMConfig, SuccuLM),
    "succu.modules.gpt.GPTModule": Network(GPTConfig, GPT),
    "succu.modules.gated_gpt.GatedGPTModule": Network(GatedGPTConfig, GatedGPT),
    "succu.modules.hypersurface.HypersurfaceModule": Network(HypersurfaceConfig, HypersurfaceLM),
    "succu.modules.noise_lm.NoiseLMModule": Network(NoiseLMConfig, NoiseLM, SnapKeyRuleLM),
    "succu.modules.noise_transformer.NoiseTransformerModule": Network(
        NoiseTransformerConfig, NoiseTransformerLM, KeyRuleLM),
    "succu.modules.ngram.NgramModule": Network(NgramConfig, KneserNeyLM),
}


def short_name(module_path: str) -> str:
    return module_path.rpartition(".")[2]


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> InferenceLM:
    """The network, tokenizer and decoding of a succu checkpoint (file or safetensors folder), in
    eval mode on `map_location`; every problem with the file is one CheckpointError."""
    return model_from_checkpoint(read_checkpoint(path), path).to(map_location).eval()


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> InferenceLM:
    """The InferenceLM of a checkpoint dict `read_checkpoint` read from `path` (named in errors)."""
    target = ckpt[CHECKPOINT_KEY].get("module")
    if not isinstance(target, str) or target not in NETWORKS:
        known = ", ".join(short_name(name) for name in NETWORKS)
        raise CheckpointError(f"{path} names module class {target!r}, which is not one of succu's ({known})")
    hparams = plain_arguments(ckpt.get("hyper_parameters"))
    if not isinstance(hparams.get("model"), dict):
        raise CheckpointError(f"{path} has no model config (written before configs were objects?)")
    check_finite_settings(hparams, path)
    spec, name = NETWORKS[target], short_name(target)

    def build() -> InferenceLM:
        try:
            config = spec.config(**hparams["model"])
            network = spec.network(config)
        except (TypeError, ValueError) as err:  # torch's own messages go on with its C++ stack: cut
            first = (str(err).strip().splitlines() or [""])[0]
            raise CheckpointError(f"{path}: its hyperparameters do not build {name}: {first}") from None
        try:
            lm = spec.decoding(config, network, saved_tokenizer(ckpt), hparams, target)
            restore_layers(lm, ckpt)
        except (TypeError, ValueError, KeyError) as err:  # a tokenizer or TT structure of another shape
            raise CheckpointError(f"{path}: its tokenizer or layer structure is unusable: {err}") from None
        return lm

    return restored(build, ckpt, path, name)


def restored(build: Callable[[], M], ckpt: dict[str, Any], path: str | Path, name: str) -> M:
    """`build()` with the checkpoint's state dict loaded: first built without memory and checked
    against the state dict and the size limits (`check_sizes`), so that a module whose tensors
    differ, or that is too large, is refused before anything is allocated; then built for real."""
    check_sizes(build, ckpt, path, name)
    module = build()
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:  # the shapes were checked: what is left is a layer's own state
        detail = re.sub(r"^Error\(s\) in loading state_dict for \w+:\s*", "", " ".join(str(err).split()))
        raise CheckpointError(f"{path} does not match {name}: {detail}") from None
    return module
