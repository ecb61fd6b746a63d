"""Immutable, validated measurement records (pyperf-style): what one op cost on one device.

A record is built from an agent's result dict plus the energy the host attributes to it; it
refuses impossible values (negative times, unknown provenance) so nothing invalid is stored.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

PROVENANCES = ("measured", "modeled", "emulated")
STATUSES = ("ok", "unsupported", "does_not_fit", "error")
#: statuses that count as done: re-running a profile does not measure them again
DONE_STATUSES = ("ok", "unsupported", "does_not_fit")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Measurement:
    device: str
    signature: str
    session_id: int
    status: str
    runtime_s: float | None = None
    runtime_mean_s: float | None = None
    runtime_stdev_s: float | None = None
    runtime_iqr_s: float | None = None
    runtime_min_s: float | None = None
    runtime_max_s: float | None = None
    runtime_cv: float | None = None
    samples: int | None = None
    inner_loops: int | None = None
    unstable: bool = False
    remeasured: bool = False
    runtime_provenance: str = "measured"
    peak_memory_bytes: int | None = None
    output_bytes: int | None = None
    energy_j: float | None = None
    energy_net_j: float | None = None
    energy_window_s: float | None = None
    energy_provenance: str | None = None
    energy_sensor: str | None = None
    error: str | None = None
    measured_at: str = field(default_factory=now_iso)
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} not in {STATUSES}")
        if self.runtime_provenance not in PROVENANCES:
            raise ValueError(f"runtime provenance {self.runtime_provenance!r} not in {PROVENANCES}")
        if self.energy_provenance is not None and self.energy_provenance not in PROVENANCES:
            raise ValueError(f"energy provenance {self.energy_provenance!r} not in {PROVENANCES}")
        if self.status == "ok":
            if self.runtime_s is None or not math.isfinite(self.runtime_s) or self.runtime_s < 0:
                raise ValueError(f"an ok measurement needs a finite runtime >= 0, got {self.runtime_s}")
            if not self.samples or self.samples < 1:
                raise ValueError("an ok measurement needs at least one sample")
        for name in ("runtime_stdev_s", "runtime_iqr_s", "runtime_cv", "peak_memory_bytes",
                     "output_bytes", "energy_j"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")

    @classmethod
    def from_result(cls, device: str, session_id: int, result: dict[str, Any],
                    energy: dict[str, Any] | None = None) -> "Measurement":
        """Record from an agent result dict (docs/protocol.md) and the host's energy figures."""
        rt = result.get("runtime") or {}
        energy = energy or {}
        known = {"signature", "status", "error", "runtime", "inner_loops", "unstable",
                 "remeasured", "runtime_provenance", "peak_memory_bytes", "output_bytes",
                 "energy", "device", "input_bytes"}
        extra = {k: v for k, v in result.items() if k not in known}
        if result.get("input_bytes") is not None:
            extra["input_bytes"] = result["input_bytes"]
        if result.get("device") not in (None, "cpu"):
            extra["compute_unit"] = result["device"]
        return cls(
            device=device, signature=result["signature"], session_id=session_id,
            status=result.get("status", "error"), error=result.get("error"),
            runtime_s=rt.get("median"), runtime_mean_s=rt.get("mean"),
            runtime_stdev_s=rt.get("stdev"), runtime_iqr_s=rt.get("iqr"),
            runtime_min_s=rt.get("min"), runtime_max_s=rt.get("max"), runtime_cv=rt.get("cv"),
            samples=rt.get("samples"), inner_loops=result.get("inner_loops"),
            unstable=bool(result.get("unstable", False)),
            remeasured=bool(result.get("remeasured", False)),
            runtime_provenance=result.get("runtime_provenance", "measured"),
            peak_memory_bytes=result.get("peak_memory_bytes"),
            output_bytes=result.get("output_bytes"),
            energy_j=energy.get("energy_j"), energy_net_j=energy.get("energy_net_j"),
            energy_window_s=energy.get("energy_window_s"),
            energy_provenance=energy.get("energy_provenance"),
            energy_sensor=energy.get("energy_sensor"), extra=extra)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d["extra_json"] = json.dumps(extra, sort_keys=True) if extra else None
        d["unstable"] = int(self.unstable)
        d["remeasured"] = int(self.remeasured)
        return d
