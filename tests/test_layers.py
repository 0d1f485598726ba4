"""Imports point one way: no cycle between files or between folders, and the layering rules.

Every import in the three packages is read from the source (top-level and inside functions alike:
an import deferred into a function still ties the two files together), resolved to the file it
names, and collected into two graphs:

- files: one node per module file;
- folders: one node per folder (`callbacks/`, `datamodules/`, `succu/models/`, `succu/nn/`, ...),
  except that each file directly in `succu/` is a node of its own. Those files are the layers'
  boundaries themselves (`contracts.py` and `tokenizers.py` at the bottom, `checkpoint.py` above
  the modules, the entry points `fit.py`, `generate.py`, ... at the top), so lumping them together
  would make a cycle of any two layers.

Both graphs must be acyclic; a failure names one cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("succu", "datamodules", "callbacks")
# Where the pure-torch code lives: no Lightning, no W&B (DESIGN.md, "models/").
PURE_TORCH = ("succu/models", "succu/nn")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    files = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


FILES = module_files()


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement of `path` names (`from a.b import c` gives `a.b` and
    `a.b.c`: c may be a submodule); relative imports resolved against the file's package."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def file_edges() -> dict[str, set[str]]:
    """module -> the modules of the three packages it imports (a package import counts as its
    __init__, which these packages keep empty)."""
    edges = {}
    for name, path in FILES.items():
        targets = {n for n in imported_names(path) if n in FILES and n != name}
        edges[name] = targets
    return edges


def folder_of(module: str) -> str:
    path = FILES[module].relative_to(REPO)
    if path.parts[0] == "succu" and len(path.parts) == 2:
        return str(path)  # a file directly in succu/ is a node of its own
    return str(path.parent)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_walk_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The reader resolves plain, from- and relative imports, inside functions too."""
    pkg = tmp_path / "succu" / "sub"
    pkg.mkdir(parents=True)
    source = pkg / "x.py"
    source.write_text("import succu.a\nfrom succu.b import c\n\ndef f():\n    from . import d\n"
                      "    from .e import g\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    names = imported_names(source)
    assert {"succu.a", "succu.b", "succu.b.c", "succu.sub.d", "succu.sub.e", "succu.sub.e.g"} <= names


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_no_import_cycle_between_files():
    cycle = find_cycle(file_edges())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_folders():
    edges: dict[str, set[str]] = {}
    for source, targets in file_edges().items():
        folder = folder_of(source)
        edges.setdefault(folder, set()).update(folder_of(t) for t in targets if folder_of(t) != folder)
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle between folders: " + " -> ".join(cycle)


def offenders(sources: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Files under `sources` (folder prefixes) that import a module under `forbidden`."""
    found = {}
    for path in FILES.values():
        where = str(path.relative_to(REPO))
        if not where.startswith(sources):
            continue
        bad = sorted(n for n in imported_names(path) if any(n == f or n.startswith(f"{f}.") for f in forbidden))
        if bad:
            found[where] = bad
    return found


@pytest.mark.parametrize("sources, forbidden", [
    # Probes reach a model through callbacks: modules and data never import the analysis tools.
    (("succu/modules", "datamodules"), ("succu.analysis",)),
    # succu never imports the data or the callbacks; only the CLI that composes a run does.
    (("succu/models", "succu/nn", "succu/modules", "succu/analysis", "succu/serve"),
     ("datamodules", "callbacks")),
    (("succu/models", "succu/nn"), ("lightning", "pytorch_lightning", "wandb", "succu.modules")),
    (("succu/dial.py", "succu/contracts.py", "succu/sampling.py", "succu/tokenizers.py"),
     ("lightning", "wandb")),
    # The commands that only use a trained model load it without Lightning (succu.inference).
    (("succu/generate.py", "succu/export.py", "succu/serve", "succu/inference.py", "succu/decoding.py",
      "succu/checkpoint_files.py", "succu/checkpoint_sizes.py", "succu/dial_streams.py"),
     ("lightning", "lightning_fabric", "pytorch_lightning", "wandb", "jsonargparse", "torchmetrics",
      "succu.modules", "succu.checkpoint", "succu.runs", "succu.fit")),
], ids=["probes-apart", "succu-below-its-plugins", "pure-torch-models", "plain-contracts", "light-commands"])
def test_layers_point_one_way(sources, forbidden):
    assert offenders(sources, forbidden) == {}


def test_only_fit_composes_datamodules_and_callbacks():
    """Of succu's own files only the CLI that composes a run imports datamodules or callbacks."""
    composing = set(offenders(("succu",), ("datamodules", "callbacks")))
    assert composing <= {"succu/fit.py"}
