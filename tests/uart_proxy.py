"""A serial line between pyserial and a QEMU board, as slow and as choppy as a real UART.

``UartProxy(qemu_port, baud=9600)`` relays QEMU's TCP serial port (loopback only) to a front
end pyserial opens: ``socket://127.0.0.1:PORT`` (``front="tcp"``) or a pseudo-terminal
``/dev/pts/N`` (``front="pty"``: pyserial's POSIX tty code, as with a USB-UART adapter). In
both directions bytes leave no faster than the line allows (10 bits per byte at ``baud``), in
random groups of 1..``max_split`` bytes delivered when the last of them would have arrived (as
USB-serial adapters hand bytes over), so frames are split anywhere and arrive with gaps.

Faults for the board -> host direction, each applied to the next RESULT frame (``inject``):
``drop`` (bytes lost on the line), ``flip`` (a payload byte corrupted), ``length`` (the length
field corrupted upwards, so the frame never completes by itself), ``malform`` (a short RESULT
payload with a valid CRC: a broken or foreign firmware) and ``stall`` (the frame's second
half held back for a while, as when the board's host process is descheduled). ``mute()``
drops everything the board sends from then on (a board that stopped answering).
"""
from __future__ import annotations

import collections
import os
import random
import select
import socket
import struct
import threading
import time
import tty
import zlib

R_RESULT = 0x82


def _frame_end(buf: bytes | bytearray) -> int:
    """Length of the complete, CRC-valid frame at the head of ``buf`` (0: none yet, -1: not a
    frame). Written independently of devices.serial.protocol on purpose."""
    if not buf:
        return 0
    if buf[0] != 0xA5 or (len(buf) > 1 and buf[1] != 0x5A):
        return -1
    if len(buf) < 7:
        return 0
    end = 7 + (buf[5] | buf[6] << 8) + 4
    if len(buf) < end:
        return 0 if end <= 7 + 1024 + 4 else -1
    body = bytes(buf[2:end - 4])
    return end if struct.unpack_from("<I", buf, end - 4)[0] == zlib.crc32(body) else -1


def _reframe(frame: bytes, payload: bytes) -> bytes:
    body = frame[2:5] + struct.pack("<H", len(payload)) + payload
    return b"\xa5\x5a" + body + struct.pack("<I", zlib.crc32(body))


class _Pacer(threading.Thread):
    """Writes queued bytes to ``send`` at the line rate, in random splits."""

    def __init__(self, send, baud: int | None, max_split: int, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.send, self.rng = send, rng
        self.byte_s = 10.0 / baud if baud else 0.0
        self.max_split = max_split
        self.queue: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.closed = False
        self.sent = 0

    def put(self, item) -> None:
        with self.cond:
            self.queue.append(item)
            self.cond.notify()

    def run(self) -> None:
        line = time.monotonic()
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.closed:
                        self.cond.wait()
                    if not self.queue:
                        return
                    item = self.queue.popleft()
                if isinstance(item, float):          # a stall: the line goes quiet
                    time.sleep(item)
                    continue
                data = item
                while data:
                    n = self.rng.randint(1, self.max_split) if self.max_split > 1 else 1
                    chunk, data = data[:n], data[n:]
                    line = max(line, time.monotonic()) + len(chunk) * self.byte_s
                    delay = line - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    self.send(chunk)
                    self.sent += len(chunk)
        except OSError:
            pass

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


class UartProxy:
    """See the module docstring. ``url`` is what pyserial opens."""

    def __init__(self, target_port: int, baud: int | None = 115200, max_split: int = 16,
                 front: str = "tcp", seed: int = 0, stall_s: float = 2.0) -> None:
        self.target_port, self.baud, self.max_split = target_port, baud, max_split
        self.rng = random.Random(seed)
        self.stall_s = stall_s
        self.faults: collections.deque[str] = collections.deque()
        self.injected: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._stop = False
        self.muted = False
        self.front = front
        if front == "pty":
            self._master, slave = os.openpty()
            tty.setraw(slave)
            self._slave = slave
            self.url = os.ttyname(slave)
            self._start(self._pty_recv, self._pty_send)
        else:
            self.listener = socket.socket()
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen(1)
            self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
            threading.Thread(target=self._accept, daemon=True).start()

    # --- plumbing ---------------------------------------------------------------------
    def _board(self) -> socket.socket:
        b = socket.create_connection(("127.0.0.1", self.target_port))
        b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return b

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client
        self._start(client.recv, client.sendall)

    def _pty_recv(self, n: int) -> bytes:
        while not self._stop:
            r, _, _ = select.select([self._master], [], [], 0.2)
            if r:
                try:
                    return os.read(self._master, n)
                except OSError:
                    return b""
        return b""

    def _pty_send(self, data: bytes) -> None:
        while data:
            data = data[os.write(self._master, data):]

    def _start(self, front_recv, front_send) -> None:
        board = self._board()
        self._board_sock = board
        self.up = _Pacer(board.sendall, self.baud, self.max_split, random.Random(self.rng.random()))
        self.down = _Pacer(front_send, self.baud, self.max_split, random.Random(self.rng.random()))
        self.up.start()
        self.down.start()
        threading.Thread(target=self._pump, args=(front_recv, self.up, False), daemon=True).start()
        threading.Thread(target=self._pump, args=(board.recv, self.down, True), daemon=True).start()

    def _pump(self, recv, pacer: _Pacer, from_board: bool) -> None:
        held = bytearray()
        try:
            while not self._stop:
                data = recv(4096)
                if not data:
                    break
                if not from_board:
                    pacer.put(bytes(data))
                    continue
                if self.muted:
                    continue
                held += data
                self._release(held, pacer)
        except OSError:
            pass
        finally:
            if held:
                pacer.put(bytes(held))
            pacer.close()

    def _release(self, held: bytearray, pacer: _Pacer) -> None:
        """Pass board bytes on; with a fault armed, hold each frame until it is complete."""
        while held:
            with self._lock:
                armed = bool(self.faults)
            if not armed:
                pacer.put(bytes(held))
                del held[:]
                return
            i = held.find(b"\xa5")
            if i != 0:
                n = len(held) if i < 0 else i
                pacer.put(bytes(held[:n]))
                del held[:n]
                continue
            end = _frame_end(held)
            if end == 0:
                return                               # wait for the rest of the frame
            if end < 0:
                pacer.put(bytes(held[:1]))
                del held[:1]
                continue
            frame = bytes(held[:end])
            del held[:end]
            if frame[3] != R_RESULT:
                pacer.put(frame)
                continue
            with self._lock:
                kind = self.faults.popleft()
            self.injected[kind] += 1
            self._apply(kind, frame, pacer)

    def _apply(self, kind: str, frame: bytes, pacer: _Pacer) -> None:
        r = self.rng
        if kind == "drop":                           # 1-12 bytes lost inside the frame
            a = r.randint(2, len(frame) - 2)
            frame = frame[:a] + frame[a + r.randint(1, 12):]
        elif kind == "flip":
            i = r.randint(7, len(frame) - 5)
            frame = frame[:i] + bytes([frame[i] ^ (1 << r.randint(0, 7))]) + frame[i + 1:]
        elif kind == "length":                       # announces up to 320 bytes: never completes
            frame = frame[:5] + struct.pack("<H", 300 + r.randint(0, 20)) + frame[7:]
        elif kind == "malform":                      # CRC-valid, but a short RESULT payload
            frame = _reframe(frame, frame[7:7 + r.randint(0, 20)])
        elif kind == "stall":
            half = len(frame) // 2
            pacer.put(frame[:half])
            pacer.put(float(self.stall_s))
            frame = frame[half:]
        else:
            raise ValueError(kind)
        pacer.put(frame)

    # --- control ----------------------------------------------------------------------
    def inject(self, kind: str, count: int = 1) -> None:
        """Arm ``count`` faults of ``kind`` for the next RESULT frames from the board."""
        with self._lock:
            self.faults.extend([kind] * count)

    def mute(self) -> None:
        """From now on nothing the board sends reaches the host."""
        self.muted = True

    def close(self) -> None:
        self._stop = True
        for name in ("_client", "_board_sock", "listener"):
            s = getattr(self, name, None)
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        for name in ("up", "down"):
            p = getattr(self, name, None)
            if p is not None:
                p.close()
        if self.front == "pty":
            for fd in (self._master, self._slave):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> "UartProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
