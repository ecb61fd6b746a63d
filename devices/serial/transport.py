"""pyserial transport to the costdb firmware: ``SerialAgent`` implements
``devices.transport.AgentConnection`` for Cortex-M boards, real or emulated::

    agent = open_serial_agent("/dev/ttyACM0", baud=115200, board="nrf52840")
    agent = open_serial_agent("socket://127.0.0.1:4567", board="qemu-m4f", emulated=True)
    facts = agent.hello()["facts"]
    result = agent.measure(spec, {"samples": 5, "warmups": 1})
    agent.link_stats()      # frames, retries, CRC errors, timeouts, ... (stored per session)
    agent.close()

Any pyserial URL works (``/dev/tty*``, ``socket://``, ``rfc2217://``, ``loop://``).

Reading is event-driven and has no notion of "a gap means the frame is lost": bytes may arrive
one at a time, split anywhere, with any delay (a 9600-baud line, a USB-CDC adapter, a QEMU
process the host scheduler put aside); a frame stays pending until its last byte arrives and
its CRC decides. What is bounded in time is the whole reply, by a timeout computed from the
bytes to move at the configured baud plus the time the board may compute (``LinkTiming``).
Failures are retried within a budget and counted (``LinkStats``): a corrupted or lost reply, a
request the board NAKed, a CRC-valid but malformed payload (``PayloadError``), a timeout. A
reply to an earlier attempt of the same request is accepted too, so a retry after a slow reply
costs nothing. When a partial frame has been pending for a while with no byte arriving, the
host sends one small PING (a "poke"): its answer either completes the pending frame (it was
waiting for bytes that were lost on the line, the CRC then fails and the stream resyncs) or is
ignored as stale (the frame was only late). A board that stops answering raises
``SerialTimeoutError`` (the command, the device and the limit); one that vanishes raises
``SerialLinkError``; both one line, never a hang.

Timing: the firmware returns timer ticks per run. On real boards ticks are core cycles (DWT
CYCCNT on M4F, SysTick on M0+) -> provenance ``measured``. On QEMU (``emulated=True``) the
ticks follow QEMU's ``-icount`` virtual clock, so instructions = ticks * 1e9 / (timer_hz *
2^shift); these instruction counts are reported as ``cycles`` (CPI = 1) and runtime =
instructions / clock_hz, with provenance ``emulated`` — never a real-board timing.
"""
from __future__ import annotations

import dataclasses
import random
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import serial

from costdb.errors import CostdbError
from devices.agent.stats import summarize
from devices.serial import protocol as P
from devices.serial.boards import BOARDS
from devices.serial.ops import KNAME, UnsupportedOp, buffer_plan, spec_to_request
from devices.serial.tiling import plan_tiling

HOST_VERSION = "0.3.0"
BITS_PER_BYTE = 10          # 8N1: start bit, 8 data bits, stop bit
LATENCY_S = 2.0             # host scheduling, USB polling, QEMU being descheduled
CONTROL_COMPUTE_S = 5.0     # HELLO / PING: the board answers at once
SYNC_S = 10.0               # how long the handshake waits for a silent board
POKE_PAYLOAD = 128          # recovery PING: 139 B out (the board ring holds >= 256 B), its
                            # PONG + m-ready (148 B) completes any cut frame in <= 3 pokes
REQUEST_NAMES = {P.T_HELLO: "HELLO", P.T_RUN: "RUN", P.T_CALIB: "CALIB", P.T_PING: "PING"}


class SerialLinkError(CostdbError):
    """The board stopped answering, vanished, or keeps sending corrupted replies."""


class SerialTimeoutError(SerialLinkError):
    """No complete reply within the limit computed for the request (command, device, limit)."""


class ProtocolVersionError(CostdbError):
    """The firmware speaks another protocol version than this costdb."""


def _version_message(board_version: int) -> str:
    return (f"board firmware speaks costdb serial protocol {board_version}, this costdb "
            f"speaks {P.PROTOCOL_VERSION}: rebuild and reflash the firmware from this costdb "
            f"(devices/firmware, see docs/firmware.md)")


@dataclass(frozen=True)
class LinkTiming:
    """How long bytes take on the wire at ``baud`` (8N1), and the limits derived from it."""

    baud: int

    def transfer_s(self, nbytes: int) -> float:
        return nbytes * BITS_PER_BYTE / self.baud

    def reply_limit(self, sent: int, reply: int, compute_s: float) -> float:
        """Limit for one request: its bytes out, the board's compute time, the reply back
        (twice the wire time: adapters and schedulers add their own delays), plus latency."""
        return compute_s + LATENCY_S + 2 * self.transfer_s(sent + reply)

    @property
    def poke_after_s(self) -> float:
        """Silence, with a partial frame pending, after which the host pokes the board."""
        return 1.0 + 4 * self.transfer_s(P.MAX_REPLY + P.FRAME_OVERHEAD)

    @property
    def resend_after_s(self) -> float:
        """Silence after which the handshake sends ``name%`` again."""
        return 0.5 + 2 * self.transfer_s(P.MAX_REQUEST + 64)


@dataclass
class LinkStats:
    """What the link went through; stored with the session (``environment.link``)."""

    requests: int = 0          # request frames written (retries included)
    retries: int = 0           # requests written again (timeout, corruption, NAK, bad payload)
    timeouts: int = 0          # attempts that got no complete reply within their limit
    naks: int = 0              # requests the board received corrupted (NAK crc/length)
    protocol_errors: int = 0   # CRC-valid replies whose payload broke the protocol
    output_mismatches: int = 0 # returned output buffers that failed the board's CRC
    stale_frames: int = 0      # replies to other requests (earlier seqs, pokes) ignored
    pokes: int = 0             # recovery PINGs sent for a partial frame left pending
    syncs: int = 0             # handshakes (name%)


class SerialAgent:
    """An open serial link to a board running the costdb firmware."""

    def __init__(self, port: serial.SerialBase, board: str | None = None, emulated: bool = False,
                 icount_shift: int | None = None, timeout: float = 120.0,
                 retries: int = 3, baud: int | None = None) -> None:
        self.port = port
        self.board = board
        self.emulated = emulated
        self.runtime_provenance = "emulated" if emulated else "measured"
        if icount_shift is None and emulated:
            icount_shift = BOARDS[board].icount_shift if board in BOARDS else 0
        self.icount_shift = icount_shift or 0
        self.timeout = timeout          # compute allowance of one RUN (the 'timeout' setting)
        self.retries = retries
        self.timing = LinkTiming(int(baud or getattr(port, "baudrate", None) or 115200))
        self.parser = P.StreamParser()
        self.stats = LinkStats()
        self.seq = random.randrange(256)    # unlikely to match a stale reply of another run
        self.facts: dict[str, Any] | None = None
        self.board_name: str | None = None
        self._poke_seq: int | None = None
        self._last_incomplete: P.Incomplete | None = None
        self._last_rx = time.monotonic()

    @property
    def retried(self) -> int:
        return self.stats.retries

    @property
    def device(self) -> str:
        return self.board or "the board"

    # --- link ----------------------------------------------------------------------------
    def _lost(self, e: BaseException) -> SerialLinkError:
        return SerialLinkError(f"serial link to {self.device} lost "
                               f"({str(e).splitlines()[0] if str(e) else type(e).__name__})")

    def _read(self) -> bytes:
        """Whatever bytes are there, waiting at most the port's read timeout (50 ms)."""
        try:
            return self.port.read(max(1, self.port.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise self._lost(e) from None

    def _events(self) -> list[P.Event]:
        data = self._read()
        if not data:
            return []
        self._last_rx = time.monotonic()
        self._poke_seq = None   # the board is talking: a poke, if one is out, may be repeated
        events = self.parser.feed(data)
        for ev in events:
            if isinstance(ev, P.Incomplete):
                self._last_incomplete = ev
        return events

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as e:
            raise self._lost(e) from None

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def sync(self, timeout: float | None = None) -> str:
        """Bring the link to a known state: complete any half-received frame on the board with
        filler bytes, end any half-typed command with ``%``, then ask ``name%`` (again only
        after a silence) until the board names itself. The board answers in order, so once
        its name arrives every earlier reply has been read and nothing stale can follow."""
        limit = SYNC_S + self.timing.transfer_s(P.MAX_REQUEST + 64) if timeout is None \
            else timeout
        self.stats.syncs += 1
        start = time.monotonic()
        deadline = start + limit
        self._write(b"\x00" * (P.MAX_REQUEST + 16) + b"%name%")
        self._last_rx = sent = start
        name = None
        while True:
            now = time.monotonic()
            if now > deadline:
                break
            events: list[P.Event] = []
            if now - max(sent, self._last_rx) > self.timing.resend_after_s:
                head = self.parser.head()
                if head is not None and head.kind == "frame":
                    events = self.parser.resync()   # a stale frame cut short: nobody needs it
                self._write(b"name%")
                sent = now
            for ev in events + self._events():
                if isinstance(ev, P.Line) and ev.text.startswith("m-name-"):
                    name = ev.text[len("m-name-"):]
                elif isinstance(ev, P.Line) and ev.text == "m-ready" and name:
                    self.board_name = name
                    return name
            if self._last_rx > start:   # the board is talking (finishing an old reply)
                deadline = min(max(deadline, self._last_rx + limit), start + limit + self.timeout)
        raise SerialTimeoutError(
            f"timed out: no answer to name% from {self.device} within {limit:.0f} s at "
            f"{self.timing.baud} baud: check the port, the baud rate and the firmware (a board "
            f"busy with a long op from an earlier run answers when it is done)")

    def _await(self, final: int, seqs: dict[int, list[P.Frame]], seq: int, deadline: float,
               errors0: int) -> list[P.Frame] | str:
        """Read until a reply to one of ``seqs`` is complete (its frames) or this attempt
        failed: "timeout", "corrupt" (the reply was damaged on the line) or "nak"."""
        self._last_rx = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                return "timeout"
            events = self._events()
            if not events and self.parser.pending() and self._poke_seq is None \
                    and now - self._last_rx > self.timing.poke_after_s:
                # a partial frame and silence: either it is late, or bytes were lost and it
                # waits for more than will come; the PONG completes it (then its CRC fails
                # and the stream resyncs) or arrives after it as a stale frame
                self._poke_seq = self._next_seq()
                self.stats.pokes += 1
                self._write(P.encode_frame(P.T_PING, self._poke_seq, b"\x00" * POKE_PAYLOAD))
            for ev in events:
                if isinstance(ev, P.Frame):
                    if ev.version != P.PROTOCOL_VERSION:
                        raise ProtocolVersionError(_version_message(ev.version))
                    if ev.seq not in seqs:      # older replies, answers to pokes
                        self.stats.stale_frames += 1
                        continue
                    if ev.type == P.R_NAK:
                        code = ev.payload[0] if ev.payload else 0
                        if code == P.NAK_VERSION:
                            raise ProtocolVersionError(_version_message(
                                ev.payload[1] if len(ev.payload) > 1 else -1))
                        if code in (P.NAK_CRC, P.NAK_LENGTH):
                            self.stats.naks += 1
                            if ev.seq == seq:
                                return "nak"
                            continue
                        raise SerialLinkError(f"{self.device} refused the request: "
                                              f"{ev.payload[2:].decode(errors='replace')}")
                    seqs[ev.seq].append(ev)
                elif isinstance(ev, P.Line) and ev.text == "m-ready":
                    for frames in seqs.values():
                        if any(f.type == final for f in frames):
                            return frames
                    if self.parser.stats.errors > errors0:
                        return "corrupt"   # our reply was damaged: ask again

    def transact(self, ftype: int, payload: bytes = b"", timeout: float | None = None,
                 final: int | None = None, reply_bytes: int = P.MAX_REPLY,
                 decode: Callable[[bytes], Any] | None = None,
                 what: str | None = None) -> list[P.Frame] | tuple[list[P.Frame], Any]:
        """Send one request frame; return the reply frames once the board says ``m-ready``
        (with ``decode``: ``(frames, decode(final payload))``). ``timeout`` is the time the
        board may compute; the transfer of the request and of ``reply_bytes`` at the
        configured baud is added to it. Retries on timeouts, corruption, NAKs and malformed
        payloads, up to ``retries`` times."""
        compute_s = self.timeout if timeout is None else float(timeout)
        final = final if final is not None else ftype | 0x80
        what = what or REQUEST_NAMES.get(ftype, f"request 0x{ftype:02x}")
        frame = len(payload) + P.FRAME_OVERHEAD
        limit = self.timing.reply_limit(frame, reply_bytes + 16, compute_s)
        seqs: dict[int, list[P.Frame]] = {}
        failures: list[str] = []
        self._poke_seq = None
        bad_payload = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            seq = self._next_seq()
            seqs[seq] = []
            errors0 = self.parser.stats.errors
            self._write(P.encode_frame(ftype, seq, payload))
            self.stats.requests += 1
            got = self._await(final, seqs, seq, time.monotonic() + limit, errors0)
            if isinstance(got, str):
                failures.append(got)
                if got == "timeout":
                    self.stats.timeouts += 1
                    self.parser.flush()     # give up on a partial reply (counted incomplete)
                continue
            done = next(s for s, fr in seqs.items() if fr is got)
            if decode is None:
                return got
            try:
                return got, decode(next(f.payload for f in got if f.type == final))
            except P.PayloadError as e:
                self.stats.protocol_errors += 1
                bad_payload = str(e)
                failures.append("malformed")
                seqs.pop(done)              # never accept that reply again
        n = self.retries + 1
        if failures and all(f == "timeout" for f in failures):
            inc = self._last_incomplete
            part = (f"; the last reply stopped after {inc.have} of {inc.need or '?'} bytes of a "
                    f"{inc.kind}" if inc else "")
            raise SerialTimeoutError(
                f"timed out: {self.device} sent no complete reply to {what} within "
                f"{limit:.1f} s (limit: {compute_s:g} s compute + transfer of {frame + reply_bytes}"
                f" bytes at {self.timing.baud} baud + {LATENCY_S:g} s latency), {n} attempts"
                f"{part}; check the board and the baud rate, or allow more time with "
                f"'timeout = SECONDS' in its inventory entry")
        why = ", ".join(f"{failures.count(k)} {k}" for k in dict.fromkeys(failures))
        fix = (f" ({bad_payload}): if this persists, rebuild and reflash the firmware from this "
               f"costdb" if bad_payload else ": check the cable, the port and the baud rate")
        raise SerialLinkError(f"no valid reply from {self.device} to {what} in {n} attempts "
                              f"({why}){fix}")

    def link_stats(self) -> dict[str, Any]:
        """Counters of the link so far (what the profiler stores with the session)."""
        ps = self.parser.stats
        out: dict[str, Any] = {"baud": self.timing.baud, "frames": ps.frames, "lines": ps.lines}
        out.update(dataclasses.asdict(self.stats))
        out.update(crc_errors=ps.crc_errors, length_errors=ps.length_errors,
                   incomplete=ps.incomplete, resyncs=ps.incomplete, bad_lines=ps.bad_lines,
                   garbage_bytes=ps.garbage_bytes,
                   rx_overruns=(self.facts or {}).get("rx_overruns"))
        return out

    # --- AgentConnection -----------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        name = self.sync()
        _frames, facts = self.transact(P.T_HELLO, timeout=CONTROL_COMPUTE_S,
                                       decode=P.decode_hello)
        if facts.get("proto") != P.PROTOCOL_VERSION:
            raise ProtocolVersionError(_version_message(facts.get("proto", -1)))
        if self.board and facts.get("board") != self.board:
            raise SerialLinkError(f"the board on this port is {facts.get('board')!r} "
                                  f"({name}), expected {self.board!r}")
        facts.update(firmware_version=facts.get("fw"), protocol=facts.get("proto"),
                     kernel_variant=facts.get("kernels"), emulated=self.emulated,
                     link_baud=self.timing.baud)
        if self.emulated:
            facts["icount_shift"] = self.icount_shift
            facts["timing"] = "QEMU -icount instruction counts (emulated, CPI=1)"
        self.facts = facts
        return {"agent_version": facts.get("fw"), "host_version": HOST_VERSION,
                "protocol": facts.get("proto"), "transport": "serial", "facts": facts}

    def idle_power_w(self, seconds: float = 1.0) -> float | None:
        return None  # no on-board sensor; external meters integrate the GPIO-marked windows

    def ticks_to_cycles(self, ticks: float) -> float:
        f = self.facts or {}
        timer_hz = float(f.get("timer_hz") or 1)
        if self.emulated:
            return ticks * 1e9 / (timer_hz * (1 << self.icount_shift))
        return ticks * float(f.get("clock_hz") or timer_hz) / timer_hz

    @staticmethod
    def _output_sizes(req: P.RunRequest) -> list[int]:
        ins, outs = buffer_plan(req)
        return [cnt * (1 if dt == "int8" else 4) for cnt, dt in outs] or \
            [ins[0][0] * (1 if req.dtype == "int8" else 4)]

    def _reply_bytes(self, req: P.RunRequest) -> int:
        n = P.FRAME_OVERHEAD + P.RESULT_SIZE + 4 * min(max(req.samples, 1), 64)
        if req.return_output:
            try:
                sizes = self._output_sizes(req)
            except (KeyError, IndexError, ValueError):
                sizes = []
            n += sum(s + (P.FRAME_OVERHEAD + 5) * -(-s // 192) for s in sizes)
        return n

    def run(self, req: P.RunRequest, timeout: float | None = None) -> tuple[dict, list[bytes]]:
        """Run one kernel request; returns the decoded RESULT and, if asked for, the output
        buffers (bytes, in the firmware's output order)."""
        if self.facts is None:
            self.hello()
        what = f"RUN {KNAME.get(req.kernel, req.kernel)}/{req.dtype}"
        for _attempt in range(self.retries + 1):
            frames, res = self.transact(
                P.T_RUN, req.pack(), timeout=timeout, final=P.R_RESULT,
                reply_bytes=self._reply_bytes(req), what=what,
                decode=lambda p: P.decode_result(p, req.samples))
            if not (req.return_output and res["status"] == "ok"):
                return res, []
            outs = self._collect_outputs(req, res, frames)
            if outs is not None:
                return res, outs
            self.stats.output_mismatches += 1   # an OUTPUT frame was lost: run it again
            self.stats.retries += 1
        raise SerialLinkError(f"output buffers from {self.device} kept failing "
                              f"their CRC after {self.retries + 1} attempts")

    def _collect_outputs(self, req: P.RunRequest, res: dict,
                         frames: list[P.Frame]) -> list[bytes] | None:
        """Reassemble OUTPUT chunks; None if they do not match the board's CRC."""
        _ins, plan_outs = buffer_plan(req)
        bufs = [bytearray(n) for n in self._output_sizes(req)]
        base = res["n_in"] if plan_outs else 0
        for f in frames:
            if f.type == P.R_OUTPUT and len(f.payload) >= 5:
                idx, off = f.payload[0] - base, struct.unpack_from("<I", f.payload, 1)[0]
                chunk = f.payload[5:]
                if 0 <= idx < len(bufs) and off + len(chunk) <= len(bufs[idx]):
                    bufs[idx][off:off + len(chunk)] = chunk
        got = 0
        for b in bufs:
            got = zlib.crc32(b, got)
        return [bytes(b) for b in bufs] if got == res["output_crc"] else None

    def measure(self, spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """Measure one op spec on the board; result dict as the torch agent's. An op whose
        buffers exceed the arena runs tiled (devices/serial/tiling.py; setting ``tiling``)."""
        settings = settings or {}
        result: dict[str, Any] = {"signature": spec.get("signature"), "status": "ok",
                                  "error": None, "runtime_provenance": self.runtime_provenance,
                                  "device": self.board}
        try:
            req = spec_to_request(spec, settings)
        except UnsupportedOp as e:
            result.update(status="unsupported", error=str(e))
            return result
        except (KeyError, ValueError, TypeError, IndexError) as e:
            result.update(status="error", error=f"malformed spec: {type(e).__name__}: {e}")
            return result
        if self.facts is None:
            self.hello()
        arena = self.facts.get("arena_bytes")
        tiling = plan_tiling(req, int(arena), self.kernel_variant) \
            if arena and settings.get("tiling", True) else None
        if tiling is not None and not tiling.fits:
            result.update(status="does_not_fit", needed_bytes=tiling.untiled_bytes,
                          tiling=tiling.record(),
                          error=f"needs {tiling.untiled_bytes} bytes untiled, arena has {arena};"
                                f" the smallest tile ({tiling.axis} = 1) still needs "
                                f"{tiling.tile_bytes}")
            return result
        if tiling is None:
            res, _ = self.run(req, timeout=settings.get("timeout"))
            runs = [(res, 1)]
        else:
            runs = [(self.run(r, timeout=settings.get("timeout"))[0], n)
                    for r, n in tiling.requests(req)]
        result["needed_bytes"] = tiling.untiled_bytes if tiling else runs[0][0]["needed_bytes"]
        for res, _n in runs:
            if res["status"] != "ok":
                msg = res["message"] or res["status"]
                if res["status"] == "does_not_fit":
                    msg = f"needs {res['needed_bytes']} bytes, arena has {arena}"
                result.update(status=res["status"], error=msg)
                return result
        # a tiled op: every sample is the sum over its tiles (tile runs x their count)
        ticks = [sum(n * res["ticks"][i] for res, n in runs) for i in range(len(runs[0][0]["ticks"]))]
        cycles = [self.ticks_to_cycles(t) for t in ticks]
        clock = float((self.facts or {}).get("clock_hz") or 1)
        values = [c / clock for c in cycles]
        runtime = summarize(values)
        result.update(runtime=runtime, cycles=summarize(cycles), inner_loops=1, remeasured=False,
                      raw={"values": values, "inner_loops": 1},
                      unstable=runtime["cv"] > float(settings.get("cv_threshold", 0.10)),
                      peak_memory_bytes=max(res["peak_bytes"] for res, _n in runs),
                      output_bytes=sum(n * res["output_bytes"] for res, n in runs),
                      stack_bytes=max(res["stack_bytes"] for res, _n in runs),
                      output_crc=runs[0][0]["output_crc"] if tiling is None else None,
                      kernel_dtype=req.dtype, kernel_variant=self.kernel_variant,
                      timer=(self.facts or {}).get("timer"))
        if tiling is not None:
            result["tiling"] = tiling.record()
        return result

    @property
    def kernel_variant(self) -> str | None:
        """``simd`` or ``portable``: the int8 kernels the firmware runs (HELLO ``kernels``)."""
        return (self.facts or {}).get("kernel_variant")

    def ping(self, payload: bytes = b"") -> float:
        """One request/reply round trip in seconds (protocol overhead)."""
        t0 = time.perf_counter()
        self.transact(P.T_PING, payload, timeout=CONTROL_COMPUTE_S,
                      reply_bytes=len(payload) + P.FRAME_OVERHEAD)
        return time.perf_counter() - t0

    def calibrate(self, iterations: int) -> float:
        """Instructions the board spent in a 2-instruction loop of ``iterations`` (check of the
        tick -> instruction conversion: expect ~2 * iterations)."""
        if self.facts is None:
            self.hello()
        _frames, (_n, ticks) = self.transact(P.T_CALIB, struct.pack("<I", iterations),
                                             reply_bytes=8 + P.FRAME_OVERHEAD,
                                             decode=P.decode_calib)
        return self.ticks_to_cycles(ticks)

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:  # closing a dead link must not raise
            pass


def open_serial_agent(url: str, baud: int = 115200, board: str | None = None,
                      emulated: bool = False, icount_shift: int | None = None,
                      timeout: float = 120.0, retries: int = 3) -> SerialAgent:
    """Open ``url`` (any pyserial URL) at ``baud``; the link is synchronised by ``hello()``.
    ``timeout``: seconds one op may compute on the board (wire time is added per request)."""
    timing = LinkTiming(baud)
    write_timeout = 10 + 4 * timing.transfer_s(P.MAX_REQUEST + 64)
    try:
        port = serial.serial_for_url(url, baudrate=baud, timeout=0.05,
                                     write_timeout=write_timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        raise SerialLinkError(f"cannot open serial port {url}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    return SerialAgent(port, board=board, emulated=emulated, icount_shift=icount_shift,
                       timeout=timeout, retries=retries, baud=baud)
