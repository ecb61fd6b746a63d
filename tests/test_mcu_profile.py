"""`costdb profile` on the emulated Cortex-M boards, end to end into the database.

Real firmware (arm-none-eabi-gcc) on real QEMU boards, real SQLite. Runtimes are QEMU
instruction counts and must be stored as `emulated`; energy is modelled from the board profile.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

import costdb
from profiler.zoo import model_graph

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
                                reason="needs qemu-system-arm and gcc-arm-none-eabi (README test command)")
FAST = {"samples": 3, "warmups": 1}


@pytest.mark.parametrize("board", ["qemu-m4f", "qemu-m0"])
def test_profile_tinycnn_on_emulated_board(db_path, board):
    res = costdb.profile(db_path, device=board, model="tinycnn", settings=FAST)
    g = model_graph("tinycnn")
    assert res.planned == len(g.signatures()) and res.measured == res.planned
    with costdb.open(db_path) as db:
        df = db.costs(board, "tinycnn")
        ok = df[df.status == "ok"]
        assert len(ok) > 0
        assert set(ok["runtime_provenance"]) == {"emulated"}       # never passed off as measured
        assert set(ok["energy_provenance"]) == {"modeled"}
        assert (ok["runtime_s"] > 0).all() and (ok["peak_memory_bytes"] > 0).all()
        facts = json.loads(db.sessions(board).iloc[0]["environment_json"])["facts"]
        assert facts["board"] and facts["arena_bytes"] > 0 and facts["clock_hz"] > 0
        rows = db.conn.execute("SELECT status, extra_json FROM measurements").fetchall()
    assert df["status"].eq("ok").all()           # the M0 too: what does not fit runs tiled
    tiled = [json.loads(x)["tiling"] for s, x in rows if "tiling" in json.loads(x or "{}")]
    arena = facts["arena_bytes"]
    if board == "qemu-m4f":
        assert not tiled
    else:  # 16 KiB of RAM: the tiles fit, the untiled op would not
        assert tiled and all(t["untiled_bytes"] > arena >= t["tile_bytes"] for t in tiled)
    with costdb.open(db_path) as db:                 # the kernel variant is in the settings
        variants = {r[0] for r in db.conn.execute(
            "SELECT s.kernel_variant FROM measurements m JOIN settings s ON s.id = m.settings_id")}
    assert variants == {"simd" if board == "qemu-m4f" else "portable"}
    # a second run measures nothing
    again = costdb.profile(db_path, device=board, model="tinycnn", settings=FAST)
    assert again.planned == 0


def _rows(path: str) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as c:
            return c.execute("SELECT count(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_qemu_killed_mid_profile_then_resumed(db_path):
    args = [sys.executable, "-m", "costdb.cli", "profile", "--device", "qemu-m4f", "--model", "tinycnn",
            "--db", db_path, "--samples", "200", "--no-iteration", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _rows(db_path) < 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    qemu = [p for p in psutil.Process(proc.pid).children(recursive=True) if "qemu" in p.name()]
    assert len(qemu) == 1
    qemu[0].kill()                                     # the board vanishes mid-profile
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    done = _rows(db_path)
    assert 4 <= done < len(model_graph("tinycnn").signatures())
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"({done} already in the database)" in r.stderr
    with costdb.open(db_path) as db:
        counts = db.conn.execute("SELECT signature, count(*) FROM measurements GROUP BY signature").fetchall()
        assert len(counts) == len(model_graph("tinycnn").signatures()) and {c for _, c in counts} == {1}
        assert list(db.sessions("qemu-m4f")["status"]) == ["failed", "complete"]
