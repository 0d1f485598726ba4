"""Checkpoints: atomic writes, and loading any succu checkpoint back into its module.

A checkpoint written by Lightning is a dict with `state_dict` and `hyper_parameters`; succu adds
`checkpoint["succu"] = {"module": "<import path of the LightningModule>", "tokenizer": {...}}`
(see `LanguageModule.on_save_checkpoint`), which is what makes a checkpoint alone enough to talk to,
evaluate or compress a model.

A checkpoint is data, never code (a file may come from anyone): it is read with
`torch.load(weights_only=True)`, the classes it names are looked up in succu's own allow-lists
(`MODULES`, `DATAMODULES`), and the files and network locations it records are not reused unless
the user passes them again. What it records of its text is a fingerprint per corpus (name, size,
sha256; no path): a tool about to score a corpus checks the text it found against it
(`check_corpus_text`) and refuses another.

The same checkpoint can also be a folder with no pickle at all (`python -m succu.export --format
succu`): `model.safetensors` holds the state dict, `succu.json` the rest as JSON (module class
name, hyperparameters, tokenizer, TT structure, the data's settings) and the tensors' SHA-256.
Every tool reads such a folder wherever it takes a checkpoint file, with the same checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import pickle
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from succu.contracts import CorpusText, TextFingerprints
from succu.io import atomic_write, write_outputs
from succu.modules.base import CHECKPOINT_KEY, LanguageModule
from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule
from succu.modules.hypersurface import HypersurfaceModule
from succu.modules.ngram import NgramModule
from succu.modules.noise_lm import NoiseLMModule
from succu.modules.noise_transformer import NoiseTransformerModule
from succu.modules.succulm import SuccuLMModule
from succu.progress import progress


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, corrupt, or not written by succu."""


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# The only module classes a checkpoint may name: the file picks a key, never what is imported.
# A project with its own LanguageModule adds it here (MODULES[class_path(cls)] = cls).
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

# Settings that say where files are read or written, or where the network is reached. A hostile
# checkpoint could point them anywhere, so they are dropped on load and their defaults apply
# ($SUCCU_DATA_DIR and the default folders, the default cache, local data only) unless the user
# passes them again (`python -m succu.sweep ... --data_dir DIR --cache_dir DIR`).
LOCATION_SETTINGS = frozenset({"cache_dir", "data_dir", "data_path", "data_paths", "init_embeddings",
                               "save_embeddings", "source", "hub_id", "hub_ids"})
LOCATION_SUFFIXES = ("_dir", "_dirs", "_path", "_paths", "_file", "_files", "_url", "_urls")


def is_location(key: str) -> bool:
    return key in LOCATION_SETTINGS or key.endswith(LOCATION_SUFFIXES)


def plain_arguments(hparams: Any) -> dict[str, Any]:
    """Init arguments recorded in a checkpoint, without LightningCLI's `_class_path`-style
    bookkeeping and without locations (`is_location`)."""
    if not isinstance(hparams, dict):
        return {}
    return {k: v for k, v in hparams.items()
            if isinstance(k, str) and not k.startswith("_") and not is_location(k)}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the target folder, fsync, then rename over the target.

    `os.replace` is atomic on POSIX, so a run killed at any instant leaves either the previous
    complete file or the new complete file at `path`, never a truncated one (`succu.io.atomic_write`).
    A killed write leaves `.<name>.<host>.<pid>.<random>.tmp`, which the next fit on the run folder
    removes (`succu.fit`, `succu.io.remove_orphans`). Reading (Lightning's resume) is plain data
    only, as in `read_checkpoint`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        # `read_checkpoint` (onto the CPU, as Lightning's default map_location): a missing,
        # damaged or foreign file is one CheckpointError naming it, where Lightning's own load
        # fails with a bare RuntimeError, UnpicklingError or KeyError deep inside its resume.
        return read_checkpoint(path)


def load_error(path: Path, err: Exception) -> CheckpointError:
    """One line for a failed torch.load: refused code, or a damaged file."""
    message = str(err)
    code = re.search(r"GLOBAL ([\w.]+)", message)
    if isinstance(err, pickle.UnpicklingError) and code:
        return CheckpointError(
            f"refused {path}: it asks to run {code.group(1)} while loading; succu reads checkpoints "
            "as plain data only (torch.load weights_only=True)"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", message)
    first = detail.group(1) if detail else (message.strip().splitlines() or [""])[0]
    return CheckpointError(f"corrupt checkpoint {path}: {type(err).__name__}: {first}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict as plain data (no code from the file runs), every failure one line;
    a folder is read as the safetensors form (`read_folder`)."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise load_error(path, err) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(CHECKPOINT_KEY), dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a succu checkpoint (expected a Lightning checkpoint with a '{CHECKPOINT_KEY}' entry)"
        )
    return ckpt


# ---- the safetensors form: the checkpoint as a folder with no pickle ---------------------------
FOLDER_META = "succu.json"
FOLDER_TENSORS = "model.safetensors"
FOLDER_FORMAT = "succu-safetensors"
FOLDER_VERSION = 1
NESTED = "/"  # "model._extra_state/keys_1": entry keys_1 of a state entry that is a dict of tensors
CHUNK = 1 << 24  # bytes hashed at a time


def safetensors_torch():
    """`safetensors.torch`, or one line naming the extra that brings it."""
    try:
        import safetensors.torch
    except ImportError:
        raise ValueError('the safetensors form needs the export extra (safetensors is not '
                         'installed): pip install -e ".[export]"') from None
    return safetensors.torch


def module_checkpoint(module: LanguageModule) -> dict[str, Any]:
    """What a checkpoint of `module` holds for loading it: the state dict, the init arguments as
    plain data (locations left out: they are never reused), the tokenizer and TT structure."""
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": plain_arguments(dict(module.hparams))}
    module.on_save_checkpoint(ckpt)
    return ckpt


def write_folder(ckpt: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write a checkpoint dict (`module_checkpoint`, plus `datamodule_hyper_parameters` if any) as
    the safetensors form: each file atomically, the tensors first, then the JSON that names their
    checksum."""
    st = safetensors_torch()
    tensors, tied, nested = {}, {}, {}
    views: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, value in ckpt["state_dict"].items():
        entries = value.items() if isinstance(value, dict) else [(None, value)]
        if isinstance(value, dict):
            nested[name] = list(value)
        for sub, t in entries:
            key = name if sub is None else f"{name}{NESTED}{sub}"
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"state entry {key} is a {type(t).__name__}: the safetensors "
                                 "form holds tensors only")
            t = t.detach().cpu()
            view = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                    tuple(t.stride()), t.dtype)
            if t.numel() and sub is None and view in views:  # a tied weight: stored once
                tied[key] = views[view]
                continue
            views[view] = key
            ptr = t.untyped_storage().data_ptr()
            # safetensors refuses two entries over one storage: other views of it are copied
            tensors[key] = t.contiguous().clone() if t.numel() and ptr in storages else t.contiguous()
            storages.add(ptr)
    data = st.save(tensors, metadata={"format": "pt"})
    meta = {
        "format": FOLDER_FORMAT, "version": FOLDER_VERSION,
        CHECKPOINT_KEY: json_data(ckpt[CHECKPOINT_KEY], CHECKPOINT_KEY),
        "hyper_parameters": json_data(ckpt.get("hyper_parameters") or {}, "hyper_parameters"),
        "tied": tied, "nested": nested,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if ckpt.get("datamodule_hyper_parameters") is not None:
        meta["datamodule_hyper_parameters"] = json_data(ckpt["datamodule_hyper_parameters"],
                                                        "datamodule_hyper_parameters")
    return write_outputs(folder, {FOLDER_TENSORS: data, FOLDER_META: json.dumps(meta, indent=1)})


def json_data(value: Any, where: str) -> Any:
    """`value` as JSON data (tuples become lists); anything else is one ValueError naming it."""
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where} has keys that are not strings; JSON cannot hold them")
        return {k: json_data(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise ValueError(f"{where} is a {type(value).__name__}, which the safetensors form cannot "
                     "write as JSON")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        chunks = -(-path.stat().st_size // CHUNK)
        for chunk in progress(iter(lambda: f.read(CHUNK), b""), f"checksum {path.name}", chunks):
            digest.update(chunk)
    return digest.hexdigest()


def read_folder(path: Path) -> dict[str, Any]:
    """The checkpoint dict of a safetensors-form folder, checked: its description is JSON of
    this format, the tensors' SHA-256 is the one it records, and safetensors reads them as data."""
    meta_path, tensors_path = path / FOLDER_META, path / FOLDER_TENSORS
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is a folder without {FOLDER_META}, not a succu folder "
                              "(python -m succu.export --format succu writes one)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"corrupt {meta_path}: not JSON ({err})") from None
    if (not isinstance(meta, dict) or meta.get("format") != FOLDER_FORMAT
            or not isinstance(meta.get(CHECKPOINT_KEY), dict)):
        raise CheckpointError(f"{meta_path} does not describe a succu folder")
    if meta.get("version") != FOLDER_VERSION:
        raise CheckpointError(f"{meta_path} has format version {meta.get('version')!r}; this "
                              f"succu reads version {FOLDER_VERSION}")
    if not tensors_path.is_file():
        raise CheckpointError(f"{path} has no {FOLDER_TENSORS}")
    if file_sha256(tensors_path) != meta.get("sha256"):
        raise CheckpointError(f"corrupt {tensors_path}: its SHA-256 is not the one {FOLDER_META} records")
    st = safetensors_torch()
    try:
        tensors = st.load_file(tensors_path)
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise CheckpointError(f"corrupt {tensors_path}: {err}") from None
    try:
        state = {name: {sub: tensors.pop(f"{name}{NESTED}{sub}") for sub in subs}
                 for name, subs in meta["nested"].items()}
        state.update(tensors)
        state.update({alias: state[target] for alias, target in meta["tied"].items()})
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{meta_path}: its tied or nested entries do not match "
                              f"{FOLDER_TENSORS} ({type(err).__name__}: {err})") from None
    return {
        "state_dict": state,
        "hyper_parameters": meta.get("hyper_parameters"),
        CHECKPOINT_KEY: meta.get(CHECKPOINT_KEY),
        "datamodule_hyper_parameters": meta.get("datamodule_hyper_parameters"),
    }


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
    """The module of a checkpoint dict `read_checkpoint` read from `path` (named in errors)."""
    cls = module_class(Path(path), ckpt[CHECKPOINT_KEY].get("module"))
    target = cls.__name__
    hparams = plain_arguments(ckpt.get("hyper_parameters"))
    taken = init_arguments(cls)
    if taken is not None:
        hparams = {k: v for k, v in hparams.items() if k in taken}
    if not isinstance(hparams.get("model"), dict):
        raise CheckpointError(f"{path} has no model config (written before configs were objects?)")
    try:
        module = cls(**hparams)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its hyperparameters do not build {target}: {err}") from None
    try:
        module.on_load_checkpoint(ckpt)
    except (TypeError, ValueError, KeyError) as err:  # tokenizer state or TT structure of another shape
        raise CheckpointError(f"{path}: its tokenizer or layer structure is unusable: {err}") from None
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not match {target}: {first}") from None
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


def load_datamodule(path: str | Path, module: LanguageModule | None = None, **locations: Any):
    """Rebuild the datamodule a checkpoint was trained on (LightningCLI saves its class and args).

    Locations the checkpoint records (data and cache folders, corpus files, hub ids) are dropped;
    `locations` (e.g. data_dir=..., cache_dir=...) are the user's own, passed to classes that take
    them (inside the settings group that holds them); settings recorded flat, outside their
    groups, go into them (`datamodule_arguments`). The text of each corpus must be the one the
    checkpoint trained on (`check_corpus_text`; stderr names the files read). With `module`, the
    rebuilt tokenizer must equal the checkpoint's: evaluating on differently tokenised data would
    give meaningless numbers.
    """
    hparams = read_checkpoint(path).get("datamodule_hyper_parameters")
    if not isinstance(hparams, dict) or not hparams.get("_class_path"):
        raise CheckpointError(f"{path} records no datamodule; write it with `python -m succu.fit`")
    cls = datamodule_class(Path(path), hparams["_class_path"])
    try:
        datamodule = cls(**datamodule_arguments(cls, hparams, locations))
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
