"""Wire format of the costdb firmware protocol (version ``PROTOCOL_VERSION``).

Host -> board: EnergyRunner-style text commands ending in ``%`` (``name%``, ``profile%``) and
binary frames. Board -> host: text lines (``m-...\\r\\n``; every reply ends with ``m-ready``)
interleaved with binary frames. A frame is::

    A5 5A | ver u8 | type u8 | seq u8 | len u16 LE | payload | crc32 u32 LE

with zlib's CRC-32 over ver..payload. ``StreamParser`` turns any byte stream into frames and
lines; it never raises on garbage and counts what it had to throw away, so the transport can
resync and retry instead of recording a wrong row.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Union

PROTOCOL_VERSION = 1
MAGIC = b"\xa5\x5a"
HEADER = 7
MAX_PAYLOAD = 1024          # largest board -> host payload the parser accepts
MAX_REQUEST = 256           # largest host -> board payload the firmware accepts (MAX_RX)
MAX_LINE = 160

# frame types
T_HELLO, T_RUN, T_CALIB, T_PING = 0x01, 0x02, 0x03, 0x04
R_HELLO, R_RESULT, R_CALIB, R_PONG, R_OUTPUT, R_NAK = 0x81, 0x82, 0x83, 0x84, 0x90, 0xEE
NAK_CRC, NAK_LENGTH, NAK_VERSION, NAK_TYPE = 1, 2, 3, 4
STATUS = {0: "ok", 1: "unsupported", 2: "does_not_fit", 3: "error"}


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(ftype: int, seq: int, payload: bytes = b"",
                 version: int = PROTOCOL_VERSION) -> bytes:
    """One frame, ready to write to the port."""
    if len(payload) > 0xFFFF:
        raise ValueError("payload too long")
    body = struct.pack("<BBBH", version & 0xFF, ftype & 0xFF, seq & 0xFF, len(payload)) + payload
    return MAGIC + body + struct.pack("<I", crc32(body))


@dataclass(frozen=True)
class Frame:
    version: int
    type: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class Line:
    text: str


Event = Union[Frame, Line]


@dataclass
class ParserStats:
    crc_errors: int = 0
    length_errors: int = 0
    garbage_bytes: int = 0
    bad_lines: int = 0
    frames: int = 0
    lines: int = 0

    @property
    def errors(self) -> int:
        return self.crc_errors + self.length_errors + self.bad_lines


@dataclass
class StreamParser:
    """Incremental parser: ``feed(bytes) -> [Frame | Line]``. Never raises on input."""

    max_payload: int = MAX_PAYLOAD
    stats: ParserStats = field(default_factory=ParserStats)
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        return self._parse()

    def pending(self) -> int:
        return len(self._buf)

    def resync(self) -> list[Event]:
        """Give up on an incomplete frame or line at the head of the buffer (the bytes that
        would complete it are not coming), and parse what follows it."""
        if self._buf:
            self.stats.bad_lines += 1
            self._drop(1)
        return self._parse()

    def _drop(self, n: int, garbage: bool = True) -> None:
        if garbage:
            self.stats.garbage_bytes += n
        del self._buf[:n]

    def _skip_to_candidate(self) -> None:
        buf = self._buf
        i_a = buf.find(b"\xa5")
        i_m = buf.find(b"m")
        cands = [i for i in (i_a, i_m) if i >= 0]
        n = min(cands) if cands else len(buf)
        if n:
            self._drop(n)

    def _parse(self) -> list[Event]:
        out: list[Event] = []
        buf = self._buf
        while buf:
            b0 = buf[0]
            if b0 == 0xA5:
                if len(buf) < 2:
                    break
                if buf[1] != 0x5A:
                    self._drop(1)
                    continue
                if len(buf) < HEADER:
                    break
                length = buf[5] | (buf[6] << 8)
                if length > self.max_payload:
                    self.stats.length_errors += 1
                    self._drop(1)
                    continue
                end = HEADER + length + 4
                if len(buf) < end:
                    break
                body = bytes(buf[2:HEADER + length])
                (crc,) = struct.unpack_from("<I", buf, HEADER + length)
                if crc != crc32(body):
                    self.stats.crc_errors += 1
                    self._drop(1)
                    continue
                out.append(Frame(body[0], body[1], body[2], body[5:]))
                self.stats.frames += 1
                self._drop(end, garbage=False)
            elif b0 == 0x6D:  # 'm'
                if len(buf) < 2:
                    break
                if buf[1] != 0x2D:  # '-'
                    self._drop(1)
                    continue
                nl = buf.find(b"\n", 0, MAX_LINE + 2)
                # a line holding a frame start or control bytes was cut short: drop its head
                stop = nl if nl >= 0 else min(len(buf), MAX_LINE + 1)
                bad = next((i for i in range(stop) if buf[i] == 0xA5
                            or (buf[i] < 0x20 and buf[i] not in (0x0D,)) or buf[i] > 0x7E), -1)
                if bad >= 0:
                    self.stats.bad_lines += 1
                    self._drop(bad)
                    continue
                if nl < 0:
                    if len(buf) > MAX_LINE:
                        self.stats.bad_lines += 1
                        self._drop(1)
                        continue
                    break
                text = bytes(buf[:nl]).decode("ascii").rstrip("\r")
                out.append(Line(text))
                self.stats.lines += 1
                self._drop(nl + 1, garbage=False)
            else:
                self._skip_to_candidate()
        return out


# --- payloads ------------------------------------------------------------------------------

RUN_FMT = "<BBBBHHI12i2f2i"
RUN_SIZE = struct.calcsize(RUN_FMT)
RESULT_FMT = "<BBBB5I"
RESULT_SIZE = struct.calcsize(RESULT_FMT)
FLAG_OUTPUT, FLAG_BIAS = 1, 2
DTYPES = {"float32": 0, "int8": 1}


@dataclass
class RunRequest:
    """One kernel run: what the firmware's ``struct run_req`` holds."""

    kernel: int
    dtype: str
    p: list[int]
    warmups: int = 1
    samples: int = 5
    seed: int = 1
    f: tuple[float, float] = (0.0, 0.0)
    qmult: int = 1 << 30
    qshift: int = 0
    bias: bool = False
    return_output: bool = False

    def pack(self) -> bytes:
        p = list(self.p) + [0] * (12 - len(self.p))
        flags = (FLAG_OUTPUT if self.return_output else 0) | (FLAG_BIAS if self.bias else 0)
        return struct.pack(RUN_FMT, self.kernel, DTYPES[self.dtype], flags, 0, self.warmups,
                           self.samples, self.seed & 0xFFFFFFFF, *p, *self.f, self.qmult,
                           self.qshift)


def decode_result(payload: bytes) -> dict:
    """RESULT frame -> dict (status, needed/peak/stack/output bytes, crc, tick samples, msg)."""
    if len(payload) < RESULT_SIZE:
        raise ValueError("short RESULT payload")
    st, ns, n_in, n_out, needed, peak, stack, out_bytes, out_crc = struct.unpack_from(
        RESULT_FMT, payload)
    tail = payload[RESULT_SIZE:]
    if st == 0:
        if len(tail) != 4 * ns:
            raise ValueError("RESULT sample count does not match its length")
        samples = list(struct.unpack(f"<{ns}I", tail))
        msg = ""
    else:
        samples = []
        msg = tail.decode("ascii", "replace")
    return {"status": STATUS.get(st, "error"), "needed_bytes": needed, "peak_bytes": peak,
            "stack_bytes": stack, "output_bytes": out_bytes, "output_crc": out_crc,
            "n_in": n_in, "n_out": n_out, "ticks": samples, "message": msg}


def decode_hello(payload: bytes) -> dict:
    """HELLO payload ``key=value;...`` -> dict with integers where the value is one."""
    facts: dict = {}
    for item in payload.decode("ascii", "replace").split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            facts[k] = int(v) if v.isdigit() else v
    return facts
