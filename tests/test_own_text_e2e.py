"""A user's own text, end to end, as the README tells it: write a text (not one of the shared
corpora, non-ASCII included), train a GPT on it through the CLI under a name of one's own, talk to
it, evaluate it (the report names the file), `fit test` it, export it to Hugging Face and reload it
in transformers: the same logits and the same greedy continuation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from succu import evaluate, export, fit, generate
from succu.checkpoint import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WORDS = ("Bäume", "rauschen", "über", "dem", "Fluß", "и", "снег", "падает", "θάλασσα", "café",
         "señor", "wächst", "leise", "im", "Mondlicht", "“Ja”", "—", "naïve")
NEW_TOKENS = 50


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache) -> dict:
    """`python -m succu.fit --config configs/gpt_text.yaml --data.init_args.data_path ...`, tiny."""
    root = tmp_path_factory.mktemp("own")
    rng = random.Random(3)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) + "." for _ in range(900))
    path = root / "mein text" / "notizen.txt"
    path.parent.mkdir()
    path.write_text(text + "\n", encoding="utf-8")
    data = ["--data.init_args.data_path", str(path), "--data.init_args.name", "notizen",
            "--data.init_args.tokens.cache_dir", cache]
    sizes = ["--model.init_args.model.n_layer", "1", "--model.init_args.model.n_head", "2",
             "--model.init_args.model.n_embd", "32", "--data.init_args.windows.block_size", "96",
             "--data.init_args.windows.val_windows", "16", "--data.init_args.windows.batch_size", "8"]
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    cli = fit.main(["--config", str(CONFIGS / "gpt_text.yaml"), *sizes, *data, *quiet,
                    "--trainer.max_steps", "30", "--trainer.val_check_interval", "30",
                    "--trainer.default_root_dir", str(root / "runs")])
    return {"path": path, "data": data, "sizes": sizes, "quiet": quiet, "root": root,
            "ckpt": cli.trainer.checkpoint_callback.best_model_path,
            "val": float(cli.trainer.callback_metrics["val/loss"])}


@pytest.mark.usefixtures("isolated")
def test_own_text_trains_talks_evaluates_tests_and_exports(run, capsys, tmp_path):
    ckpt, path = run["ckpt"], run["path"]
    said = generate.main(["--ckpt", ckpt, "--prompt", "Bäume rauschen", "--max_new_tokens", "20", "--greedy"])
    assert len(said) == 1 and len(said[0]) == 20

    scores = evaluate.main(["--ckpt", ckpt, "--corpus", "--split", "val", "--data_path", f"notizen={path}"])
    assert scores["notizen (val)"]["loss"] == pytest.approx(run["val"], rel=1e-6)
    assert f"notizen: reading {path.resolve()}" in capsys.readouterr().err

    tested = fit.main(["test", "--config", str(CONFIGS / "gpt_text.yaml"), *run["sizes"], *run["data"],
                       *run["quiet"], "--ckpt_path", ckpt])
    assert tested.trainer.callback_metrics["test/loss"] > 0
    assert f"notizen: reading {path.resolve()}" in capsys.readouterr().err

    transformers = pytest.importorskip("transformers", reason="the export-test extra (make install has it)")
    out = export.main(["--ckpt", ckpt, str(tmp_path / "hf")])
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    module = load_module(ckpt)
    prompt = "Bäume rauschen “leise” über dem Fluß"  # curly quotes: the corpus's surface rules
    ids = torch.tensor([module.prompt_ids(prompt)])
    assert tok(prompt)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, module(ids), atol=1e-5, rtol=0)
    ours = module.generate(ids, NEW_TOKENS, greedy=True, eos_id=module.tokenizer.eos_id)
    theirs = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=NEW_TOKENS, do_sample=False)
    assert theirs.tolist() == ours.tolist()
