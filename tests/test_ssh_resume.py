"""Failures mid-profile: sshd killed and restarted, the agent killed, the link gone for good."""
from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from sshd import sshd  # noqa: E402,F401

from costdb.errors import CostdbError  # noqa: E402
from devices.inventory import Inventory  # noqa: E402
from profiler.session import profile  # noqa: E402
from profiler.zoo import model_graph  # noqa: E402

pytestmark = pytest.mark.timeout(150)

FAST = {"samples": 3, "min_sample_time": 0.002, "warmups": 1}


def _counts(db, device):
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT signature, status, session_id FROM measurements WHERE device = ?",
                           (device,)).fetchall()
        sessions = con.execute("SELECT id, status FROM sessions WHERE device = ? ORDER BY id",
                               (device,)).fetchall()
    finally:
        con.close()
    return rows, sessions


def _check_complete(db, device, graph):
    rows, sessions = _counts(db, device)
    wanted = {s["signature"] for s in graph.distinct_specs()}
    ok = [r[0] for r in rows if r[1] == "ok"]
    assert set(ok) == wanted, "lost measurements"
    assert len(ok) == len(set(ok)), "duplicated measurements"
    return rows, sessions


def test_sshd_killed_mid_profile_then_restarted(sshd, tmp_path):
    graph = model_graph("mlp", 2, None)
    entry = sshd.inventory_entry("rpi4b")
    db = str(tmp_path / "costs.db")
    events = []

    def outage():
        time.sleep(0.02)
        sshd.stop()               # the listener and every session process, agent included
        events.append("down")
        time.sleep(1.0)
        sshd.start()
        events.append("up")

    threads = []

    def progress(event, **info):
        if event == "op" and info["index"] == 5 and not threads:
            t = threading.Thread(target=outage)
            t.start()
            threads.append(t)

    res = profile(db, device="rpi4b", model=graph, settings=FAST, inventory=Inventory(None, {"rpi4b": entry}),
                  progress=progress, connect_options={"reconnect_timeout": 60})
    threads[0].join()
    assert events == ["down", "up"]
    assert res.status == "complete"
    rows, sessions = _check_complete(db, "rpi4b", graph)
    assert len(rows) == len(graph.distinct_specs())      # one session, no extra rows
    assert sessions == [(res.session_id, "complete")]


def test_agent_killed_mid_profile(sshd, tmp_path):
    graph = model_graph("mlp", 2, None)
    entry = sshd.inventory_entry("rpi4b")
    db = str(tmp_path / "costs.db")
    killed = []

    def progress(event, **info):
        if event == "op" and info["index"] == 3 and not killed:
            pids = sshd.remote_processes("agent.pyz")
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)

    res = profile(db, device="rpi4b", model=graph, settings=FAST,
                  inventory=Inventory(None, {"rpi4b": entry}), progress=progress)
    assert killed and res.status == "complete"
    rows, _ = _check_complete(db, "rpi4b", graph)
    assert len(rows) == len(graph.distinct_specs())


def test_link_gone_for_good_then_resume_from_database(sshd, tmp_path):
    graph = model_graph("mlp", 2, None)
    entry = sshd.inventory_entry("rpi4b")
    db = str(tmp_path / "costs.db")
    inv = Inventory(None, {"rpi4b": entry})

    def progress(event, **info):
        if event == "op" and info["index"] == 4 and sshd.proc is not None:
            sshd.stop()

    with pytest.raises(CostdbError) as e:
        profile(db, device="rpi4b", model=graph, settings=FAST, inventory=inv, progress=progress,
                connect_options={"reconnect_timeout": 1.0})
    assert "connection lost" in str(e.value) and "run the same command again" in str(e.value)
    rows, sessions = _counts(db, "rpi4b")
    assert len(rows) == 4 and sessions[0][1] == "failed"
    sshd.start()
    res = profile(db, device="rpi4b", model=graph, settings=FAST, inventory=inv)
    assert res.planned == len(graph.distinct_specs()) - 4 and res.status == "complete"
    _check_complete(db, "rpi4b", graph)
