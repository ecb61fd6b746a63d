"""Run the firmware on an emulated board: ``start_qemu_board("qemu-m4f")`` builds the firmware
if needed, starts ``qemu-system-arm`` with deterministic instruction counting
(``-icount shift=N``: every instruction advances virtual time by 2^N ns, so SysTick ticks count
instructions), exposes the UART as a TCP server on 127.0.0.1 and yields its pyserial URL::

    from devices.serial.qemu import start_qemu_board
    from devices.serial.transport import open_serial_agent
    with start_qemu_board("qemu-m4f") as url:          # "socket://127.0.0.1:PORT"
        agent = open_serial_agent(url, baud=115200, board="qemu-m4f", emulated=True)
        ...

QEMU gets a parent-death signal (SIGKILL), so no emulator outlives a crashed host process.
``QemuBoard`` is the same thing as an object (``.url``, ``.kill()`` for fault-injection tests).
"""
from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

from costdb.errors import CostdbError
from devices.serial.boards import get_board
from devices.serial.build import build_firmware

PR_SET_PDEATHSIG = 1


class QemuError(CostdbError):
    """QEMU is missing or would not start."""


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QemuBoard:
    """One QEMU process running the firmware for an emulated board."""

    def __init__(self, board: str, elf: Path | None = None, icount_shift: int | None = None,
                 protocol_version: int | None = None) -> None:
        self.board = get_board(board)
        if not self.board.qemu_machine:
            raise QemuError(f"{board} is a real board; QEMU boards are qemu-m0 and qemu-m4f")
        self.elf = Path(elf) if elf else build_firmware(board, protocol_version=protocol_version)
        self.icount_shift = self.board.icount_shift if icount_shift is None else icount_shift
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> str:
        """Start QEMU; ``timeout`` only bounds a QEMU that never opens its port (a loaded host
        can take seconds to start one that boots in 0.1 s on a quiet one)."""
        exe = shutil.which("qemu-system-arm")
        if exe is None:
            raise QemuError("qemu-system-arm not found: apt-get install qemu-system-arm")
        last = ""
        for _attempt in range(5):
            self.port = _free_port()
            cmd = [exe, "-M", self.board.qemu_machine, "-kernel", str(self.elf),
                   "-display", "none", "-monitor", "none", "-nodefaults",
                   "-serial", f"tcp:127.0.0.1:{self.port},server=on,wait=off,nodelay=on",
                   "-icount", f"shift={self.icount_shift}"]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = (self.proc.stderr.read() or b"").decode(errors="replace").strip()
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        pass
                    return self.url
                except OSError:
                    time.sleep(0.02)
            else:
                self.stop()
                raise QemuError(f"QEMU ({self.board.name}) did not open its serial port in "
                                f"{timeout:.0f} s")
            if "Address already in use" not in last and "bind" not in last.lower():
                break
        raise QemuError(f"QEMU ({self.board.name}) failed to start: "
                        f"{last.splitlines()[-1] if last else 'no output'}")

    def kill(self) -> None:
        """Kill QEMU abruptly (fault injection: the board vanishes mid-run)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> "QemuBoard":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def start_qemu_board(board: str, icount_shift: int | None = None,
                     protocol_version: int | None = None) -> Iterator[str]:
    """Build (if needed) and start QEMU for ``board`` ("qemu-m0" | "qemu-m4f"); yields the
    pyserial URL of its UART; stops QEMU on exit."""
    q = QemuBoard(board, icount_shift=icount_shift, protocol_version=protocol_version)
    q.start()
    try:
        yield q.url
    finally:
        q.stop()
