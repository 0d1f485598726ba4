"""What an installed succu carries besides its modules: the marker that its annotations are for
type checkers (PEP 561), and the serve page's files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_succu_is_typed_and_ships_its_data_files():
    data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["succu"] and (resources.files("succu") / "py.typed").is_file()
    assert data["succu.serve"] == ["static/*"]
    assert (resources.files("succu.serve") / "static" / "index.html").is_file()
