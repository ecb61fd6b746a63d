"""pyserial transport to the costdb firmware: ``SerialAgent`` implements
``devices.transport.AgentConnection`` for Cortex-M boards, real or emulated::

    agent = open_serial_agent("/dev/ttyACM0", baud=115200, board="nrf52840")
    agent = open_serial_agent("socket://127.0.0.1:4567", board="qemu-m4f", emulated=True)
    facts = agent.hello()["facts"]
    result = agent.measure(spec, {"samples": 5, "warmups": 1})
    agent.close()

Any pyserial URL works (``/dev/tty*``, ``socket://``, ``rfc2217://``, ``loop://``). The link is
synchronised by flushing the board's frame receiver and retrying ``name%`` until it answers
(no reliance on a boot banner); a request whose reply is corrupted is retried; a board that
stops answering or disappears raises ``SerialLinkError`` (one line) instead of hanging.

Timing: the firmware returns timer ticks per run. On real boards ticks are core cycles (DWT
CYCCNT on M4F, SysTick on M0+) -> provenance ``measured``. On QEMU (``emulated=True``) the
ticks follow QEMU's ``-icount`` virtual clock, so instructions = ticks * 1e9 / (timer_hz *
2^shift); these instruction counts are reported as ``cycles`` (CPI = 1) and runtime =
instructions / clock_hz, with provenance ``emulated`` — never a real-board timing.
"""
from __future__ import annotations

import struct
import time
import zlib
from typing import Any

import serial

from costdb.errors import CostdbError
from devices.agent.stats import summarize
from devices.serial import protocol as P
from devices.serial.boards import BOARDS
from devices.serial.ops import UnsupportedOp, buffer_plan, spec_to_request

HOST_VERSION = "0.1.0"


class SerialLinkError(CostdbError):
    """The board stopped answering, vanished, or keeps sending corrupted replies."""


class ProtocolVersionError(CostdbError):
    """The firmware speaks another protocol version than this costdb."""


def _version_message(board_version: int) -> str:
    return (f"board firmware speaks costdb serial protocol {board_version}, this costdb "
            f"speaks {P.PROTOCOL_VERSION}: rebuild and reflash the firmware from this costdb "
            f"(devices/firmware, see docs/firmware.md)")


class SerialAgent:
    """An open serial link to a board running the costdb firmware."""

    def __init__(self, port: serial.SerialBase, board: str | None = None, emulated: bool = False,
                 icount_shift: int | None = None, timeout: float = 120.0,
                 retries: int = 3) -> None:
        self.port = port
        self.board = board
        self.emulated = emulated
        self.runtime_provenance = "emulated" if emulated else "measured"
        if icount_shift is None and emulated:
            icount_shift = BOARDS[board].icount_shift if board in BOARDS else 0
        self.icount_shift = icount_shift or 0
        self.timeout = timeout
        self.retries = retries
        self.parser = P.StreamParser()
        self.seq = 0
        self.retried = 0
        self.stale_frames = 0
        self.facts: dict[str, Any] | None = None
        self.board_name: str | None = None

    # --- link ----------------------------------------------------------------------------
    def _read_events(self, wait: float) -> list[P.Event]:
        try:
            data = self.port.read(max(1, self.port.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise SerialLinkError(f"serial link to {self.board or 'board'} lost "
                                  f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
                from None
        return self.parser.feed(data) if data else []

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as e:
            raise SerialLinkError(f"serial link to {self.board or 'board'} lost "
                                  f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
                from None

    def sync(self, timeout: float = 10.0) -> str:
        """Bring the link to a known state: complete any half-received frame on the board
        with filler bytes, then retry ``name%`` until the board names itself."""
        deadline = time.monotonic() + timeout
        self._write(b"\x00" * (P.MAX_REQUEST + 16))
        while time.monotonic() < deadline:
            self._write(b"name%")
            t_end = min(deadline, time.monotonic() + 0.3)
            name = None
            while time.monotonic() < t_end:
                for ev in self._read_events(0.05):
                    if isinstance(ev, P.Line) and ev.text.startswith("m-name-"):
                        name = ev.text[len("m-name-"):]
                    elif isinstance(ev, P.Line) and ev.text == "m-ready" and name:
                        self.board_name = name
                        self._drain(0.05)
                        return name
                if self.parser.pending() and not self.port.in_waiting:
                    self.parser.resync()
        raise SerialLinkError(f"no answer to name% from {self.board or 'the board'} within "
                              f"{timeout:.0f} s: check the port, baud rate and firmware")

    def _drain(self, quiet: float) -> None:
        end = time.monotonic() + quiet
        while time.monotonic() < end:
            if self._read_events(quiet):
                end = time.monotonic() + quiet

    def transact(self, ftype: int, payload: bytes = b"", timeout: float | None = None,
                 final: int | None = None) -> list[P.Frame]:
        """Send one request frame; return the reply frames (matching sequence number) once
        the board says ``m-ready``. Retries on CRC errors and lost replies."""
        timeout = self.timeout if timeout is None else timeout
        final = final if final is not None else ftype | 0x80
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
            errors0 = self.parser.stats.errors
            self._write(P.encode_frame(ftype, seq, payload))
            frames: list[P.Frame] = []
            deadline = time.monotonic() + timeout
            last_rx = time.monotonic()
            retry = False
            while not retry:
                now = time.monotonic()
                if now > deadline:
                    self.parser.resync()
                    retry = True
                    break
                events = self._read_events(0.05)
                if events or self.port.in_waiting:
                    last_rx = now
                elif self.parser.pending() and now - last_rx > 0.5:
                    events = self.parser.resync()   # a reply was cut short: skip its head
                for ev in events:
                    if isinstance(ev, P.Frame):
                        if ev.version != P.PROTOCOL_VERSION:
                            raise ProtocolVersionError(_version_message(ev.version))
                        if ev.seq != seq:
                            self.stale_frames += 1
                            continue
                        if ev.type == P.R_NAK:
                            code = ev.payload[0] if ev.payload else 0
                            if code == P.NAK_VERSION:
                                raise ProtocolVersionError(_version_message(
                                    ev.payload[1] if len(ev.payload) > 1 else -1))
                            if code in (P.NAK_CRC, P.NAK_LENGTH):
                                retry = True
                                break
                            raise SerialLinkError(f"board refused the request: "
                                                  f"{ev.payload[2:].decode(errors='replace')}")
                        frames.append(ev)
                    elif ev.text == "m-ready":
                        if any(f.type == final for f in frames):
                            return frames
                        if self.parser.stats.errors > errors0:
                            retry = True  # our reply was corrupted: ask again
                            break
        raise SerialLinkError(f"no valid reply from {self.board or 'the board'} after "
                              f"{self.retries + 1} attempts (parser errors: "
                              f"{self.parser.stats.errors})")

    # --- AgentConnection -----------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        name = self.sync()
        frames = self.transact(P.T_HELLO, timeout=5.0)
        facts = P.decode_hello(next(f.payload for f in frames if f.type == P.R_HELLO))
        if facts.get("proto") != P.PROTOCOL_VERSION:
            raise ProtocolVersionError(_version_message(facts.get("proto", -1)))
        if self.board and facts.get("board") != self.board:
            raise SerialLinkError(f"the board on this port is {facts.get('board')!r} "
                                  f"({name}), expected {self.board!r}")
        facts.update(firmware_version=facts.get("fw"), protocol=facts.get("proto"),
                     emulated=self.emulated)
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

    def run(self, req: P.RunRequest, timeout: float | None = None) -> tuple[dict, list[bytes]]:
        """Run one kernel request; returns the decoded RESULT and, if asked for, the output
        buffers (bytes, in the firmware's output order)."""
        if self.facts is None:
            self.hello()
        for attempt in range(self.retries + 1):
            frames = self.transact(P.T_RUN, req.pack(), timeout=timeout, final=P.R_RESULT)
            res = P.decode_result(next(f.payload for f in frames if f.type == P.R_RESULT))
            if not (req.return_output and res["status"] == "ok"):
                return res, []
            outs = self._collect_outputs(req, res, frames)
            if outs is not None:
                return res, outs
            self.retried += 1   # an OUTPUT frame was lost on the line: run it again
        raise SerialLinkError(f"output buffers from {self.board or 'the board'} kept failing "
                              f"their CRC after {self.retries + 1} attempts")

    def _collect_outputs(self, req: P.RunRequest, res: dict,
                         frames: list[P.Frame]) -> list[bytes] | None:
        """Reassemble OUTPUT chunks; None if they do not match the board's CRC."""
        _ins, plan_outs = buffer_plan(req)
        sizes = [cnt * (1 if dt == "int8" else 4) for cnt, dt in plan_outs] or \
            [buffer_plan(req)[0][0][0] * (1 if req.dtype == "int8" else 4)]
        bufs = [bytearray(n) for n in sizes]
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
        """Measure one op spec on the board; result dict as the torch agent's."""
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
        res, _ = self.run(req, timeout=settings.get("timeout"))
        result["needed_bytes"] = res["needed_bytes"]
        if res["status"] != "ok":
            msg = res["message"] or res["status"]
            if res["status"] == "does_not_fit":
                arena = (self.facts or {}).get("arena_bytes")
                msg = f"needs {res['needed_bytes']} bytes, arena has {arena}"
            result.update(status=res["status"], error=msg)
            return result
        cycles = [self.ticks_to_cycles(t) for t in res["ticks"]]
        clock = float((self.facts or {}).get("clock_hz") or 1)
        values = [c / clock for c in cycles]
        runtime = summarize(values)
        result.update(runtime=runtime, cycles=summarize(cycles), inner_loops=1, remeasured=False,
                      raw={"values": values, "inner_loops": 1},
                      unstable=runtime["cv"] > float(settings.get("cv_threshold", 0.10)),
                      peak_memory_bytes=res["peak_bytes"], output_bytes=res["output_bytes"],
                      stack_bytes=res["stack_bytes"], output_crc=res["output_crc"],
                      kernel_dtype=req.dtype, timer=(self.facts or {}).get("timer"))
        return result

    def ping(self, payload: bytes = b"") -> float:
        """One request/reply round trip in seconds (protocol overhead)."""
        t0 = time.perf_counter()
        self.transact(P.T_PING, payload, timeout=5.0)
        return time.perf_counter() - t0

    def calibrate(self, iterations: int) -> float:
        """Instructions the board spent in a 2-instruction loop of ``iterations`` (check of the
        tick -> instruction conversion: expect ~2 * iterations)."""
        if self.facts is None:
            self.hello()
        frames = self.transact(P.T_CALIB, struct.pack("<I", iterations), timeout=30.0)
        _n, ticks = struct.unpack("<II", next(f.payload for f in frames if f.type == P.R_CALIB))
        return self.ticks_to_cycles(ticks)

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:  # closing a dead link must not raise
            pass


def open_serial_agent(url: str, baud: int = 115200, board: str | None = None,
                      emulated: bool = False, icount_shift: int | None = None,
                      timeout: float = 120.0, retries: int = 3) -> SerialAgent:
    """Open ``url`` (any pyserial URL) at ``baud``; the link is synchronised by ``hello()``."""
    try:
        port = serial.serial_for_url(url, baudrate=baud, timeout=0.05, write_timeout=10)
    except (serial.SerialException, OSError, ValueError) as e:
        raise SerialLinkError(f"cannot open serial port {url}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    return SerialAgent(port, board=board, emulated=emulated, icount_shift=icount_shift,
                       timeout=timeout, retries=retries)
