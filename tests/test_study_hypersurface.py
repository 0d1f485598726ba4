"""python -m studies.hypersurface --quick: the study's whole path (B0's plateau sweep, the other
models at B0's length, seeds, rarity split, |cos| histograms, verdicts, figures) through the
product on a few steps; a rerun reads every run back instead of training. --quick --separate: the
output layer apart from the hypernetwork, every model of it at a given S. And the study's two
latent measurements: the |cos| histogram and the tables read at sampled contexts."""

import json
import re
import subprocess
import sys

import torch

from studies.hypersurface import (
    HYPERNETWORK,
    OUTPUT_LAYER,
    S_TINYSTORIES,
    SEPARATE,
    Size,
    compare,
    confined,
    context_tables,
    cos_histogram,
    parse_args,
    planned_runs,
)
from succu.models.hypersurface import HypersurfaceConfig, HypersurfaceLM
from tests.paths import REPO


def test_cos_histogram():
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    hist = cos_histogram(rows, bins=10)
    # |cos| of the 6 pairs: 0, 1/sqrt2, 1, 1/sqrt2, 0, 1/sqrt2
    assert hist.sum() == 6 and hist[0] == 2 and hist[7] == 3 and hist[9] == 1


def test_input_only_reads_out_against_its_head_never_t_e():
    torch.manual_seed(0)
    V, D = 40, 32
    model = HypersurfaceLM(HypersurfaceConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=D,
                                              variant="lowrank", rank=2, input_only=True)).eval()
    ids = torch.randint(0, V, (2, 16))
    # The readout table is W itself, never T_t E.
    table, readout = context_tables(model, ids, n_contexts=4)
    assert readout is model.lm_head.weight and table.shape == (4, V, D)


def test_quick_study_prints_every_table_and_resumes(tmp_path):
    cmd = [sys.executable, "-m", "studies.hypersurface", "--quick", "--jobs", "1",
           "--out", str(tmp_path / "out"), "--figures", str(tmp_path / "fig"),
           "--report", str(tmp_path / "report.md"), "--cache_dir", str(tmp_path / "cache")]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    for text in ("### Trained on tinystories: S = ", "Learning-rate sweep", "| b0 | 397,952 (+0.0%) |",
                 "| input-only |", "shakespeare rare", "kjv rare", "| tinystories common | tinystories rare | tinystories unseen |", "Claims against B0",
                 "one seed: no verdict",
                 "| E at init (every model) |", "| film: T_t E at the end |", "| input-only: head W at the end |"):
        assert text in out, text
    runs = sorted((tmp_path / "out" / "runs").glob("*.json"))
    assert len(runs) == 3  # three models, one seed, one learning rate
    for path in runs:  # a curve's steps are optimizer steps taken: the last one is the run's length
        row = json.loads(path.read_text())
        assert row["curve"][-1][0] == row["steps"], (row["run"]["model"], row["curve"][-1][0], row["steps"])
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {
        "hypersurface_curves_tinystories.png", "hypersurface_cos_tinystories.png"}
    assert (tmp_path / "report.md").read_text().strip() in out
    again = subprocess.run(cmd + ["--report_only"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    table = lambda text: text[text.index("### Trained"):text.index("![")]  # noqa: E731
    assert table(again.stdout) == table(out)


def test_a_frozen_readouts_worse_loss_is_decided_by_the_output_layer():
    size = Size()
    assert confined("film", size) and confined("b2", size) and confined("lowrank-r8", size)
    for m in ("film+bias", "b2+bias", "input-only", "input-only-orthogonal", "b0", "b1"):
        assert not confined(m, size), m
    assert not confined("film", Size(vocab=64))  # V <= d: E's columns span every logit vector
    worse, better = [5.30, 5.31, 5.29], [3.50, 3.52, 3.48]
    assert compare(worse, better).endswith(": does not hold")
    assert compare(worse, better, confined=True).endswith(": decided by the output layer")
    assert compare(better, worse, confined=True).endswith(": holds")


def test_separate_trains_tinystories_at_its_s_on_the_pairs_models():
    args = parse_args(["--separate"])
    assert args.directions == ["tinystories"] and args.steps == S_TINYSTORIES
    assert args.models == SEPARATE and {"b1", "b2", "b2+bias", "b0+bias"} <= set(SEPARATE)
    assert planned_runs(args) == 11 * (3 + 2) == 55
    assert planned_runs(parse_args([])) == 80  # the default study, as before
    assert parse_args(["--separate", "--steps", "700"]).steps == 700


def test_quick_separate_reports_the_output_layer_apart_from_the_hypernetwork(tmp_path):
    cmd = [sys.executable, "-m", "studies.hypersurface", "--quick", "--separate", "--jobs", "1",
           "--out", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "S = 40 steps (given by --steps)" in out and "b0 lr" not in out
    for title in ("The frozen output layer", "The hypernetwork", "Claim (1) with the output bias"):
        assert f"**{title}**" in out, title
    number = r"\d+\.\d{3} ± \d+\.\d{3}"
    for a, b in OUTPUT_LAYER + HYPERNETWORK:  # every pair's row holds both losses
        cells = [re.escape(a), re.escape(b), number, number, "one seed: no verdict"]
        assert re.search(r"\| " + r" \| ".join(cells) + r" \|", out), (a, b)
    rows = {json.loads(p.read_text())["run"]["model"]: json.loads(p.read_text())
            for p in (tmp_path / "out" / "runs").glob("*.json")}
    assert set(rows) == set(SEPARATE)
    assert all(r["steps"] == 40 and not r["run"]["plateau"] for r in rows.values())
    # The output bias (V = 512 at --quick) was trained as a token table where asked, and only there.
    assert rows["b2+bias"]["tables"] == 512 and rows["b2"]["tables"] == 0
    assert rows["b0+bias"]["tables"] == rows["b1"]["tables"] + 512


def test_a_sweep_widens_past_the_edge_once_its_runs_finish():
    """The protocol unfolds: the grid's runs first; once they finished with the lowest val loss at
    the top edge, one run half a decade above; when that one is lower still, another; a minimum
    inside stops it, and the chosen row is the lowest."""
    from types import SimpleNamespace

    from studies.hypersurface import Study, parse_args

    study = Study(parse_args(["--separate", "--lrs", "3e-4,1e-3,3e-3", "--widenings", "3"]))
    val = {3e-4: 5.0, 1e-3: 4.0, 3e-3: 3.5, 1e-2: 3.2, 3e-2: 3.3}

    def finish(runs):
        for run in runs:
            study.rows[run.key] = SimpleNamespace(run=run, val=val[run.lr])

    first = study.sweep("tinystories", "film")
    assert [r.lr for r in first] == [3e-4, 1e-3, 3e-3] and study.chosen("tinystories", "film") is None
    finish(first)
    second = study.sweep("tinystories", "film")
    assert [r.lr for r in second] == [3e-4, 1e-3, 3e-3, 1e-2]
    finish(second)
    third = study.sweep("tinystories", "film")
    assert [r.lr for r in third] == [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    finish(third)
    assert study.sweep("tinystories", "film") == third  # 1e-2 is inside now: no more runs
    assert study.chosen("tinystories", "film").run.lr == 1e-2
