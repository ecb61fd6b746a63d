"""Schedules: what a device executes, stage by stage, and their JSON / compact binary encodings.

A schedule for an ``n``-node instance has ``n`` stages. Stage ``t`` (see docs/solver.md):

1. ``pageout`` values are written to secondary storage (a value is written at most once);
2. ``compute`` nodes run in ascending index order (``t`` itself is always last); after each one,
   inputs with no later consumer in the stage that are not in ``keep`` are freed;
3. at the end of the stage RAM holds exactly ``keep`` (values kept from this stage, plus the
   ``pagein`` values read back from storage), which is the RAM content when stage ``t+1`` starts.

Binary encoding ("CDBS" v1, little endian, unsigned LEB128 varints)::

    magic  b"CDBS" | version u8 = 1 | flags u8 | n varint
    per stage t:  mask u8  (bit0 recompute, bit1 page-in, bit2 page-out, bit3 drop)
                  for each set bit, in that order: count varint, then the sorted node indices
                  delta-coded (first absolute, then differences) as varints
    crc32 u32 of everything before it

``recompute`` = compute minus ``t``; ``drop`` = values present at the stage end (RAM at start,
computed, paged in) that are not kept -- the list the device frees. ``keep`` is rebuilt from them.
flags: bit0 compat semantics, bit1 overlapped paging.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from costdb.errors import CostdbError

SCHEDULE_FORMAT = "costdb-schedule/1"
MAGIC = b"CDBS"
VERSION = 1


@dataclass(frozen=True)
class Stage:
    compute: tuple[int, ...]
    keep: tuple[int, ...] = ()
    pagein: tuple[int, ...] = ()
    pageout: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, list[int]]:
        return {"compute": list(self.compute), "keep": list(self.keep), "pagein": list(self.pagein),
                "pageout": list(self.pageout)}


@dataclass(frozen=True)
class Schedule:
    """Stages plus the semantics they were produced for: ``compat`` (published POET: page-outs only
    of values resident at a stage start, paging outside the deadline) and ``overlap`` (paging
    overlaps compute, as DMA allows)."""

    stages: tuple[Stage, ...]
    compat: bool = False
    overlap: bool = False
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.stages)

    def counts(self) -> dict[str, int]:
        return {"computes": sum(len(s.compute) for s in self.stages),
                "recomputes": sum(len(s.compute) - 1 for s in self.stages),
                "pageins": sum(len(s.pagein) for s in self.stages),
                "pageouts": sum(len(s.pageout) for s in self.stages)}

    # --- JSON ------------------------------------------------------------------------------
    def to_dict(self, node_names: list[str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"format": SCHEDULE_FORMAT, "n": self.n, "compat": self.compat,
                             "overlap": self.overlap,
                             "stages": [s.to_dict() for s in self.stages]}
        if node_names is not None:
            d["node_names"] = list(node_names)
        if self.meta:
            d["meta"] = self.meta
        return d

    def to_json(self, node_names: list[str] | None = None, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(node_names), indent=indent, default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schedule":
        if d.get("format") != SCHEDULE_FORMAT:
            raise CostdbError(f"not a costdb schedule (format {d.get('format')!r}, expected {SCHEDULE_FORMAT!r})")
        stages = tuple(Stage(tuple(s["compute"]), tuple(s.get("keep", ())), tuple(s.get("pagein", ())),
                             tuple(s.get("pageout", ()))) for s in d["stages"])
        return cls(stages, bool(d.get("compat", False)), bool(d.get("overlap", False)), d.get("meta", {}))

    @classmethod
    def from_json(cls, text: str) -> "Schedule":
        return cls.from_dict(json.loads(text))

    # --- binary ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        out = bytearray(MAGIC)
        out += bytes([VERSION, (1 if self.compat else 0) | (2 if self.overlap else 0)])
        _varint(out, self.n)
        ram: set[int] = set()
        for t, s in enumerate(self.stages):
            present = ram | set(s.compute) | set(s.pagein)
            lists = [sorted(set(s.compute) - {t}), sorted(s.pagein), sorted(s.pageout),
                     sorted(present - set(s.keep))]
            if t not in s.compute:
                raise CostdbError(f"schedule stage {t} does not compute node {t}; cannot encode")
            if not set(s.keep) <= present:
                raise CostdbError(f"schedule stage {t} keeps values that are not present; cannot encode")
            mask = sum(1 << b for b, lst in enumerate(lists) if lst)
            out.append(mask)
            for lst in lists:
                if lst:
                    _varint(out, len(lst))
                    prev = 0
                    for k, v in enumerate(lst):
                        _varint(out, v if k == 0 else v - prev)
                        prev = v
            ram = set(s.keep)
        out += struct.pack("<I", zlib.crc32(bytes(out)) & 0xFFFFFFFF)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Schedule":
        if len(data) < 10 or data[:4] != MAGIC:
            raise CostdbError("not a costdb binary schedule (bad magic)")
        body, crc = data[:-4], struct.unpack("<I", data[-4:])[0]
        if zlib.crc32(body) & 0xFFFFFFFF != crc:
            raise CostdbError("binary schedule is corrupt (CRC mismatch)")
        if body[4] != VERSION:
            raise CostdbError(f"binary schedule version {body[4]} is not supported (expected {VERSION})")
        flags = body[5]
        pos = 6
        n, pos = _read_varint(body, pos)
        stages = []
        ram: set[int] = set()
        for t in range(n):
            if pos >= len(body):
                raise CostdbError("binary schedule is truncated")
            mask = body[pos]
            pos += 1
            lists: list[list[int]] = []
            for b in range(4):
                lst: list[int] = []
                if mask >> b & 1:
                    cnt, pos = _read_varint(body, pos)
                    prev = 0
                    for k in range(cnt):
                        v, pos = _read_varint(body, pos)
                        prev = v if k == 0 else prev + v
                        lst.append(prev)
                lists.append(lst)
            recompute, pagein, pageout, drop = lists
            compute = tuple(sorted(set(recompute) | {t}))
            present = ram | set(compute) | set(pagein)
            keep = tuple(sorted(present - set(drop)))
            stages.append(Stage(compute, keep, tuple(pagein), tuple(pageout)))
            ram = set(keep)
        if pos != len(body):
            raise CostdbError("binary schedule has trailing bytes")
        return cls(tuple(stages), bool(flags & 1), bool(flags & 2))


def _varint(out: bytearray, v: int) -> None:
    if v < 0:
        raise ValueError("varint must be non-negative")
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise CostdbError("binary schedule is truncated")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
