"""The "only costdb/ touches SQLite" check: an AST walk over the packages (used by
tests/test_layering.py; run it by hand with ``python tests/layering.py``)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("costdb", "devices", "profiler", "solver", "reports")
#: method names that run SQL on a DB-API connection or cursor, and pandas' SQL reader
SQL_METHODS = {"execute", "executescript", "executemany", "read_sql_query", "read_sql"}


def sql_calls(path: Path) -> list[str]:
    """``file:line: call`` for every SQL call in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    connect_names = {"sqlite3.connect"}
    for node in ast.walk(tree):          # from sqlite3 import connect [as c]
        if isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            connect_names |= {a.asname or a.name for a in node.names if a.name == "connect"}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = None
        if isinstance(f, ast.Attribute):
            if f.attr in SQL_METHODS:
                name = f".{f.attr}("
            elif f.attr == "connect" and isinstance(f.value, ast.Name) and f.value.id == "sqlite3":
                name = "sqlite3.connect("
        elif isinstance(f, ast.Name) and (f.id in connect_names or f.id in SQL_METHODS - {"execute"}):
            name = f"{f.id}("
        if name:
            out.append((node.lineno, node.col_offset, f"{path}:{node.lineno}: {name}"))
    return [text for _, _, text in sorted(out)]


def violations(root: Path, packages: tuple[str, ...] = PACKAGES, owner: str = "costdb") -> list[str]:
    """SQL calls in ``packages`` under ``root`` outside the ``owner`` package."""
    found = []
    for pkg in packages:
        if pkg == owner:
            continue
        for path in sorted((root / pkg).rglob("*.py")):
            found += sql_calls(path)
    return found


if __name__ == "__main__":
    bad = violations(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(bad) or "no SQL outside costdb/")
    sys.exit(1 if bad else 0)
