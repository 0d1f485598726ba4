"""python -m studies.sophia_trap --quick: both set-ups (random and prepared embeddings, the latter two
chained fits) through the product, the sweep with its meter and baseline, the tables and the
verdict lines; a rerun reuses every finished run."""

import subprocess
import sys

import pytest

from tests.paths import REPO


# About a minute: slow, run by `make test-all`; the study itself is the real check.
@pytest.mark.slow
def test_quick_study_prints_its_tables_and_resumes(tmp_path):
    cmd = [sys.executable, "-m", "studies.sophia_trap", "--quick", "--jobs", "1",
           "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    for heading in ("### Sophia trap: random embeddings (configs/succulm_article.yaml)",
                    "### Sophia trap: prepared embeddings (configs/succulm_stage1.yaml -> "
                    "configs/succulm_stage2.yaml)",
                    "### Verdicts: random embeddings", "### Verdicts: prepared embeddings",
                    "| layers | bond | sophia rate |", "grammar rate", "out-of-template"):
        assert heading in first.stdout
    assert "| 3 | 20 |" in first.stdout and " / " in first.stdout  # TT / low rank
    assert "1. corrupting layer 0 breaks sentence structure" in first.stdout
    for line in ("S1. loosening and tightening", "S3. corrupting the first two layers",
                 "S5. internal layers", "### Equal damage: random embeddings",
                 "| 0.05 | 3 |", "at a loss rise of 0.05: 1. layer 0 breaks sentence structure most"):
        assert line in first.stdout
    done = sorted((tmp_path / "runs").glob("*.json"))
    assert len(done) == 2  # one per (set-up, seed)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0 and sorted((tmp_path / "runs").glob("*.json")) == done
    table = lambda out: out[out.index("### Sophia trap"):out.index("\ntotal")]  # noqa: E731
    assert table(again.stdout) == table(first.stdout)  # the same rows, read back
    report = subprocess.run([*cmd, "--report"], capture_output=True, text=True, cwd=REPO,
                            timeout=600)
    assert report.returncode == 0 and table(report.stdout) == table(first.stdout)


@pytest.mark.slow
def test_quick_dose_response_prints_its_table_and_resumes(tmp_path):
    """--dose: stage 1 once per seed, then sophia's row prepared, x3 and frozen at two stage-2
    lengths; a rerun trains nothing."""
    cmd = [sys.executable, "-m", "studies.sophia_trap", "--quick", "--dose", "--jobs", "1",
           "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "### The trap's dose-response" in first.stdout
    for row in ("| prepared | 5 |", "| x3 | 10 |", "| frozen | 10 |"):
        assert row in first.stdout
    assert len(list((tmp_path / "stage1").glob("*.json"))) == 1
    done = sorted((tmp_path / "dose").glob("*.json"))
    assert len(done) == 6
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0 and "stage 1: 0 s" in again.stdout  # read back, not fitted
    assert sorted((tmp_path / "dose").glob("*.json")) == done
    table = lambda out: out[out.index("### The trap"):out.index("\ntotal")]  # noqa: E731
    assert table(again.stdout) == table(first.stdout)
