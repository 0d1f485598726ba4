"""Progress of long work: a bar in a terminal, lines every few seconds in a pipe, quiet when short."""

import io

from succu.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_a_line_per_interval_and_one_at_the_end():
    out = io.StringIO()
    assert list(progress(range(3), "scoring", every=0.0, stream=out)) == [0, 1, 2]
    lines = out.getvalue().splitlines()
    assert [line.split(" in ")[0] for line in lines] == ["scoring: 1/3", "scoring: 2/3", "scoring: 3/3",
                                                         "scoring: 3/3"]
    assert lines[-1].endswith(", done")


def test_short_work_in_a_pipe_prints_nothing():
    out = io.StringIO()
    assert list(progress(iter(range(5)), "scoring", stream=out)) == list(range(5))
    assert out.getvalue() == ""


def test_an_iterator_without_length_counts_without_a_total():
    out = io.StringIO()
    list(progress(iter("ab"), "voice", every=0.0, stream=out))
    assert out.getvalue().splitlines()[0].startswith("voice: 1 in ")


def test_a_terminal_gets_a_bar():
    out = Terminal()
    assert list(progress(range(4), "sweep", stream=out)) == [0, 1, 2, 3]
    assert "sweep:" in out.getvalue() and "/4 [" in out.getvalue()  # a tqdm bar, cleared at the end
