"""Click parameter types that validate an option completely before any work starts.

click's own ``IntRange``/``FloatRange`` accept ``nan``, ``inf`` and integers far beyond what
SQLite stores; a value like that used to surface minutes later as a solver or allocator
traceback. These types refuse it at parse time with click's usual one ``Error:`` line (exit 2):

* ``BoundedInt(min, max)``: an integer within bounds (default max: SQLite's int64).
* ``FiniteFloat(min, max)``: a finite float within bounds (no nan/inf).
* ``Size()`` / ``Duration()``: a size or a duration **with a unit** (``costdb.units``), finite
  and within range; converted to bytes / seconds.
* ``OutputFile()``: a file to write whose directory exists (checked before a solve of minutes,
  not after it); the file itself is written by ``costdb.files``.

Only click and ``costdb.units`` are imported, so ``costdb --help`` stays light.
"""
from __future__ import annotations

import math
import os
from typing import Any

import click

from costdb.errors import CostdbError
from costdb.units import INT64_MAX, MAX_DURATION_S, parse_duration, parse_size

__all__ = ["BoundedInt", "FiniteFloat", "Size", "Duration", "OutputFile"]


class BoundedInt(click.ParamType):
    """An integer in ``[min, max]``; ``max`` defaults to SQLite's largest integer."""

    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = INT64_MAX):  # noqa: A002
        self.min, self.max = min, INT64_MAX if max is None else max

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, bool):
            self.fail(f"{value!r} is not an integer", param, ctx)
        if isinstance(value, int):
            n = value
        else:
            text = str(value).strip()
            if not text.lstrip("+-").isdigit() or len(text) > 20:
                self.fail(f"{value!r} is not an integer" + self._range(), param, ctx)
            n = int(text)
        if (self.min is not None and n < self.min) or n > self.max:
            self.fail(f"{value!r} is out of range;" + self._range()[1:], param, ctx)
        return n

    def _range(self) -> str:
        lo = "" if self.min is None else f"{self.min}"
        return f"; give an integer {lo} .. {self.max}" if lo else f"; give an integer <= {self.max}"

    def __repr__(self) -> str:
        return f"BoundedInt({self.min}, {self.max})"


class FiniteFloat(click.ParamType):
    """A finite float in ``[min, max]`` (nan and inf are refused)."""

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None):  # noqa: A002
        self.min, self.max = min, max

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{value!r} is not a number" + self._range(), param, ctx)
        if isinstance(value, bool) or not math.isfinite(f):
            self.fail(f"{value!r} is not a finite number" + self._range(), param, ctx)
        if (self.min is not None and f < self.min) or (self.max is not None and f > self.max):
            self.fail(f"{value!r} is out of range" + self._range(), param, ctx)
        return f

    def _range(self) -> str:
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "inf" if self.max is None else f"{self.max:g}"
        return f"; give a finite number {lo} .. {hi}"

    def __repr__(self) -> str:
        return f"FiniteFloat({self.min}, {self.max})"


class Size(click.ParamType):
    """A size with a unit (``256MiB``, ``1.5GB``, ``512B``) -> bytes."""

    name = "size"

    def __init__(self, min: int = 0):  # noqa: A002
        self.min = min

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            n = parse_size(value)
        except CostdbError as e:
            self.fail(str(e), param, ctx)
        if n < self.min:
            self.fail(f"{value!r} is below the minimum of {self.min} bytes", param, ctx)
        return n


class Duration(click.ParamType):
    """A duration with a unit (``2s``, ``150ms``, ``1.5min``) -> seconds."""

    name = "duration"

    def __init__(self, min: float = 0.0, max: float = MAX_DURATION_S):  # noqa: A002
        self.min, self.max = min, max

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            s = parse_duration(value, self.max)
        except CostdbError as e:
            self.fail(str(e), param, ctx)
        if s < self.min:
            self.fail(f"{value!r} is below the minimum of {self.min:g} s", param, ctx)
        return s


class OutputFile(click.ParamType):
    """A path to write: its directory must exist and it must not be a directory. Devices, FIFOs
    and symlinks are accepted (``costdb.files`` writes through them)."""

    name = "file"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        path = os.fspath(value)
        if not path or "\x00" in path:
            self.fail(f"{value!r} is not a file name", param, ctx)
        parent = os.path.dirname(path) or "."
        if os.path.isdir(path):
            self.fail(f"{path} is a directory; give a file name", param, ctx)
        if not os.path.isdir(parent):
            self.fail(f"directory {parent} does not exist; create it or give another path",
                      param, ctx)
        return path
