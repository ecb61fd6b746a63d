"""Op signatures: a stable content hash of what determines an op's cost on a device.

Two graph nodes with the same op type, phase, dtype, input/parameter shapes and attributes cost the
same on a given device, so they share one measurement, across models too.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

SIGNATURE_FIELDS = ("op", "phase", "dtype", "inputs", "params", "attrs", "grad_inputs")


def canonical(spec: dict[str, Any]) -> str:
    """Canonical JSON of the signature fields (sorted keys, no whitespace, tuples as lists)."""
    return json.dumps({k: spec.get(k) for k in SIGNATURE_FIELDS}, sort_keys=True,
                      separators=(",", ":"))


def signature(spec: dict[str, Any]) -> str:
    """20 hex digits (80 bits) of SHA-256 over the canonical spec."""
    return hashlib.sha256(canonical(spec).encode()).hexdigest()[:20]
