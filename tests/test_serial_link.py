"""The serial link at the speeds and with the faults of real boards: real firmware on real QEMU
boards, reached through a proxy that paces and splits bytes as a UART at 9600 or 115200 baud
would (TCP or a pseudo-terminal, both directions) and injects line faults into the board's
replies. Every profile must complete with every row equal to a quiet direct-link reference;
every fault must be retried and counted in the session, never stored; a board that stops
answering must be reported as a timeout naming the command, the device and the limit."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import costdb
from devices.serial.qemu import QemuBoard
from devices.serial.transport import SerialTimeoutError, open_serial_agent
from profiler.zoo import model_graph
from serial_fixtures import (FAST, assert_rows_right, link_inventory, profile_rows,  # noqa: F401
                             reference_rows, session_link)
from uart_proxy import UartProxy

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-system-arm")
                                     and shutil.which("arm-none-eabi-gcc")),
                                reason="needs qemu-system-arm and gcc-arm-none-eabi")


@pytest.mark.parametrize("board, baud, front", [
    ("qemu-m4f", 9600, "tcp"), ("qemu-m0", 9600, "pty"),
    ("qemu-m4f", 115200, "pty"), ("qemu-m0", 115200, "tcp")])
def test_profile_through_a_uart_at_real_speed(tmp_path, reference_rows, board, baud, front):
    """The tiny-CNN profile through a line as slow as the board's UART, bytes in random splits:
    it completes, every row right, nothing retried."""
    db = str(tmp_path / "c.db")
    with QemuBoard(board) as q, UartProxy(q.port, baud=baud, front=front, seed=baud) as line:
        inv = link_inventory(tmp_path / "inv.toml", "slow-board", line.url, board, baud)
        res = costdb.profile(db, device="slow-board", model="tinycnn", settings=FAST,
                             inventory=inv)
    assert res.status == "complete" and res.measured == len(model_graph("tinycnn").signatures())
    assert_rows_right(profile_rows(db, "slow-board"), reference_rows(board))
    link = session_link(db, "slow-board")
    assert link["baud"] == baud and link["frames"] >= res.measured
    assert link["retries"] == link["timeouts"] == link["crc_errors"] == 0
    assert line.down.sent > 0 and line.up.sent > 0


@pytest.mark.parametrize("front", ["tcp", "pty"])
def test_handshake_with_bytes_trickling_one_at_a_time(front):
    """One byte at a time, 0.1 ms apart (the case that used to fail the handshake in 5 of 5
    tries): handshake, then ops whose replies arrive byte by byte."""
    with QemuBoard("qemu-m4f") as q, UartProxy(q.port, baud=100_000, max_split=1,
                                               front=front) as line:
        agent = open_serial_agent(line.url, baud=100_000, board="qemu-m4f", emulated=True)
        facts = agent.hello()["facts"]
        specs = model_graph("tinycnn").distinct_specs()
        rows = [agent.measure(s, FAST) for s in specs[:4]]
        stats = agent.link_stats()
        agent.close()
    assert facts["board"] == "qemu-m4f" and facts["rx_buffer"] >= 256
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert stats["retries"] == 0 and stats["incomplete"] == 0


FAULTS = {  # kind -> what must have been counted for 3 damaged replies
    "drop": lambda s: s["retries"] >= 3,
    "flip": lambda s: s["retries"] >= 3 and s["crc_errors"] >= 3,
    "length": lambda s: s["retries"] >= 3 and s["pokes"] >= 1 and s["timeouts"] == 0,
    "malform": lambda s: s["retries"] >= 3 and s["protocol_errors"] == 3,
    "stall": lambda s: s["retries"] == 0,       # a late frame is a good frame
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_faults_on_the_line_are_retried_and_counted_never_stored(tmp_path, reference_rows,
                                                                 kind):
    db = str(tmp_path / "c.db")
    targets = {1, 5, 9}

    with QemuBoard("qemu-m4f") as q, UartProxy(q.port, baud=115200, seed=7) as line:
        def damage(event, **info):                 # one damaged reply for 3 of the ops
            if event == "op" and info["index"] in targets:
                line.inject(kind)
        inv = link_inventory(tmp_path / "inv.toml", "noisy", line.url, "qemu-m4f", 115200)
        res = costdb.profile(db, device="noisy", model="tinycnn", settings=FAST, inventory=inv,
                             progress=damage)
    assert line.injected[kind] == 3
    assert res.status == "complete" and not res.failed
    assert_rows_right(profile_rows(db, "noisy"), reference_rows("qemu-m4f"))
    link = session_link(db, "noisy")
    assert FAULTS[kind](link), link


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "costdb.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_board_always_malformed_is_one_line_error_and_nothing_stored(tmp_path):
    """A firmware that answers every RUN with a CRC-valid but short RESULT: retried, then one
    clear line and exit 2; no row stored, no traceback."""
    db = str(tmp_path / "c.db")
    with QemuBoard("qemu-m4f") as q, UartProxy(q.port, baud=115200) as line:
        line.inject("malform", 1000)
        inv = link_inventory(tmp_path / "inv.toml", "broken", line.url, "qemu-m4f", 115200)
        r = _cli(["profile", "--device", "broken", "--model", "tinycnn", "--db", db,
                  "--inventory", inv, "--samples", "3", "--no-iteration", "-q"])
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("Error: no valid reply from qemu-m4f to RUN ")
    assert "4 malformed" in r.stderr and "short RESULT payload" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert profile_rows(db, "broken") == []


def test_board_that_stops_answering_is_reported_as_a_timeout(tmp_path):
    with QemuBoard("qemu-m4f") as q, UartProxy(q.port, baud=115200) as line:
        agent = open_serial_agent(line.url, baud=115200, board="qemu-m4f", emulated=True,
                                  timeout=1.0)
        agent.hello()
        line.mute()
        spec = model_graph("tinycnn").distinct_specs()[0]
        with pytest.raises(SerialTimeoutError) as err:
            agent.measure(spec, FAST)
        stats = agent.link_stats()
        agent.close()
    msg = str(err.value)
    assert msg.startswith("timed out: qemu-m4f sent no complete reply to RUN conv_fwd/float32")
    assert "1 s compute" in msg and "115200 baud" in msg and "4 attempts" in msg
    assert "timeout = SECONDS" in msg and "\n" not in msg
    assert stats["timeouts"] == 4 and stats["retries"] == 3

    # through the CLI, a board that never answers: one line, exit 2, "timed out"
    db = str(tmp_path / "c.db")
    with QemuBoard("qemu-m4f") as q, UartProxy(q.port, baud=115200) as line:
        inv = link_inventory(tmp_path / "inv.toml", "mute", line.url, "qemu-m4f", 115200,
                             timeout=1)
        line.mute()
        r = _cli(["profile", "--device", "mute", "--model", "tinycnn", "--db", db,
                  "--inventory", inv, "--samples", "3", "--no-iteration", "-q"])
    assert r.returncode == 2
    assert r.stderr.startswith("Error: timed out: no answer to name% from qemu-m4f"), r.stderr
    assert "115200 baud" in r.stderr and r.stderr.count("\n") == 1


def test_bad_serial_timeout_in_inventory_is_one_line(tmp_path):
    inv = link_inventory(tmp_path / "inv.toml", "badt", "socket://127.0.0.1:9", "qemu-m4f",
                         115200, timeout='"soon"')
    with pytest.raises(costdb.CostdbError) as err:
        costdb.profile(str(tmp_path / "c.db"), device="badt", model="tinycnn", inventory=inv)
    assert "timeout must be a number of seconds" in str(err.value) and "'soon'" in str(err.value)
