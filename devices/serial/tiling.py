"""Tiled execution of ops whose buffers do not fit a board's arena.

An op that needs more arena than the board has is split along one axis into tiles that each
fit, the way an MCU deployment would run it (TinyEngine / CMSIS-NN split output channels or
rows so the working buffers fit): every tile is an ordinary kernel run on a smaller shape, and
the op's cost is the sum over its tiles. The axis per kernel:

==================  =================================================================
conv fwd, bwd_wt    output channels (groups for grouped convs, channels for depthwise)
conv bwd_data       input channels (groups / channels likewise)
linear fwd, bwd_wt  output features; linear bwd_data: input features
pools               channels
relu, relu6, add    elements; SGD: elements (int8: output channels, whose scales go along)
cross-entropy       batch rows
==================  =================================================================

The tile is the largest size along the axis that fits (fewest tiles); the last tile takes the
remainder. What is recorded: ``tiling`` = axis, tile, tiles, bytes of a full tile and of the
untiled op. When even a tile of size 1 does not fit (the operand that is not split is too big
by itself) the op stays ``does_not_fit``, and the record names the untiled bytes and that
smallest tile. Not modelled: moving tiles in and out of RAM (weights streamed from flash,
activations spilled), which a deployment adds on top.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from devices.serial.ops import KNAME, is_depthwise, needed_bytes
from devices.serial.protocol import RunRequest

__all__ = ["Tiling", "plan_tiling", "tile_axis"]


@dataclass(frozen=True)
class Tiling:
    """How one op is split: ``tiles`` runs of ``tile`` along ``axis`` (the last run covers
    ``last`` instead), each needing ``tile_bytes`` of arena (the untiled op: ``untiled_bytes``).
    ``fits``: False when even the smallest tile needs more than the arena."""

    axis: str
    dim: int
    tile: int
    tiles: int
    last: int
    tile_bytes: int
    untiled_bytes: int
    arena_bytes: int
    fits: bool

    def requests(self, req: RunRequest) -> list[tuple[RunRequest, int]]:
        """The distinct tile requests and how many times each runs."""
        _axis, _dim, make = tile_axis(req)
        full = self.tiles - 1 if self.last != self.tile else self.tiles
        out = [(make(self.tile), full)] if full else []
        if self.last != self.tile:
            out.append((make(self.last), 1))
        return out

    def record(self) -> dict:
        return {"axis": self.axis, "tile": self.tile, "tiles": self.tiles, "last": self.last,
                "tile_bytes": self.tile_bytes, "untiled_bytes": self.untiled_bytes,
                "arena_bytes": self.arena_bytes}


def _sub(req: RunRequest, p: list[int]) -> RunRequest:
    return dataclasses.replace(req, p=p, return_output=False)


def tile_axis(req: RunRequest) -> tuple[str, int, Callable[[int], RunRequest]]:
    """(axis name, its size, tile size -> the request of one tile) for a kernel request."""
    name, p = KNAME[req.kernel], list(req.p) + [0] * (12 - len(req.p))
    if name.startswith("conv"):
        n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g = p[:12]
        if is_depthwise(p):
            return "channels", c, lambda t: _sub(req, [n, t, h, w, t, kh, kw, sh, sw, ph, pw, t])
        if g > 1:
            cpg, opg = c // g, oc // g
            return "groups", g, lambda t: _sub(req, [n, t * cpg, h, w, t * opg, kh, kw, sh, sw,
                                                     ph, pw, t])
        if name == "conv_bwd_data":
            return "in_channels", c, lambda t: _sub(req, [n, t, h, w, oc, kh, kw, sh, sw, ph,
                                                          pw, 1])
        return "out_channels", oc, lambda t: _sub(req, [n, c, h, w, t, kh, kw, sh, sw, ph,
                                                        pw, 1])
    if name.startswith("linear"):
        n, fin, fout = p[:3]
        if name == "linear_bwd_data":
            return "in_features", fin, lambda t: _sub(req, [n, t, fout])
        return "out_features", fout, lambda t: _sub(req, [n, fin, t])
    if "pool" in name:
        return "channels", p[1], lambda t: _sub(req, [p[0], t] + p[2:10])
    if name.startswith("ce"):
        return "rows", p[0], lambda t: _sub(req, [t, p[1]])
    if name == "sgd" and req.dtype == "int8" and p[1] > 1:
        per = p[0] // p[1]
        return "out_channels", p[1], lambda t: _sub(req, [t * per, t])
    rest = [v for v in req.p[1:]]
    return "elements", p[0], lambda t: _sub(req, [t] + rest)


def plan_tiling(req: RunRequest, arena_bytes: int, variant: str | None = None) -> Tiling | None:
    """None if the op fits the arena untiled; otherwise the tiling with the fewest tiles
    (``fits`` False, tile 1, when nothing fits)."""
    untiled = needed_bytes(req, variant)
    if untiled <= arena_bytes:
        return None
    axis, dim, make = tile_axis(req)
    need = lambda t: needed_bytes(make(t), variant)  # noqa: E731
    if dim < 2 or need(1) > arena_bytes:
        return Tiling(axis, dim, 1, dim, 1, need(1), untiled, arena_bytes, False)
    lo, hi = 1, dim - 1               # need(lo) fits; find the largest t that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= arena_bytes:
            lo = mid
        else:
            hi = mid - 1
    tiles = -(-dim // lo)
    return Tiling(axis, dim, lo, tiles, dim - (tiles - 1) * lo, need(lo), untiled,
                  arena_bytes, True)
