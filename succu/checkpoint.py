"""Loading any succu checkpoint back into its LightningModule and its data.

A checkpoint (a file, or its safetensors folder: `succu.checkpoint_files`) names its module class,
which is looked up in succu's own allow-list (`MODULES`), never imported by name; its datamodule
class likewise (`DATAMODULES`). The hyperparameters it records build the module (arguments the
class no longer takes are dropped) once their sizes have been checked against the state dict
without allocating (`succu.checkpoint_sizes`); the data settings rebuild the datamodule, without
the locations it records. What it records of its text is a fingerprint per corpus (name, size,
sha256; no path): a tool about to score a corpus checks the text it found against it
(`check_corpus_text`) and refuses another. The commands that only use a trained model load the
network without Lightning instead (`succu.inference`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from succu.checkpoint_files import (
    CHECKPOINT_KEY,
    CheckpointError,
    is_location,
    plain_arguments,
    read_checkpoint,
)
from succu.checkpoint_sizes import check_data_settings, check_finite_settings
from succu.contracts import CorpusText, TextFingerprints
from succu.decoding import Decoding
from succu.inference import restored
from succu.modules.base import LanguageModule
from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule
from succu.modules.hypersurface import HypersurfaceModule
from succu.modules.ngram import NgramModule
from succu.modules.noise_lm import NoiseLMModule
from succu.modules.noise_transformer import NoiseTransformerModule
from succu.modules.succulm import SuccuLMModule


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# The only module classes a checkpoint may name: the file picks a key, never what is imported.
# A project with its own LanguageModule adds it here (MODULES[class_path(cls)] = cls) and to
# `succu.inference.NETWORKS`, which loads the same checkpoints without Lightning.
MODULES: dict[str, type[LanguageModule]] = {
    class_path(cls): cls
    for cls in (
        SuccuLMModule, GPTModule, GatedGPTModule, HypersurfaceModule, NoiseLMModule,
        NoiseTransformerModule, NgramModule,
    )
}

# The only datamodule classes a checkpoint may name. Imported by name, lazily and only from this
# list: succu's core does not import the `datamodules` package (tests/test_contracts.py).
DATAMODULES: tuple[str, ...] = (
    "datamodules.succulent.SuccuPairsDataModule",
    "datamodules.text.TextDataModule",
    "datamodules.shakespeare.ShakespeareDataModule",
    "datamodules.tinystories.TinyStoriesDataModule",
    "datamodules.mixture.MixtureDataModule",
    "datamodules.own_text.OwnTextDataModule",
)

def module_class(path: Path, target: Any) -> type[LanguageModule]:
    if not isinstance(target, str) or target not in MODULES:
        known = ", ".join(cls.__name__ for cls in MODULES.values())
        raise CheckpointError(f"{path} names module class {target!r}, which is not one of succu's ({known})")
    return MODULES[target]


def datamodule_class(path: Path, target: Any) -> type[L.LightningDataModule]:
    """The allow-listed datamodule class `target` names; only names on `DATAMODULES` are imported."""
    if not isinstance(target, str) or target not in DATAMODULES or not target.startswith("datamodules."):
        known = ", ".join(name.rpartition(".")[2] for name in DATAMODULES)
        raise CheckpointError(f"{path} names datamodule class {target!r}, which is not one of succu's ({known})")
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{path}: cannot import the datamodule {target}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, L.LightningDataModule)):
        raise CheckpointError(f"{target} is not a LightningDataModule")
    return cls


def init_arguments(cls: type) -> set[str] | None:
    """The keyword arguments `cls(...)` takes: its own `__init__`'s and, while one passes
    `**kwargs` on, its bases'; None when the chain ends open (any name is taken)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> LanguageModule:
    """Rebuild the LightningModule of a succu checkpoint, with its weights and tokenizer, in eval mode.

    Recorded arguments the module class no longer takes (a switch that became a callback) are
    left out: they configured how a run was observed, not the weights."""
    return module_from_checkpoint(read_checkpoint(path), path).to(map_location).eval()


def module_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> LanguageModule:
    """The module of a checkpoint dict `read_checkpoint` read from `path` (named in errors): built
    as its class builds it, after the same checks as `succu.inference.model_from_checkpoint`
    (`restored`: sizes first, without memory)."""
    cls = module_class(Path(path), ckpt[CHECKPOINT_KEY].get("module"))
    hparams = plain_arguments(ckpt.get("hyper_parameters"))
    taken = init_arguments(cls)
    if taken is not None:
        hparams = {k: v for k, v in hparams.items() if k in taken}
    if not isinstance(hparams.get("model"), dict):
        raise CheckpointError(f"{path} has no model config (written before configs were objects?)")
    check_finite_settings(hparams, path)
    return restored(lambda: built(cls, hparams, ckpt, path), ckpt, path, cls.__name__)


def built(cls: type[LanguageModule], hparams: dict[str, Any], ckpt: dict[str, Any],
          path: str | Path) -> LanguageModule:
    """`cls(**hparams)` with the checkpoint's tokenizer and layer structure (no weights yet);
    settings the class refuses are one CheckpointError naming the file and the class's message."""
    try:
        module = cls(**hparams)
    except (TypeError, ValueError) as err:  # torch's own messages go on with its C++ stack: cut
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: its hyperparameters do not build {cls.__name__}: {first}") from None
    try:
        module.on_load_checkpoint(ckpt)
    except (TypeError, ValueError, KeyError) as err:  # tokenizer state or TT structure of another shape
        raise CheckpointError(f"{path}: its tokenizer or layer structure is unusable: {err}") from None
    return module


def init_settings(cls: type) -> tuple[set[str], dict[str, type]]:
    """The init arguments `cls` takes (its own, and its bases' that its **kwargs pass on) and, of
    those, its settings groups: arguments whose default is a dataclass, with that dataclass."""
    names: set[str] = set()
    groups: dict[str, type] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]  # after self
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
                if dataclasses.is_dataclass(p.default) and not isinstance(p.default, type):
                    groups.setdefault(p.name, type(p.default))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names, groups


def grouped(cls: type, arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` with each one that `cls` takes as a field of a settings group, not at the top,
    moved into that group's dict: settings a checkpoint records flat, outside their groups, and
    the locations a user passes (`data_dir`, `cache_dir`)."""
    names, groups = init_settings(cls)
    home = {f.name: group for group, klass in groups.items() for f in dataclasses.fields(klass)}
    out = {k: v for k, v in arguments.items() if k in names or k not in home}
    for key, value in arguments.items():
        if key not in names and key in home:
            out[home[key]] = {**(out.get(home[key]) or {}), key: value}
    return out


def datamodule_arguments(cls: type, hparams: Any, locations: dict[str, Any]) -> dict[str, Any]:
    """Init arguments of `cls` from the hyperparameters a checkpoint records and the user's own
    `locations` (None: not given). Recorded locations are dropped (`is_location`), in settings
    groups too; the user's go where `cls` takes them, and are dropped where it takes none."""
    names, groups = init_settings(cls)
    arguments = grouped(cls, plain_arguments(hparams))
    for group in groups:
        if isinstance(arguments.get(group), dict):
            arguments[group] = {k: v for k, v in arguments[group].items() if not is_location(k)}
    for key, value in grouped(cls, {k: v for k, v in locations.items() if v is not None}).items():
        if key in groups:
            arguments[key] = {**(arguments.get(key) or {}), **value}
        elif key in names:
            arguments[key] = value
    return arguments


def fingerprint_label(size: int, sha256: str, files: int | None = 1) -> str:
    """A text fingerprint as messages show it: its size and the first 12 hex digits of its sha256."""
    many = f"{files} files, " if isinstance(files, int) and files > 1 else ""
    return f"{many}{size:,} bytes, sha256 {sha256[:12]}"


def recorded_texts(path: str | Path) -> dict[str, dict[str, Any]] | None:
    """The text fingerprints a checkpoint records, by corpus name; None when it records none
    (written before checkpoints had them)."""
    recorded = read_checkpoint(path)[CHECKPOINT_KEY].get("corpora")
    if recorded is None:
        return None
    plain = isinstance(recorded, list) and all(
        isinstance(r, dict) and isinstance(r.get("name"), str)
        and (r.get("sha256") is None or (isinstance(r.get("sha256"), str) and isinstance(r.get("size"), int)))
        for r in recorded)
    if not plain:
        raise CheckpointError(f"{path} records corpus fingerprints that are not a list of "
                              "{name, size, sha256, files}")
    return {r["name"]: r for r in recorded}


def check_corpus_text(path: str | Path, datamodule: Any, hint: Callable[[CorpusText], str]) -> list[str]:
    """Lines naming the text each corpus of `datamodule` is read from, once each is checked against
    the fingerprint the checkpoint at `path` records for the corpus of that name.

    A text that differs, or a corpus the checkpoint did not train on, is one CheckpointError line
    naming both fingerprints and the way out (`hint(text)`: how the user names a corpus's text); a
    checkpoint that records no fingerprints adds a `note:` line instead: its text cannot be
    checked. Data without `TextFingerprints` (the succulent world, generated) gives no lines.
    """
    if not isinstance(datamodule, TextFingerprints):
        return []
    recorded, lines = recorded_texts(path), []
    for text in datamodule.corpus_texts():
        if text.problem is not None:
            raise CheckpointError(f"{text.name}: {text.problem}; {hint(text)}")
        if text.sha256 is None:  # a hub dataset: no files to hash
            lines.append(f"{text.name}: reading {text.origin}; a hub dataset's text cannot be checked")
            continue
        found = fingerprint_label(text.size, text.sha256, text.files)
        saved = None if recorded is None else recorded.get(text.name)
        if recorded is None:
            lines.append(f"{text.name}: reading {text.origin} ({found})")
        elif saved is not None and saved.get("sha256") is None:
            lines.append(f"{text.name}: reading {text.origin} ({found}); it trained on a hub dataset, "
                         "whose text cannot be checked")
        elif saved is None:
            raise CheckpointError(f"{path} did not train on a corpus named {text.name} (it trained on "
                                  f"{', '.join(recorded) or 'none'}); to score other text use "
                                  f"python -m succu.evaluate --ckpt {path} --text FILE")
        elif (saved["size"], saved["sha256"]) != (text.size, text.sha256):
            trained = fingerprint_label(saved["size"], saved["sha256"], saved.get("files"))
            raise CheckpointError(f"{text.name}: {text.origin} ({found}) is not the text {path} trained "
                                  f"on ({trained}); {hint(text)}")
        else:
            lines.append(f"{text.name}: reading {text.origin} ({found}), the text the checkpoint trained on")
    if recorded is None:
        lines.append(f"note: {path} records no fingerprint of its text (written before checkpoints "
                     "had them): could not check that this is the text it trained on")
    return lines


def tool_hint(text: CorpusText) -> str:
    """How a user of evaluate and the sweeps names a corpus's text."""
    return f"name the text it trained on with --data_path {text.name}=PATH"


def load_datamodule(path: str | Path, module: Decoding | None = None, **locations: Any):
    """Rebuild the datamodule a checkpoint was trained on (LightningCLI saves its class and args).

    Locations the checkpoint records (data and cache folders, corpus files, hub ids) are dropped;
    `locations` (e.g. data_dir=..., cache_dir=...) are the user's own, passed to classes that take
    them (inside the settings group that holds them); settings recorded flat, outside their
    groups, go into them (`datamodule_arguments`). The text of each corpus must be the one the
    checkpoint trained on (`check_corpus_text`; stderr names the files read), and its batch sizes
    and window counts within a limit (`check_data_settings`). With `module`, the
    rebuilt tokenizer must equal the checkpoint's: evaluating on differently tokenised data would
    give meaningless numbers.
    """
    hparams = read_checkpoint(path).get("datamodule_hyper_parameters")
    if not isinstance(hparams, dict) or not hparams.get("_class_path"):
        raise CheckpointError(f"{path} records no datamodule; write it with `python -m succu.fit`")
    cls = datamodule_class(Path(path), hparams["_class_path"])
    arguments = datamodule_arguments(cls, hparams, locations)
    check_data_settings(arguments, path)
    try:
        datamodule = cls(**arguments)
    except TypeError as err:
        raise CheckpointError(f"{path}: its datamodule arguments do not build {cls.__name__}: {err}") from None
    if locations.get("data_paths") and not isinstance(datamodule, TextFingerprints):
        raise CheckpointError(f"--data_path names a corpus's text, but the data of {path} "
                              f"({cls.__name__}) reads no text corpora")
    for line in check_corpus_text(path, datamodule, tool_hint):
        print(line, file=sys.stderr, flush=True)
    if module is not None and module.tokenizer is not None and datamodule.tokenizer != module.tokenizer:
        raise CheckpointError(
            f"the datamodule rebuilt from {path} has a different tokenizer (the data and cache "
            "folders it records are not reused: pass --data_path NAME=PATH, --data_dir or --cache_dir)"
        )
    return datamodule
