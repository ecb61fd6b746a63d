"""Several real processes on one database file: concurrent creation and migration, sessions of
killed processes, two profiles of the same device and model at once (issue 13).

Processes start together on a condition (a "go" file they wait for), never on a sleep; every
wait has a generous bounded deadline.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import costdb
from costdb import schema

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 600


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, what: str, timeout: float = DEADLINE_S) -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t_end, f"timed out waiting for {what}"
        time.sleep(0.02)


OPENER = """
import os, sys, time
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
import costdb
with costdb.open(sys.argv[1], create=True) as db:
    print(db.version)
"""


def _open_together(db: Path, tmp: Path, n: int = 4) -> list[tuple[int, str, str]]:
    go = tmp / "go"
    procs = [_python(OPENER, str(db), str(go)) for _ in range(n)]
    go.touch()
    out = []
    for p in procs:
        so, se = p.communicate(timeout=DEADLINE_S)
        out.append((p.returncode, so, se))
    return out


def test_processes_creating_one_new_database_all_see_it_migrated(tmp_path):
    db = tmp_path / "new.db"
    for rc, so, se in _open_together(db, tmp_path):
        assert rc == 0, se
        assert int(so) == schema.LATEST
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'devices'").fetchone()[0] == 1
    con.close()


def test_processes_migrating_one_old_database_migrate_it_once(tmp_path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    schema.migrate(con, target=1)
    con.execute("INSERT INTO devices (name) VALUES ('kept')")
    con.commit()
    con.close()
    for rc, so, se in _open_together(db, tmp_path):
        assert rc == 0, se
        assert int(so) == schema.LATEST
    with costdb.open(db, readonly=True) as d:
        assert [r.name for r in d.device_list()] == ["kept"]


STARTER = """
import sys, costdb
db = costdb.open(sys.argv[1], create=True)
db.conn.execute("INSERT OR IGNORE INTO devices (name) VALUES ('local')")
db.conn.commit()
sid = db.start_session("local", {}, {}, None, 3)
print(sid, flush=True)
sys.stdin.read()          # hold the session open until killed
"""


def test_a_killed_process_session_is_closed_by_any_open_even_read_only(tmp_path, runner):
    from costdb.cli import cli
    db = tmp_path / "c.db"
    p = subprocess.Popen([sys.executable, "-c", STARTER, str(db)], env=_env(), text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sid = int(p.stdout.readline())
    with costdb.open(db, readonly=True) as d:     # alive: left running
        assert d.session(sid).status == "running"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=DEADLINE_S)
    r = runner.invoke(cli, ["sessions", "--db", str(db)])    # a read command
    assert r.exit_code == 0, r.output
    with costdb.open(db, readonly=True) as d:
        s = d.session(sid)
        assert s.status == "interrupted" and s.ended_at


def _profile_cmd(db: Path, model: str = "mlp", *extra: str) -> list[str]:
    return [sys.executable, "-m", "costdb.cli", "profile", "--device", "local", "--model", model,
            "--db", str(db), "--batch", "4", "--samples", "3", "--min-sample-time", "0.05",
            "--no-in-context", "--no-iteration", "-q", "--top", "1", *extra]


def _measured(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT count(*) FROM measurements").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _no_duplicates(db: Path) -> tuple[int, int]:
    """(distinct ops measured, measurements): equal when no op was measured twice."""
    with costdb.open(db, readonly=True) as d:
        rows = d.conn.execute("SELECT signature, settings_id, kind, count(*) FROM measurements"
                              " GROUP BY 1, 2, 3").fetchall()
        assert not [r for r in rows if r[3] != 1], rows
        assert d.conn.execute("SELECT count(*) FROM sessions WHERE status = 'running'"
                              ).fetchone()[0] == 0
        assert d.claims() == []
        return len(rows), sum(r[3] for r in rows)


def test_two_profiles_of_one_device_and_model_never_measure_an_op_twice(tmp_path):
    db = tmp_path / "c.db"
    a = subprocess.Popen(_profile_cmd(db), env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _measured(db) >= 1 or a.poll() is not None, "the first measurement")
    b = subprocess.Popen(_profile_cmd(db), env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for p in (a, b):
        _, err = p.communicate(timeout=DEADLINE_S)
        assert p.returncode == 0, err
    ops, rows = _no_duplicates(db)
    with costdb.open(db, readonly=True) as d:
        n = d.model_list()[0].n_signatures
        sessions = d.session_list()
    assert ops == rows == n                       # every op once, none twice
    assert all(s.status == "complete" for s in sessions)
    assert sum(s.measured for s in sessions) == n
