"""studies.runner's resumable study runs: a result is named by the run's fields, read back instead
of recomputed, and recomputed when a config it trains from has changed since it was saved."""

from dataclasses import dataclass
from pathlib import Path

from studies.runner import StudyRun, run_key, saved_run


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

