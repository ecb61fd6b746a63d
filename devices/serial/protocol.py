"""Wire format of the costdb firmware protocol (version ``PROTOCOL_VERSION``).

Host -> board: EnergyRunner-style text commands ending in ``%`` (``name%``, ``profile%``) and
binary frames. Board -> host: text lines (``m-...\\r\\n``; every reply ends with ``m-ready``)
interleaved with binary frames. A frame is::

    A5 5A | ver u8 | type u8 | seq u8 | len u16 LE | payload | crc32 u32 LE

with zlib's CRC-32 over ver..payload. ``StreamParser`` turns any byte stream into frames and
lines; it never raises on garbage and counts what it had to throw away, so the transport can
resync and retry instead of recording a wrong row. It has no notion of time: a frame whose
bytes are slow to arrive stays pending, however long the gap, until its last byte (then its
CRC decides) or until the caller gives up on it with ``resync()``/``flush()``, which report it
as ``Incomplete`` rather than dropping it silently.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Union

PROTOCOL_VERSION = 2         # 2: int8 NHWC layouts, SIMD scratch, per-channel int8 SGD (fw 0.3)
MAGIC = b"\xa5\x5a"
HEADER = 7
MAX_REPLY = 320             # largest board -> host payload (firmware MAX_REPLY; RESULT <= 280)
MAX_PAYLOAD = MAX_REPLY     # what the parser accepts; a longer length field is corrupt
MAX_REQUEST = 256           # largest host -> board payload the firmware accepts (MAX_RX)
FRAME_OVERHEAD = HEADER + 4 # magic, header and CRC around a payload
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


@dataclass(frozen=True)
class Incomplete:
    """A frame or line cut short: ``have`` bytes of it arrived, ``need`` were announced
    (frames whose length field arrived), then the caller gave up waiting for the rest."""

    kind: str                 # "frame" | "line" | "bytes"
    have: int
    need: int | None = None


Event = Union[Frame, Line, Incomplete]


class PayloadError(ValueError):
    """A frame passed its CRC but its payload does not follow the protocol (a firmware bug or
    another program on the port): the transport counts it and asks again."""


@dataclass
class ParserStats:
    crc_errors: int = 0
    length_errors: int = 0
    garbage_bytes: int = 0
    bad_lines: int = 0
    incomplete: int = 0       # frames/lines given up on by resync() or flush()
    frames: int = 0
    lines: int = 0

    @property
    def errors(self) -> int:
        return self.crc_errors + self.length_errors + self.bad_lines + self.incomplete


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

    def head(self) -> Incomplete | None:
        """What the pending bytes at the head of the buffer are (None if there are none)."""
        buf = self._buf
        if not buf:
            return None
        if buf[0] == 0xA5:
            need = HEADER + (buf[5] | (buf[6] << 8)) + 4 if len(buf) >= HEADER else None
            return Incomplete("frame", len(buf) if need is None else min(len(buf), need), need)
        if buf[0] == 0x6D:
            nl = buf.find(b"\n")
            return Incomplete("line", len(buf) if nl < 0 else nl + 1)
        return Incomplete("bytes", len(buf))

    def resync(self) -> list[Event]:
        """Give up on the incomplete frame or line at the head of the buffer (the bytes that
        would complete it are not coming): report it as ``Incomplete``, skip its first byte and
        parse what follows (a frame or line inside it is still found)."""
        inc = self.head()
        if inc is None:
            return []
        self.stats.incomplete += 1
        self._drop(1)
        return [inc] + self._parse()

    def flush(self) -> list[Event]:
        """End of input: every remaining event, with each cut-short item as ``Incomplete``."""
        out: list[Event] = []
        while self._buf:
            out += self.resync()
        return out

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


def decode_result(payload: bytes, samples: int | None = None) -> dict:
    """RESULT frame -> dict (status, needed/peak/stack/output bytes, crc, tick samples, msg).
    ``samples``: the count requested (the firmware clamps it to 1..64); a RESULT that does not
    hold exactly that many raises ``PayloadError``, as does any other malformed payload."""
    if len(payload) < RESULT_SIZE:
        raise PayloadError(f"short RESULT payload ({len(payload)} bytes, at least "
                           f"{RESULT_SIZE} expected)")
    st, ns, n_in, n_out, needed, peak, stack, out_bytes, out_crc = struct.unpack_from(
        RESULT_FMT, payload)
    tail = payload[RESULT_SIZE:]
    if st not in STATUS:
        raise PayloadError(f"RESULT with unknown status {st}")
    if st == 0:
        if len(tail) != 4 * ns:
            raise PayloadError(f"RESULT says {ns} samples but carries {len(tail)} bytes of them")
        want = None if samples is None else min(max(samples, 1), 64)
        if ns == 0 or (want is not None and ns != want):
            raise PayloadError(f"RESULT has {ns} samples, {want or 'at least 1'} requested")
        samples_ = list(struct.unpack(f"<{ns}I", tail))
        msg = ""
    else:
        samples_ = []
        msg = tail.decode("ascii", "replace")
    return {"status": STATUS[st], "needed_bytes": needed, "peak_bytes": peak,
            "stack_bytes": stack, "output_bytes": out_bytes, "output_crc": out_crc,
            "n_in": n_in, "n_out": n_out, "ticks": samples_, "message": msg}


def decode_hello(payload: bytes) -> dict:
    """HELLO payload ``key=value;...`` -> dict with integers where the value is one."""
    facts: dict = {}
    for item in payload.decode("ascii", "replace").split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            facts[k] = int(v) if v.isdigit() else v
    if not isinstance(facts.get("proto"), int) or not facts.get("board"):
        raise PayloadError("HELLO without a protocol version or board name")
    return facts


def decode_calib(payload: bytes) -> tuple[int, int]:
    """CALIB payload -> (iterations, ticks)."""
    if len(payload) != 8:
        raise PayloadError(f"CALIB payload of {len(payload)} bytes, 8 expected")
    it, ticks = struct.unpack("<II", payload)
    return it, ticks
