"""The succulent world on its own: pinned bit for bit, and plain Python (no torch, no Lightning)."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules.succulent import SuccuPairsDataModule, world_grammar
from datamodules.succulent_world import generate_world, left_out_normal_pairs

REPO = Path(__file__).resolve().parents[1]
WORLD_MODULES = ("datamodules.succulent_tables", "datamodules.succulent_world",
                 "datamodules.succulent_grammar", "datamodules.succulent_files")


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


# The article's world (seed 42, standard, base) and its variants: a changed table, template, RNG
# draw or split rule changes these digests, and every result measured on the world with them.
@pytest.mark.parametrize("seed, world, qa_phrasings, expected, sizes", [
    (42, "standard", "base", "cfd21a77f2eadf6c", (672, 224, 60)),
    (42, "with_sophia", "base", "c0b9cfa58775d7e8", (948, 281, 60)),
    (42, "standard", "extended", "b810aafe961322cc", (672, 390, 108)),
    (7, "with_sophia", "extended", "91015163d3824323", (931, 487, 108)),
    (42, "garden", "base", "6c1568dea85b9e70", (672, 503, 164)),  # make fit's
])
def test_the_generated_world_is_pinned(seed, world, qa_phrasings, expected, sizes):
    w = generate_world(seed, world, qa_phrasings)
    assert (len(w.normal_pairs), len(w.train_qa), len(w.heldout_qa)) == sizes
    assert digest([w.normal_pairs, w.train_qa, w.heldout_qa, left_out_normal_pairs(w)]) == expected


def test_the_default_grammar_and_vocabulary_are_pinned():
    g = world_grammar()
    parts = [sorted(g.word_class.items()), g.sentences, sorted(map(list, g.statements.items())),
             sorted(map(list, g.facts.items()))]
    assert digest(parts) == "3bd9819a2e226c21"
    dm = SuccuPairsDataModule()
    assert (len(dm.tokenizer.vocab), dm.block_size, digest(dm.tokenizer.vocab)) == (163, 23, "5afbc546762d8d07")


def test_the_world_imports_neither_torch_nor_lightning():
    code = (f"import sys\nfor m in {WORLD_MODULES!r}: __import__(m)\n"
            "print(sorted(m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_datamodules_import_neither_analysis_nor_modules():
    """Data never reaches into probes or LightningModules; capabilities live in succu.contracts."""
    offenders = {p.name: sorted(n for n in imports(p) if n.startswith(("succu.analysis", "succu.modules")))
                 for p in (REPO / "datamodules").glob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}
