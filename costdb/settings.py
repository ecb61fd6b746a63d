"""Settings fingerprints: what a measurement is comparable with.

A measurement is comparable only to one taken under the same settings: the same intra-op threads,
CPU affinity, cache mode, dtype, compute unit (``cpu``, ``cuda``, ``firmware``), the library
versions that change kernels (torch, oneDNN, MKL), the agent or firmware version and the
firmware's kernel variant (``simd`` / ``portable``), plus a few unit-specific facts in ``extra``
(the CPU capability torch dispatches to, CUDA/cuDNN versions, a board's clock). The fingerprint
is a content hash of exactly these fields, so two machines that measured under the same settings
share one ``settings`` row when their databases are merged.

Statistical knobs (``--samples``, ``--min-sample-time``, warm-ups) change the precision of a
figure, not what it estimates, so they are not part of the fingerprint; they stay in the
session's ``settings_json``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from costdb.records import _json, now_iso

__all__ = ["IDENTITY", "SettingsRecord", "cpu_list", "fingerprint", "settings_from_facts",
           "differing", "describe"]

#: the fields a fingerprint hashes (in this order in tables)
IDENTITY = ("threads", "affinity", "cache", "dtype", "compute_unit", "torch_version",
            "onednn_version", "mkl_version", "agent_version", "kernel_variant", "extra")
#: short names for one-line descriptions
LABELS = {"threads": "threads", "affinity": "cpus", "cache": "cache", "dtype": "dtype",
          "compute_unit": "unit", "torch_version": "torch", "onednn_version": "onednn",
          "mkl_version": "mkl", "agent_version": "agent", "kernel_variant": "kernels",
          "extra": "extra"}


def cpu_list(cpus: Iterable[int] | str | None) -> str | None:
    """Canonical CPU list text, like ``taskset -c``: ``[0, 1, 2, 5]`` -> ``0-2,5``."""
    if cpus is None:
        return None
    if isinstance(cpus, str):
        try:
            cpus = json.loads(cpus)
        except ValueError:
            return cpus
        if cpus is None:
            return None
    ids = sorted({int(c) for c in cpus})
    parts: list[str] = []
    k = 0
    while k < len(ids):
        j = k
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[k]) if j == k else f"{ids[k]}-{ids[j]}")
        k = j + 1
    return ",".join(parts)


def fingerprint(identity: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of the identity fields (missing = null)."""
    d = {k: identity.get(k) for k in IDENTITY}
    d["extra"] = {k: v for k, v in (d["extra"] or {}).items() if v is not None}
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sql_fingerprint(identity_json: str) -> str:
    """``fingerprint`` of a JSON object (the SQL function ``costdb_fingerprint`` the v4 migration
    uses to give old measurements their settings rows)."""
    d = json.loads(identity_json)
    d["affinity"] = cpu_list(d.get("affinity"))
    if isinstance(d.get("extra"), str):
        d["extra"] = json.loads(d["extra"])
    return fingerprint(d)


@dataclass(frozen=True)
class SettingsRecord:
    """``settings``: one settings fingerprint (``fingerprint`` is computed from the fields)."""

    threads: int | None = None
    affinity: str | None = None
    cache: str | None = None
    dtype: str | None = None
    compute_unit: str | None = None
    torch_version: str | None = None
    onednn_version: str | None = None
    mkl_version: str | None = None
    agent_version: str | None = None
    kernel_variant: str | None = None
    extra: dict[str, Any] = _json("extra_json")
    fingerprint: str = ""
    created_at: str = field(default_factory=now_iso, compare=False)
    id: int | None = field(default=None, compare=False, metadata={"key": False})

    def __post_init__(self) -> None:
        if self.affinity is not None and not isinstance(self.affinity, str):
            object.__setattr__(self, "affinity", cpu_list(self.affinity))
        fp = fingerprint(self.identity())
        if self.fingerprint and self.fingerprint != fp:
            raise ValueError(f"settings fingerprint {self.fingerprint} does not match its "
                             f"fields ({fp})")
        object.__setattr__(self, "fingerprint", fp)

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY}

    def describe(self, keys: Sequence[str] | None = None) -> str:
        """``threads=2 cache=warm unit=cpu torch=2.13.0 ...`` (the given or all known fields)."""
        return describe(self, keys)


def describe(rec: SettingsRecord, keys: Sequence[str] | None = None) -> str:
    parts = []
    for k in keys or IDENTITY:
        v = getattr(rec, k)
        if k == "extra":
            parts += [f"{ek}={ev}" for ek, ev in sorted((v or {}).items())]
        elif v is not None or keys:
            parts.append(f"{LABELS[k]}={'?' if v is None else v}")
    return " ".join(parts) or "(nothing recorded)"


def differing(records: Sequence[SettingsRecord]) -> list[str]:
    """The identity fields whose values differ between the records."""
    out = []
    for k in IDENTITY:
        if len({json.dumps(getattr(r, k), sort_keys=True, default=str) for r in records}) > 1:
            out.append(k)
    return out


def _unit(compute_unit: str | None, transport: str | None) -> str:
    if transport == "serial":
        return "firmware"
    cu = (compute_unit or "cpu").lower()
    return "cuda" if cu.startswith("cuda") or cu == "gpu" else cu


def settings_from_facts(facts: Mapping[str, Any], *, transport: str | None, dtype: str | None,
                        cache: str | None = None, compute_unit: str | None = None,
                        agent_version: str | None = None) -> SettingsRecord:
    """The settings a session measures under, from the agent's hello facts (docs/protocol.md)
    and what the host asked for (cache mode, dtype, compute unit)."""
    unit = _unit(compute_unit, transport)
    if unit == "firmware":
        extra = {k: facts[k] for k in ("board", "clock_hz", "icount_shift") if facts.get(k) is not None}
        return SettingsRecord(dtype=dtype, compute_unit=unit,
                              agent_version=str(facts.get("firmware_version") or agent_version or "")
                              or None, kernel_variant=facts.get("kernel_variant"), extra=extra)
    extra = {}
    if unit == "cpu":
        extra.update({k: facts[k] for k in ("cpu_capability", "blas") if facts.get(k)})
    if unit == "cuda":
        for k in ("cuda_version", "cudnn_version"):
            if facts.get(k) is not None:
                extra[k] = facts[k]
    return SettingsRecord(threads=facts.get("threads"), affinity=cpu_list(facts.get("affinity")),
                          cache=cache or "warm", dtype=dtype, compute_unit=unit,
                          torch_version=facts.get("torch"), onednn_version=facts.get("onednn"),
                          mkl_version=facts.get("mkl"), agent_version=agent_version,
                          extra=extra)
