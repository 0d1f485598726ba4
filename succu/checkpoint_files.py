"""Checkpoint files as data: written atomically, read as plain data, never trusted for a path.

A checkpoint written by Lightning is a dict with `state_dict` and `hyper_parameters`; succu adds
`checkpoint["succu"]` (the module class, the tokenizer, the text fingerprints; see
`LanguageModule.on_save_checkpoint`). A file may come from anyone, so it is data, never code: it
is read with `torch.load(weights_only=True)`, and the files and network locations it records
(`is_location`) are dropped, not reused, unless the user passes them again.

The same checkpoint can also be a folder with no pickle at all (`python -m succu.export --format
succu`): `model.safetensors` holds the state dict, `succu.json` the rest as JSON (module class
name, hyperparameters, tokenizer, TT structure, the data's settings) and the tensors' SHA-256.
`read_checkpoint` reads such a folder wherever a tool takes a checkpoint file, with the same checks.
Rebuilding a module or its data from what was read is `succu.checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from succu.io import write_outputs
from succu.progress import progress
from succu.tokenizers import Tokenizer, tokenizer_from_state

CHECKPOINT_KEY = "succu"  # succu's own entry of a checkpoint: module class, tokenizer, checksum


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, corrupt, or not written by succu."""


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


def state_sha256(state: Mapping[str, Any]) -> str:
    """The SHA-256 of a state dict: each entry's name, dtype, shape and bytes, in name order (a
    nested dict, a layer's extra state, entry by entry; a value that is no tensor by its repr).
    Every checkpoint records it (`on_save_checkpoint`), and reading one checks it, so a file whose
    weights were damaged after it was written is refused instead of loaded."""
    digest = hashlib.sha256()

    def add(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key in sorted(value, key=str):
                add(f"{name}/{key}", value[key])
            return
        digest.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                digest.update(t.reshape(-1).view(torch.uint8).numpy())
        else:
            digest.update(repr(value).encode())

    for key in sorted(state, key=str):
        add(str(key), state[key])
    return digest.hexdigest()


def succu_record(module_path: str, module: torch.nn.Module, tokenizer: Tokenizer | None,
                 state: Mapping[str, Any]) -> dict[str, Any]:
    """What succu adds to a checkpoint of `module` (a LanguageModule, or a checkpoint loaded
    without Lightning: `succu.inference.InferenceLM`) whose state dict is `state`: the
    LightningModule class that trains it (`module_path`, its dotted name), its tokenizer, the
    weights' checksum (`state_sha256`), and the TTLinear layers swapped in after construction
    (not in the hyperparameters), so that loading rebuilds the same structure before the state
    dict arrives."""
    record = {
        "module": module_path,
        "tokenizer": None if tokenizer is None else tokenizer.state_dict(),
        "sha256": state_sha256(state),
    }
    # A TTLinear can only exist once succu.nn.tt is imported: a run without one never imports
    # tensorly.
    if "succu.nn.tt" in sys.modules:
        from succu.nn.tt import tt_structure

        structure = tt_structure(module)
        if structure:
            record["tt_layers"] = structure
    return record


def saved_tokenizer(ckpt: dict[str, Any]) -> Tokenizer | None:
    """The tokenizer a checkpoint records, or None."""
    state = ckpt.get(CHECKPOINT_KEY, {}).get("tokenizer")
    return None if state is None else tokenizer_from_state(state)


def restore_layers(module: torch.nn.Module, ckpt: dict[str, Any]) -> None:
    """Swap in the TTLinear layers a checkpoint records (`succu_record`) before its state dict is
    loaded into `module`."""
    structure = ckpt.get(CHECKPOINT_KEY, {}).get("tt_layers")
    if structure:
        from succu.nn.tt import apply_tt_structure

        apply_tt_structure(module, structure)


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
    a folder is read as the safetensors form (`read_folder`). The weights must match the checksum
    the checkpoint records (`state_sha256`; one written before checkpoints had it is not checked),
    and be finite (non-finite weights come from a fit that diverged): nothing could be generated,
    scored or resumed from a damaged or diverged file."""
    path = Path(path)
    ckpt = read_folder(path) if path.is_dir() else read_file(path)
    bad = [name for name, value in ckpt["state_dict"].items()
           if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    non_finite = f"holds non-finite weights ({bad[0]}{', ...' if len(bad) > 1 else ''})" if bad else ""
    recorded = ckpt[CHECKPOINT_KEY].get("sha256")
    if recorded is not None and not (isinstance(recorded, str) and re.fullmatch(r"[0-9a-f]{64}", recorded)):
        raise CheckpointError(f"{path} records a checksum that is not a SHA-256 ({recorded!r:.80})")
    if recorded is not None and state_sha256(ckpt["state_dict"]) != recorded:
        raise CheckpointError(f"{path} is damaged: its weights do not match the checksum it records"
                              f"{'; it ' + non_finite if bad else ''}")
    if bad:
        raise CheckpointError(f"{path} {non_finite}: the fit that wrote it diverged; use an earlier "
                              "checkpoint of the run")
    return ckpt


def read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise load_error(path, err) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(CHECKPOINT_KEY), dict) or not isinstance(ckpt.get("state_dict"), dict):
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


def write_folder(ckpt: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write a checkpoint dict (`succu.inference.InferenceLM.checkpoint`, plus
    `datamodule_hyper_parameters` if any) as
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
