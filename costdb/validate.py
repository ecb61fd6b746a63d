"""Input files checked before any work: JSON read safely, graph JSON checked against its schema.

``read_json(path)`` refuses what is not a small regular UTF-8 JSON file (a FIFO would block, a
device is endless, invalid UTF-8 or ``NaN`` literals are no JSON, deep nesting would exhaust the
parser's recursion) with one line. ``check_graph(d)`` checks the solver's JSON graph format
(docs/solver.md) for types and ranges — ids are strings or integers, ``deps`` lists of ids,
``edges`` pairs of ids, costs finite numbers, byte counts whole numbers a solver can represent
exactly (at most 2^53) — so ``solver.problem.instance_from_dict`` only ever sees well-typed
input. ``check_input_size`` refuses a batch x input shape too large to allocate before torch
tries to.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from costdb.errors import CostdbError

MAX_JSON_BYTES = 256 << 20
MAX_DEPTH = 32
#: byte counts a MILP and a float64 represent exactly (8 PiB)
MAX_BYTES = 2**53
#: seconds or joules of one node (a figure beyond is a unit error)
MAX_COST = 1e12
MAX_NODES = 1_000_000


def read_json(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of ``path``; CostdbError (one line) for anything else."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise CostdbError(f"{what} {p} does not exist") from None
    except OSError as e:
        raise CostdbError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CostdbError(f"{what} {p} is not a regular file (a directory, FIFO or device); "
                          "give a JSON file")
    if st.st_size > max_bytes:
        raise CostdbError(f"{what} {p} is {st.st_size} bytes, more than {max_bytes >> 20} MiB")
    try:
        with open(p, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise CostdbError(f"cannot read {what} {p}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CostdbError(f"{what} {p} is not UTF-8 text (byte {e.start}); save it as UTF-8 "
                          "JSON") from None
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise CostdbError(f"{what} {p} nests {depth} levels deep, more than {MAX_DEPTH}; it is "
                          "not a costdb file")

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")
    try:
        return json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as e:
        raise CostdbError(f"{what} {p} is not valid JSON (line {e.lineno}, column {e.colno}: "
                          f"{e.msg})") from None
    except (ValueError, RecursionError) as e:
        raise CostdbError(f"{what} {p} is not valid JSON ({e})") from None


def _max_depth(text: str) -> int:
    """Bracket nesting depth outside strings (cheap, before the recursive parser runs)."""
    depth = best = 0
    in_str = esc = False
    for c in text:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_DEPTH:
                    return best
        elif c in "]}":
            depth -= 1
    return best


def _is_id(v: Any) -> bool:
    return (isinstance(v, str) and len(v) <= 1024) or (
        isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**63)


def _number(v: Any, what: str, hi: float = MAX_COST) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not 0 <= v <= hi:
        raise CostdbError(f"graph JSON: {what} must be a finite number 0 .. {hi:g}, got "
                          f"{_show(v)}")


def _whole(v: Any, what: str) -> None:
    ok = (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and math.isfinite(v) and v.is_integer())
    if not ok or not 0 <= v <= MAX_BYTES:
        raise CostdbError(f"graph JSON: {what} must be a whole number of bytes 0 .. 2^53, got "
                          f"{_show(v)}")


def _show(v: Any) -> str:
    t = repr(v)
    return t if len(t) <= 60 else t[:57] + "..."


def check_graph(d: Any) -> None:
    """Types and ranges of a JSON training graph (docs/solver.md); CostdbError on the first
    problem, naming the node and the field."""
    if not isinstance(d, dict):
        raise CostdbError("graph JSON must be an object with 'nodes' (see docs/solver.md)")
    nodes = d.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise CostdbError("graph JSON: 'nodes' must be a non-empty list of node objects")
    if len(nodes) > MAX_NODES:
        raise CostdbError(f"graph JSON: {len(nodes)} nodes, more than {MAX_NODES}")
    for key in ("name", "granularity", "format"):
        if key in d and not isinstance(d[key], (str, int)):
            raise CostdbError(f"graph JSON: {key!r} must be a string, got {_show(d[key])}")
    for k, n in enumerate(nodes):
        if not isinstance(n, dict):
            raise CostdbError(f"graph JSON: node #{k} must be an object, got {_show(n)}")
        nid = n.get("id", k)
        where = f"node {_show(nid)}"
        if not _is_id(nid):
            raise CostdbError(f"graph JSON: node #{k} id must be a string or an integer, got "
                              f"{_show(nid)}")
        for key in ("name", "phase", "runtime_provenance", "energy_provenance"):
            if key in n and not isinstance(n[key], (str, int)) or isinstance(n.get(key), bool):
                raise CostdbError(f"graph JSON: {where} {key} must be a string, got "
                                  f"{_show(n[key])}")
        deps = n.get("deps", [])
        if deps is not None and (not isinstance(deps, list) or not all(map(_is_id, deps))):
            raise CostdbError(f"graph JSON: {where} deps must be a list of node ids (strings "
                              f"or integers), got {_show(deps)}")
        for key in ("runtime_s", "energy_j"):
            if key in n:
                _number(n[key], f"{where} {key}")
        for key in ("output_bytes", "param_bytes", "workspace_bytes"):
            if key in n:
                _whole(n[key], f"{where} {key}")
        if "flops" in n:
            _number(n["flops"], f"{where} flops", hi=1e21)
    if not any(isinstance(n, dict) and n.get("phase", "fwd") in ("fwd", "loss") for n in nodes):
        raise CostdbError("graph JSON: no forward node (phase fwd or loss); a training graph "
                          "computes its forward pass before the backward nodes that use it")
    edges = d.get("edges", [])
    if edges is not None:
        if not isinstance(edges, list):
            raise CostdbError(f"graph JSON: 'edges' must be a list of [source, target] pairs, "
                              f"got {_show(edges)}")
        for e in edges:
            if not (isinstance(e, list) and len(e) == 2 and all(map(_is_id, e))):
                raise CostdbError(f"graph JSON: edge {_show(e)} must be a [source, target] pair "
                                  "of node ids")
    if d.get("fixed_bytes") is not None:
        _whole(d["fixed_bytes"], "fixed_bytes")
    paging = d.get("paging") if "paging" in d else d.get("device")
    if isinstance(paging, dict):
        for side in ("page_in", "page_out"):
            s = paging.get(side)
            if s is None:
                continue
            if not isinstance(s, dict):
                raise CostdbError(f"graph JSON: paging.{side} must be an object, got {_show(s)}")
            for key, hi in (("latency_s", MAX_COST), ("energy_j_per_byte", 1.0),
                            ("bytes_per_s", 1e18)):
                if s.get(key) is not None:
                    _number(s[key], f"paging.{side}.{key}", hi)
    elif paging is not None and not isinstance(paging, str):
        raise CostdbError(f"graph JSON: 'paging' must be an object, got {_show(paging)}")


def check_input_size(batch: int, shape: tuple[int, ...], dtype_bytes: int = 4,
                     memory_bytes: int | None = None) -> None:
    """Refuse a model input (``batch`` x ``shape``) too large to trace on this machine: more
    than 2^31 elements, or an input tensor over 1/16 of physical memory (the activations of a
    training step are many times the input)."""
    n = batch
    for d in shape:
        n *= d
    if n > 2**31 - 1:
        raise CostdbError(f"input batch {batch} x {'x'.join(map(str, shape))} has {n} elements, "
                          "more than 2^31; give a smaller --batch or --input")
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return
    if n * dtype_bytes * 16 > memory_bytes:
        from costdb.units import fmt_bytes
        raise CostdbError(f"input batch {batch} x {'x'.join(map(str, shape))} is "
                          f"{fmt_bytes(n * dtype_bytes)}; a training step needs many times that "
                          f"and this machine has {fmt_bytes(memory_bytes)}: give a smaller "
                          "--batch or --input")
