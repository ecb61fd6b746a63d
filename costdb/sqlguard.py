"""The read-only door for user SQL (``costdb query``, ``Database.query``).

A read-only connection (``mode=ro`` + ``PRAGMA query_only``) alone is not enough: ``ATTACH`` and
``VACUUM INTO`` create files outside the database on a read-only connection, and ``BEGIN``,
``SAVEPOINT`` or ``PRAGMA x = y`` run without returning rows. ``guard(conn)`` installs an SQLite
authorizer (``sqlite3.Connection.set_authorizer``) that allows reading tables, selecting,
functions, recursive CTEs and a list of read-only pragmas, and denies everything else (writes,
schema changes, ATTACH/DETACH — which VACUUM INTO goes through — transactions, savepoints,
pragma assignments). ``run(conn, sql)`` executes one statement and turns every refusal into one
line naming what was refused and what is allowed.
"""
from __future__ import annotations

import re
import sqlite3
from typing import Any, Sequence

from costdb.errors import CostdbError

__all__ = ["guard", "run", "READ_PRAGMAS"]

#: pragmas that only report (with or without an argument naming a table, index or schema)
READ_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "database_list", "collation_list", "function_list",
    "module_list", "pragma_list", "compile_options", "integrity_check", "quick_check",
    "user_version", "schema_version", "application_id", "page_count", "page_size",
    "freelist_count", "encoding", "foreign_keys", "journal_mode", "data_version", "query_only",
    "max_page_count", "auto_vacuum",
})
#: of those, the ones whose argument selects what to report (not a value to set)
_ARG_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info",
                          "index_xinfo", "foreign_key_list", "foreign_key_check",
                          "integrity_check", "quick_check"})
_ALLOWED = {sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION,
            getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
_ACTIONS = ("CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE",
            "CREATE_TEMP_TRIGGER", "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE",
            "DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER",
            "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW", "INSERT", "PRAGMA", "READ", "SELECT",
            "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE",
            "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE")
_NAMES = {getattr(sqlite3, "SQLITE_" + n): n.replace("_", " ") for n in _ACTIONS
          if hasattr(sqlite3, "SQLITE_" + n)}
_WHAT = {sqlite3.SQLITE_TRANSACTION: "transactions (BEGIN/COMMIT/ROLLBACK)",
         getattr(sqlite3, "SQLITE_SAVEPOINT", 32): "SAVEPOINT/RELEASE",
         sqlite3.SQLITE_ATTACH: "ATTACH (and VACUUM INTO)",
         sqlite3.SQLITE_DETACH: "DETACH"}
HELP = ("costdb query runs one read-only statement: SELECT/WITH/VALUES or a reporting PRAGMA "
        "such as PRAGMA table_info(measurements)")


class _Guard:
    def __init__(self) -> None:
        self.refused: list[str] = []

    @property
    def denied(self) -> str | None:
        """What was refused, preferring the statement itself over its internal effects
        (``DROP TABLE t`` is reported as that, not as a DELETE on sqlite_master)."""
        own = [r for r in self.refused if "sqlite_" not in r]
        return (own or self.refused or [None])[0]

    def __call__(self, action: int, arg1: Any, arg2: Any, db: Any, trigger: Any) -> int:
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = str(arg1 or "").lower()
            if name in READ_PRAGMAS and (arg2 is None or name in _ARG_PRAGMAS):
                return sqlite3.SQLITE_OK
            self.refused.append(f"PRAGMA {name} = {arg2}" if arg2 is not None
                                and name not in _ARG_PRAGMAS else f"PRAGMA {name}")
            return sqlite3.SQLITE_DENY
        self.refused.append(_WHAT.get(action) or f"{_NAMES.get(action, f'action {action}')}"
                            + (f" {arg1}" if arg1 else ""))
        return sqlite3.SQLITE_DENY


def guard(conn: sqlite3.Connection) -> _Guard:
    """Install the read-only authorizer on ``conn``; returns it (it records what it denied)."""
    g = _Guard()
    conn.set_authorizer(g)
    return g


def _strip(sql: str) -> str:
    s = re.sub(r"--[^\n]*", " ", sql)
    s = re.sub(r"/\*.*?(\*/|$)", " ", s, flags=re.S)
    return s.strip().rstrip(";").strip()


def run(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
    """Execute one read-only statement on a guarded connection: (column names, rows)."""
    if not isinstance(sql, str) or "\x00" in sql:
        raise CostdbError("query refused: the SQL text contains a NUL byte; " + HELP)
    if not _strip(sql):
        raise CostdbError("query is empty; " + HELP + ", e.g. costdb query \"SELECT * FROM "
                          "devices\"")
    g = guard(conn)
    try:
        cur = conn.execute(sql, tuple(params))
        if cur.description is None:
            raise CostdbError("query returned no result columns (not a SELECT?); " + HELP)
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
    except sqlite3.Warning as e:  # "You can only execute one statement at a time."
        raise CostdbError(f"query refused: {str(e).splitlines()[0]}; {HELP}") from None
    except sqlite3.Error as e:
        if g.denied or "not authorized" in str(e):
            what = g.denied or "not authorized"
            if "sqlite_" in what:   # a schema change: name the statement, not its effect
                what = " ".join(_strip(sql).split()[:2]).upper()
            raise CostdbError(f"query refused: {what} is not allowed; " + HELP) from None
        msg = " ".join(str(e).split()) or type(e).__name__
        raise CostdbError(f"query failed: {msg}") from None
    except (OverflowError, ValueError, MemoryError) as e:
        raise CostdbError(f"query failed: {type(e).__name__}: {e}") from None
    finally:
        conn.set_authorizer(None)
    return cols, rows
