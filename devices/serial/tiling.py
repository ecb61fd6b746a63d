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
remainder. When even a tile of size 1 does not fit because the operand that is not split is
too big by itself (the input of a convolution or pool), the forward convolutions and pools
are also split into bands of output rows (with the input rows they read): the fewest tiles
over (channel tile x row band). A band runs as an interior band (no vertical padding), so the
padding rows at the top and bottom borders are computed as zeros instead of skipped: the
recorded cost is that of the MACs of the whole op, a little more than the portable kernels
spend on the borders (``border_rows`` in the record says so).

What is recorded: ``tiling`` = axis, tile, tiles, bytes of a full tile and of the untiled op
(and ``rows``, ``row_tiles`` for row bands). When nothing fits the op stays ``does_not_fit``,
and the record names the untiled bytes and the smallest tile. Not modelled: moving tiles in
and out of RAM (weights streamed from flash, activations spilled), which a deployment adds.
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
    rows: int | None = None          # row bands (forward conv / pool): output rows per band
    row_tiles: int = 1
    last_rows: int | None = None

    @staticmethod
    def _counts(tile: int, tiles: int, last: int) -> list[tuple[int, int]]:
        full = tiles - 1 if last != tile else tiles
        return ([(tile, full)] if full else []) + ([(last, 1)] if last != tile else [])

    def requests(self, req: RunRequest) -> list[tuple[RunRequest, int]]:
        """The distinct tile requests and how many times each runs."""
        _axis, _dim, make = tile_axis(req)
        chans = self._counts(self.tile, self.tiles, self.last)
        if self.rows is None:
            return [(make(t), n) for t, n in chans]
        bands = self._counts(self.rows, self.row_tiles, self.last_rows or self.rows)
        return [(_row_band(make(t), r), n * m) for t, n in chans for r, m in bands]

    def record(self) -> dict:
        rec = {"axis": self.axis, "tile": self.tile, "tiles": self.tiles, "last": self.last,
               "tile_bytes": self.tile_bytes, "untiled_bytes": self.untiled_bytes,
               "arena_bytes": self.arena_bytes}
        if self.rows is not None:
            rec.update(rows=self.rows, row_tiles=self.row_tiles, last_rows=self.last_rows,
                       border_rows="computed as interior rows (padding taps as zeros)")
        return rec


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


ROW_KERNELS = ("conv_fwd", "maxpool_fwd", "avgpool_fwd")


def _row_band(req: RunRequest, rows: int) -> RunRequest:
    """The request computing ``rows`` output rows of a forward conv / pool from the input rows
    they read, without vertical padding (an interior band)."""
    p = list(req.p)
    if KNAME[req.kernel] == "conv_fwd":       # N C H W OC KH KW SH SW PH PW G
        kh, sh, hi, ph = p[5], p[7], 2, 9
    else:                                      # N C H W KH KW SH SW PH PW
        kh, sh, hi, ph = p[4], p[6], 2, 8
    p[hi] = (rows - 1) * sh + kh
    p[ph] = 0
    return _sub(req, p)


def _out_rows(req: RunRequest) -> int:
    p = req.p
    if KNAME[req.kernel] == "conv_fwd":
        return (p[2] + 2 * p[9] - p[5]) // p[7] + 1
    return (p[2] + 2 * p[8] - p[4]) // p[6] + 1


def _largest(fits: Callable[[int], bool], hi: int) -> int:
    """The largest t in [1, hi] with fits(t) (fits monotone, fits(1) true)."""
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _plan_rows(req: RunRequest, arena_bytes: int, variant: str | None, axis: str, dim: int,
               make: Callable[[int], RunRequest], untiled: int) -> Tiling | None:
    """Channel tile x row band with the fewest tiles, or None if no band of one row fits."""
    oh = _out_rows(req)
    best = None
    for t in range(dim, 0, -1):
        sub = make(t)
        if needed_bytes(_row_band(sub, 1), variant) > arena_bytes:
            continue
        r = _largest(lambda rr: needed_bytes(_row_band(sub, rr), variant) <= arena_bytes, oh)
        n = -(-dim // t) * -(-oh // r)
        if best is None or n < best[0]:
            best = (n, t, r)
        if -(-dim // t) >= best[0]:
            break                       # smaller channel tiles cannot have fewer tiles
    if best is None:
        return None
    _n, t, r = best
    tiles, row_tiles = -(-dim // t), -(-oh // r)
    return Tiling(axis, dim, t, tiles, dim - (tiles - 1) * t,
                  needed_bytes(_row_band(make(t), r), variant), untiled, arena_bytes, True,
                  rows=r, row_tiles=row_tiles, last_rows=oh - (row_tiles - 1) * r)


def plan_tiling(req: RunRequest, arena_bytes: int, variant: str | None = None) -> Tiling | None:
    """None if the op fits the arena untiled; otherwise the tiling with the fewest tiles
    (``fits`` False, tile 1, when nothing fits)."""
    untiled = needed_bytes(req, variant)
    if untiled <= arena_bytes:
        return None
    axis, dim, make = tile_axis(req)
    need = lambda t: needed_bytes(make(t), variant)  # noqa: E731
    if dim < 2 or need(1) > arena_bytes:
        if KNAME[req.kernel] in ROW_KERNELS:
            rows = _plan_rows(req, arena_bytes, variant, axis, dim, make, untiled)
            if rows is not None:
                return rows
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
