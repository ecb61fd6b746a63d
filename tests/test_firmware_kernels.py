"""Every firmware kernel, float32 and int8, on both QEMU boards, against the numpy reference
on random shapes: int8 bit-exact, float32 within a tolerance. The output checked is the one
the timed kernel computes (same code, same buffers). qemu-m4f runs the SIMD int8 kernels
(SXTB16/SMLAD), qemu-m0 and a KERNELS=portable qemu-m4f build the portable C ones; the shapes
include odd channel counts, K not a multiple of 4, odd pixel counts and padding edges."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from devices.serial.build import build_firmware
from devices.serial.ops import (K, is_depthwise, needed_bytes, quantize_multiplier, simd_plan,
                                spec_to_request)
from devices.serial.protocol import RunRequest
from devices.serial.reference import decode_outputs, make_inputs, reference, requant
from profiler.zoo import model_graph
from serial_fixtures import (board_agent, m4f_agent, m4f_portable_agent,  # noqa: F401
                             qemu_boards)

KERNELS = sorted(K)
DTYPES = ("float32", "int8")


def _shape_params(kname: str, rng: np.random.Generator) -> tuple[list[int], bool]:
    r = lambda a, b: int(rng.integers(a, b + 1))  # noqa: E731
    if kname.startswith("conv"):
        kind = rng.choice(["dense", "dense", "dense", "depthwise", "grouped"])
        if kind == "depthwise":                            # g == c == oc, odd counts too
            c = oc = g = r(2, 9)
        elif kind == "grouped":
            g = 2
            c, oc = 2 * r(1, 3), 2 * r(1, 3)
        else:
            g, c, oc = 1, r(1, 9), r(1, 9)
        k = int(rng.choice([1, 3, 3, 2, 5]))               # 1x1: pointwise
        s, pad = r(1, 2), r(0, k // 2 + 1) if k > 1 else r(0, 1)
        h, w = r(max(1, k - 2 * pad), 8), r(max(1, k - 2 * pad), 8)
        return [r(1, 2), c, h, w, oc, k, k, s, s, pad, pad, g], bool(rng.integers(0, 2))
    if kname.startswith("linear"):
        return [r(1, 3), r(1, 40), r(1, 12)], bool(rng.integers(0, 2))
    if "pool" in kname:
        k = r(1, 3)
        s, pad = r(1, 2), r(0, k // 2)
        return [r(1, 2), r(1, 3), r(k, 8), r(k, 8), k, k, s, s, pad, pad], False
    if kname.startswith("ce"):
        return [r(1, 4), r(2, 12)], False
    if kname.startswith("relu6"):
        return [r(1, 200), r(20, 120)], False
    if kname == "sgd":
        ch = r(1, 6)
        return [ch * r(1, 40), ch], False
    return [r(1, 200)], False


def _request(kname: str, dtype: str, rng: np.random.Generator) -> RunRequest:
    p, bias = _shape_params(kname, rng)
    qm, qs = quantize_multiplier(float(rng.uniform(0.0005, 0.02)))
    lr = float(rng.uniform(0.001, 0.5))
    mom = float(rng.choice([0.0, 0.9])) if dtype == "float32" else 0.0
    if kname == "sgd" and dtype == "int8":
        qm, qs = quantize_multiplier(lr)
    return RunRequest(K[kname], dtype, p, warmups=1, samples=2, seed=int(rng.integers(1, 2**32)),
                      f=(lr, mom), qmult=qm, qshift=qs, bias=bias, return_output=True)


def _check(agent, req: RunRequest) -> list[np.ndarray]:
    res, raw = agent.run(req)
    assert res["status"] == "ok", res
    assert res["needed_bytes"] == needed_bytes(req, agent.facts["kernel_variant"])
    got = decode_outputs(req, raw)
    want = reference(req, make_inputs(req))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if req.dtype == "int8" or g.dtype == np.int32:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert len(res["ticks"]) == req.samples and all(t > 0 for t in res["ticks"])
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kname", KERNELS)
def test_kernel_matches_numpy(board_agent, kname, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{kname}{dtype}{board_agent.board}".encode()))
    for _ in range(3):
        _check(board_agent, _request(kname, dtype, rng))


@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_and_pointwise_conv(m4f_agent, dtype):
    qm, qs = quantize_multiplier(0.003)
    for kname in ("conv_fwd", "conv_bwd_data", "conv_bwd_weight"):
        for p in ([1, 6, 9, 9, 6, 3, 3, 1, 1, 1, 1, 6],     # depthwise 3x3
                  [1, 6, 9, 9, 12, 3, 3, 2, 2, 1, 1, 6],    # depthwise, multiplier 2, stride 2
                  [2, 8, 5, 5, 16, 1, 1, 1, 1, 0, 0, 1]):   # pointwise
            _check(m4f_agent, RunRequest(K[kname], dtype, p, samples=1, seed=7, qmult=qm,
                                         qshift=qs, bias=True, return_output=True))


SIMD_KERNELS = ("conv_fwd", "conv_bwd_data", "conv_bwd_weight", "linear_fwd",
                "linear_bwd_data", "linear_bwd_weight")


def test_kernel_variants_are_reported(m4f_agent, m4f_portable_agent, qemu_boards):
    assert m4f_agent.facts["kernel_variant"] == "simd"
    assert m4f_portable_agent.facts["kernel_variant"] == "portable"
    assert qemu_boards.agent("qemu-m0").facts["kernel_variant"] == "portable"   # no DSP ext.


@pytest.mark.parametrize("kname", SIMD_KERNELS)
def test_simd_int8_kernels_equal_portable_and_numpy(m4f_agent, m4f_portable_agent, kname):
    """The SIMD kernels against the numpy reference and against the portable C kernels on
    the same board: the edges SIMD code gets wrong (tails of 4, odd rows/columns of the 2x2
    blocking, padding, strides, odd depthwise channel counts)."""
    rng = np.random.default_rng(zlib.crc32(f"simd{kname}".encode()))
    cases = [_request(kname, "int8", rng) for _ in range(6)]
    if kname.startswith("conv"):
        qm, qs = quantize_multiplier(0.004)
        for p in ([1, 3, 5, 7, 5, 3, 3, 1, 1, 1, 1, 1],       # odd C, OC, pixels; K = 27
                  [1, 7, 6, 5, 7, 3, 3, 2, 2, 1, 1, 7],       # depthwise, 7 channels, stride 2
                  [2, 5, 4, 4, 3, 1, 1, 1, 1, 0, 0, 1],       # 1x1, odd channels
                  [1, 4, 3, 3, 3, 5, 5, 1, 1, 2, 2, 1],       # kernel larger than the image
                  [1, 9, 5, 6, 9, 3, 3, 1, 1, 2, 2, 9]):      # depthwise, padding 2
            cases.append(RunRequest(K[kname], "int8", p, samples=1, seed=11, qmult=qm,
                                    qshift=qs, bias=True, return_output=True))
    else:
        qm, qs = quantize_multiplier(0.004)
        for p in ([1, 37, 5], [3, 13, 7], [2, 1, 1], [5, 64, 3], [1, 1, 9], [1, 64, 2]):
            cases.append(RunRequest(K[kname], "int8", p, samples=1, seed=13, qmult=qm,
                                    qshift=qs, bias=True, return_output=True))
    # requantisation edges of the SIMD path: left shifts whose products overflow int32 (TFLite
    # wraps, then the doubling saturates), a zero multiplier, the largest right shift it takes
    for real in (2.0 ** 12, 2.0 ** 18, 0.0, 2.0 ** -21 * 0.75):
        qm, qs = quantize_multiplier(real)
        base = cases[-1]
        cases.append(RunRequest(base.kernel, "int8", list(base.p), samples=1, seed=17, qmult=qm,
                                qshift=qs, bias=True, return_output=True))
    simd_paths = 0
    for req in cases:
        simd_paths += simd_plan(req) is not None
        got = _check(m4f_agent, req)
        ref = _check(m4f_portable_agent, req)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    assert simd_paths >= len(cases) - 3          # the cases mostly take the SIMD path
    assert not kname.startswith("conv") or any(is_depthwise(c.p) for c in cases)


def test_tinycnn_specs_compute_the_right_answer(m4f_agent):
    """The very requests the profiler times for tinycnn, checked against numpy."""
    for spec in model_graph("tinycnn").distinct_specs():
        for dtype in DTYPES:
            req = spec_to_request(dict(spec, dtype=dtype), {"samples": 1, "warmups": 0,
                                                              "return_output": True})
            _check(m4f_agent, req)


def test_requant_matches_tflite_examples():
    # hand-computed from TFLite's MultiplyByQuantizedMultiplier definition
    m, s = quantize_multiplier(0.5)
    assert (m, s) == (1 << 30, 0)
    assert list(requant(np.array([3, -3, 5, -5, 1 << 20]), m, s)) == [2, -1, 3, -2, 1 << 19]
    m, s = quantize_multiplier(0.25)
    assert list(requant(np.array([2, -2, 6, -6]), m, s)) == [1, -1, 2, -2]


def test_emulated_cycles_are_deterministic_instruction_counts(board_agent):
    assert abs(board_agent.calibrate(50_000) - 100_000) <= 2
    req = RunRequest(K["conv_fwd"], "float32", [1, 2, 6, 6, 3, 3, 3, 1, 1, 1, 1, 1], samples=4)
    a, _ = board_agent.run(req)
    b, _ = board_agent.run(req)
    ticks = a["ticks"] + b["ticks"]
    # exact up to tick quantisation, plus the SysTick wrap interrupt (~1/s of virtual time)
    # when it lands inside a sample
    assert max(ticks) - min(ticks) <= 16


@pytest.mark.parametrize("board", ["mkr1000", "nrf52840"])
def test_real_board_firmware_builds(board):
    elf = build_firmware(board)
    assert elf.exists() and elf.stat().st_size > 0
