"""Evaluating from a checkpoint alone (`python -m succu.evaluate`), test splits distinct from
validation, no `predict`, and generation that cannot silently mislead: the dial's default, the
token cap, tiny temperatures, unknown prompt characters, streamed output."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.corpora import Splits, corpus_spec, load_documents, resolve_source, split_corpus
from datamodules.shakespeare import ShakespeareDataModule
from datamodules.succulent import SuccuPairsDataModule
from datamodules.tokens import Tokens
from datamodules.windows import Windows
from succu import evaluate, fit, generate
from succu.checkpoint import load_datamodule, load_module
from succu.modules.base import LanguageModule
from succu.modules.gated_gpt import GatedGPTModule
from succu.tokenizers import CharTokenizer
from tests.refusals import refused
from tests.test_trust import Payload, rewrite
from tests.tiny import tiny_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
CHAR = ["--config", str(CONFIGS / "gpt_shakespeare_char.yaml"), *QUIET,
        "--model.init_args.model.n_layer", "1", "--model.init_args.model.n_embd", "16",
        "--model.init_args.model.n_head", "2", "--data.init_args.windows.block_size", "16",
        "--data.init_args.windows.val_windows", "8", "--data.init_args.windows.batch_size", "4",
        "--data.init_args.splits.test_fraction", "0.05"]


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory, shared_data, cache) -> str:
    """A char GPT on Shakespeare, fitted for a few steps through the CLI."""
    root = tmp_path_factory.mktemp("char")
    cli = fit.main([*CHAR, "--trainer.max_steps", "4", "--trainer.val_check_interval", "4",
                    "--data.init_args.tokens.cache_dir", cache, "--trainer.default_root_dir", str(root)])
    return cli.trainer.checkpoint_callback.best_model_path


@pytest.fixture(scope="module")
def word_ckpt(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("succulm")
    cli = fit.main(["--config", str(CONFIGS / "succulm.yaml"), *QUIET, "--model.init_args.model.profile",
                    "tiny", "--data.init_args.batch_size", "8", "--trainer.max_steps", "2",
                    "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
                    "--trainer.default_root_dir", str(root)])
    return cli.trainer.checkpoint_callback.best_model_path


def write_gated(folder, **extra) -> str:
    """An untrained GatedGPT with a char tokenizer, written as `python -m succu.fit` writes one."""
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(["abcdefgh ij.\n"])
    module = tiny_module(GatedGPTModule, vocab_size=tok.vocab_size, block_size=16, n_layer=1,
                         n_head=2, n_embd=16, **extra)
    module.tokenizer = tok
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(ckpt)
    path = folder / "gated.ckpt"
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def gated_ckpt(tmp_path_factory) -> str:
    return write_gated(tmp_path_factory.mktemp("gated"))


@pytest.fixture(scope="module")
def gated3_ckpt(tmp_path_factory) -> str:
    """The same over three sources (a dial on the simplex)."""
    return write_gated(tmp_path_factory.mktemp("gated3"), n_sources=3, eval_alphas=[[1, 0, 0]])


def text_file(text: str, name: str = "text.txt") -> str:
    Path(name).write_text(text, encoding="utf-8")
    return name


def shakespeare_tail(shared_data: Path, chars: int = 400) -> str:
    return (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[-chars:]


def nats_per_token(module: LanguageModule, ids: list[int], contexts) -> float:
    """The mean loss of targets ids[t] (t >= 1), each predicted from ids[contexts(t):t]."""
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            logits = module(torch.tensor([ids[contexts(t):t]]))[0, -1]
            total += float(F.cross_entropy(logits[None], torch.tensor([ids[t]])))
    return total / (len(ids) - 1)


# ---- evaluate --text -------------------------------------------------------------------------------
def test_text_is_scored_in_chunks_and_bits_per_character_is_loss_over_ln2(char_ckpt, shared_data, capsys):
    text = shakespeare_tail(shared_data)
    result = evaluate.main(["--ckpt", char_ckpt, "--text", text_file(text)])["text.txt"]
    module = load_module(char_ckpt)
    ids = module.tokenizer.encode(text)
    block = module.model.cfg.block_size
    chunked = nats_per_token(module, ids, lambda t: (t - 1) // block * block)  # non-overlapping
    assert result["tokens"] == result["characters"] == len(text) - 1
    assert result["loss"] == pytest.approx(chunked, rel=1e-5)
    assert result["bpc"] == pytest.approx(result["loss"] / math.log(2))
    assert result["ppl"] == pytest.approx(math.exp(result["loss"]))
    assert "text.txt: loss " in capsys.readouterr().out


def test_a_stride_scores_every_token_once_with_more_context(char_ckpt, shared_data):
    text = shakespeare_tail(shared_data, 120)
    module = load_module(char_ckpt)
    ids, block = module.tokenizer.encode(text), module.model.cfg.block_size
    full = nats_per_token(module, ids, lambda t: max(0, t - block))  # the most context there is
    slid = evaluate.main(["--ckpt", char_ckpt, "--text", text_file(text), "--stride", "1"])["text.txt"]
    assert slid["tokens"] == len(ids) - 1 and slid["loss"] == pytest.approx(full, rel=1e-5)
    for stride in ("5", "16"):
        assert evaluate.main(["--ckpt", char_ckpt, "--text", "text.txt", "--stride", stride])[
            "text.txt"]["tokens"] == len(ids) - 1


def test_characters_the_vocabulary_lacks_are_named_and_counted_or_dropped(char_ckpt, capsys):
    path = text_file("ROMEO: a café, a café\u20ac.\n")
    line = refused(capsys, evaluate.main, ["--ckpt", char_ckpt, "--text", path])
    assert line == ("error: text.txt has 3 characters the checkpoint's vocabulary lacks: 'é' x2, "
                    "'€' x1 (--drop_unknown leaves them out)")
    result = evaluate.main(["--ckpt", char_ckpt, "--text", path, "--drop_unknown"])["text.txt"]
    assert result["tokens"] == len("ROMEO: a caf, a caf.\n") - 1
    assert "left out 3 characters not in the vocabulary: 'é' x2, '€' x1" in capsys.readouterr().err


def test_a_word_model_scores_unknown_words_as_unk(word_ckpt, capsys):
    result = evaluate.main(["--ckpt", word_ckpt, "--text", text_file("ruby is a zebra. zebra?")])["text.txt"]
    assert "2 words not in the vocabulary, scored as <UNK>: 'zebra' x2" in capsys.readouterr().err
    # <BOS> then 7 words and signs, all scored; characters of the text as the tokenizer reads it.
    assert result["tokens"] == 7 and result["characters"] == len("ruby is a zebra. zebra?")


@pytest.mark.parametrize("argv, message", [
    (["--text", "nope.txt"], "error: --text nope.txt does not exist"),
    (["--text", "text.txt", "--stride", "0"], "error: --stride must be between 1 and the model's block_size 16"),
    (["--text", "text.txt", "--alpha", "0.5"], "error: --alpha needs a gated model"),
    (["--corpus", "kjv"], "error: --corpus kjv: the checkpoint's data has shakespeare"),
    ([], "error: one of the arguments --text --corpus is required"),
])
def test_bad_evaluate_arguments_are_one_line(char_ckpt, capsys, argv, message):
    text_file("ROMEO: hello\n")
    assert refused(capsys, evaluate.main, ["--ckpt", char_ckpt, *argv]).startswith(message)


def test_evaluate_reads_checkpoints_as_plain_data_only(word_ckpt, tmp_path, capsys):
    marker = tmp_path / "marker"
    hostile = rewrite(word_ckpt, tmp_path / "payload.ckpt", lambda c: c["succu"].update(tokenizer=Payload(marker)))
    assert "it asks to run" in refused(capsys, evaluate.main, ["--ckpt", hostile, "--text", text_file("hi")])
    assert not marker.exists()


# ---- test splits -----------------------------------------------------------------------------------
def test_corpus_scores_the_test_split_exactly_as_fit_test_does(char_ckpt, cache, capsys, monkeypatch):
    from succu.progress import progress

    monkeypatch.setitem(progress.__kwdefaults__, "every", 0.0)  # a line per batch in a pipe
    scores = evaluate.main(["--ckpt", char_ckpt, "--corpus", "shakespeare"])
    assert "evaluate (test): 1/" in capsys.readouterr().err
    val = evaluate.main(["--ckpt", char_ckpt, "--corpus", "--split", "val"])
    cli = fit.main(["test", *CHAR, "--data.init_args.tokens.cache_dir", cache, "--ckpt_path", char_ckpt])
    logged = cli.trainer.callback_metrics
    assert list(scores) == ["shakespeare (test)"] and list(val) == ["shakespeare (val)"]
    assert scores["shakespeare (test)"]["loss"] == pytest.approx(float(logged["test/loss"]), rel=1e-5)
    # test/ppl is exp(test/loss), to float precision (not a mean of per-batch perplexities)
    assert float(logged["test/ppl"]) == pytest.approx(math.exp(float(logged["test/loss"])), rel=1e-6)
    # val/ppl (torchmetrics' Perplexity over every token) is exp(val/loss) too
    cli = fit.main(["validate", *CHAR, "--data.init_args.tokens.cache_dir", cache, "--ckpt_path", char_ckpt])
    logged = cli.trainer.callback_metrics
    assert float(logged["val/ppl"]) == pytest.approx(math.exp(float(logged["val/loss"])), rel=1e-5)
    assert scores["shakespeare (test)"]["loss"] != val["shakespeare (val)"]["loss"]


def flatten(ckpt: dict, *drop: str) -> None:
    """The datamodule's settings in the flat form `load_datamodule` also reads: each group's
    fields at the top level (less `drop`)."""
    hparams = ckpt["datamodule_hyper_parameters"]
    for group in ("windows", "tokens", "splits", "sources"):
        hparams.update(hparams.pop(group))
    for key in drop:
        del hparams[key]


def test_a_checkpoint_with_flat_data_settings_rebuilds_the_same_datamodule(char_ckpt, tmp_path, cache):
    flat = rewrite(char_ckpt, tmp_path / "flat.ckpt", flatten)
    assert "block_size" in torch.load(flat, weights_only=True)["datamodule_hyper_parameters"]
    old, new = (load_datamodule(path, load_module(path), cache_dir=cache) for path in (flat, char_ckpt))
    assert (old.windows, old.tokens, old.splits, old.sources) == (new.windows, new.tokens, new.splits, new.sources)
    assert old.splits.test_fraction == 0.05 and old.block_size == 16  # the fit's, not the defaults
    assert [b["input_ids"].tolist() for b in old.val_batches()] == [b["input_ids"].tolist() for b in new.val_batches()]
    assert evaluate.main(["--ckpt", flat, "--corpus"]) == evaluate.main(["--ckpt", char_ckpt, "--corpus"])


def test_a_checkpoint_from_before_test_splits_is_scored_on_validation(char_ckpt, tmp_path, capsys):
    old = rewrite(char_ckpt, tmp_path / "old.ckpt", lambda c: flatten(c, "test_fraction"))
    scores = evaluate.main(["--ckpt", old, "--corpus"])
    # It trained on what is now the test share: scoring that would flatter it.
    assert "has no test split (test_fraction=0)" in capsys.readouterr().err
    assert scores["shakespeare (val)"] == evaluate.main(["--ckpt", char_ckpt, "--corpus", "--split", "val"])[
        "shakespeare (val)"]


def test_running_text_splits_three_ways_and_validation_is_unchanged(shared_data, cache):
    dms = [ShakespeareDataModule(windows=Windows(val_windows=8), tokens=Tokens(cache_dir=cache),
                                 splits=Splits(test_fraction=f)) for f in (0.0, 0.05)]
    for dm in dms:
        dm.setup()
    before, now = dms
    tok = now.tokenizer
    assert before.tokenizer == tok  # the same characters
    assert np.array_equal(before.val_arrays[0], now.val_arrays[0])
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(before.val_batches(), now.val_batches()))
    test = now.load_arrays("test")[0]
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert tok.decode(now.train_arrays[0].tolist()) + tok.decode(test.tolist()) == text[: int(len(text) * 0.9)]
    assert len(test) == int(len(text) * 0.9) - int(len(text) * 0.85)
    with pytest.raises(ValueError, match=r"has no test split \(test_fraction=0\)"):
        before.test_dataloader()


def test_documents_split_three_ways_and_validation_is_unchanged(shared_data):
    spec = corpus_spec("tinystories")
    docs = load_documents(spec, resolve_source(spec))
    before, now = (split_corpus(spec, docs, 0.1, 0, [], test_fraction=f) for f in (0.0, 0.05))
    sides = {k: {t.strip() for t in now[k]["text"]} for k in ("train", "val", "test")}
    assert sides["val"] == {t.strip() for t in before["val"]["text"]}
    assert not sides["test"] & (sides["train"] | sides["val"])
    assert sides["train"] | sides["test"] == {t.strip() for t in before["train"]["text"]}
    assert 0.03 < len(sides["test"]) / len(docs) < 0.07


def test_the_succulent_test_split_is_pairs_the_world_left_out(tmp_path):
    dm = SuccuPairsDataModule()
    test = dm.test_pairs
    assert len(test) > 50 and not set(test) & set(dm.train_pairs + dm.val_pairs)
    assert sum(len(b["input_ids"]) for b in dm.test_dataloader()) == len(test)
    dm.save_reference_files(tmp_path)
    with pytest.raises(ValueError, match="hold no test split"):
        SuccuPairsDataModule(data_dir=str(tmp_path)).test_dataloader()


def test_predict_is_not_offered(capsys):
    assert set(fit.SuccuCLI.subcommands()) == {"fit", "validate", "test"}
    line = refused(capsys, fit.main, ["predict", "--config", "x.yaml"])
    assert line.startswith("error: predict is not offered") and "succu.generate" in line


# ---- generation ------------------------------------------------------------------------------------
def test_a_gated_model_without_alpha_runs_at_the_middle_and_says_so(gated_ckpt, capsys):
    args = ["--ckpt", gated_ckpt, "--prompt", "abc", "--max_new_tokens", "6", "--greedy"]
    default = generate.main(args)
    assert "generating at alpha=0.5, the middle" in capsys.readouterr().err
    assert default == generate.main([*args, "--alpha", "0.5"])
    module = load_module(gated_ckpt)
    ids = torch.tensor([module.prompt_ids("abc")])
    torch.testing.assert_close(module.generate(ids, 6, greedy=True), module.generate(ids, 6, greedy=True, alpha=0.5))
    text = text_file("abc defg hij.\n")
    middle = evaluate.main(["--ckpt", gated_ckpt, "--text", text])
    assert "evaluating at alpha=0.5, the middle" in capsys.readouterr().err
    assert middle == evaluate.main(["--ckpt", gated_ckpt, "--text", text, "--alpha", "0.5"])
    assert middle != evaluate.main(["--ckpt", gated_ckpt, "--text", text, "--alpha", "0"])


def test_max_new_tokens_is_capped_in_one_line(char_ckpt, capsys):
    line = refused(capsys, generate.main, ["--ckpt", char_ckpt, "--prompt", "a", "--max_new_tokens", "1e20"])
    assert line == (f"error: argument --max_new_tokens: 1e20 is above the cap of {generate.MAX_NEW_TOKENS} "
                    "new tokens per prompt")
    assert generate.token_budget("1e3") == 1000


def test_a_tiny_temperature_samples_like_greedy(char_ckpt):
    args = ["--ckpt", char_ckpt, "--prompt", "ROMEO:", "--max_new_tokens", "20"]
    assert generate.main([*args, "--temperature", "1e-45"]) == generate.main([*args, "--greedy"])
    logits = torch.tensor([[3.0, 40.0, -2.0, float("-inf")]])
    assert LanguageModule.pick(logits, 1e-45, None, False, None).tolist() == [1]


def test_prompt_characters_the_vocabulary_lacks_are_an_error_or_dropped(char_ckpt, capsys):
    line = refused(capsys, generate.main, ["--ckpt", char_ckpt, "--prompt", "café"])
    assert "prompt 'café' has 1 characters the checkpoint's vocabulary lacks: 'é' x1" in line
    out = generate.main(["--ckpt", char_ckpt, "--prompt", "café", "--drop_unknown", "--max_new_tokens", "4"])
    assert len(out) == 1 and "left out 1 characters not in the vocabulary: 'é' x1" in capsys.readouterr().err


@pytest.mark.parametrize("ckpt, prompt", [("char_ckpt", "ROMEO:"), ("word_ckpt", "is ruby a boy?")])
def test_streamed_pieces_join_to_the_completion(request, ckpt, prompt, capsys):
    module = load_module(request.getfixturevalue(ckpt))
    pieces = list(module.stream(prompt, max_new_tokens=12, generator=torch.Generator().manual_seed(1)))
    whole = module.complete([prompt], max_new_tokens=12, generator=torch.Generator().manual_seed(1))[0]
    assert len(pieces) > 1 and "".join(pieces) == whole
    printed = generate.main(["--ckpt", request.getfixturevalue(ckpt), "--prompt", prompt,
                             "--max_new_tokens", "12", "--seed", "1"])
    assert f"{prompt} -> {printed[0]}\n" in capsys.readouterr().out


def test_fit_test_scores_a_gated_model_at_each_corpus_own_end(gated_ckpt):
    module = load_module(gated_ckpt)
    ids = torch.tensor([module.prompt_ids("abc defg hij.")])
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "source": torch.tensor([1])}
    with torch.no_grad():
        own_end = F.cross_entropy(module(batch["input_ids"], alpha=1.0)[0], batch["labels"][0])
        module.on_test_epoch_start()
        module.test_step(batch, 0)
    assert module.local_losses()[(1, module.own_end(1))][0] == pytest.approx(float(own_end), rel=1e-6)


def test_a_three_source_model_scores_text_at_the_centre_or_at_k_shares(gated3_ckpt, capsys):
    text = text_file("abc defg hij.\n")
    middle = evaluate.main(["--ckpt", gated3_ckpt, "--text", text])
    assert ("evaluating at alpha=0.333333,0.333333,0.333333, the middle (--alpha 1,0,0 for a corner)"
            in capsys.readouterr().err)
    module = load_module(gated3_ckpt)
    ids = torch.tensor([module.prompt_ids("abc defg hij.\n")])
    with torch.no_grad():
        centre = F.cross_entropy(module(ids[:, :-1], alpha=(1 / 3,) * 3)[0], ids[0, 1:])
    assert middle["text.txt"]["loss"] == pytest.approx(float(centre), rel=1e-5)
    shares = evaluate.main(["--ckpt", gated3_ckpt, "--text", text, "--alpha", "0.2,0.3,0.5"])
    with torch.no_grad():
        at = F.cross_entropy(module(ids[:, :-1], alpha=(0.2, 0.3, 0.5))[0], ids[0, 1:])
    assert shares["text.txt"]["loss"] == pytest.approx(float(at), rel=1e-5) != middle["text.txt"]["loss"]


@pytest.mark.parametrize("alpha, message", [
    ("0.5", "error: alpha 0.5 is one number, but this dial spans 3 sources: give 3 comma-separated shares"),
    ("0.5,0.5", "error: alpha 0.5,0.5 has 2 shares, but this dial spans 3 sources"),
    ("0.2,0.3,0.6", "error: alpha must be 3 non-negative shares summing to 1 (within 1e-06), got 0.2,0.3,0.6"),
    ("x", "error: alpha 'x' must be a number in [0, 1] or comma-separated shares"),
])
def test_a_bad_k_source_alpha_is_one_line(gated3_ckpt, capsys, alpha, message):
    text = text_file("abc\n")
    assert refused(capsys, evaluate.main, ["--ckpt", gated3_ckpt, "--text", text, "--alpha", alpha]).startswith(message)


def test_two_shares_are_the_two_source_alpha(gated_ckpt):
    text = text_file("abc defg hij.\n")
    assert (evaluate.main(["--ckpt", gated_ckpt, "--text", text, "--alpha", "0.25,0.75"])
            == evaluate.main(["--ckpt", gated_ckpt, "--text", text, "--alpha", "0.75"]))
