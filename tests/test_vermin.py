"""The agent runs on a Jetson TX2's Python 3.6: checked by vermin, a tool made for exactly this
(minimum-version analysis of syntax *and* of standard-library modules, functions and arguments),
over the agent's sources and over the zipapp actually shipped. Complements the ast-based checks
of tests/test_agent_py36.py, which catch syntax only."""
from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devices import agent_bundle

pytest.importorskip("vermin", reason="vermin is in the [test] extras: pip install -e '.[test]'")

AGENT_DIR = Path(agent_bundle.__file__).resolve().parent / "agent"
#: vermin's console script, run by this interpreter (the package has no ``__main__``)
RUN = "import sys; from vermin.main import main; sys.argv[0] = 'vermin'; sys.exit(main())"


def vermin(*paths: Path, cwd: Path) -> subprocess.CompletedProcess:
    # cwd: a directory of ours, so no vermin config of the checkout is picked up
    return subprocess.run([sys.executable, "-c", RUN, "--target=3.6-", "--violations",
                           "--no-tips", "--eval-annotations", "--processes=1",
                           *map(str, paths)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_agent_sources_need_at_most_python36(tmp_path):
    sources = sorted(AGENT_DIR.glob("*.py"))
    assert len(sources) >= 7
    r = vermin(*sources, cwd=tmp_path)
    assert r.returncode == 0, f"vermin --target=3.6- found newer features:\n{r.stdout}{r.stderr}"


def test_shipped_zipapp_needs_at_most_python36(tmp_path):
    data, _digest, _dirname = agent_bundle.bundle()
    out = tmp_path / "pyz"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = [n for n in zf.namelist() if n.endswith(".py")]
        zf.extractall(out, members=names)
    assert "__main__.py" in names and any(n.startswith("costdb_agent/") for n in names)
    r = vermin(*(out / n for n in names), cwd=tmp_path)
    assert r.returncode == 0, f"vermin --target=3.6- found newer features:\n{r.stdout}{r.stderr}"


def test_vermin_catches_what_the_agent_must_not_use(tmp_path):
    """The check is not vacuous: 3.7+ syntax and library calls in an agent-like file fail it."""
    bad = tmp_path / "bad.py"
    bad.write_text("import dataclasses\nimport time\n"
                   "def f(xs):\n"
                   "    if (n := len(xs)) > 1:\n"
                   "        return time.perf_counter_ns(), n\n")
    r = vermin(bad, cwd=tmp_path)
    assert r.returncode != 0
    assert "dataclasses" in r.stdout and "perf_counter_ns" in r.stdout
