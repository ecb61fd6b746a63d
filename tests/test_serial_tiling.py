"""Tiled execution of ops that do not fit a board's arena (devices/serial/tiling.py): the plan
(pure) and, on the real 16 KiB qemu-m0, that a tiled op costs what its tiles cost."""
from __future__ import annotations

import numpy as np
import pytest

from devices.serial.ops import K, needed_bytes, spec_to_request
from devices.serial.protocol import RunRequest
from devices.serial.tiling import plan_tiling, tile_axis
from profiler.zoo import model_graph
from serial_fixtures import m0_agent, qemu_boards  # noqa: F401  (fixtures)

M0_ARENA = 13568


@pytest.mark.parametrize("kname,p,axis", [
    ("relu_fwd", [2048 * 3, 96], "elements"),
    ("conv_fwd", [1, 8, 16, 16, 24, 3, 3, 1, 1, 1, 1, 1], "out_channels"),
    ("conv_bwd_data", [1, 24, 16, 16, 8, 3, 3, 1, 1, 1, 1, 1], "in_channels"),
    ("conv_bwd_weight", [1, 4, 16, 16, 16, 3, 3, 1, 1, 1, 1, 1], "out_channels"),
    ("conv_fwd", [1, 16, 16, 16, 16, 3, 3, 1, 1, 1, 1, 16], "channels"),
    ("conv_fwd", [1, 16, 16, 16, 16, 3, 3, 1, 1, 1, 1, 4], "groups"),
    ("linear_bwd_data", [4, 900, 4], "in_features"),
    ("maxpool_bwd", [1, 8, 16, 16, 2, 2, 2, 2, 0, 0], "channels"),
    ("sgd", [2560], "elements"),
])
def test_plan_splits_so_every_tile_fits(kname, p, axis):
    req = RunRequest(K[kname], "float32", p, f=(0.1, 0.9))
    t = plan_tiling(req, M0_ARENA, "portable")
    assert t is not None and t.fits and t.axis == axis
    assert t.untiled_bytes == needed_bytes(req) > M0_ARENA
    parts = t.requests(req)
    assert sum(n for _r, n in parts) == t.tiles >= 2
    _axis, dim, make = tile_axis(req)
    assert (t.tiles - 1) * t.tile + t.last == dim and 0 < t.last <= t.tile
    assert all(needed_bytes(r) <= M0_ARENA for r, _n in parts)
    assert needed_bytes(make(t.tile + 1)) > M0_ARENA          # the largest tile that fits


def test_int8_sgd_splits_whole_channels_with_their_scales():
    req = RunRequest(K["sgd"], "int8", [64 * 300, 64])
    t = plan_tiling(req, 8192, "portable")
    assert t.axis == "out_channels" and t.fits
    for r, _n in t.requests(req):
        assert r.p[0] == r.p[1] * 300


@pytest.mark.parametrize("kname,p", [
    ("conv_fwd", [1, 16, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1]),    # w 18 KiB, x 64 KiB
    ("conv_fwd", [1, 3, 64, 64, 8, 3, 3, 2, 2, 1, 1, 1]),      # stride 2
    ("conv_fwd", [1, 16, 48, 48, 16, 3, 3, 1, 1, 1, 1, 16]),   # depthwise
    ("maxpool_fwd", [1, 8, 64, 64, 2, 2, 2, 2, 0, 0]),
    ("avgpool_fwd", [1, 4, 64, 64, 3, 3, 1, 1, 1, 1]),
])
def test_row_bands_when_a_channel_split_cannot_fit(kname, p):
    """The input is too big for any channel tile: bands of output rows (with the input rows
    they read) x channel tiles, every band an interior band computing exactly its rows."""
    from devices.serial.tiling import _out_rows
    req = RunRequest(K[kname], "float32", p, bias=kname == "conv_fwd")
    _axis, _dim, make = tile_axis(req)
    assert needed_bytes(make(1)) > M0_ARENA                      # one channel does not fit
    t = plan_tiling(req, M0_ARENA, "portable")
    assert t.fits and t.rows is not None and t.record()["border_rows"]
    parts = t.requests(req)
    assert all(needed_bytes(r) <= M0_ARENA for r, _n in parts)
    assert sum(n for _r, n in parts) == t.tiles * t.row_tiles
    # the bands cover the output rows once, the channel tiles the channels once
    assert (t.row_tiles - 1) * t.rows + t.last_rows == _out_rows(req)
    assert all(_out_rows(r) in (t.rows, t.last_rows) for r, _n in parts)
    chans = 4 if kname == "conv_fwd" and p[11] == 1 else 1      # the split parameter
    total = sum(n * _out_rows(r) * r.p[chans] for r, n in parts)
    assert total == _out_rows(req) * req.p[chans]


def test_row_tiled_op_runs_on_the_m0(m0_agent):
    spec = {"op": "conv2d", "phase": "fwd", "dtype": "float32", "inputs": [[1, 16, 32, 32]],
            "params": {"weight": [32, 16, 3, 3], "bias": [32]},
            "attrs": {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1},
            "signature": "rows"}
    res = m0_agent.measure(spec, {"samples": 1, "warmups": 0})
    assert res["status"] == "ok" and res["tiling"]["row_tiles"] >= 2
    assert res["peak_memory_bytes"] <= M0_ARENA < res["needed_bytes"]
    req = spec_to_request(spec, {"samples": 1, "warmups": 0})
    t = plan_tiling(req, m0_agent.facts["arena_bytes"], m0_agent.kernel_variant)
    total = sum(n * m0_agent.ticks_to_cycles(m0_agent.run(r)[0]["ticks"][0])
                for r, n in t.requests(req))
    # ~1e9 instructions: a SysTick wrap interrupt lands inside most tile samples (~1 per
    # second of emulated time), times the 96 tiles
    assert res["cycles"]["median"] == pytest.approx(total, rel=1e-6)


def test_fitting_ops_are_not_tiled_and_hopeless_ones_say_why():
    fits = RunRequest(K["relu_fwd"], "int8", [1000, 96])
    assert plan_tiling(fits, M0_ARENA) is None
    big = RunRequest(K["conv_fwd"], "float32", [1, 16, 32, 512, 32, 3, 3, 1, 1, 1, 1, 1])
    t = plan_tiling(big, M0_ARENA)
    assert not t.fits and t.tile == 1 and t.tile_bytes > M0_ARENA
    assert t.record()["untiled_bytes"] == needed_bytes(big)


def test_tiled_op_costs_the_sum_of_its_tiles(m0_agent):
    """maxpool bwd of tinycnn (18 KiB untiled) on the real 13 KiB arena: its recorded cycles
    are the sum of its tile kernels' cycles, run one by one."""
    spec = next(s for s in model_graph("tinycnn").distinct_specs()
                if s["op"] == "max_pool2d" and s["phase"] != "fwd")
    res = m0_agent.measure(spec, {"samples": 2, "warmups": 0})
    assert res["status"] == "ok" and res["tiling"]["untiled_bytes"] > M0_ARENA
    req = spec_to_request(spec, {"samples": 2, "warmups": 0})
    t = plan_tiling(req, m0_agent.facts["arena_bytes"], m0_agent.kernel_variant)
    total = 0.0
    for r, n in t.requests(req):
        tile_res, _ = m0_agent.run(r)
        assert tile_res["status"] == "ok" and tile_res["peak_bytes"] <= M0_ARENA
        total += n * m0_agent.ticks_to_cycles(float(np.median(tile_res["ticks"])))
    # emulated instruction counts repeat exactly, up to a SysTick wrap inside a sample
    assert res["cycles"]["median"] == pytest.approx(total, abs=64)
    assert res["tiling"]["tiles"] == t.tiles >= 2
