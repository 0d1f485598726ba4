"""python -m studies.succulm_qa --quick: two seeds of make fit's recipe through the product, their
QA scores, the table with its mean and interval; a rerun reads the finished runs back."""

from __future__ import annotations

import json
import math

from studies import succulm_qa
from studies.runner import interval


def test_quick_study_scores_each_seed_and_resumes(tmp_path, capsys):
    results = succulm_qa.main(["--quick", "--jobs", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert [r["seed"] for r in results] == [0, 1]
    for r in results:  # every figure is a share of its set, the sets as the world makes them
        assert {"train_exact", "dev_exact", "heldout_exact", "heldout_fact", "heldout_yes_no",
                "heldout_majority"} <= set(r)
        assert all(0.0 <= r[k] <= 1.0 for k in r if k.endswith(("_exact", "_fact", "_yes_no", "_majority")))
        assert r["heldout_count"] > 100 and r["dev_count"] > 40
        assert r["heldout_fact"] >= r["heldout_exact"]  # an exact answer states its fact
    mean, half = interval([r["heldout_exact"] for r in results])
    assert f"{mean:.3f} ± {half:.3f}" in out and not math.isnan(half)
    saved = sorted((tmp_path / "runs").glob("*.json"))
    assert len(saved) == 2 and json.loads(saved[0].read_text())["stamp"]
    again = succulm_qa.main(["--quick", "--jobs", "1", "--out", str(tmp_path), "--report_only"])
    assert again == results  # read back, not trained again
