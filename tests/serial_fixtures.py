"""Shared fixtures for the serial/firmware tests: one QEMU per emulated board per session (real
QEMU, real firmware), a TCP proxy that corrupts board -> host bytes on demand, reference
profiles to check rows against, inventories for boards behind a proxy, and CPU hogs."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from devices.serial.qemu import QemuBoard
from devices.serial.transport import SerialAgent, open_serial_agent

BOARDS = ("qemu-m0", "qemu-m4f")


class _Boards:
    def __init__(self) -> None:
        self.running: dict[str, tuple[QemuBoard, SerialAgent]] = {}

    def agent(self, board: str, kernels: str | None = None) -> SerialAgent:
        """The agent of ``board`` (``kernels="portable"``: a firmware built without the SIMD
        kernels, KERNELS=portable)."""
        key = f"{board}:{kernels}" if kernels else board
        if key not in self.running:
            from devices.serial.build import build_firmware
            elf = build_firmware(board, options={"KERNELS": kernels}) if kernels else None
            q = QemuBoard(board, elf=elf)
            q.start()
            a = open_serial_agent(q.url, board=board, emulated=True, timeout=60)
            a.hello()
            self.running[key] = (q, a)
        return self.running[key][1]

    def close(self) -> None:
        for q, a in self.running.values():
            a.close()
            q.stop()


@pytest.fixture(scope="session")
def qemu_boards():
    b = _Boards()
    yield b
    b.close()


@pytest.fixture(params=BOARDS)
def board_agent(request, qemu_boards) -> SerialAgent:
    """A synchronised agent on each emulated board in turn."""
    return qemu_boards.agent(request.param)


@pytest.fixture
def m4f_agent(qemu_boards) -> SerialAgent:
    return qemu_boards.agent("qemu-m4f")


@pytest.fixture
def m4f_portable_agent(qemu_boards) -> SerialAgent:
    """qemu-m4f running the portable int8 kernels (the numerical reference on the board)."""
    return qemu_boards.agent("qemu-m4f", kernels="portable")


@pytest.fixture
def m0_agent(qemu_boards) -> SerialAgent:
    return qemu_boards.agent("qemu-m0")


class CorruptingProxy:
    """Forwards a TCP serial link; flips one byte in the k-th board->host chunk that contains
    a frame when ``corrupt_next`` is set (a real noisy line, not a mock)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.corrupt_next = 0
        self.corrupted = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        board = socket.create_connection(("127.0.0.1", self.target_port))
        for s in (client, board):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        state = {"prev": 0, "since": -1}

        def pump(src, dst, corrupt):
            try:
                while not self._stop:
                    data = src.recv(4096)
                    if not data:
                        break
                    if corrupt and self.corrupt_next:
                        buf = bytearray(data)
                        for i, byte in enumerate(buf):
                            if state["since"] >= 0:
                                state["since"] += 1
                            if state["prev"] == 0xA5 and byte == 0x5A:
                                state["since"] = 0
                            if state["since"] == 8 and self.corrupt_next:   # a payload byte
                                buf[i] ^= 0x40
                                self.corrupt_next -= 1
                                self.corrupted += 1
                                state["since"] = -1
                            state["prev"] = byte
                        data = bytes(buf)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(client, board, False), daemon=True).start()
        pump(board, client, True)

    def close(self) -> None:
        self._stop = True
        self.listener.close()


# --- rows and references -------------------------------------------------------------------
FAST = {"samples": 3, "warmups": 1}


def profile_rows(db_path: str, device: str) -> list[tuple]:
    """(signature, status, peak bytes, output bytes, output crc, needed bytes, median cycles)
    of every stored measurement of ``device``, read straight from the SQLite file."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as c:
        rows = c.execute("SELECT signature, status, peak_memory_bytes, output_bytes, extra_json "
                         "FROM measurements WHERE device = ? ORDER BY id", (device,)).fetchall()
    out = []
    for sig, status, peak, out_bytes, extra in rows:
        x = json.loads(extra or "{}")
        out.append((sig, status, peak, out_bytes, x.get("output_crc"), x.get("needed_bytes"),
                    (x.get("cycles") or {}).get("median")))
    return out


def assert_rows_right(rows: list[tuple], reference: dict[str, tuple]) -> None:
    """Every op exactly once, and each row equal to the quiet direct-link reference: same
    status, sizes and output CRC (the kernel ran on the request that was sent), and the same
    emulated cycle count up to a SysTick interrupt landing inside a sample."""
    sigs = [r[0] for r in rows]
    assert sorted(sigs) == sorted(reference), "rows lost or duplicated"
    for sig, *vals in rows:
        ref = reference[sig]
        assert tuple(vals[:-1]) == tuple(ref[:-1]), (sig, vals, ref)
        if ref[-1] is not None:
            assert abs(vals[-1] - ref[-1]) <= 24, (sig, vals[-1], ref[-1])


class _References:
    def __init__(self, root: Path) -> None:
        self.root, self.rows = root, {}

    def __call__(self, board: str) -> dict[str, tuple]:
        if board not in self.rows:
            import costdb
            db = str(self.root / f"{board}.db")
            costdb.profile(db, device=board, model="tinycnn", settings=FAST)
            self.rows[board] = {r[0]: tuple(r[1:]) for r in profile_rows(db, board)}
        return self.rows[board]


@pytest.fixture(scope="session")
def reference_rows(tmp_path_factory) -> _References:
    """``reference_rows(board)``: tinycnn profiled on a direct link, signature -> row."""
    return _References(tmp_path_factory.mktemp("reference"))


def link_inventory(path: Path, name: str, url: str, board: str, baud: int,
                   timeout: float | None = None) -> str:
    """An inventory with one serial device ``name``: ``board`` reached at ``url``."""
    extra = f"timeout = {timeout}\n" if timeout is not None else ""
    path.write_text(f'[devices.{name}]\nbased_on = "{board}"\nserial = "{url}"\n'
                    f'baud = {baud}\nboard = "{board}"\n{extra}')
    return str(path)


def session_link(db_path: str, device: str) -> dict:
    """The link statistics the profiler stored with the device's last session."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as c:
        env = c.execute("SELECT environment_json FROM sessions WHERE device = ? ORDER BY id DESC",
                        (device,)).fetchone()[0]
    return json.loads(env)["link"]


# --- load ----------------------------------------------------------------------------------
HOG = "import time\nend = time.monotonic() + {bound}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def cpu_hogs(n: int | None = None, bound_s: float = 240.0) -> Iterator[list[int]]:
    """``n`` busy-looping processes (default: 3 per core) oversubscribing the cores. Each one
    also stops by itself after ``bound_s`` seconds, so none outlives a crashed test; they are
    stopped by pid on exit."""
    n = n or 3 * (os.cpu_count() or 2)
    procs = [subprocess.Popen([sys.executable, "-c", HOG.format(bound=bound_s)])
             for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
