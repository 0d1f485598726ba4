"""studies/abcgpt_reference.py: abcGPT's own gated_gpt_tent.py trained at the dial study's variant
settings, run from a checkout given as a path; studies.dial --variants reads the JSON it writes.

abcGPT's checkout is not here, so a stand-in checkout is written in tmp_path: a gated_gpt_tent.py
with the interface the script uses (GatedGPTConfig's fields, GatedGPT(config), model(idx, alpha,
targets) -> (logits, loss)), a plain tiny model written from that interface alone."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from studies import dial
from tests.paths import REPO

STAND_IN = '''
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GatedGPTConfig:
    vocab_size: int = 75
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    block_size: int = 256
    dropout: float = 0.2
    bias: bool = False
    mask_seed: int = 1337
    tent_narrowness: float = 1.0


class GatedGPT(nn.Module):
    """Embedding, a gate per channel peaked at a frozen specialty m, a linear readout."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.bias)
        m = torch.rand(config.n_embd, generator=torch.Generator().manual_seed(config.mask_seed))
        self.register_buffer("m", m)

    def forward(self, idx, alpha, targets=None, corpus=None):
        assert 0.0 <= alpha <= 1.0 and corpus is None
        logits = self.lm_head(self.wte(idx) * (1.0 - (alpha - self.m).abs()))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss
'''


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studies.abcgpt_reference", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_dry_run_on_a_stand_in_checkout_writes_a_finite_loss_per_corpus_alpha_and_seed(tmp_path, cache):
    (tmp_path / "abcGPT").mkdir()
    (tmp_path / "abcGPT" / "gated_gpt_tent.py").write_text(STAND_IN)
    out = tmp_path / "reference.json"
    done = script(str(tmp_path / "abcGPT"), "--dry-run", "--seeds", "1337,1", "--out", str(out),
                  "--cache_dir", cache)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["dry_run"] and data["seeds"] == [1337, 1] and data["alphas"] == dial.ALPHAS
    assert [r["seed"] for r in data["runs"]] == [1337, 1]
    for run in data["runs"]:
        for corpus in dial.TWO:
            losses = run["val_loss"][corpus]
            assert len(losses) == len(dial.ALPHAS) and all(map(math.isfinite, losses)), (run["seed"], corpus)
    for corpus in dial.TWO:
        for i in range(len(dial.ALPHAS)):
            values = [r["val_loss"][corpus][i] for r in data["runs"]]
            assert data["mean"][corpus][i] == pytest.approx(sum(values) / 2)
            assert math.isfinite(data["sd"][corpus][i])
    assert f"wrote {out}" in done.stdout
    assert dial.load_reference(out)["mean"] == data["mean"]  # what --variants reads


def test_a_path_without_gated_gpt_tent_is_refused_in_one_line_naming_it(tmp_path):
    done = script(str(tmp_path), "--dry-run")
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path} lacks gated_gpt_tent.py")


def test_variants_without_the_reference_json_says_so_in_one_line_and_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(dial, "variant_train", lambda *a: pytest.fail("trained without a reference"))
    with pytest.raises(SystemExit) as stop:
        dial.main(["--variants", "--reference", str(tmp_path / "none.json")])
    message = str(stop.value.code)
    assert "\n" not in message
    assert message.startswith("no reference: run python -m studies.abcgpt_reference PATH")


def test_variant_report_prints_the_reference_means_beside_the_variant(capsys):
    rows = [{"alpha": a, "tinystories": 1.7 + a / 2, "shakespeare": 2.3 - a / 3} for a in dial.ALPHAS]
    reference = {"mean": {"tinystories": [1.85, 1.81, 1.84, 1.97, 2.25], "shakespeare": [2.38, 2.13, 1.99, 1.96, 1.99]},
                 "sd": {c: [0.01] * 5 for c in dial.TWO}, "seeds": [1337, 1, 2], "steps": 3000}
    dial.variant_report("reference", rows, dial.TWO, reference)
    out = capsys.readouterr().out
    assert "mean ± sd over seeds 1337,1,2, 3000 steps" in out
    assert "[1.85 ± 0.01]" in out and "[1.99 ± 0.01]" in out
    assert "tinystories: own end 1.700, best 1.700 -> lowest at own end: yes; beats reference best 1.81: yes; " \
           "far-end gap 0.50 (reference 0.40): yes" in out
