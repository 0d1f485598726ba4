"""Limits a checkpoint's settings must keep before anything is built from them.

A checkpoint is a small file that names sizes: a vocabulary, a layer count, a width, batch sizes.
Built as named, a hostile or careless one could ask for gigabytes before any check. So its
module is first built on the meta device (`check_sizes`: shapes without memory, the global random
state untouched), its every tensor compared with the state dict the file holds, its total size
held under a limit ($SUCCU_MAX_PARAMS), and only then built for real (`succu.checkpoint`). The
data settings it records are held under a limit too ($SUCCU_MAX_WINDOWS, `check_data_settings`).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.overrides import TorchFunctionMode

from succu.checkpoint_files import CheckpointError
from succu.decoding import Decoding


def check_finite_settings(settings: Any, path: str | Path, where: str = "") -> None:
    """Every number a checkpoint's settings record is finite: a NaN dropout or an infinite width
    passes many constructors and fails later, deep inside a forward."""
    items = settings.items() if isinstance(settings, dict) else enumerate(settings) if isinstance(settings, list) else ()
    for key, value in items:
        name = f"{where}.{key}" if where else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{path} records the setting {name} = {value}: every number it "
                                  "records must be finite")
        check_finite_settings(value, path, name)


# ---- sizes checked before anything is allocated -------------------------------------------------
MAX_PARAMS_VARIABLE = "SUCCU_MAX_PARAMS"
MAX_PARAMS = 2_000_000_000  # numbers (parameters and buffers) in one module: 8 GB in float32
DERIVED_SLACK = 1 << 22  # numbers a module may hold beyond its state dict (position tables)

# Tensor factories whose size a setting gives. While a checkpoint's settings are checked they make
# meta tensors (shapes, no memory); tensors made from data (torch.tensor, as_tensor, from_numpy)
# stay real: their data exists already, and a constructor may read their values.
FACTORIES = frozenset({
    torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
    torch.randint, torch.randperm, torch.normal, torch.arange, torch.linspace, torch.logspace,
    torch.eye, torch.tril_indices, torch.triu_indices,
})


# In-place draws that only fill values (nn.init's): skipped on meta tensors, which hold none.
RANDOM_FILLS = frozenset({
    torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.bernoulli_, torch.Tensor.exponential_,
    torch.Tensor.geometric_, torch.Tensor.log_normal_, torch.Tensor.cauchy_, torch.Tensor.random_,
    torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.trunc_normal_,
    torch.nn.init.kaiming_normal_, torch.nn.init.kaiming_uniform_, torch.nn.init.xavier_normal_,
    torch.nn.init.xavier_uniform_, torch.nn.init.orthogonal_, torch.nn.init.sparse_,
})


# Numbers a size check may draw for real from generators its constructor seeds (`MetaFactories`).
REAL_DRAWS = 1 << 22


def seeded_draw_size(func: Callable, args: tuple, kwargs: dict) -> int | None:
    """The numbers of a `torch.rand` / `torch.randn` call given its own generator and a plain
    size (ints, or one tuple of them); None for any other call."""
    if func not in (torch.rand, torch.randn) or kwargs.get("generator") is None:
        return None
    size = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
    if not size or not all(isinstance(n, int) and n >= 0 for n in size):
        return None
    return math.prod(size)


def max_params() -> int:
    """The most numbers a loaded module may hold: MAX_PARAMS, or $SUCCU_MAX_PARAMS."""
    return positive_limit(MAX_PARAMS_VARIABLE, MAX_PARAMS, "parameters")


class MetaFactories(TorchFunctionMode):
    """Inside: the `FACTORIES` without an explicit device make meta tensors, each at most
    `max_numbers` numbers, and at most `max_calls` of them: a constructor that loops over a
    setting (a draw per scatter set) is stopped after a few thousand, not run to the end."""

    def __init__(self, max_numbers: int, max_calls: int, held: str):
        super().__init__()
        self.max_numbers, self.max_calls, self.held, self.calls = max_numbers, max_calls, held, 0
        self.real_left = REAL_DRAWS

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in RANDOM_FILLS:
            tensor = args[0] if args else kwargs.get("tensor")  # nn.init passes it by name
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                # A meta tensor has no values to draw. torch would route the draw through its
                # compiler stack, importing it (about a second) for nothing.
                return tensor
        if func not in FACTORIES or kwargs.get("device") is not None:
            return func(*args, **kwargs)
        numbers = seeded_draw_size(func, args, kwargs)
        if numbers is not None and numbers <= self.real_left:
            # A draw from the constructor's own seeded generator (GatedGPT's specialties) is the
            # model's data: drawn for real, within a small budget, so what the constructor
            # computes from it runs on the CPU rather than through torch's meta kernels, which
            # import its compiler stack (about a second).
            self.real_left -= numbers
            return func(*args, **kwargs)
        kwargs["device"] = "meta"
        out = func(*args, **kwargs)
        self.calls += 1
        what = f"torch.{func.__name__} {tuple(out.shape)}"
        if out.numel() > self.max_numbers:
            raise TooLarge(f"its settings ask for a tensor of {out.numel():,} numbers, more than "
                           f"{self.max_numbers:,} ({what}), while its state dict holds {self.held}; "
                           f"set {MAX_PARAMS_VARIABLE} to load a module this large")
        if self.calls > self.max_calls:
            raise TooLarge(f"its settings make more than {self.max_calls:,} tensors while building "
                           f"(at {what}), while its state dict holds {self.held}")
        return out


class TooLarge(Exception):
    """A build stopped by `MetaFactories` or `registration_limits`, with the line that says why."""


@contextlib.contextmanager
def registration_limits(max_numbers: int, max_tensors: int, held: str) -> Iterator[None]:
    """Stop a build (TooLarge) once its parameters and buffers exceed `max_numbers` numbers or
    `max_tensors` tensors: settings that ask for ten thousand layers are refused at the first
    few hundred, not built to the end. Only this thread's registrations count."""
    owner, seen = threading.get_ident(), {"numbers": 0, "tensors": 0}

    def hook(module: torch.nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is None or threading.get_ident() != owner:
            return
        seen["numbers"] += tensor.numel()
        seen["tensors"] += 1
        what = f"{type(module).__name__}.{name} {tuple(tensor.shape)}"
        if seen["numbers"] > max_numbers:
            raise TooLarge(f"its settings ask for more than {max_numbers:,} parameters (at {what}), "
                           f"while its state dict holds {held}; set {MAX_PARAMS_VARIABLE} to load a "
                           "module this large")
        if seen["tensors"] > max_tensors:
            raise TooLarge(f"its settings build more than {max_tensors:,} tensors (at {what}), while "
                           f"its state dict holds {held}")

    handles = [register_module_parameter_registration_hook(hook),
               register_module_buffer_registration_hook(hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def state_tensors(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, a nested dict's (a layer's extra state) as `name/key`."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if isinstance(value, dict):
            out.update({f"{name}/{k}": v for k, v in state_tensors(value).items()})
        elif isinstance(value, torch.Tensor):
            out[str(name)] = value
    return out


def check_sizes(build: Callable[[], Decoding], ckpt: dict[str, Any], path: str | Path,
                name: str | None = None) -> None:
    """`build()` the module of a checkpoint's settings without memory (meta tensors, under
    `MetaFactories` and `registration_limits`) and refuse it, in one line, when its tensors are not the state dict's
    (the first difference named with both shapes), its tokenizer does not fit its vocabulary
    (`check_tokenizer`), it holds more than `max_params()` numbers, or it derives far more than
    its file holds (tensors outside the state dict, like a position table). Messages call the
    module `name` (default: its class's). The global random state is left as it was: the real
    build draws exactly what it always drew."""
    state, limit = ckpt["state_dict"], max_params()
    held = state_tensors(state)
    held_numbers = sum(t.numel() for t in held.values())
    summary = f"{len(held):,} tensors of {held_numbers:,} numbers"
    try:
        with torch.random.fork_rng(devices=[]), MetaFactories(limit, 16 * (len(held) + 256), summary), \
                registration_limits(limit, 2 * len(held) + 256, summary):
            module = build()
    except TooLarge as err:
        raise CheckpointError(f"{path}: {err}") from None
    name = name or type(module).__name__
    expected = module.state_dict(keep_vars=True)
    problems = [f"its state dict lacks {key}" for key in expected if key not in state]
    problems += [f"its state dict holds {key}, which {name} has not" for key in state if key not in expected]
    for key, want in expected.items():
        got = state.get(key)
        if isinstance(want, torch.Tensor) and key in state and not (
                isinstance(got, torch.Tensor) and got.shape == want.shape):
            found = tuple(got.shape) if isinstance(got, torch.Tensor) else f"a {type(got).__name__}"
            problems.append(f"{key} is {found} in its state dict but {tuple(want.shape)} for its settings")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{path} does not match {name}: {problems[0]}{more}")
    check_tokenizer(module, path)
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    total = sum(t.numel() for t in tensors.values())
    if total > limit:
        raise CheckpointError(f"{path}: {name} holds {total:,} parameters and buffers, more than "
                              f"{limit:,}; set {MAX_PARAMS_VARIABLE} to load a module this large")
    stored = {id(t) for t in expected.values() if isinstance(t, torch.Tensor)}
    derived = {n: t for n, t in module.named_buffers() if id(t) not in stored}
    extra = sum(t.numel() for t in derived.values())
    if extra > held_numbers + DERIVED_SLACK:
        big, t = max(derived.items(), key=lambda item: item[1].numel())
        raise CheckpointError(f"{path}: its settings make {name} derive {extra:,} numbers its state "
                              f"dict does not hold (the largest: {big} {tuple(t.shape)}), more than "
                              f"the {held_numbers:,} it holds: a checkpoint's settings may not ask "
                              "for much more memory than its file holds")


def check_tokenizer(module: Decoding, path: str | Path) -> None:
    """The checkpoint's tokenizer and its model must have the same vocabulary size (succu links
    `vocab_size` from the data's tokenizer): a larger tokenizer encodes ids the model has no row
    for, a smaller one cannot decode ids the model samples."""
    tok, vocab = module.tokenizer, module.model.cfg.vocab_size
    if tok is not None and tok.vocab_size != vocab:
        broken = (f"it encodes ids {vocab}..{tok.vocab_size - 1}, which the model has no rows for"
                  if tok.vocab_size > vocab else
                  f"the model samples ids {tok.vocab_size}..{vocab - 1}, which it cannot decode")
        raise CheckpointError(f"{path}: its tokenizer has {tok.vocab_size:,} tokens but its model "
                              f"{vocab:,} (vocab_size): {broken}")


# ---- the data settings a checkpoint records --------------------------------------------------------
MAX_WINDOWS_VARIABLE = "SUCCU_MAX_WINDOWS"
MAX_WINDOWS = 1 << 16
# The data settings that set how many rows a tool holds at once (a batch, the fixed windows of a
# split, each built up front when scored).
WINDOW_SETTINGS = frozenset({"batch_size", "val_batch_size", "val_windows"})


def positive_limit(variable: str, default: int, what: str) -> int:
    """$variable as a positive whole number (1e9 is read), else `default`."""
    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"{variable}={raw!r} must be a positive number of {what} (e.g. {default * 2:.0e})")
    return int(value)


def check_data_settings(arguments: dict[str, Any], path: str | Path, where: str = "") -> None:
    """Refuse a recorded batch size or window count above $SUCCU_MAX_WINDOWS (default
    MAX_WINDOWS): scoring holds that many rows at once, so a checkpoint that records 10^9 would
    take the machine's memory before the first batch."""
    limit = positive_limit(MAX_WINDOWS_VARIABLE, MAX_WINDOWS, "rows")
    for key, value in arguments.items():
        name = f"{where}.{key}" if where else str(key)
        if isinstance(value, dict):
            check_data_settings(value, path, name)
        elif key in WINDOW_SETTINGS and isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise CheckpointError(f"{path} records the data setting {name} = {value:,}, more than "
                                  f"{limit:,} rows held at once; set {MAX_WINDOWS_VARIABLE} to allow more")
