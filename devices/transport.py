"""What every transport to a device agent provides: local (in-process), ssh, serial.

The profiler session talks to a device only through this interface, so a new transport (or a new
board) needs no change in the session runner.
"""
from __future__ import annotations

from typing import Any, Protocol


class AgentConnection(Protocol):
    """An open connection to a device's measurement agent."""

    #: "measured" for real devices, "emulated" for QEMU boards (cycles from -icount).
    runtime_provenance: str

    def hello(self) -> dict[str, Any]:
        """Agent version, protocol version and device facts (see docs/protocol.md)."""

    def idle_power_w(self, seconds: float = 1.0) -> float | None:
        """Idle power baseline from the device's sensor, or None without a sensor."""

    def measure(self, spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """Measure one op spec; returns the agent result dict (status ok / unsupported /
        does_not_fit / error, runtime stats, peak_memory_bytes, output_bytes, energy...)."""

    def run_schedule(self, request: dict[str, Any]) -> dict[str, Any]:
        """Execute a schedule (``costdb run``; agent request ``execute``, docs/execute.md).
        local and ssh only: the Cortex-M firmware has no executor."""

    def storage(self, request: dict[str, Any]) -> dict[str, Any]:
        """Measure the paging speed of the storage path (agent request ``storage``)."""

    def close(self) -> None: ...
