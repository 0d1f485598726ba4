"""studies.runner's resumable study runs: a result is named by the run's fields, read back instead
of recomputed, and recomputed when a config it trains from has changed since it was saved."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from studies.runner import StudyRun, run_key, saved_run
from tests.paths import REPO


@dataclass(frozen=True)
class Run(StudyRun):
    seed: int
    config: str
    cache_dir: str | None = None

    def configs(self) -> list[Path]:
        return [Path(self.config)]


@dataclass
class Row:
    value: float


def test_a_saved_run_is_read_back_until_its_config_changes(tmp_path, capsys):
    config = tmp_path / "a.yaml"
    config.write_text("lr: 0.001\n")
    run = Run(1, str(config))
    assert run.key == run_key(run) == Run(1, str(config), cache_dir="elsewhere").key  # the cache is no setting
    assert run.key != Run(2, str(config)).key
    calls = []

    def compute(r: Run) -> Row:
        calls.append(r)
        return Row(float(len(calls)))

    load = lambda data: Row(**data)  # noqa: E731
    assert saved_run(run, tmp_path, compute, load) == Row(1.0)
    assert saved_run(run, tmp_path, compute, load) == Row(1.0) and len(calls) == 1
    config.write_text("lr: 0.003\n")
    assert run.saved(tmp_path) is None
    assert "its configs changed since it was saved (a.yaml)" in capsys.readouterr().out
    assert saved_run(run, tmp_path, compute, load) == Row(2.0) and len(calls) == 2
    assert run.saved(tmp_path) == {"value": 2.0}


def test_results_saved_before_stamps_are_still_read(tmp_path):
    config = tmp_path / "a.yaml"
    config.write_text("lr: 0.001\n")
    run = Run(1, str(config))
    run.result(tmp_path).parent.mkdir(parents=True)
    run.result(tmp_path).write_text('{"value": 7.0}')
    assert saved_run(run, tmp_path, lambda r: Row(0.0), lambda data: Row(**data)) == Row(7.0)


def test_every_study_takes_the_shared_options_with_their_defaults():
    from studies import dial, hypersurface, noiselm, sophia_trap

    for module, out in ((dial, "runs/bench_alpha_dial"), (hypersurface, "runs/bench_hypersurface"),
                        (noiselm, "runs/bench_noiselm"), (sophia_trap, "runs/bench_sophia_trap")):
        args = module.parse_args([])
        assert (args.jobs, args.out, args.quick) == (2, Path(out), False), module.__name__
    for module in (dial, hypersurface):
        args = module.parse_args(["--report_only", "--report", "r.md", "--figures", "fig", "--cache_dir", "c"])
        assert (args.report_only, args.report, args.figures, args.cache_dir) == (True, Path("r.md"), Path("fig"), "c")
    assert sophia_trap.parse_args(["--report"]).report_only  # sophia_trap's flag for the same thing
    assert noiselm.parse_args(["--threads", "2"]).threads == 2 and dial.parse_args([]).threads == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_bench_runs_the_speed_benches_and_no_study():
    dry = subprocess.run(["make", "-n", "bench"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    loop = next(line for line in dry.stdout.splitlines() if line.startswith("for b in "))
    listed = loop.removeprefix("for b in ").split("; do")[0].split()
    assert listed == sorted(str(p.relative_to(REPO)) for p in (REPO / "bench").glob("[!_]*.py"))
    studies = {p.stem for p in (REPO / "studies").glob("*.py")}
    assert {"dial", "hypersurface", "noiselm", "sophia_trap"} <= studies
    assert not studies & {p.rsplit("/", 1)[-1].removesuffix(".py") for p in listed}
    assert "studies" not in dry.stdout


def test_the_library_imports_neither_studies_nor_bench():
    import ast

    for package in ("succu", "datamodules", "callbacks"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    assert name.split(".")[0] not in ("studies", "bench", "_common"), (path, name)


def test_half_decade_walks_the_one_three_ladder():
    from studies.runner import half_decade

    assert [half_decade(v, -1) for v in (1e-3, 3e-3, 1e-2)] == [3e-4, 1e-3, 3e-3]
    assert [half_decade(v, +1) for v in (1e-3, 3e-3, 3e-2)] == [3e-3, 1e-2, 1e-1]


def test_grid_widens_past_the_edge_that_holds_the_lowest_loss():
    """A loss with its minimum at 1e-4 on a grid of 1e-3..3e-2: the grid steps down half a decade
    per round until the lowest loss sits inside (1e-4 has 3e-5 and 3e-4 beside it); a key whose
    minimum is inside the grid from the start runs nothing more; the widening stops at its limit."""
    import math

    from studies.runner import at_edge, widened_grid

    minima = {"low": 1e-4, "inside": 3e-3, "high": 10.0}
    calls = []

    def losses(pending):
        calls.append(pending)
        return [(math.log10(v) - math.log10(minima[k])) ** 2 for k, v in pending]

    tried = widened_grid(list(minima), [1e-3, 3e-3, 1e-2, 3e-2], losses, rounds=4)
    assert sorted(tried["low"]) == [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    assert min(tried["low"], key=tried["low"].get) == 1e-4 and not at_edge(tried["low"])
    assert sorted(tried["inside"]) == [1e-3, 3e-3, 1e-2, 3e-2] and not at_edge(tried["inside"])
    assert sorted(tried["high"]) == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0]  # four widenings
    assert at_edge(tried["high"])  # the limit reached: still at the edge, and the report says so
    assert len(calls) == 5 and calls[0] == [(k, v) for k in minima for v in [1e-3, 3e-3, 1e-2, 3e-2]]
    assert calls[1] == [("low", 3e-4), ("high", 1e-1)]  # each round is one batch of every key's next run
