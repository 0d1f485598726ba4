"""python -m studies.dial --quick: the dial study's whole path (two-corpus recipes against the
ungated GPT, the control code and the single-corpus GPTs, test losses at the ends and the middle,
the voice meter and its per-generation scores, the far specialists' gates and their silencing,
K = 3 at each vertex and the centre against an ungated 3-corpus GPT, under two draws) through the
product on a few steps; a rerun trains nothing and reads the same rows back."""

import json
import re
import subprocess
import sys

import pytest

from studies.dial import QUICK_RECIPES, RECIPES, Run, argv
from tests.paths import REPO

HEADINGS = (
    "### Two corpora: test loss (nats/char) at alpha = 0 / 0.5 / 1",
    "| recipe | seeds | TS @0 | TS @0.5 | TS @1 | SH @0 | SH @0.5 | SH @1 | far-end gap TS | far-end gap SH |",
    "### Two corpora: against the ungated GPT at the dial's ends and middle",
    "### Two corpora: against the control-code GPT at the dial's ends and middle",
    "| recipe | TS @0 | TS @0.5 | SH @0.5 | SH @1 |",
    "| shipped | ", "| control | ", "| ungated | ", "one seed: no verdict",
    "### Voice: share of 4 generations per position judged Shakespeare (meter accuracy on validation windows: ",
    "| recipe | alpha 0 | alpha 0.25 | alpha 0.5 | alpha 0.75 | alpha 1 | monotone (seeds) |",
    "### The property: mean gate of the far specialists",
    "(m < 0.1 at 1)",
    "### Three corpora (k3, Dirichlet(0.1) draws): test loss (nats/char) at each vertex and the centre",
    "### Three corpora (k3_d02, Dirichlet(0.2) draws): test loss (nats/char) at each vertex and the centre",
    "### Three corpora: the training draws compared on the test split (k3 ships Dirichlet(0.1), chosen on the validation grid",
    "| k3_d02 | Dirichlet(0.2) | shakespeare | ",
    "| model | corpus | @e_TS | @e_SH | @e_KJV | @centre | lowest at own vertex (within 0.02) | far-vertex gaps |",
    "| k3_ungated | kjv | ",
    "Each corpus lowest at its own vertex (within 0.02) on every seed (k3): tinystories ",
    "### Three corpora (k3) on the 66-point simplex grid (step 0.1) of the test split: each corpus's best point",
    "| corpus | own vertex | best point per seed | best loss | own vertex - best | own vertex within 0.02 of the best |",
    "### Three corpora: own-vertex cost against the ungated 3-corpus GPT (k3 - ungated)",
    "### Voice: share of 4 generations per position judged each corpus",
    "| k3 | 0.333334,0.333333,0.333333 | ",
    "| ts_only | 1 | ", "| sh_only | 1 | ",
    "### C5 partitioning: each end of the dial against the single-corpus GPT of that end's corpus",
    "| recipe | TS end (alpha 0) on TS - ts_only | TS end (alpha 0) on SH - ts_only | "
    "SH end (alpha 1) on TS - sh_only | SH end (alpha 1) on SH - sh_only |",
    "### Voice scores: log-likelihood ratio shakespeare : tinystories of each generation (nats/char",
    "| recipe | alpha | mean | sd | 10% | median | 90% | in the middle third | a switch would give | "
    "middle - switch |",
    "### C3 specialists: unit silencing at alpha = 0.5 (test loss with the set's gates held at 0 - without; "
    "no training; m > 0.9: the specialists of shakespeare, m < 0.1: the specialists of tinystories)",
    "| recipe | silenced | units | Δ tinystories | Δ shakespeare | own corpus - other corpus | own corpus: set - random |",
)
NUMBER = r"[+-]?\d+\.\d+"
# The new sections' rows, each holding numbers (not dashes or blanks) where the study measured them.
ROWS = {
    "C5": rf"\| (shipped|control) \| {NUMBER} \(one seed: no verdict\)( \| {NUMBER} \(one seed: no verdict\)){{3}} \|",
    "scores": rf"\| (shipped|control) \| 0\.(25|5|75) \|( {NUMBER} ± {NUMBER} \|){{7}} {NUMBER} \(one seed",
    "C3": rf"\| shipped \| m > 0\.9 \| \d+ \| {NUMBER} ± {NUMBER} \| {NUMBER} ± {NUMBER} \| {NUMBER} \(one seed",
    "C3 random": rf"\| shipped \| random \| \d+ \| {NUMBER} ± {NUMBER} \| {NUMBER} ± {NUMBER} \| - \| - \|",
    "draws": rf"\| k3_d02 \| Dirichlet\(0\.2\) \| kjv \| {NUMBER} ± {NUMBER} \| {NUMBER} ± {NUMBER} \| "
             rf"{NUMBER} ± {NUMBER} \| {NUMBER} \(one seed: no verdict\) \|",
}


# About a minute: slow, run by `make test-all`; the study itself is the real check.
@pytest.mark.slow
def test_quick_study_prints_every_table_and_a_rerun_trains_nothing(tmp_path, cache):
    cmd = [sys.executable, "-m", "studies.dial", "--quick", "--jobs", "1",
           "--out", str(tmp_path / "out"), "--figures", str(tmp_path / "fig"),
           "--report", str(tmp_path / "report.md"), "--cache_dir", cache]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    for text in HEADINGS:
        assert text in out, text
    for name, pattern in ROWS.items():
        assert re.search(pattern, out), name
    runs = sorted((tmp_path / "out" / "runs").glob("*.json"))
    assert len(runs) == len(QUICK_RECIPES) == 8  # each quick recipe at one seed
    files = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs}
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {
        "alpha_dial_voice.png", "alpha_dial_voice_scores.png", "alpha_dial_k3_ternary.png", "alpha_dial_k3_voice.png"}
    assert (tmp_path / "report.md").read_text().strip() in out
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "out" / "runs").glob("*.json")} == files
    table = lambda text: text[text.index("### Two corpora"):text.index("![")]  # noqa: E731
    assert table(again.stdout) == table(out)
    progress = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("  [")]
    assert [line.split("] ", 1)[1] for line in again.stdout.splitlines() if line.startswith("  [")] == progress


@pytest.mark.parametrize("recipe, weights", [("ts_only", [1.0, 0.0]), ("sh_only", [0.0, 1.0])])
def test_a_single_corpus_recipe_trains_on_its_corpus_alone_with_no_dial(recipe, weights):
    """The mixture's data (tokenizer, text form, test windows) with training weights 1 and 0, an
    ungated model, and no callback, so no dial draws; the rest as every recipe's."""
    args = argv(Run(recipe, 1, 10, 0), "/tmp/x")
    assert json.loads(args[args.index("--data.init_args.weights") + 1]) == weights
    assert args[args.index("--trainer.callbacks") + 1] == "[]"
    assert args[args.index("--model.init_args.model.gating") + 1] == "false"
    shipped = argv(Run("shipped", 1, 10, 0), "/tmp/x")
    assert args[:args.index("--data.init_args.weights")] == shipped[:len(args[:args.index("--data.init_args.weights")])]
    assert RECIPES[recipe].config == RECIPES["shipped"].config


def test_k3_draws_variant_changes_only_the_concentration():
    k3, d02 = argv(Run("k3", 1, 10, 0), "/tmp/x"), argv(Run("k3_d02", 1, 10, 0), "/tmp/x")
    callbacks = [json.loads(a[a.index("--trainer.callbacks") + 1]) for a in (k3, d02)]
    assert [c[0]["init_args"]["concentration"] for c in callbacks] == [0.1, 0.2]
    assert [x for x in k3 if "AlphaBetaSampling" not in x] == [x for x in d02 if "AlphaBetaSampling" not in x]


@pytest.mark.parametrize("recipe", ["abcgpt", "ungated", "control"])
def test_full_scale_lays_abcgpts_size_over_the_recipe_and_keeps_the_rest(recipe, capsys):
    """--scale full: configs/full/abcgpt_char.yaml after the recipe's config, so the model and the
    windows are abcGPT's size while every other setting (the recipe's fields, the control code,
    the study's steps) is the baby run's; its results are filed apart from the baby runs."""
    import yaml

    from succu import fit

    def printed(run):
        with pytest.raises(SystemExit) as exc:
            fit.main([*argv(run, "/tmp/x"), "--print_config"])
        assert exc.value.code == 0
        return yaml.safe_load(capsys.readouterr().out)

    baby, full = Run(recipe, 1, 5000, 0), Run(recipe, 1, 5000, 0, scale="full")
    assert full.key == f"full-{baby.key}" and full.stamp() != baby.stamp()
    small, big = printed(baby), printed(full)
    model, windows = big["model"]["init_args"]["model"], big["data"]["init_args"]["windows"]
    size = {"n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2}
    assert {k: model[k] for k in size} == size
    assert (windows["block_size"], windows["batch_size"], big["trainer"]["max_steps"]) == (256, 64, 5000)
    rest = {k: v for k, v in small["model"]["init_args"]["model"].items() if k not in size and k != "block_size"}
    assert rest == {k: model[k] for k in rest} and rest["gating"] == (recipe != "ungated")
    assert big["trainer"]["callbacks"] == small["trainer"]["callbacks"]
