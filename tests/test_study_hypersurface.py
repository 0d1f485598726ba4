"""bench/hypersurface.py --quick: the study's whole path (B0's plateau sweep, the other models at
B0's length, seeds, rarity split, |cos| histograms, verdicts, figures) through the product on a
few steps; a rerun reads every run back instead of training."""

import json
import subprocess
import sys

from tests.paths import REPO


def test_quick_study_prints_every_table_and_resumes(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "hypersurface.py"), "--quick", "--jobs", "1",
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
