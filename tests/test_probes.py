"""Probes as callbacks: QA exact match and the end-of-fit talk (callbacks.qa), the diagnostics a
model declares (callbacks.diagnostics), `--stop key` by a declared capability, and checkpoints
that record switches which became callbacks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from callbacks.diagnostics import Diagnostics
from callbacks.qa import QAExactMatch, TalkAfterFit
from datamodules.tokens import Tokens
from succu import fit, generate
from succu.analysis.qa import qa_exact_match, report
from succu.checkpoint import init_arguments, load_module
from succu.contracts import CapabilityError, KeyRuleStop
from succu.models.gpt import GPTConfig
from succu.modules.gpt import GPTModule
from succu.modules.hypersurface import HypersurfaceModule
from succu.modules.succulm import SuccuLMModule
from succu.tokenizers import WordTokenizer
from tests.tiny import tiny_module

SUCCULM = str(Path(__file__).resolve().parents[1] / "configs" / "succulm.yaml")
TINY = ["--config", SUCCULM, "--model.init_args.model.profile", "tiny", "--data.init_args.batch_size",
        "8", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.limit_val_batches", "1"]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_qa_callback_logs_the_exact_match_of_the_fitted_weights_and_the_talk_comes_last(capsys):
    cli = fit.main([*TINY, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                    "--trainer.num_sanity_val_steps", "1"])
    assert any(isinstance(c, QAExactMatch) for c in cli.trainer.callbacks)  # succulm.yaml names it
    assert sum(isinstance(c, TalkAfterFit) for c in cli.trainer.callbacks) == 1  # every run has one
    metrics, data = cli.trainer.callback_metrics, cli.datamodule
    for name, pairs in (("train", data.train_qa), ("heldout", data.heldout_qa)):
        expected = qa_exact_match(cli.model, list(pairs)).exact_match  # the validation's weights
        assert float(metrics[f"qa/{name}_exact_match"]) == pytest.approx(expected, abs=1e-6)
    out = capsys.readouterr().out
    assert out.count("== talk (greedy) ==") == 1
    assert out.rstrip().endswith(report(cli.model, data).rstrip())  # the last thing printed


def test_no_talk_under_fast_dev_run_or_validate(capsys):
    cli = fit.main([*TINY, "--trainer.fast_dev_run", "1"])
    assert "== talk" not in capsys.readouterr().out
    fit.main(["validate", *TINY, "--trainer.default_root_dir", "v"])
    assert "== talk" not in capsys.readouterr().out
    assert cli.trainer.fast_dev_run


def test_probes_refuse_what_they_cannot_read_in_one_line(tmp_path):
    from datamodules.mixture import MixtureDataModule

    data = MixtureDataModule(tokens=Tokens(cache_dir=str(tmp_path)))
    with pytest.raises(CapabilityError) as err:
        QAExactMatch().setup(SimpleNamespace(datamodule=data), None, "fit")
    assert str(err.value) == ("QAExactMatch needs a datamodule with question-answer probes: prompts "
                              "to talk to and scored QA pairs; MixtureDataModule has none")
    gpt = GPTModule(GPTConfig(vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(CapabilityError) as err:
        Diagnostics().setup(SimpleNamespace(datamodule=data), gpt, "fit")
    assert "\n" not in str(err.value) and str(err.value).endswith("GPT does neither")
    TalkAfterFit().teardown(SimpleNamespace(datamodule=data), gpt, "fit")  # no QA probes: nothing


def test_checkpoints_with_retired_arguments_still_load(tmp_path):
    tok = WordTokenizer.from_words([f"w{i}" for i in range(10)])
    for cls, retired in ((SuccuLMModule, {"log_qa": True, "diagnostics": False}),
                         (HypersurfaceModule, {"diagnostics": True})):
        module = tiny_module(cls, vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2,
                             n_embd=8, warmup_steps=3)
        module.tokenizer = tok
        ckpt = {"state_dict": module.state_dict(), "hyper_parameters": {**module.hparams, **retired}}
        module.on_save_checkpoint(ckpt)
        torch.save(ckpt, tmp_path / "old.ckpt")
        loaded = load_module(tmp_path / "old.ckpt")
        assert type(loaded) is cls and loaded.warmup_steps == 3 and not set(retired) & set(loaded.hparams)
        assert dataclasses.asdict(loaded.model.cfg) == dataclasses.asdict(module.model.cfg)
        torch.testing.assert_close(loaded.state_dict(), module.state_dict())
    assert init_arguments(HypersurfaceModule) == {"model", "rare_threshold", "optimizer", "warmup_steps",
                                                  "min_lr_ratio", "compile"}


class KeyStub(GPTModule, KeyRuleStop):
    """Not a noise LM, but declares the key rule: generate takes its word for it."""

    def key_search(self, prompt, max_new_tokens, beams=1, search="beam", budget=200):
        return SimpleNamespace(tokens=self.tokenizer.encode("w1 w2"), stopped=True), 3


@pytest.mark.parametrize("cls", [KeyStub, GPTModule])
def test_stop_key_asks_for_the_capability_not_a_class(cls, monkeypatch, capsys):
    module = tiny_module(cls, vocab_size=12, block_size=8, n_layer=1, n_head=1, n_embd=8)
    module.tokenizer = WordTokenizer.from_words([f"w{i}" for i in range(8)])
    monkeypatch.setattr(generate, "load_model", lambda *a, **k: module.eval())
    argv = ["--ckpt", "any.ckpt", "--prompt", "w3", "--stop", "key"]
    if cls is GPTModule:
        with pytest.raises(SystemExit) as exit_:
            generate.main(argv)
        assert exit_.value.code == 2 and "--stop key needs a noise-embedding LM" in capsys.readouterr().err
        return
    assert generate.main(argv) == ["w1 w2"]
    assert "[stopped by the rule; 3 expansions]" in capsys.readouterr().out
