"""Parsing and formatting of shapes, sizes and durations. The database stores SI units only."""
from __future__ import annotations

import math
import re

from costdb.errors import CostdbError

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "k": 1024,
               "m": 1024**2, "g": 1024**3}
_TIME_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0,
               "m": 60.0, "h": 3600.0}


#: the largest integer SQLite stores (INTEGER is a signed 64-bit value)
INT64_MAX = 2**63 - 1
#: the longest duration an option accepts: a year (a deadline or a timeout beyond it is a typo)
MAX_DURATION_S = 365 * 86400.0
#: the most elements one input tensor may have (batch x dims): torch indexes with int64, but a
#: tensor this large does not fit any device's memory either (checked before anything allocates)
MAX_ELEMENTS = 2**31 - 1
SIZE_UNITS_TEXT = "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
TIME_UNITS_TEXT = "ns, us, ms, s, min or h"
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)"


def parse_shape(text: str, max_elements: int = MAX_ELEMENTS) -> tuple[int, ...]:
    """``3x32x32`` -> (3, 32, 32); ``784`` -> (784,). The product must stay below
    ``max_elements`` (a shape that cannot be allocated is refused here, not by the allocator)."""
    parts = str(text).lower().replace("×", "x").split("x")
    if not all(re.fullmatch(r"\s*\d{1,12}\s*", p) for p in parts):
        raise CostdbError(f"bad shape {text!r}; write dimensions separated by x, e.g. 3x32x32")
    shape = tuple(int(p) for p in parts)
    if not shape or len(shape) > 8 or any(d <= 0 for d in shape):
        raise CostdbError(f"bad shape {text!r}; give 1 to 8 dimensions, each a positive integer")
    n = 1
    for d in shape:
        n *= d
    if n > max_elements:
        raise CostdbError(f"shape {text!r} has {n} elements, more than {max_elements}; give a "
                          "smaller input")
    return shape


def parse_size(text: str | int) -> int:
    """``256MiB``, ``1.5GB``, ``4096B`` -> bytes (a whole number, 0 .. 2^63-1).

    A string needs a unit: a bare ``4096`` is refused naming the units, since bytes, KiB and MB
    are all plausible readings. An ``int`` (the Python API) is bytes."""
    if isinstance(text, bool):
        raise CostdbError(f"bad size {text!r}; give bytes as an integer or a string with a unit")
    if isinstance(text, int):
        if not 0 <= text <= INT64_MAX:
            raise CostdbError(f"size {text} B is out of range; give 0 .. {INT64_MAX} bytes")
        return text
    m = re.fullmatch(r"\s*" + _NUMBER + r"\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise CostdbError(f"bad size {text!r}; use a number with a unit ({SIZE_UNITS_TEXT}), "
                          "e.g. 256MiB or 1.5GB")
    if not m.group(2):
        raise CostdbError(f"size {text!r} has no unit; add one ({SIZE_UNITS_TEXT}), e.g. "
                          f"{m.group(1)}B or {m.group(1)}MiB")
    value = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value > INT64_MAX:
        raise CostdbError(f"size {text!r} is too large; at most {INT64_MAX} bytes (8 EiB)")
    return int(value)


def parse_duration(text: str | float, max_s: float = MAX_DURATION_S) -> float:
    """``2s``, ``150ms``, ``1.5min`` -> seconds (finite, 0 .. ``max_s``).

    A string needs a unit (``2`` could be seconds or minutes); a number (the Python API) is
    seconds."""
    if isinstance(text, bool):
        raise CostdbError(f"bad duration {text!r}; give seconds or a string with a unit")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*" + _NUMBER + r"\s*([a-zA-Zµ]*)\s*", str(text))
        if not m or m.group(2).lower() not in _TIME_UNITS:
            raise CostdbError(f"bad duration {text!r}; use a number with a unit "
                              f"({TIME_UNITS_TEXT}), e.g. 2s or 150ms")
        if not m.group(2):
            raise CostdbError(f"duration {text!r} has no unit; add one ({TIME_UNITS_TEXT}), e.g. "
                              f"{m.group(1)}s or {m.group(1)}ms")
        value = float(m.group(1)) * _TIME_UNITS[m.group(2).lower()]
    if not math.isfinite(value) or not 0 <= value <= max_s:
        raise CostdbError(f"duration {text!r} is out of range; give 0 .. {max_s:g} s")
    return value


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
