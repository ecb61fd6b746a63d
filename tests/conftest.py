"""Shared fixtures: real temporary SQLite files, fast measurement settings, the click runner."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

#: Enough samples to exercise the statistics, few enough to keep the suite fast.
FAST = {"samples": 3, "min_sample_time": 0.001, "warmups": 1}


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "costs.db")


@pytest.fixture
def fast_settings():
    return dict(FAST)


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="session")
def profiled_mlp(tmp_path_factory):
    """A database with the MLP (batch 4) profiled on local — shared read-only by many tests."""
    import costdb
    path = str(tmp_path_factory.mktemp("shared") / "mlp.db")
    costdb.profile(path, device="local", model="mlp", batch=4, settings=FAST)
    return path
