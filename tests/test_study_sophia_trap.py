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
    done = sorted((tmp_path / "runs").glob("*.json"))
    assert len(done) == 2  # one per (set-up, seed)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0 and sorted((tmp_path / "runs").glob("*.json")) == done
    table = lambda out: out[out.index("### Sophia trap"):out.index("\ntotal")]  # noqa: E731
    assert table(again.stdout) == table(first.stdout)  # the same rows, read back
    report = subprocess.run([*cmd, "--report"], capture_output=True, text=True, cwd=REPO,
                            timeout=600)
    assert report.returncode == 0 and table(report.stdout) == table(first.stdout)
