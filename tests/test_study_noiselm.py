"""python -m studies.noiselm --quick: the study's whole path (sweep, baselines, ablations, node usage, stop
rule, tables) through the product, on a few steps; and a rerun reuses every finished run."""

import re
import subprocess
import sys

import pytest

from tests.paths import REPO


@pytest.mark.slow
def test_quick_study_prints_every_table_and_resumes(tmp_path):
    cmd = [sys.executable, "-m", "studies.noiselm", "--quick", "--jobs", "1",
           "--datasets", "succulent", "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    for heading in ("### Learning rate", "### succulent: where the write-up's model lands",
                    "### succulent: NoiseLM's mechanisms one at a time",
                    "### succulent: how the full NoiseLM uses its parts",
                    "### succulent: the stop rule on the held-out QA",
                    "### succulent: the test split in its two parts"):
        assert heading in first.stdout
    for model in ("| n-gram |", "| NoiseLM |", "| GPT |"):
        assert model in first.stdout
    for part in ("| narrative |", "| QA |"):
        assert part in first.stdout
    # The ablation table scores each variant on the two parts as well, with numbers in every cell.
    assert "| variant | test | delta | the mechanism | narrative: test, delta | QA: test, delta |" in first.stdout
    number = r"\d+\.\d{4} ± \d+\.\d{4}, [+-]\d+\.\d{4}: "
    assert len(re.findall(rf"\| {number}[^|]+\| {number}[^|]+\|$", first.stdout, re.M)) == 2  # two ablations
    sweep = [line for line in first.stdout.splitlines() if line.startswith("| succulent |")]
    tried = [line.split(" | ")[2].count(":") for line in sweep]
    assert len(sweep) == 2 and all(n in (2, 3) for n in tried)  # two grid rates, one more past an edge
    done = sorted((tmp_path / "runs").glob("*.json"))
    assert len(done) == sum(tried) + 3  # the sweep, the n-gram, two ablations
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert again.returncode == 0 and sorted((tmp_path / "runs").glob("*.json")) == done
    table = lambda out: out[out.index("### Learning rate"):out.index("### succulent: the stop")]  # noqa: E731
    assert table(again.stdout) == table(first.stdout)  # the same rows, read back
