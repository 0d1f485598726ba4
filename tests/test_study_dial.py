"""python -m studies.dial --quick: the dial study's whole path (two-corpus recipes against the
ungated GPT and the control code, test losses at the ends and the middle, the voice meter, the far
specialists' gates, K = 3 at each vertex and the centre against an ungated 3-corpus GPT) through
the product on a few steps; a rerun trains nothing and reads the same rows back."""

import subprocess
import sys

import pytest

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
    "### Three corpora (k3): test loss (nats/char) at each vertex and the centre",
    "| model | corpus | @e_TS | @e_SH | @e_KJV | @centre | lowest at own vertex (within 0.02) | far-vertex gaps |",
    "| k3_ungated | kjv | ",
    "Each corpus lowest at its own vertex (within 0.02) on every seed: tinystories ",
    "### Three corpora (k3) on the 66-point simplex grid (step 0.1) of the test split: each corpus's best point",
    "| corpus | own vertex | best point per seed | best loss | own vertex - best | own vertex within 0.02 of the best |",
    "### Three corpora: own-vertex cost against the ungated 3-corpus GPT (k3 - ungated)",
    "### Voice: share of 4 generations per position judged each corpus",
    "| k3 | 0.333334,0.333333,0.333333 | ",
)


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
    runs = sorted((tmp_path / "out" / "runs").glob("*.json"))
    assert len(runs) == 5  # shipped, ungated, control, k3, k3_ungated at one seed
    files = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs}
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"alpha_dial_voice.png", "alpha_dial_k3_ternary.png", "alpha_dial_k3_voice.png"}
    assert (tmp_path / "report.md").read_text().strip() in out
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "out" / "runs").glob("*.json")} == files
    table = lambda text: text[text.index("### Two corpora"):text.index("![")]  # noqa: E731
    assert table(again.stdout) == table(out)
    progress = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("  [")]
    assert [line.split("] ", 1)[1] for line in again.stdout.splitlines() if line.startswith("  [")] == progress
