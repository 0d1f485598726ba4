"""Shared test set-up: the shared corpora are found through $SUCCU_DATA_DIR in every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.paths import SHARED_DATA, SHARED_DATA_DEFAULT, shared_data_problem


def pytest_configure(config) -> None:
    # Tests chdir into temporary folders; the corpora are looked up through this variable, which
    # DDP child processes inherit too.
    os.environ.setdefault("SUCCU_DATA_DIR", str(SHARED_DATA_DEFAULT))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpora folder ($SUCCU_DATA_DIR, else shared/data beside the repository); the
    test fails, naming the folder and what is missing, when a corpus file is not there."""
    problem = shared_data_problem(SHARED_DATA)
    if problem:
        pytest.fail(problem, pytrace=False)
    return SHARED_DATA


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """A token cache shared by one test module's datamodules (tokenising once per module)."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def isolated(tmp_path, monkeypatch, cache):
    """Run in the test's own folder, with the module's cache as the tools' default cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUCCU_CACHE_DIR", cache)
