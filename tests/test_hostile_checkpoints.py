"""Checkpoints that are hostile or damaged: sizes that would exhaust memory, settings that break a
forward, weights garbled after they were written, a tokenizer that does not fit its model. Each is
refused with one `error:` line before anything large is allocated; every model family still loads
exactly as it was written."""

from __future__ import annotations

import copy
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from succu import evaluate, fit, generate
from succu.checkpoint import load_datamodule, load_module
from succu.checkpoint_files import CheckpointError, read_checkpoint, state_sha256
from succu.checkpoint_sizes import check_data_settings
from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule
from succu.modules.hypersurface import HypersurfaceModule
from succu.modules.ngram import NgramModule
from succu.modules.noise_lm import NoiseLMModule
from succu.modules.noise_transformer import NoiseTransformerModule
from succu.modules.succulm import SuccuLMModule
from succu.nn.tt import compress_linears
from succu.runs import AtomicCheckpointIO
from succu.tokenizers import CharTokenizer, WordTokenizer, split_words
from tests.child import run_python
from tests.refusals import refused
from tests.tiny import tiny_module, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CHAR = CharTokenizer.from_texts(["Once upon a time, the king said: hello! A dog; a cat.\n"], specials=["<EOS>"])
WORDS = WordTokenizer.from_words(split_words("is ruby a boy? ruby is a girl. the cat is red, not blue!"))
GATED = dict(block_size=16, n_layer=1, n_head=2, n_embd=32)
GiB = 1 << 30


def gated(tmp_path: Path, name: str = "gated.ckpt", **extra) -> str:
    torch.manual_seed(0)
    module = tiny_module(GatedGPTModule, vocab_size=CHAR.vocab_size, **{**GATED, **extra})
    return write_checkpoint(tmp_path / name, module, CHAR)


def rewrite(src: str, dst: Path, edit) -> str:
    """A copy of checkpoint `src` with `edit(ckpt)` applied (what an attacker would hand out)."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return str(dst)


def with_model(**settings):
    def edit(ckpt):
        ckpt["hyper_parameters"]["model"].update(settings)
    return edit


@pytest.fixture(autouse=True)
def no_debug(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUCCU_DEBUG", raising=False)
    monkeypatch.delenv("SUCCU_MAX_PARAMS", raising=False)
    monkeypatch.delenv("SUCCU_MAX_WINDOWS", raising=False)


# ---- every family loads as it was written ------------------------------------------------------
def families() -> dict[str, tuple[type, object, dict]]:
    v, w = CHAR.vocab_size, WORDS.vocab_size
    return {
        "gpt": (GPTModule, CHAR, dict(vocab_size=v, **GATED, bias=True)),
        "gated": (GatedGPTModule, CHAR, dict(vocab_size=v, **GATED)),
        "gated-k3": (GatedGPTModule, CHAR, dict(vocab_size=v, **GATED, n_sources=3, eval_alphas=[[1, 0, 0]])),
        "gated-k3-c2": (GatedGPTModule, CHAR, dict(vocab_size=v, **GATED, n_sources=3,
                                                   specialty_concentration=2.0, eval_alphas=[[0, 1, 0]])),
        "control": (GatedGPTModule, CHAR, dict(vocab_size=v, **GATED, dial="control_code")),
        "succulm": (SuccuLMModule, WORDS, dict(vocab_size=w, block_size=16, profile="small")),
        "hypersurface": (HypersurfaceModule, CHAR, dict(vocab_size=v, **GATED, n_hyper_layer=1)),
        "hypersurface-b2": (HypersurfaceModule, CHAR, dict(vocab_size=v, **GATED, variant="b2")),
        "hypersurface-bias": (HypersurfaceModule, CHAR, dict(vocab_size=v, **GATED, n_hyper_layer=1,
                                                             output_bias=True)),
        "noise_lm": (NoiseLMModule, CHAR, dict(vocab_size=v, block_size=16, code_dim=8)),
        "noise_transformer": (NoiseTransformerModule, CHAR, dict(vocab_size=v, block_size=16, n_layer=1,
                                                                 n_head=2, n_embd=16, code_dim=8)),
        "ngram": (NgramModule, CHAR, dict(vocab_size=v, block_size=16, order=3)),
    }


@pytest.mark.parametrize("name", sorted(families()))
def test_every_family_loads_exactly_and_draws_what_its_class_draws(name, tmp_path):
    cls, tok, settings = families()[name]
    torch.manual_seed(3)
    module = tiny_module(cls, **settings)
    if name == "ngram":
        module.model.update(torch.randint(0, tok.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0)))
    if name == "succulm":
        compress_linears(module.model, {"blocks.1.ffn.0": dict(in_modes=(4, 8), out_modes=(8, 8), bond_dims=3)})
    path = write_checkpoint(tmp_path / f"{name}.ckpt", module, tok)
    torch.manual_seed(11)  # what building the class and its layer structure draws
    tiny_module(cls, **settings).on_load_checkpoint(torch.load(path, weights_only=True))
    drawn = torch.random.get_rng_state()
    torch.manual_seed(11)
    loaded = load_module(path)
    assert torch.equal(torch.random.get_rng_state(), drawn)  # the check on meta drew nothing
    original, back = module.state_dict(), loaded.state_dict()
    assert list(back) == list(original)
    for key, value in original.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(back[key], value), key
    for (key, a), (_, b) in zip(module.named_buffers(), loaded.named_buffers()):
        assert torch.equal(a, b), key  # derived buffers too (a position table)
    ids = torch.randint(0, tok.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    kw = {"alpha": (0.2, 0.3, 0.5)} if "k3" in name else {}
    with torch.no_grad():
        assert torch.equal(loaded(ids, **kw), module.eval()(ids, **kw))


# ---- sizes: refused before allocation ----------------------------------------------------------
HOSTILE = {
    "vocab_size=10^7": (dict(vocab_size=10**7), "does not match GatedGPTModule: model.transformer.wte.weight "
                        "is ({v}, 32) in its state dict but (10000000, 32) for its settings (and 1 more)"),
    "vocab_size=10^9": (dict(vocab_size=10**9), "its settings ask for a tensor of 32,000,000,000 numbers, "
                        "more than 2,000,000,000 (torch.empty (1000000000, 32)), while its state dict "
                        "holds 13 tensors of {n} numbers; set SUCCU_MAX_PARAMS to load a module this large"),
    "n_layer=10^4": (dict(n_layer=10**4), "its settings build more than 282 tensors (at Linear.weight "
                     "(128, 32)), while its state dict holds 13 tensors of {n} numbers"),
    "n_embd=10^6": (dict(n_embd=10**6), "its settings ask for a tensor of 3,000,000,000,000 numbers, more "
                    "than 2,000,000,000 (torch.empty (3000000, 1000000))"),
}


@pytest.mark.skipif(sys.platform != "linux", reason="a child's own peak memory is read from /proc")
def test_a_checkpoint_asking_for_huge_sizes_is_one_line_in_a_small_process(tmp_path):
    good = gated(tmp_path)
    held = read_checkpoint(good)["state_dict"]
    numbers = f"{sum(t.numel() for t in held.values()):,}"
    for i, (case, (settings, expected)) in enumerate(HOSTILE.items()):
        path = rewrite(good, tmp_path / f"hostile{i}.ckpt", with_model(**settings))
        child = run_python(["-m", "succu.generate", "--ckpt", path, "--prompt", "a"])
        err = child.stderr
        assert child.returncode == 2 and len(err.strip().splitlines()) == 1, (case, err)
        assert err.startswith(f"error: {path}") and expected.format(v=CHAR.vocab_size, n=numbers) in err, (case, err)
        assert child.peak_bytes < GiB, (case, child.peak_bytes)


def test_the_parameter_limit_is_the_users_to_raise(tmp_path, capsys, monkeypatch):
    good = gated(tmp_path)
    path = rewrite(good, tmp_path / "wide.ckpt", with_model(n_embd=10**5))
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert "its settings ask for a tensor of 30,000,000,000 numbers" in line and "set SUCCU_MAX_PARAMS" in line
    monkeypatch.setenv("SUCCU_MAX_PARAMS", "1e12")  # built on meta to the end: the shapes differ
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert line == (f"error: {path} does not match GatedGPTModule: model.m_embd is (32,) in its state "
                    "dict but (100000,) for its settings (and 11 more)")
    monkeypatch.setenv("SUCCU_MAX_PARAMS", "1000")
    line = refused(capsys, generate.main, ["--ckpt", good, "--prompt", "a"], only=True)
    assert "its settings ask for more than 1,000 parameters (at Embedding.weight (16, 32))" in line
    monkeypatch.setenv("SUCCU_MAX_PARAMS", "many")
    line = refused(capsys, generate.main, ["--ckpt", good, "--prompt", "a"], only=True)
    assert line == "error: SUCCU_MAX_PARAMS='many' must be a positive number of parameters (e.g. 4e+09)"


def test_a_constructor_looping_over_a_setting_is_stopped_early(tmp_path, capsys):
    torch.manual_seed(0)
    good = write_checkpoint(tmp_path / "n.ckpt", tiny_module(NoiseLMModule, vocab_size=CHAR.vocab_size,
                                                             block_size=16, code_dim=8), CHAR)
    path = rewrite(good, tmp_path / "scatter.ckpt", with_model(n_scatter=10**7))  # a draw per set
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert line.startswith(f"error: {path}: its settings make more than 4,384 tensors while building "
                           "(at torch.randperm (7,)), while its state dict holds 18 tensors of ")
    path = rewrite(good, tmp_path / "scatter9.ckpt", with_model(n_scatter=10**9))
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert line.startswith(f"error: {path}: its settings ask for a tensor of 8,000,000,000 numbers, more "
                           "than 2,000,000,000 (torch.zeros (1000000000, 8))")


def test_a_position_table_far_larger_than_the_file_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    good = write_checkpoint(tmp_path / "s.ckpt", tiny_module(SuccuLMModule, vocab_size=WORDS.vocab_size,
                                                             block_size=16, profile="tiny"), WORDS)
    path = rewrite(good, tmp_path / "long.ckpt", with_model(block_size=10**6))
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "is ruby a boy?"], only=True)
    assert f"error: {path}: its settings make SuccuLMModule derive " in line
    assert "numbers its state dict does not hold (the largest: model.pe (1000000, " in line


def test_a_state_dict_of_other_keys_is_named_in_full(tmp_path, capsys):
    good = gated(tmp_path)
    path = rewrite(good, tmp_path / "extra.ckpt",
                   lambda c: c["state_dict"].update({"model.stowaway": torch.zeros(2)}))
    # a key the module lacks, after the sizes were checked: the first problem named, not cut
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert line == (f"error: {path} is damaged: its weights do not match the checksum it records")
    ckpt = torch.load(path, weights_only=True)
    ckpt["succu"]["sha256"] = state_sha256(ckpt["state_dict"])
    torch.save(ckpt, path)
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert line == (f"error: {path} does not match GatedGPTModule: its state dict holds "
                    "model.stowaway, which GatedGPTModule has not")


def test_a_layer_state_that_does_not_fit_is_named_in_full(tmp_path, capsys):
    torch.manual_seed(0)
    module = tiny_module(NgramModule, vocab_size=CHAR.vocab_size, block_size=16, order=3)
    good = write_checkpoint(tmp_path / "ngram.ckpt", module, CHAR)

    def other_order(ckpt):
        ckpt["state_dict"]["model._extra_state"]["orders"] = torch.tensor([CHAR.vocab_size, 2])
        ckpt["succu"]["sha256"] = state_sha256(ckpt["state_dict"])

    path = rewrite(good, tmp_path / "order.ckpt", other_order)
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert line == (f"error: {path} does not match NgramModule: n-gram state is for vocab_size "
                    f"{CHAR.vocab_size}, order 2; this model has vocab_size {CHAR.vocab_size}, order 3")


# ---- settings a forward would trip on ----------------------------------------------------------
def test_settings_that_cannot_build_the_model_are_one_line(tmp_path, capsys):
    good = gated(tmp_path)
    cases = {
        "nan": (dict(dropout=float("nan")), "error: {p} records the setting model.dropout = nan: every "
                "number it records must be finite"),
        "high": (dict(dropout=1.5), "error: {p}: its hyperparameters do not build GatedGPTModule: "
                 "dropout probability has to be between 0 and 1, but got 1.5"),
        "heads": (dict(n_head=3), "error: {p}: its hyperparameters do not build GatedGPTModule: "
                  "n_embd=32 must be divisible by n_head=3"),
        "sources": (dict(n_sources=10**9), "error: {p}: its hyperparameters do not build GatedGPTModule: "
                    "n_sources must be between 2 and 1,024 corpora, got 1,000,000,000"),
    }
    for name, (settings, expected) in cases.items():
        path = rewrite(good, tmp_path / f"{name}.ckpt", with_model(**settings))
        assert refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True) == expected.format(p=path)
    path = rewrite(good, tmp_path / "huge.ckpt", with_model(n_embd=10**30))  # past int64: torch refuses
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert line.startswith(f"error: {path}: its hyperparameters do not build GatedGPTModule: ")
    assert "Overflow" in line and "Exception raised from" not in line  # torch's C++ stack left out


# ---- integrity ---------------------------------------------------------------------------------
def largest_record(path: str) -> tuple[int, int]:
    """(offset in the file, size) of the data of the largest record of a torch.save zip: a tensor's
    bytes, stored uncompressed."""
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def garble(path: str, dst: Path, size: int = 4096) -> str:
    """A copy of `path` with `size` bytes in the middle of its largest tensor overwritten."""
    data = bytearray(Path(path).read_bytes())
    start, length = largest_record(path)
    assert length > size
    middle = start + (length - size) // 2
    data[middle:middle + size] = torch.randint(0, 256, (size,), generator=torch.Generator().manual_seed(0),
                                               dtype=torch.uint8).numpy().tobytes()
    dst.write_bytes(bytes(data))
    return str(dst)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("fit")
    cli = fit.main(["--config", str(ROOT / "configs" / "succulm.yaml"), "--model.init_args.model.profile",
                    "tiny", "--data.init_args.batch_size", "8", "--trainer.max_steps", "2",
                    "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
                    "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                    "--trainer.default_root_dir", str(root)])
    return cli.trainer.checkpoint_callback.best_model_path


def test_garbled_weights_are_refused_by_every_reader(fitted, tmp_path, capsys):
    assert "sha256" in read_checkpoint(fitted)["succu"]
    load_module(fitted)  # the untouched file loads
    bad = garble(fitted, tmp_path / "garbled.ckpt")
    with zipfile.ZipFile(bad) as zf:  # still a readable zip: only the weights changed
        assert zf.namelist() == zipfile.ZipFile(fitted).namelist()
    before, after = (torch.load(p, weights_only=True)["state_dict"] for p in (fitted, bad))
    assert [k for k in before if not torch.equal(before[k], after[k])]  # a weight, not optimizer state
    expected = f"error: {bad} is damaged: its weights do not match the checksum it records"
    assert refused(capsys, generate.main, ["--ckpt", bad, "--prompt", "is ruby a boy?"], only=True).startswith(expected)
    with pytest.raises(CheckpointError, match="is damaged: its weights do not match the checksum"):
        AtomicCheckpointIO().load_checkpoint(bad)  # what --ckpt_path resumes through
    line = refused(capsys, fit.main, ["--config", str(ROOT / "configs" / "succulm.yaml"),
                                       "--model.init_args.model.profile", "tiny", "--trainer.max_steps", "3",
                                       "--trainer.logger", "false", "--trainer.default_root_dir",
                                       str(tmp_path / "resume"), "--ckpt_path", bad], only=False)
    assert line.startswith(expected)


def test_a_checkpoint_without_a_checksum_still_loads(tmp_path):
    good = gated(tmp_path)
    old = rewrite(good, tmp_path / "old.ckpt", lambda c: c["succu"].pop("sha256"))
    assert "sha256" not in read_checkpoint(old)["succu"]
    assert torch.equal(load_module(old).model.transformer.wte.weight,
                       load_module(good).model.transformer.wte.weight)
    odd = rewrite(good, tmp_path / "odd.ckpt", lambda c: c["succu"].update(sha256=12))
    with pytest.raises(CheckpointError, match=r"records a checksum that is not a SHA-256 \(12\)"):
        read_checkpoint(odd)


def test_non_finite_weights_are_one_line_in_generate(tmp_path, capsys):
    def poison(ckpt):
        ckpt["state_dict"]["model.transformer.wte.weight"][0, 0] = float("nan")
        ckpt["succu"]["sha256"] = state_sha256(ckpt["state_dict"])  # a diverged fit, written whole

    path = rewrite(gated(tmp_path), tmp_path / "nan.ckpt", poison)
    line = refused(capsys, generate.main, ["--ckpt", path, "--prompt", "a"], only=True)
    assert line == (f"error: {path} holds non-finite weights (model.transformer.wte.weight, ...): the fit that "
                    "wrote it diverged; use an earlier checkpoint of the run")


# ---- the tokenizer must fit the model's vocabulary ---------------------------------------------
def test_a_tokenizer_of_another_size_is_refused_at_load(tmp_path, capsys):
    v = CHAR.vocab_size
    torch.manual_seed(0)
    larger = write_checkpoint(tmp_path / "larger.ckpt",
                              tiny_module(GPTModule, vocab_size=v + 3, **GATED), CHAR)
    line = refused(capsys, generate.main, ["--ckpt", larger, "--prompt", "a"], only=True)
    assert line == (f"error: {larger}: its tokenizer has {v} tokens but its model {v + 3} (vocab_size): "
                    f"the model samples ids {v}..{v + 2}, which it cannot decode")
    smaller = write_checkpoint(tmp_path / "smaller.ckpt",
                               tiny_module(GPTModule, vocab_size=v - 2, **GATED), CHAR)
    line = refused(capsys, generate.main, ["--ckpt", smaller, "--prompt", "a"], only=True)
    assert line == (f"error: {smaller}: its tokenizer has {v} tokens but its model {v - 2} (vocab_size): "
                    f"it encodes ids {v - 2}..{v - 1}, which the model has no rows for")


# ---- data settings a checkpoint records ----------------------------------------------------------
def test_recorded_batch_sizes_and_window_counts_are_bounded(fitted, tmp_path, capsys, monkeypatch):
    def huge_batches(ckpt):
        ckpt["datamodule_hyper_parameters"]["batch_size"] = 10**9

    path = rewrite(fitted, tmp_path / "batches.ckpt", huge_batches)
    line = refused(capsys, evaluate.main, ["--ckpt", path, "--corpus"], only=True)
    assert line == (f"error: {path} records the data setting batch_size = 1,000,000,000, more than 65,536 "
                    "rows held at once; set SUCCU_MAX_WINDOWS to allow more")
    windows = copy.deepcopy(torch.load(fitted, weights_only=True))
    windows["datamodule_hyper_parameters"] = {"_class_path": "datamodules.text.TextDataModule",
                                              "windows": {"val_windows": 10**9}}
    torch.save(windows, tmp_path / "windows.ckpt")
    with pytest.raises(CheckpointError, match=r"records the data setting windows.val_windows = "
                                              r"1,000,000,000, more than 65,536 rows"):
        load_datamodule(tmp_path / "windows.ckpt")
    monkeypatch.setenv("SUCCU_MAX_WINDOWS", "2e9")  # raised: the rows are the user's to allow
    check_data_settings({"windows": {"val_windows": 10**9}, "batch_size": 10**9}, path)
