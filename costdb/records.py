"""Typed, immutable records: one frozen dataclass per table of the cost database.

Every part of costdb that reads or writes the file goes through these records (writers build one,
``costdb.Database`` stores it; readers get them back), so a column has one name and one meaning
everywhere (docs/data-model.md). JSON columns (``*_json``) appear decoded: ``SessionRecord.
environment`` is the dict stored in ``sessions.environment_json``. Graph nodes are
``costdb.graph.Node``.

``Measurement`` is built from an agent's result dict plus the energy the host attributes to it and
refuses impossible values (negative times, unknown provenance), so nothing invalid is stored.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Mapping, TypeVar

__all__ = ["PROVENANCES", "KINDS", "STATUSES", "DONE_STATUSES", "now_iso", "to_row", "from_row",
           "DeviceRecord", "SessionRecord", "OpRecord", "Measurement", "ModelRecord",
           "IterationRecord", "SweepRecord", "ScheduleRecord", "ParetoPointRecord", "RunRecord",
           "StorageProfileRecord"]

PROVENANCES = ("measured", "modeled", "emulated")
#: measurement kinds: the op alone in a calibrated loop, or attributed from traced real iterations
KINDS = ("isolated", "in_context")
STATUSES = ("ok", "unsupported", "does_not_fit", "error")
#: statuses that count as done: re-running a profile does not measure them again
DONE_STATUSES = ("ok", "unsupported", "does_not_fit")

R = TypeVar("R")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --- column codecs -------------------------------------------------------------------------------
# field metadata: "column" (the SQL column, default the field name), "codec": "json" (a decoded
# JSON column; "empty": None stores an empty container as NULL), "tuple" (a JSON list read back as
# a tuple), "bool" (0/1 integer), "key": False (not a column: never written, read if present).

def _json(column: str, default_factory: Any = dict, null_empty: bool = False) -> Any:
    return field(default_factory=default_factory, compare=False, hash=False,
                 metadata={"column": column, "codec": "json", "null_empty": null_empty})


def _tuple(column: str) -> Any:
    return field(default=(), metadata={"column": column, "codec": "tuple"})


def _bool(default: bool | None = False) -> Any:
    return field(default=default, metadata={"codec": "bool"})


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


@dataclass(frozen=True)
class RunRecord:
    """``runs``: one execution of a stored schedule on a device (``costdb run``): the solver's
    prediction beside what was measured, and the check against a plain iteration. Only runs whose
    check passed are stored (``check_passed`` is always true; the column says so explicitly)."""

    schedule_id: int
    device: str
    model_id: int | None
    mode: str | None = None
    status: str = "ok"
    compute_unit: str | None = None
    storage_path: str | None = None
    iterations: int | None = None
    warmups: int | None = None
    predicted_runtime_s: float | None = None
    runtime_s: float | None = None
    runtime_min_s: float | None = None
    runtime_max_s: float | None = None
    compute_s: float | None = None
    pagein_s: float | None = None
    pageout_s: float | None = None
    #: median time of the plain iteration (loss.backward()) the check ran, untimed otherwise
    plain_runtime_s: float | None = None
    predicted_peak_bytes: int | None = None
    peak_memory_bytes: int | None = None
    fixed_bytes: int | None = None
    predicted_activation_peak_bytes: int | None = None
    activation_peak_bytes: int | None = None
    saved_state_peak_bytes: int | None = None
    process_peak_bytes: int | None = None
    process_base_bytes: int | None = None
    process_peak_kind: str | None = None
    budget_bytes: int | None = None
    predicted_pageout_bytes: int | None = None
    pageout_bytes: int | None = None
    predicted_pagein_bytes: int | None = None
    pagein_bytes: int | None = None
    files_written: int | None = None
    recomputes: int | None = None
    pageins: int | None = None
    pageouts: int | None = None
    predicted_energy_j: float | None = None
    energy_j: float | None = None
    energy_provenance: str | None = None
    energy_sensor: str | None = None
    check_passed: bool = _bool(True)
    bit_exact: bool | None = _bool(None)
    max_abs_diff: float | None = None
    tolerance: float | None = None
    deterministic: bool | None = _bool(None)
    torch_version: str | None = None
    agent_version: str | None = None
    threads: int | None = None
    costs_changed: bool | None = _bool(None)
    cost_provenance: str | None = None
    samples: dict[str, Any] = _json("samples_json")
    extra: dict[str, Any] = _json("extra_json")
    started_at: str | None = None
    created_at: str = field(default_factory=now_iso)
    id: int | None = field(default=None, compare=False, metadata={"key": False})

    def __post_init__(self) -> None:
        if not self.check_passed:
            raise ValueError("a run whose check against the plain iteration failed is not stored")
        for k in ("runtime_s", "compute_s", "pagein_s", "pageout_s", "energy_j"):
            v = getattr(self, k)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"run {k} must be finite and >= 0, got {v!r}")
        if self.energy_provenance is not None and self.energy_provenance not in PROVENANCES:
            raise ValueError(f"unknown energy provenance {self.energy_provenance!r}")


@dataclass(frozen=True)
class StorageProfileRecord:
    """``storage_profiles``: paging speed of a device's storage path, measured with real file
    I/O (written, flushed, fsync-ed, read back)."""

    device: str
    path: str | None
    block_bytes: int | None = None
    total_bytes: int | None = None
    write_bytes_per_s: float | None = None
    read_bytes_per_s: float | None = None
    write_latency_s: float | None = None
    read_latency_s: float | None = None
    provenance: str = "measured"
    samples: dict[str, Any] = _json("samples_json")
    created_at: str = field(default_factory=now_iso)
    id: int | None = field(default=None, compare=False, metadata={"key": False})


def to_row(rec: Any) -> dict[str, Any]:
    """The record as a dict of SQL column -> value (JSON encoded, booleans as 0/1)."""
    out: dict[str, Any] = {}
    for f in fields(rec):
        if f.metadata.get("key") is False:
            continue
        v = getattr(rec, f.name)
        codec = f.metadata.get("codec")
        if codec in ("json", "tuple"):
            if v is None or (f.metadata.get("null_empty") and not v):
                v = None
            else:
                v = json.dumps(v, sort_keys=True, default=str)
        elif codec == "bool":
            v = None if v is None else int(bool(v))
        out[f.metadata.get("column", f.name)] = v
    return out


def from_row(cls: type[R], row: Mapping[str, Any]) -> R:
    """A record from a row mapping (column -> value); columns missing from ``row`` get defaults."""
    kw: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        col = f.metadata.get("column", f.name)
        if col not in row:
            continue
        v = row[col]
        codec = f.metadata.get("codec")
        if codec == "json":
            v = json.loads(v) if v else f.default_factory()  # type: ignore[misc]
        elif codec == "tuple":
            v = _freeze(json.loads(v)) if v else ()
        elif codec == "bool":
            v = None if v is None else bool(v)
        kw[f.name] = v
    return cls(**kw)


# --- records -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceRecord:
    """``devices``: a device that has data, with the profile (figures and sources) used."""

    name: str
    board: str | None = None
    cpu: str | None = None
    arch: str | None = None
    transport: str | None = None
    profile: dict[str, Any] = _json("profile_json")
    first_seen: str | None = None
    last_seen: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """``sessions``: one profiling run on one device and the environment it ran in."""

    id: int
    device: str
    status: str
    started_at: str
    ended_at: str | None = None
    host: str | None = None
    pid: int | None = None
    costdb_version: str | None = None
    agent_version: str | None = None
    model_id: int | None = None
    planned: int | None = None
    measured: int | None = None
    energy_sensor: str | None = None
    idle_power_w: float | None = None
    environment: dict[str, Any] = _json("environment_json")
    settings: dict[str, Any] = _json("settings_json")
    warnings: tuple[str, ...] = _tuple("warnings_json")
    #: the settings its measurements were taken under (costdb.settings)
    settings_id: int | None = None

    @property
    def identity(self) -> tuple[Any, ...]:
        """What makes a session the same one in another database (``costdb merge``)."""
        return (self.device, self.host, self.started_at, self.pid)

    @property
    def facts(self) -> dict[str, Any]:
        """What the agent reported about the device (CPU, clocks, versions, threads...)."""
        return self.environment.get("facts") or {}


@dataclass(frozen=True)
class OpRecord:
    """``ops``: one distinct op signature and the spec sent to agents (docs/protocol.md)."""

    signature: str
    op: str
    phase: str
    dtype: str
    inputs: tuple[tuple[int, ...], ...] = _tuple("inputs_json")
    params: dict[str, Any] = _json("params_json")
    attrs: dict[str, Any] = _json("attrs_json")
    grad_inputs: tuple[int, ...] = _tuple("grad_inputs_json")
    spec: dict[str, Any] = _json("spec_json")

    def label(self) -> str:
        """Input and weight shapes, e.g. ``8x64x16x16 w=64x64x3x3`` (what tells ops apart)."""
        return shape_label(self.inputs, self.params)


def shape_label(inputs: Any, params: Mapping[str, Any] | None) -> str:
    """``8x64x16x16 w=64x64x3x3``: all input shapes, then the weight (or updated parameter)."""
    text = ",".join("x".join(str(d) for d in s) or "scalar" for s in inputs or ())
    params = params or {}
    w = params.get("weight", params.get("param"))
    if w is not None:
        text += (" " if text else "") + "w=" + ("x".join(str(d) for d in w) or "scalar")
    return text


@dataclass(frozen=True)
class Measurement:
    """``measurements``: what one op cost on one device in one session."""

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
    unstable: bool = _bool()
    remeasured: bool = _bool()
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
    extra: dict[str, Any] = _json("extra_json", null_empty=True)
    #: ``isolated`` (calibrated loop) or ``in_context`` (attributed from traced iterations)
    kind: str = "isolated"
    settings_id: int | None = None
    #: raw samples: ``{"values": [per-call seconds of each sample], "inner_loops": n}`` (plus
    #: ``first_values`` when the op was re-measured), so statistics can be recomputed
    raw: dict[str, Any] = _json("samples_json", null_empty=True)
    #: row id when read back from the database (never written)
    id: int | None = field(default=None, compare=False, metadata={"key": False})

    @property
    def values(self) -> tuple[float, ...]:
        """Per-call time of every sample (seconds); empty when not stored (schema < 4)."""
        return tuple(float(v) for v in (self.raw or {}).get("values") or ())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} not in {KINDS}")
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
                    energy: dict[str, Any] | None = None, **fields_: Any) -> "Measurement":
        """Record from an agent result dict (docs/protocol.md) and the host's energy figures;
        ``fields_`` set further record fields."""
        rt = result.get("runtime") or {}
        energy = energy or {}
        known = {"signature", "status", "error", "runtime", "inner_loops", "unstable",
                 "remeasured", "runtime_provenance", "peak_memory_bytes", "output_bytes",
                 "energy", "device", "input_bytes", "raw"}
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
            energy_sensor=energy.get("energy_sensor"), extra=extra,
            raw=dict(result.get("raw") or {}), **fields_)

    def row(self) -> dict[str, Any]:
        return to_row(self)


@dataclass(frozen=True)
class ModelRecord:
    """``models``: one model variant (name, batch, input shape, dtype) whose graph is stored."""

    id: int
    key: str
    name: str
    batch: int
    input_shape: str
    dtype: str
    n_nodes: int | None = None
    n_signatures: int | None = None
    param_bytes: int | None = None
    activation_bytes: int | None = None
    created_at: str | None = None

    @property
    def input_dims(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.input_shape.split("x")) if self.input_shape else ()


@dataclass(frozen=True)
class IterationRecord:
    """``iterations``: a measured whole training iteration (the cost model's ground truth)."""

    device: str
    model_id: int
    runtime_s: float
    session_id: int | None = None
    runtime_stdev_s: float | None = None
    runtime_cv: float | None = None
    samples: int | None = None
    threads: int | None = None
    optimizer: str | None = None
    runtime_provenance: str = "measured"
    measured_at: str = field(default_factory=now_iso)
    settings_id: int | None = None
    #: measured time of the forward (incl. loss), backward and optimizer phases, when known
    fwd_runtime_s: float | None = None
    bwd_runtime_s: float | None = None
    update_runtime_s: float | None = None
    id: int | None = field(default=None, compare=False, metadata={"key": False})


@dataclass(frozen=True)
class SweepRecord:
    """``sweeps``: one Pareto sweep over RAM budgets x deadlines."""

    device: str | None
    model_id: int | None
    graph_name: str | None
    graph_digest: str | None
    mode: str
    budgets: tuple[int, ...] = _tuple("budgets_json")
    deadlines: tuple[float | None, ...] = _tuple("deadlines_json")
    objectives: tuple[str, ...] = _tuple("objectives_json")
    options: dict[str, Any] = _json("options_json")
    executor: str | None = None
    n_points: int | None = None
    status: str = "running"
    started_at: str = field(default_factory=now_iso)
    ended_at: str | None = None
    settings_id: int | None = None
    cost_kind: str | None = None
    id: int | None = field(default=None, compare=False, metadata={"key": False})


@dataclass(frozen=True)
class ScheduleRecord:
    """``schedules``: one solve (feasible or not) with its replayed figures and encodings.

    The solver fills it from its result after the simulator has replayed the schedule
    (``solver.store.save_schedule``); the report reads the same record back.
    """

    device: str | None
    model_id: int | None
    graph_name: str | None
    graph_digest: str | None
    granularity: str | None
    mode: str
    method: str | None
    compat: bool = _bool()
    overlap: bool = _bool()
    budget_bytes: int | None = None
    deadline_s: float | None = None
    solver: str | None = None
    status: str = "error"
    objective_energy_j: float | None = None
    energy_j: float | None = None
    bound_energy_j: float | None = None
    gap: float | None = None
    runtime_s: float | None = None
    peak_memory_bytes: int | None = None
    compute_energy_j: float | None = None
    paging_energy_j: float | None = None
    recomputes: int | None = None
    pageins: int | None = None
    pageouts: int | None = None
    solve_time_s: float | None = None
    build_time_s: float | None = None
    n_variables: int | None = None
    n_constraints: int | None = None
    n_nodes: int | None = None
    cost_provenance: str | None = None
    validated: bool = _bool()
    record: dict[str, Any] = _json("record_json")
    schedule_json: str | None = None
    schedule_blob: bytes | None = None
    sweep_id: int | None = None
    created_at: str = field(default_factory=now_iso)
    #: why there is no schedule (infeasible: the limits that would work), or solver notes
    message: str | None = None
    #: the settings fingerprint and measurement kind of the costs solved with (None: modelled)
    settings_id: int | None = None
    cost_kind: str | None = None
    id: int | None = field(default=None, compare=False, metadata={"key": False})

    @property
    def has_schedule(self) -> bool:
        return self.schedule_json is not None

    @property
    def feasible(self) -> bool:
        return self.has_schedule and self.status in ("optimal", "feasible", "time_limit")


@dataclass(frozen=True)
class ParetoPointRecord:
    """``pareto_points``: one (budget, deadline) point of a sweep, solver or baseline."""

    sweep_id: int | None
    device: str | None
    model_id: int | None
    graph_name: str | None
    mode: str
    baseline: str | None = None
    budget_bytes: int | None = None
    deadline_s: float | None = None
    status: str = "error"
    energy_j: float | None = None
    runtime_s: float | None = None
    peak_memory_bytes: int | None = None
    schedule_id: int | None = None
    pareto: bool = _bool()
    created_at: str = field(default_factory=now_iso)
    message: str | None = None
    id: int | None = field(default=None, compare=False, metadata={"key": False})

    @property
    def series(self) -> str:
        """The series a point belongs to in plots: its baseline, else its mode."""
        return self.baseline or self.mode or "integrated"
