"""python -m studies.hypersurface --quick: the study's whole path (B0's plateau sweep, the other
models at B0's length, seeds, rarity split, |cos| histograms, verdicts, figures) through the
product on a few steps; a rerun reads every run back instead of training. And the study's two
latent measurements: the |cos| histogram and the tables read at sampled contexts."""

import json
import subprocess
import sys

import torch

from studies.hypersurface import context_tables, cos_histogram
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
