"""Stress: serial profiles on the emulated boards under CPU hogs that oversubscribe the cores,
through UART-speed lines, and with kill -9 of the board or of the profiling process at random
moments followed by a resume. Bounded in count (3 loaded profiles, 10 kills) and in time (hogs
stop by themselves after 240 s and are stopped by pid), loopback only. Nothing here depends on
how fast the machine is: every assertion is about the rows (each op exactly once, each row equal
to the quiet direct-link reference) and the recorded link statistics.

Each test prints one ``STRESS`` line with its figures (``pytest -s tests/test_stress_serial.py
| grep STRESS``): runs, failures, retries, rows lost and rows duplicated."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Callable

import psutil
import pytest

import costdb
from costdb.errors import CostdbError
from devices.serial.qemu import QemuBoard
from serial_fixtures import (FAST, assert_rows_right, cpu_hogs, link_inventory,  # noqa: F401
                             profile_rows, reference_rows, session_link)
from uart_proxy import UartProxy

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-system-arm")
                                     and shutil.which("arm-none-eabi-gcc")),
                                reason="needs qemu-system-arm and gcc-arm-none-eabi")
HANG_GUARD_S = 600      # only against a hung test; never reached by a slow one that progresses


def _figures(name: str, **fig: object) -> None:
    load = os.getloadavg()[0]
    print(f"\nSTRESS {name}: " + ", ".join(f"{k}={v}" for k, v in fig.items())
          + f" (load average {load:.1f} on {os.cpu_count()} cores)")


def _lost_and_duplicated(rows: list[tuple], reference: dict) -> tuple[int, int]:
    sigs = [r[0] for r in rows]
    return len(set(reference) - set(sigs)), len(sigs) - len(set(sigs))


@pytest.mark.parametrize("board, baud", [("qemu-m4f", None), ("qemu-m0", None),
                                         ("qemu-m0", 9600)])
def test_profile_under_cpu_hogs(tmp_path, reference_rows, board, baud):
    """The whole tiny-CNN profile while 3 busy processes per core compete with QEMU and the
    host: it completes, every row right, and the session records the link statistics."""
    reference = reference_rows(board)           # measured before the hogs start
    db = str(tmp_path / "c.db")
    with cpu_hogs():
        if baud is None:                        # the catalog board: costdb starts QEMU
            device = board
            res = costdb.profile(db, device=board, model="tinycnn", settings=FAST)
        else:
            device = "loaded-line"
            with QemuBoard(board) as q, UartProxy(q.port, baud=baud, seed=3) as line:
                inv = link_inventory(tmp_path / "inv.toml", device, line.url, board, baud)
                res = costdb.profile(db, device=device, model="tinycnn", settings=FAST,
                                     inventory=inv)
    rows = profile_rows(db, device)
    lost, dup = _lost_and_duplicated(rows, reference)
    link = session_link(db, device)
    _figures(f"hogs {board} {'direct' if baud is None else f'{baud} baud'}", runs=1,
             failures=int(res.status != "complete"), retries=link["retries"],
             timeouts=link["timeouts"], crc_errors=link["crc_errors"], lost=lost,
             duplicated=dup)
    assert res.status == "complete"
    assert_rows_right(rows, reference)
    assert {"frames", "retries", "crc_errors", "timeouts", "resyncs"} <= set(link)
    assert link["frames"] >= len(rows)


def _rows(db: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT count(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _qemu_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if "qemu" in p.name()}


def _at_moment(db: str, at_rows: int, delay: float, alive: Callable[[], bool]) -> bool:
    """Wait until ``db`` holds ``at_rows`` rows, then ``delay`` seconds; False if ``alive()``
    turned false first (the run finished before the moment came)."""
    guard = time.monotonic() + HANG_GUARD_S
    while _rows(db) < at_rows:
        if not alive():
            return False
        assert time.monotonic() < guard, "hung"
        time.sleep(0.02)
    time.sleep(delay)
    return alive()


def test_kill9_at_random_moments_then_resume(tmp_path, reference_rows):
    """Ten SIGKILLs at random moments (a random number of rows beyond those stored, plus a
    random delay), alternately of the QEMU board under a running profile and of the profiling
    process itself (`costdb profile`, its QEMU dies with it); each run resumes where the last
    stopped, then one run goes to the end. Nothing is lost, nothing is measured twice, every
    row is right, no session is left 'running'. 64 samples per op make the profile long
    enough for the kills to land inside it."""
    reference = reference_rows("qemu-m4f")
    n = len(reference)
    db = str(tmp_path / "c.db")
    settings = {"samples": 64, "warmups": 1}
    args = [sys.executable, "-m", "costdb.cli", "profile", "--device", "qemu-m4f", "--model",
            "tinycnn", "--db", db, "--samples", "64", "--no-iteration", "-q"]
    rng = random.Random(20240613)
    killed = {"qemu": 0, "profiler": 0, "finished_first": 0}
    errors: list[str] = []
    for round_ in range(10):
        stored = _rows(db)
        at_rows, delay = min(stored + rng.randint(1, 3), n - 1), rng.uniform(0.0, 0.4)
        if round_ % 2 == 0:      # kill the board under a profile running in this process
            before = _qemu_children()

            def kill_board() -> None:
                for pid in _qemu_children() - before:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        psutil.Process(pid).kill()
                    killed["qemu"] += 1

            def progress(event: str, **info) -> None:   # the moment: op number k is stored
                if event == "measured" and info["index"] == at_rows - stored - 1:
                    threading.Timer(delay, kill_board).start()
            try:
                costdb.profile(db, device="qemu-m4f", model="tinycnn", settings=settings,
                               progress=progress)
                killed["finished_first"] += 1
            except CostdbError as e:                 # the board vanished mid-profile
                errors.append(str(e))
        else:                    # kill the profiling process
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
            try:
                if _at_moment(db, at_rows, delay, lambda: proc.poll() is None):
                    proc.send_signal(signal.SIGKILL)
                    killed["profiler"] += 1
                _out, err = proc.communicate(timeout=HANG_GUARD_S)
                assert proc.returncode in (0, -signal.SIGKILL), err
                killed["finished_first"] += proc.returncode == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert all("\n" not in e and "qemu-m4f" in e for e in errors), errors
    costdb.profile(db, device="qemu-m4f", model="tinycnn", settings=settings)   # to the end
    rows = profile_rows(db, "qemu-m4f")
    lost, dup = _lost_and_duplicated(rows, reference)
    with costdb.open(db) as d:
        statuses = list(d.sessions("qemu-m4f")["status"])
    _figures("kill -9 + resume qemu-m4f", runs=11, kills_qemu=killed["qemu"],
             kills_profiler=killed["profiler"], finished_before_kill=killed["finished_first"],
             sessions=len(statuses), lost=lost, duplicated=dup)
    assert_rows_right(rows, reference)
    assert _rows(db) == n
    assert "running" not in statuses
