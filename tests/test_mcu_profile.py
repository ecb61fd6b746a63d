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


def test_simd_and_portable_kernels_are_never_mixed(db_path, tmp_path):
    """The same board profiled with the SIMD and with the portable firmware: two settings
    fingerprints (kernel_variant), each complete; a cost table refuses to mix them. (costdb
    profile traces float graphs; the float32 kernels are the same in both builds, so their
    figures agree, but they are still kept apart: the fingerprint is about the firmware.)"""
    from costdb.errors import CostdbError
    from devices.serial.build import build_firmware
    from devices.serial.qemu import QemuBoard
    from serial_fixtures import link_inventory
    n = len(model_graph("tinycnn").signatures())
    portable = build_firmware("qemu-m4f", options={"KERNELS": "portable"})
    for elf in (None, portable):
        with QemuBoard("qemu-m4f", elf=elf) as q:
            inv = link_inventory(tmp_path / "inv.toml", "m4", q.url, "qemu-m4f", 115200)
            res = costdb.profile(db_path, device="m4", model="tinycnn", settings=FAST,
                                 inventory=inv)
            assert res.planned == res.measured == n          # a new fingerprint: measured again
    with costdb.open(db_path) as db:
        ids = {v: i for i, v in db.conn.execute("SELECT id, kernel_variant FROM settings")}
        assert set(ids) == {"simd", "portable"}
        with pytest.raises(CostdbError, match="different settings"):
            db.costs("m4", "tinycnn")
        simd = db.costs("m4", "tinycnn", settings=ids["simd"]).set_index("name")
        port = db.costs("m4", "tinycnn", settings=ids["portable"]).set_index("name")
    assert simd["status"].eq("ok").all() and port["status"].eq("ok").all()
    cyc = lambda df: df["runtime_s"] * 25e6  # noqa: E731  (emulated instructions)
    assert ((cyc(simd) - cyc(port)).abs() <= 24).all()      # same float kernels, same counts


@pytest.mark.parametrize("board,variant", [("qemu-m4f", "simd"), ("qemu-m0", "portable")])
def test_profile_int8_tinycnn_records_the_int8_kernels(db_path, board, variant):
    """--dtype int8: the quantised graph (1-byte tensors) measured by the firmware's int8
    kernels, under a fingerprint that names dtype and kernel variant."""
    res = costdb.profile(db_path, device=board, model="tinycnn", dtype="int8", settings=FAST)
    assert res.measured == res.planned == len(model_graph("tinycnn").signatures())
    with costdb.open(db_path) as db:
        df = db.costs(board, "tinycnn", dtype="int8")
        assert df["status"].eq("ok").all() and set(df["runtime_provenance"]) == {"emulated"}
        (dtype, variant_,) = db.conn.execute("SELECT dtype, kernel_variant FROM settings").fetchone()
        kinds = {json.loads(x).get("kernel_dtype") for (x,) in
                 db.conn.execute("SELECT extra_json FROM measurements")}
    assert (dtype, variant_) == ("int8", variant) and kinds == {"int8"}
    g32 = model_graph("tinycnn")
    assert df["output_bytes"].sum() * 4 == sum(n.output_bytes for n in g32.nodes)


def test_int8_graphs_are_refused_off_the_firmware(db_path):
    from costdb.errors import CostdbError
    with pytest.raises(CostdbError, match="Cortex-M firmware only"):
        costdb.profile(db_path, device="local", model="tinycnn", dtype="int8")
