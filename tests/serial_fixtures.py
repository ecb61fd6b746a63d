"""Shared fixtures for the serial/firmware tests: one QEMU per emulated board per session (real
QEMU, real firmware), and a TCP proxy that corrupts board -> host bytes on demand."""
from __future__ import annotations

import socket
import threading

import pytest

from devices.serial.qemu import QemuBoard
from devices.serial.transport import SerialAgent, open_serial_agent

BOARDS = ("qemu-m0", "qemu-m4f")


class _Boards:
    def __init__(self) -> None:
        self.running: dict[str, tuple[QemuBoard, SerialAgent]] = {}

    def agent(self, board: str) -> SerialAgent:
        if board not in self.running:
            q = QemuBoard(board)
            q.start()
            a = open_serial_agent(q.url, board=board, emulated=True, timeout=60)
            a.hello()
            self.running[board] = (q, a)
        return self.running[board][1]

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
