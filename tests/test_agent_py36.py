"""The shipped agent stays Python 3.6 compatible and its bundle is deterministic and runnable."""
import ast
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devices import agent_bundle

AGENT_DIR = Path(agent_bundle.__file__).resolve().parent / "agent"
SOURCES = sorted(AGENT_DIR.glob("*.py"))

# syntax and library calls that exist only after Python 3.6 (feature_version does not catch
# library-level additions, so the ones we are likely to type are listed here)
FORBIDDEN = ["from __future__ import annotations", "import dataclasses", "from dataclasses",
             "capture_output=", "text=True", ":=", "removeprefix", "removesuffix",
             "functools.cached_property", "asyncio.run(", "math.prod", "shlex.join",
             "time.perf_counter_ns", "time.time_ns"]


def test_agent_sources_exist():
    names = {p.name for p in SOURCES}
    assert {"__init__.py", "__main__.py", "server.py", "measure.py", "sensors.py", "boards.py",
            "sysinfo.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_agent_file_parses_as_python36(path):
    src = path.read_text()
    ast.parse(src, filename=str(path), feature_version=(3, 6))
    tree = ast.parse(src)
    for node in ast.walk(tree):
        # f-string "=" specifier (3.8) parses under feature_version on some versions: check it
        if isinstance(node, ast.JoinedStr):
            seg = ast.get_source_segment(src, node) or ""
            assert "=}" not in seg.replace(" ", ""), f"{path.name}: f-string '=' is 3.8+"
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            assert all(a.name != "annotations" for a in node.names)
        if isinstance(node, ast.ImportFrom) and node.level:
            continue  # relative: inside the agent package
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                top = m.split(".")[0]
                assert top in sys.stdlib_module_names or top in ("torch", ""), \
                    f"{path.name} imports {m}: the agent may use only the stdlib and torch"
    for bad in FORBIDDEN:
        for line in src.splitlines():
            code = line.split("#", 1)[0]
            assert bad not in code, f"{path.name}: {bad!r} needs Python > 3.6: {line.strip()}"


def test_bundle_is_deterministic_and_complete():
    a = agent_bundle.build_bundle()
    b = agent_bundle.build_bundle()
    assert a == b
    data, digest, dirname = agent_bundle.bundle()
    assert digest == hashlib.sha256(data).hexdigest()
    assert dirname.endswith(digest[:16])
    with zipfile.ZipFile(io.BytesIO(a)) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert "__main__.py" in names
        assert {f"costdb_agent/{p.name}" for p in SOURCES} <= set(names)
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        ast.parse(zf.read("__main__.py").decode(), feature_version=(3, 6))


def test_bundle_runs_as_zipapp(tmp_path):
    p = tmp_path / "agent.pyz"
    agent_bundle.write_bundle(p)
    req = b'{"cmd": "hello"}\n{"cmd": "bye"}\n'
    out = subprocess.run([sys.executable, str(p), "--sysfs-root", str(tmp_path)], input=req,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    import json
    hello = json.loads(lines[0])
    assert hello["ok"] and hello["agent_version"] and hello["facts"]["torch"]


def test_bundle_without_torch_names_what_to_install(tmp_path):
    p = tmp_path / "agent.pyz"
    agent_bundle.write_bundle(p)
    # -S: no site-packages, so no torch: the agent must say what to install
    out = subprocess.run([sys.executable, "-S", str(p)], input=b"", capture_output=True, timeout=60)
    assert out.returncode == 3
    assert "pip3 install torch" in out.stderr.decode()
