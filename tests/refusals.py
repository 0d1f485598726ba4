"""The one `error:` line of a refused command: how the tests of bad input read a refusal."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def refused(capsys, main: Callable[[list[str]], object], argv: list[str], only: bool = False) -> str:
    """`main(argv)` must exit with status 2 and exactly one `error:` line on stderr (`only`: and
    nothing else there); returns that line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines() if only else [x for x in err.splitlines() if x.startswith("error:")]
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]
