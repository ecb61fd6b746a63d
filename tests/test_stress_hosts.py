"""Stress on the host side: local profiles under CPU hogs, kill -9 at random moments x10 with
resume, and concurrent writers on a new and on an existing database (issue 13). Real processes
(``costdb profile``), real SQLite files, loopback only; bounded in count (10 kills, 2+2 writers)
and in time (the hogs — one per core for the kills, two per core for the writers — stop by
themselves after 300 s and are stopped by pid).

Every assertion is about the rows: each op measured exactly once under its fingerprint (zero
lost, zero duplicated), no session left ``running``, no claim left, an intact file. Each test
prints one ``STRESS`` line with its figures (``pytest -s tests/test_stress_hosts.py | grep
STRESS``).
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import costdb
from serial_fixtures import cpu_hogs

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 900       # only against a hung run; a slow one that progresses never reaches it


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cmd(db: Path, batch: int = 4) -> list[str]:
    return [sys.executable, "-m", "costdb.cli", "profile", "--device", "local", "--model", "mlp",
            "--db", str(db), "--batch", str(batch), "--samples", "3", "--min-sample-time",
            "0.02", "--no-in-context", "--no-iteration", "-q", "--top", "1"]


def _start(db: Path, batch: int = 4) -> subprocess.Popen:
    return subprocess.Popen(_cmd(db, batch), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.Error:        # not created or not migrated yet
        return []


def _wait(cond, what: str, timeout: float = HANG_GUARD_S) -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t_end, f"timed out waiting for {what}"
        time.sleep(0.02)


def _finish(p: subprocess.Popen) -> None:
    _, err = p.communicate(timeout=HANG_GUARD_S)
    assert p.returncode == 0, err


def _audit(db: Path, batch: int) -> dict[str, int]:
    """Lost and duplicated rows of the model variant, left-over sessions and claims."""
    with costdb.open(db) as d:      # a writable open: closes sessions of killed processes
        key = next(m.key for m in d.model_list() if m.batch == batch)
        sigs = set(d.graph(key).signatures())
        rows = d.conn.execute(
            "SELECT m.signature, m.settings_id, count(*) FROM measurements m WHERE m.kind = "
            "'isolated' AND m.status = 'ok' GROUP BY 1, 2").fetchall()
        mine = [r for r in rows if r[0] in sigs]
        fingerprints = {r[1] for r in mine}
        out = {"ops": len(sigs),
               "lost": len(sigs - {r[0] for r in mine}),
               "duplicated": sum(r[2] - 1 for r in mine),
               "fingerprints": len(fingerprints),
               "running": d.conn.execute("SELECT count(*) FROM sessions WHERE status = 'running'"
                                         ).fetchone()[0],
               "claims": len(d.claims()),
               "intact": d.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"}
    return out


def _figures(name: str, **fig: object) -> None:
    print(f"\nSTRESS {name}: " + ", ".join(f"{k}={v}" for k, v in fig.items())
          + f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def _assert_clean(a: dict[str, int]) -> None:
    assert a["lost"] == 0 and a["duplicated"] == 0, a
    assert a["fingerprints"] == 1 and a["running"] == 0 and a["claims"] == 0 and a["intact"], a


def test_kill_9_at_random_moments_then_resume_under_cpu_hogs(tmp_path):
    """Ten profiles killed with SIGKILL at random moments (before the session, between ops,
    mid-op, mid-write), then one run to the end: every op exactly once; the killed sessions are
    closed as interrupted and their measurements count as done."""
    db = tmp_path / "c.db"
    rng = random.Random(13)
    kills = finished_early = 0
    with cpu_hogs(n=os.cpu_count() or 2, bound_s=300):     # one per core: 11 torch start-ups
        for _ in range(10):
            before = (_query(db, "SELECT count(*) FROM measurements") or [(0,)])[0][0]
            p = _start(db)
            k = rng.choice([0, 0, 1, 1, 2])
            if k == 0:      # as soon as its session exists (often before any measurement)
                _wait(lambda: _query(db, "SELECT 1 FROM sessions WHERE pid = ? AND status = "
                                         "'running'", (p.pid,)) or p.poll() is not None,
                      "the session to start")
            else:
                _wait(lambda: (_query(db, "SELECT count(*) FROM measurements") or [(0,)])[0][0]
                      >= before + k or p.poll() is not None, "measurements")
            time.sleep(rng.uniform(0, 0.05))   # a random moment inside the next op
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                kills += 1
            else:
                finished_early += 1
            p.wait(timeout=HANG_GUARD_S)
        _finish(_start(db))
    a = _audit(db, 4)
    with costdb.open(db, readonly=True) as d:
        statuses = [s.status for s in d.session_list()]
    _figures("kill -9 x10 + resume (local, CPU hogs)", runs=11, kills=kills,
             finished_first=finished_early, failures=0, rows_lost=a["lost"],
             rows_duplicated=a["duplicated"], interrupted=statuses.count("interrupted"))
    _assert_clean(a)
    assert set(statuses) <= {"interrupted", "complete"} and statuses.count("complete") <= 1


def test_concurrent_writers_on_a_new_and_an_existing_database_under_cpu_hogs(tmp_path):
    """Two profiles of the same device and model started together on a file that does not
    exist yet (creation and migration race), then two more of another batch size on that now
    existing file: all complete, each op once."""
    db = tmp_path / "c.db"
    with cpu_hogs(n=2 * (os.cpu_count() or 2), bound_s=300):
        procs = [_start(db), _start(db)]
        for p in procs:
            _finish(p)
        new = _audit(db, 4)
        procs = [_start(db, 8), _start(db, 8)]
        for p in procs:
            _finish(p)
        existing = _audit(db, 8)
    with costdb.open(db, readonly=True) as d:
        sessions = d.session_list()
        measured = [s.measured for s in sessions]
    _figures("concurrent writers (local, CPU hogs)", runs=4, failures=0,
             rows_lost=new["lost"] + existing["lost"],
             rows_duplicated=new["duplicated"] + existing["duplicated"],
             measured_per_session=measured)
    _assert_clean(new)
    _assert_clean(existing)
    assert all(s.status == "complete" for s in sessions)
