"""Layering in CI: import-linter contracts (pyproject.toml [tool.importlinter]) and the rule that
only costdb/ runs SQL; both checks are shown to fail on a deliberate violation."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import layering

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([exe, "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(root)})


def _copy_tree(dst: Path) -> None:
    """The packages' Python sources and pyproject.toml (all lint-imports reads)."""
    for pkg in layering.PACKAGES:
        shutil.copytree(ROOT / pkg, dst / pkg,
                        ignore=lambda d, names: [n for n in names if n == "__pycache__" or
                                                 (not n.endswith(".py") and not (Path(d) / n).is_dir())])
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")


def test_import_contracts_are_kept():
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 kept, 0 broken" in r.stdout


def test_import_contracts_fail_on_a_deliberate_violation(tmp_path):
    _copy_tree(tmp_path)
    (tmp_path / "devices" / "violation.py").write_text("import solver.solve\n")
    (tmp_path / "costdb" / "violation.py").write_text("def f():\n    import torch\n    return torch\n")
    (tmp_path / "solver" / "violation.py").write_text("from reports import build\n")
    r = _lint_imports(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "devices is not allowed to import solver" in r.stdout
    assert "costdb is not allowed to import torch" in r.stdout
    assert "solver is not allowed to import reports" in r.stdout
    assert "Contracts: 2 kept, 3 broken." in r.stdout


def test_no_sql_outside_costdb():
    assert layering.violations(ROOT) == []


def test_sql_check_fails_on_a_deliberate_violation(tmp_path):
    (tmp_path / "costdb").mkdir()
    (tmp_path / "costdb" / "ok.py").write_text("import sqlite3\nsqlite3.connect('x').execute('SELECT 1')\n")
    pkg = tmp_path / "solver"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "bad.py").write_text(
        "import sqlite3\nimport pandas as pd\n"
        "def f(db):\n"
        "    db.conn.execute('DELETE FROM schedules')\n"
        "    db.conn.executemany('INSERT INTO t VALUES (?)', [(1,)])\n"
        "    return pd.read_sql_query('SELECT 1', db.conn)\n")
    (pkg / "sub" / "worse.py").write_text(
        "from sqlite3 import connect as c\nimport sqlite3\n"
        "c('x.db').executescript('DROP TABLE ops')\nsqlite3.connect('y.db')\n")
    found = layering.violations(tmp_path, packages=("costdb", "solver"))
    assert [f.split(": ", 1)[1] for f in found] == [
        ".execute(", ".executemany(", ".read_sql_query(",
        ".executescript(", "c(", "sqlite3.connect("]
    assert all("/solver/" in f for f in found)
