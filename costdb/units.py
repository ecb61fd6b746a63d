"""Parsing and formatting of shapes, sizes and durations. The database stores SI units only."""
from __future__ import annotations

import re

from costdb.errors import CostdbError

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "k": 1024,
               "m": 1024**2, "g": 1024**3}
_TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0,
               "m": 60.0, "h": 3600.0}


def parse_shape(text: str) -> tuple[int, ...]:
    """``3x32x32`` -> (3, 32, 32); ``784`` -> (784,)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise CostdbError(f"bad shape {text!r}; write dimensions separated by x, e.g. 3x32x32") from None
    if not shape or any(d <= 0 for d in shape):
        raise CostdbError(f"bad shape {text!r}; every dimension must be a positive integer")
    return shape


def parse_size(text: str | int) -> int:
    """``256MiB``, ``1.5GB``, ``4096`` -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise CostdbError(f"bad size {text!r}; use a number with a unit, e.g. 256MiB or 1.5GB")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(text: str | float) -> float:
    """``2s``, ``150ms``, ``1.5`` -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([a-zA-Zµ]*)\s*", text)
    if not m or m.group(2).lower() not in _TIME_UNITS:
        raise CostdbError(f"bad duration {text!r}; use a number with a unit, e.g. 2s or 150ms")
    return float(m.group(1)) * _TIME_UNITS[m.group(2).lower()]


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "-"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(b: float | None) -> str:
    if b is None or b != b:
        return "-"
    for unit, f in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(b) >= f:
            return f"{b / f:.3g} {unit}"
    return f"{int(b)} B"


def fmt_joules(j: float | None) -> str:
    if j is None or j != j:
        return "-"
    for unit, f in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6)):
        if abs(j) >= f:
            return f"{j / f:.3g} {unit}"
    return f"{j / 1e-9:.3g} nJ"
