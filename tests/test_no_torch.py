"""Reading costs, solving a stored model and writing a report import no torch (measured with
``python -X importtime`` in fresh interpreters on a real profiled database); ``import
devices.catalog`` imports no pandas; ``costdb --help`` imports neither pandas, torch nor rich."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "numpy", "rich", "matplotlib", "pulp", "reports", "profiler")


def imported(args: list[str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """Top-level packages a fresh ``python -X importtime ARGS`` imported, and the result."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=600, env=env)
    mods = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in r.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}
    mods.discard("package")            # the header line
    return mods, r


@pytest.fixture
def db(profiled_mlp, tmp_path):
    path = tmp_path / "x.db"
    shutil.copy(profiled_mlp, path)
    return path


def test_reading_costs_from_python_imports_no_torch(db):
    mods, r = imported(["-c", "import costdb; df = costdb.open('x.db').costs('local', 'mlp');"
                              " print(len(df))"], db.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout) > 0
    assert "pandas" in mods and "torch" not in mods


@pytest.mark.parametrize("args", [
    ["costs", "--device", "local", "--model", "mlp", "--top", "0"],
    ["sessions"],
    ["export", "--format", "csv", "--device", "local", "--model", "mlp"],
    ["solve", "--device", "local", "--model", "mlp", "--time-limit", "30"],
    ["report", "--device", "local", "-o", "r.html"],
    ["plan-update", "--device", "local", "--model", "mlp", "--memory", "1GiB"],
], ids=lambda a: a[0])
def test_commands_on_a_stored_model_import_no_torch(db, args):
    mods, r = imported(["-m", "costdb.cli", *args, "--db", "x.db"], db.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "torch" not in mods
    if args[0] == "costs":                 # shapes (with the weight) come from the stored graph
        assert "4x784 w=" in r.stdout


def test_help_and_catalog_stay_light(tmp_path):
    mods, r = imported(["-m", "costdb.cli", "--help"], tmp_path)
    assert r.returncode == 0 and "profile" in r.stdout
    assert not mods & set(HEAVY), mods & set(HEAVY)
    mods, r = imported(["-c", "import devices.catalog"], tmp_path)
    assert r.returncode == 0
    assert not mods & {"pandas", "torch", "numpy"}
