"""The serial transport against the real firmware on QEMU: handshake, protocol-version refusal,
ops that do not fit, garbage on the line, corrupted replies, and QEMU dying mid-profile."""
from __future__ import annotations

import os
import threading
import time

import pytest

from costdb.errors import CostdbError
from devices.serial import protocol as P
from devices.serial.build import build_firmware
from devices.serial.ops import K, needed_bytes, spec_to_request
from devices.serial.protocol import RunRequest
from devices.serial.qemu import QemuBoard, start_qemu_board
from devices.serial.transport import ProtocolVersionError, SerialLinkError, open_serial_agent
from profiler.zoo import model_graph
from serial_fixtures import (CorruptingProxy, board_agent, m0_agent, m4f_agent,  # noqa: F401
                             qemu_boards)

FACT_KEYS = {"board", "cpu", "clock_hz", "ram_bytes", "arena_bytes", "firmware_version",
             "protocol"}


def test_handshake_reports_board_facts(board_agent):
    hello = board_agent.hello()
    facts = hello["facts"]
    assert FACT_KEYS <= set(facts)
    assert facts["board"] == board_agent.board and facts["protocol"] == P.PROTOCOL_VERSION
    assert facts["arena_bytes"] < facts["ram_bytes"]
    assert board_agent.runtime_provenance == "emulated"
    assert board_agent.idle_power_w(0.1) is None


def test_start_qemu_board_interface():
    with start_qemu_board("qemu-m4f") as url:
        agent = open_serial_agent(url, baud=115200, board="qemu-m4f", emulated=True)
        agent.hello()
        spec = model_graph("tinycnn").distinct_specs()[0]
        res = agent.measure(spec, settings={"samples": 5, "warmups": 1})
        agent.close()
    assert res["status"] == "ok" and res["runtime_provenance"] == "emulated"
    assert res["runtime"]["samples"] == 5 and res["cycles"]["median"] > 0
    assert res["runtime"]["median"] == pytest.approx(res["cycles"]["median"] / 25e6)
    assert res["peak_memory_bytes"] == needed_bytes(spec_to_request(spec))
    assert res["output_bytes"] == 8 * 16 * 16 * 4 and res["stack_bytes"] > 0


@pytest.mark.parametrize("version", [1, 99])     # 1: a firmware before 0.3.0 (NCHW int8)
def test_protocol_version_mismatch_is_refused_clearly(version):
    elf = build_firmware("qemu-m4f", protocol_version=version)
    with QemuBoard("qemu-m4f", elf=elf) as q:
        agent = open_serial_agent(q.url, board="qemu-m4f", emulated=True)
        with pytest.raises(ProtocolVersionError) as err:
            agent.hello()
        agent.close()
    msg = str(err.value)
    assert f"protocol {version}," in msg and f"speaks {P.PROTOCOL_VERSION}" in msg
    assert "rebuild and reflash" in msg and "\n" not in msg
    assert isinstance(err.value, CostdbError)


def test_op_too_big_is_recorded_as_not_fitting(m0_agent):
    spec = {"op": "conv2d", "phase": "fwd", "dtype": "float32", "inputs": [[1, 16, 32, 512]],
            "params": {"weight": [32, 16, 3, 3], "bias": [32]},
            "attrs": {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1},
            "signature": "big"}
    t0 = time.monotonic()
    res = m0_agent.measure(spec, {"samples": 3})
    assert time.monotonic() - t0 < 5
    assert res["status"] == "does_not_fit"
    assert res["needed_bytes"] == needed_bytes(spec_to_request(spec)) > 13824
    assert str(res["needed_bytes"]) in res["error"] and "untiled" in res["error"]
    t = res["tiling"]      # even one output channel and one output row need 3 x 32 KiB rows
    assert t["tile"] == 1 and t["untiled_bytes"] == res["needed_bytes"]
    assert t["tile_bytes"] > 13824 and str(t["tile_bytes"]) in res["error"]
    # absurd shapes (more than 4 GiB) too: no overflow, no crash
    huge = dict(spec, inputs=[[64, 512, 512, 512]])
    assert m0_agent.measure(huge, {})["status"] == "does_not_fit"
    # and the board is still fine
    small = model_graph("tinycnn").distinct_specs()[6]
    assert m0_agent.measure(small, {"samples": 2})["status"] == "ok"


def test_unsupported_and_malformed_ops(m4f_agent):
    bn = {"op": "batch_norm", "phase": "fwd", "dtype": "float32", "inputs": [[1, 8, 4, 4]],
          "params": {"weight": [8], "bias": [8]}, "attrs": {}}
    res = m4f_agent.measure(bn, {})
    assert res["status"] == "unsupported" and "batch_norm" in res["error"]
    res = m4f_agent.measure(dict(bn, op="conv2d", params={}), {})
    assert res["status"] == "error"
    fp16 = dict(bn, op="relu", dtype="float16")
    assert m4f_agent.measure(fp16, {})["status"] == "unsupported"
    # a shape the firmware rejects (kernel larger than the padded input)
    bad = RunRequest(K["conv_fwd"], "float32", [1, 1, 2, 2, 1, 5, 5, 1, 1, 0, 0, 1])
    assert m4f_agent.run(bad)[0]["status"] == "error"


def test_garbage_on_the_line_then_resync(m4f_agent):
    rnd = os.urandom(2000)
    half_frame = P.encode_frame(P.T_RUN, 9, RunRequest(K["relu_fwd"], "int8", [10]).pack())[:30]
    m4f_agent._write(rnd + half_frame + b"%%name%xx" + b"\xa5\x5a" + rnd[:50])
    time.sleep(0.2)
    m4f_agent.sync()
    spec = model_graph("tinycnn").distinct_specs()[1]
    assert m4f_agent.measure(spec, {"samples": 2})["status"] == "ok"


def test_corrupted_reply_is_retried(qemu_boards):
    with QemuBoard("qemu-m4f") as q:
        proxy = CorruptingProxy(q.port)
        agent = open_serial_agent(proxy.url, board="qemu-m4f", emulated=True)
        agent.hello()
        spec = model_graph("tinycnn").distinct_specs()[6]
        clean = agent.measure(spec, {"samples": 2})
        proxy.corrupt_next = 1
        res = agent.measure(spec, {"samples": 2})
        agent.close()
        proxy.close()
    assert proxy.corrupted == 1 and agent.retried >= 1 and agent.parser.stats.crc_errors >= 1
    assert res["status"] == "ok" and res["cycles"]["median"] == pytest.approx(
        clean["cycles"]["median"], abs=2)


def test_qemu_killed_mid_profile_then_resume_on_a_new_qemu():
    specs = model_graph("tinycnn").distinct_specs()
    done: dict[str, dict] = {}
    big = RunRequest(K["conv_fwd"], "float32", [1, 16, 24, 24, 32, 3, 3, 1, 1, 1, 1, 1],
                     samples=64, warmups=0)
    with QemuBoard("qemu-m0") as q:
        agent = open_serial_agent(q.url, board="qemu-m0", emulated=True, timeout=30)
        agent.hello()
        for spec in specs[:5]:
            done[spec["signature"]] = agent.measure(spec, {"samples": 2})
        big.p = [1, 4, 12, 12, 8, 3, 3, 1, 1, 1, 1, 1]        # fits m0, runs for seconds
        big.warmups = 200                                     # (~0.7 s per 64 runs unloaded)
        threading.Timer(0.5, q.kill).start()
        t0 = time.monotonic()
        with pytest.raises(SerialLinkError) as err:
            agent.run(big)
        assert time.monotonic() - t0 < 10
        assert "\n" not in str(err.value)
        agent.close()
    with start_qemu_board("qemu-m0") as url:          # a new QEMU; the host resumes
        agent = open_serial_agent(url, board="qemu-m0", emulated=True)
        agent.hello()
        for spec in specs:
            if spec["signature"] not in done:
                done[spec["signature"]] = agent.measure(spec, {"samples": 2})
        agent.close()
    assert list(done) == [s["signature"] for s in specs]      # nothing lost or duplicated
    assert {r["status"] for r in done.values()} <= {"ok", "does_not_fit"}


def test_profile_tinycnn_on_both_boards(board_agent):
    """Every distinct training op of tinycnn runs, on the 13 KiB M0 too: the ops that do not
    fit its arena run tiled, and say so."""
    arena = board_agent.facts["arena_bytes"]
    for dtype in ("float32", "int8"):
        specs = [dict(s, dtype=dtype) for s in model_graph("tinycnn").distinct_specs()]
        rows = [board_agent.measure(s, {"samples": 3}) for s in specs]
        assert [r["status"] for r in rows] == ["ok"] * len(rows), rows
        for r in rows:
            assert r["runtime_provenance"] == "emulated" and r["runtime"]["median"] > 0
            assert r["peak_memory_bytes"] <= arena
        tiled = [r for r in rows if "tiling" in r]
        for r in tiled:
            t = r["tiling"]
            assert r["needed_bytes"] == t["untiled_bytes"] > arena >= t["tile_bytes"]
            assert t["tiles"] >= 2 and r["peak_memory_bytes"] <= t["tile_bytes"]
        if board_agent.board == "qemu-m4f" or dtype == "int8":
            assert not tiled
        else:
            assert len(tiled) >= 3


def test_unknown_port_fails_with_one_line():
    with pytest.raises(SerialLinkError) as err:
        open_serial_agent("/dev/ttyDOESNOTEXIST", board="nrf52840")
    assert "ttyDOESNOTEXIST" in str(err.value)


def test_bytes_sent_while_the_board_computes_are_kept(board_agent):
    """The host writes a long RUN and, at once, 24 PINGs (~1.8 KB, several times the board's
    receive ring) while the core is busy computing: every PING comes back intact and in order
    after the RESULT, and the board counted no overrun. (On QEMU the emulated UART's flow
    control alone would keep the bytes; on a real UART, which cannot hold them, the interrupt
    ring is what does, within its size; the host never sends more than that unanswered.)"""
    a = board_agent
    ring = a.facts["rx_buffer"]
    run = RunRequest(K["conv_fwd"], "int8", [1, 4, 12, 12, 8, 3, 3, 1, 1, 1, 1, 1],
                     samples=64, warmups=0)
    pings = [bytes([i]) * 64 for i in range(24)]
    seq0 = a._next_seq()
    burst = P.encode_frame(P.T_RUN, seq0, run.pack()) + b"".join(
        P.encode_frame(P.T_PING, (seq0 + 1 + i) & 0xFF, p) for i, p in enumerate(pings))
    assert len(burst) > 3 * ring
    a._write(burst)
    a.seq = (seq0 + len(pings)) & 0xFF
    frames, readies = [], 0
    deadline = time.monotonic() + 300                  # a hang guard, not a timing check
    while readies < 1 + len(pings):
        assert time.monotonic() < deadline
        for ev in a._events():
            if isinstance(ev, P.Frame):
                frames.append(ev)
            elif ev.text == "m-ready":
                readies += 1
    assert [f.type for f in frames] == [P.R_RESULT] + [P.R_PONG] * len(pings)
    assert P.decode_result(frames[0].payload, 64)["status"] == "ok"
    assert [f.payload for f in frames[1:]] == pings
    assert a.hello()["facts"]["rx_overruns"] == 0
