"""Interrupting a real ``costdb profile`` process and resuming it."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import costdb
from profiler.zoo import model_graph

ARGS = ["--model", "tinycnn", "--batch", "2", "--samples", "5", "--min-sample-time", "0.02",
        "--iterations", "5", "--no-iteration", "-q"]


def _count(db_path: str, kind: str = "isolated") -> int:
    try:
        conn = sqlite3.connect(db_path, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM measurements WHERE kind = ?",
                                (kind,)).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def _start(db_path: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "costdb.cli", "profile", "--db", db_path, *ARGS,
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(proc: subprocess.Popen, db_path: str, n: int) -> None:
    deadline = time.monotonic() + 300
    while _count(db_path) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "profile made no progress"
        time.sleep(0.05)


def _check_complete(db_path: str) -> None:
    g = model_graph("tinycnn", batch=2)
    with costdb.open(db_path) as db:
        rows = db.conn.execute("SELECT signature, kind, count(*) FROM measurements"
                               " GROUP BY signature, kind").fetchall()
        assert len(rows) == 2 * len(g.signatures())                  # nothing lost: both kinds
        assert all(c == 1 for _, _, c in rows)                       # nothing duplicated
        for kind in ("isolated", "in_context"):
            assert db.costs("local", "tinycnn", kind=kind)["status"].eq("ok").all()


def test_ctrl_c_keeps_measurements_and_rerun_resumes(db_path):
    proc = _start(db_path)
    _wait_for_rows(proc, db_path, 8)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Interrupted: measurements taken so far are saved; run the same command again to resume." in err
    done = _count(db_path)
    with costdb.open(db_path) as db:
        s = db.sessions("local").iloc[-1]
        assert s["status"] == "interrupted" and s["measured"] == done
    r = subprocess.run([sys.executable, "-m", "costdb.cli", "profile", "--db", db_path, *ARGS],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"({done} already in the database)" in r.stderr
    _check_complete(db_path)


def test_kill_9_leaves_a_consistent_database_and_rerun_resumes(db_path):
    proc = _start(db_path)
    _wait_for_rows(proc, db_path, 5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    with costdb.open(db_path) as db:                      # opens, no corruption
        assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    r = subprocess.run([sys.executable, "-m", "costdb.cli", "profile", "--db", db_path, *ARGS],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with costdb.open(db_path) as db:
        statuses = list(db.sessions("local")["status"])
        assert statuses == ["interrupted", "complete"]   # the killed session is closed as interrupted
    _check_complete(db_path)


def test_interrupted_in_context_step_writes_nothing_and_reruns(db_path):
    n = len(model_graph("tinycnn", batch=2).signatures())
    # quick isolated ops (the later options win), then a long in-context step to interrupt
    proc = _start(db_path, "--samples", "3", "--min-sample-time", "0.001", "--iterations", "400")
    _wait_for_rows(proc, db_path, n)                   # every isolated op is in: in-context next
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert _count(db_path, "in_context") == 0          # the step is written all at once or not
    r = subprocess.run([sys.executable, "-m", "costdb.cli", "profile", "--db", db_path, *ARGS],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"measured 0 of 0 ops ({n} already in the database)" in r.stderr
    assert f"in-context costs of {n} ops from" in r.stderr
    _check_complete(db_path)
