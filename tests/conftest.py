"""Shared fixtures: real temporary SQLite files, fast measurement settings, the click runner."""
from __future__ import annotations

import pytest
from click.testing import CliRunner


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run tests marked slow (e.g. the emulated Cortex-A72 board: builds "
                          "a Debian image on first use, boots QEMU; see docs/emulated.md)")


def pytest_collection_modifyitems(config, items):
    import os
    if config.getoption("--slow") or os.environ.get("COSTDB_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: run with --slow (or COSTDB_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

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
