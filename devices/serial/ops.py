"""Op specs (profiler/graph.py ``Node.spec()``) -> firmware kernel requests.

A spec maps onto a kernel id and up to 12 integers (torch's shapes; the firmware's float32
kernels keep torch's NCHW layout, its int8 kernels use NHWC / OHWI, docs/firmware.md).
``buffer_plan`` mirrors the firmware's ``plan()``: the buffers a kernel needs, in the order they
are filled from the seeded PRNG, so the host knows an op's arena bytes and the tests can rebuild
its inputs; ``scratch_bytes`` mirrors ``simd_plan()``, the arena scratch of the SIMD kernels.
"""
from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from devices.serial.protocol import RunRequest

K = dict(conv_fwd=1, conv_bwd_data=2, conv_bwd_weight=3, linear_fwd=4, linear_bwd_data=5,
         linear_bwd_weight=6, relu_fwd=7, relu_bwd=8, relu6_fwd=9, relu6_bwd=10, maxpool_fwd=11,
         maxpool_bwd=12, avgpool_fwd=13, avgpool_bwd=14, add=15, ce_fwd=16, ce_bwd=17, sgd=18)
KNAME = {v: k for k, v in K.items()}
DEFAULT_Q6 = 96  # int8 ReLU6 ceiling: activations at scale 1/16


class UnsupportedOp(Exception):
    """The firmware has no kernel for this spec (reported as status ``unsupported``)."""


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = mult * 2^(shift - 31), mult in [2^30, 2^31)."""
    if real <= 0:
        return 0, 0
    m, e = math.frexp(real)
    q = round(m * (1 << 31))
    if q == 1 << 31:
        q //= 2
        e += 1
    return int(q), int(e)


def qas_multipliers(lr: float, grad_scale: float,
                    weight_scales: list[float]) -> list[tuple[int, int]]:
    """Per-channel (mult, shift) of the int8 SGD kernel under quantisation-aware scaling (QAS,
    Lin et al. 2022): an int8 weight w = W / s_W[c] with int8 gradient g of scale s_g moves by
    lr * s_g / s_W[c]^2 * g, which keeps the update of the real weight W the float SGD step
    lr * dL/dW whatever the channel's scale. (The measurement runs draw these pairs from the
    seeded stream instead; the kernel's cost does not depend on their values.)"""
    if lr <= 0 or grad_scale <= 0 or any(s <= 0 for s in weight_scales):
        raise ValueError("learning rate and scales must be positive")
    return [quantize_multiplier(lr * grad_scale / (s * s)) for s in weight_scales]


def default_requant(reduction: int) -> tuple[int, int]:
    """Output multiplier keeping int8 outputs in range for a sum of ``reduction`` products of
    uniform int8 values (std ~74 each): aims for an output std of ~40."""
    return quantize_multiplier(40.0 / (math.sqrt(max(1, reduction)) * 74.0 * 74.0))


def _pair(v: Any) -> list[int]:
    return list(v) if isinstance(v, (list, tuple)) else [v, v]


def spec_to_request(spec: dict[str, Any], settings: dict[str, Any] | None = None) -> RunRequest:
    """Translate one op spec; raises UnsupportedOp with a reason."""
    s = settings or {}
    op, phase, dtype = spec["op"], spec.get("phase", "fwd"), spec.get("dtype", "float32")
    if dtype not in ("float32", "int8"):
        raise UnsupportedOp(f"dtype {dtype} is not supported by the firmware (float32, int8)")
    inputs = [list(x) for x in spec.get("inputs", [])]
    params = spec.get("params", {}) or {}
    attrs = spec.get("attrs", {}) or {}
    seed = int(s.get("seed") or zlib.crc32(str(spec.get("signature", "")).encode()) or 1)
    common = dict(dtype=dtype, warmups=int(s.get("warmups", 1)),
                  samples=max(1, min(64, int(s.get("samples", 5)))), seed=seed,
                  return_output=bool(s.get("return_output", False)))
    rq = attrs.get("requant")

    def req(kname: str, p: list[int], reduction: int = 1, **kw: Any) -> RunRequest:
        qm, qs = (rq if rq else default_requant(reduction))
        return RunRequest(kernel=K[kname], p=[int(v) for v in p], qmult=int(qm), qshift=int(qs),
                          **common, **kw)

    if op == "conv2d":
        if phase not in ("fwd", "bwd_data", "bwd_weight"):
            raise UnsupportedOp(f"conv2d phase {phase}")
        n, c, h, w = inputs[0]
        oc, cpg, kh, kw = params["weight"]
        sh, sw = _pair(attrs.get("stride", 1))
        ph, pw = _pair(attrs.get("padding", 0))
        if _pair(attrs.get("dilation", 1)) != [1, 1]:
            raise UnsupportedOp("conv2d with dilation != 1")
        g = int(attrs.get("groups", 1))
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        red = {"fwd": cpg * kh * kw, "bwd_data": (oc // g) * kh * kw // max(1, sh * sw),
               "bwd_weight": n * oh * ow}[phase]
        return req(f"conv_{phase}", [n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g], red,
                   bias="bias" in params and phase != "bwd_data")
    if op == "linear":
        *lead, fin = inputs[0]
        out, fin_w = params["weight"]
        n = int(np.prod(lead)) if lead else 1
        if phase not in ("fwd", "bwd_data", "bwd_weight"):
            raise UnsupportedOp(f"linear phase {phase}")
        red = {"fwd": fin, "bwd_data": out, "bwd_weight": n}[phase]
        return req(f"linear_{phase}", [n, fin, out], red,
                   bias="bias" in params and phase != "bwd_data")
    if op in ("relu", "relu6"):
        numel = int(np.prod(inputs[0]))
        kind = "fwd" if phase == "fwd" else "bwd"
        return req(f"{op}_{kind}", [numel, int(attrs.get("q6", DEFAULT_Q6))])
    if op in ("max_pool2d", "avg_pool2d"):
        n, c, h, w = inputs[0]
        kh, kw = _pair(attrs["kernel_size"])
        sh, sw = _pair(attrs.get("stride") or attrs["kernel_size"])
        ph, pw = _pair(attrs.get("padding", 0))
        if attrs.get("ceil_mode"):
            raise UnsupportedOp(f"{op} with ceil_mode=True")
        if _pair(attrs.get("dilation", 1)) != [1, 1]:
            raise UnsupportedOp(f"{op} with dilation != 1")
        if op == "avg_pool2d" and not attrs.get("count_include_pad", True) and (ph or pw):
            raise UnsupportedOp("avg_pool2d with count_include_pad=False and padding")
        kind = "fwd" if phase == "fwd" else "bwd"
        name = ("maxpool" if op == "max_pool2d" else "avgpool") + "_" + kind
        return req(name, [n, c, h, w, kh, kw, sh, sw, ph, pw])
    if op in ("add", "grad_accumulate") and phase in ("fwd", "bwd_data") and \
            (op == "grad_accumulate" or phase == "fwd"):
        if len(inputs) < 2 or inputs[0] != inputs[1]:
            raise UnsupportedOp(f"{op} needs two inputs of the same shape (no broadcasting)")
        if attrs.get("scalar") is not None:
            raise UnsupportedOp("add with a scalar")
        return req("add", [int(np.prod(inputs[0]))])
    if op == "cross_entropy" and phase in ("loss", "bwd_data"):
        n, k = inputs[0]
        return req("ce_fwd" if phase == "loss" else "ce_bwd", [n, k])
    if op == "sgd":
        numel = int(np.prod(params["param"]))
        lr, mom = float(attrs.get("lr", 0.01)), float(attrs.get("momentum", 0.0) or 0.0)
        if attrs.get("weight_decay"):
            raise UnsupportedOp("sgd with weight decay")
        if dtype == "int8":
            if mom:
                raise UnsupportedOp("int8 sgd with momentum")
            qm, qs = rq if rq else quantize_multiplier(lr)
            shape = list(params["param"])
            channels = int(shape[0]) if len(shape) > 1 else 1   # per output channel (QAS)
            return RunRequest(kernel=K["sgd"], p=[numel, channels], qmult=qm, qshift=qs,
                              f=(lr, 0.0), **common)
        return req("sgd", [numel], f=(lr, mom))
    raise UnsupportedOp(f"the firmware has no kernel for {op} ({phase})")


def buffer_plan(r: RunRequest) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    """(inputs, outputs) of a request: inputs as (count, numpy dtype, fill kind), outputs as
    (count, numpy dtype), in the firmware's order. SGD has no outputs: it updates input 0."""
    p, s8, name = r.p + [0] * 12, r.dtype == "int8", KNAME[r.kernel]
    t = "int8" if s8 else "float32"
    bt = "int32" if s8 else "float32"
    ins: list[tuple[int, str, str]] = []
    outs: list[tuple[int, str]] = []
    if name.startswith("conv"):
        n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g = p[:12]
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        x, y, wt = n * c * h * w, n * oc * oh * ow, oc * (c // g) * kh * kw
        if name == "conv_fwd":
            ins = [(x, t, "T"), (wt, t, "T")] + ([(oc, bt, "B")] if r.bias else [])
            outs = [(y, t)]
        elif name == "conv_bwd_data":
            ins, outs = [(y, t, "T"), (wt, t, "T")], [(x, t)]
        else:
            ins, outs = [(x, t, "T"), (y, t, "T")], [(wt, t)] + ([(oc, bt)] if r.bias else [])
    elif name.startswith("linear"):
        n, fin, fout = p[:3]
        x, y, wt = n * fin, n * fout, fin * fout
        if name == "linear_fwd":
            ins = [(x, t, "T"), (wt, t, "T")] + ([(fout, bt, "B")] if r.bias else [])
            outs = [(y, t)]
        elif name == "linear_bwd_data":
            ins, outs = [(y, t, "T"), (wt, t, "T")], [(x, t)]
        else:
            ins, outs = [(x, t, "T"), (y, t, "T")], [(wt, t)] + ([(fout, bt)] if r.bias else [])
    elif name in ("relu_fwd", "relu6_fwd"):
        ins, outs = [(p[0], t, "T")], [(p[0], t)]
    elif name in ("relu_bwd", "relu6_bwd", "add"):
        ins, outs = [(p[0], t, "T"), (p[0], t, "T")], [(p[0], t)]
    elif "pool" in name:
        n, c, h, w, kh, kw, sh, sw, ph, pw = p[:10]
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        x, y = n * c * h * w, n * c * oh * ow
        if name.endswith("fwd"):
            ins, outs = [(x, t, "T")], [(y, t)]
        elif name == "maxpool_bwd":
            ins, outs = [(x, t, "T"), (y, t, "T")], [(x, t)]
        else:
            ins, outs = [(y, t, "T")], [(x, t)]
    elif name.startswith("ce"):
        n, k = p[:2]
        ins = [(n * k, t, "T"), (n, "int32", "L")]
        if name == "ce_fwd":
            outs = [(n, "int32")] if s8 else [(1, "float32")]
        else:
            outs = [(n * k, t)]
    elif name == "sgd":
        ins = [(p[0], t, "T"), (p[0], t, "T")]
        if s8:
            ins.append((2 * max(1, p[1]), "int32", "Q"))   # per-channel (mult, shift)
        elif r.f[1]:
            ins.append((p[0], t, "T"))
    return ins, outs


VARIANTS = ("simd", "portable")
INT32_MIN = -(1 << 31)


def _align8(v: int) -> int:
    return (v + 7) // 8 * 8


def _gemm_scratch(rows_bytes: int, k: int) -> int:
    return (_align8(rows_bytes + 4) if rows_bytes else 0) + 20 * ((k + 3) // 4)


def is_depthwise(p: list[int]) -> bool:
    """groups == C == OC > 1: the int8 kernels' depthwise case (weights [KH][KW][OC])."""
    return p[11] > 1 and p[11] == p[1] and p[4] == p[1]


def simd_plan(r: RunRequest) -> int | None:
    """Scratch bytes of the SIMD int8 kernel for ``r`` (firmware ``simd_plan``), or None when
    the portable kernel runs (not int8, not a conv/linear kernel, a shape or requantisation
    the SIMD kernels do not cover)."""
    if r.dtype != "int8" or not (r.qmult == 0 or r.qmult >= 1 << 30) or not -21 <= r.qshift <= 30:
        return None     # the SIMD kernels' requantisation holds for these (kernels_simd.c)
    p, name = list(r.p) + [0] * 12, KNAME[r.kernel]
    if name.startswith("conv"):
        n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g = p[:12]
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if is_depthwise(p):    # forward: the weights packed in tap pairs
            if kh * kw > 64:
                return None
            return 24 * (c // 4) * ((kh * kw + 1) // 2) if name == "conv_fwd" else 0
        if g != 1:
            return None
        if name == "conv_fwd":
            return _gemm_scratch(0, kh * kw * c)
        if name == "conv_bwd_data":
            return _gemm_scratch(c * kh * kw * oc, kh * kw * oc)
        return _gemm_scratch(oc * n * oh * ow, n * oh * ow)
    if name.startswith("linear"):
        n, fin, fout = p[:3]
        return {"linear_fwd": _gemm_scratch(0, fin),
                "linear_bwd_data": _gemm_scratch(fin * fout, fout),
                "linear_bwd_weight": 0 if n == 1 else _gemm_scratch(fout * n, n)}[name]
    return None


def scratch_bytes(r: RunRequest, variant: str | None = "simd") -> int:
    """Arena scratch the firmware allocates after the buffers (0 for the portable kernels)."""
    if variant != "simd":
        return 0
    s = simd_plan(r)
    return 0 if s is None else _align8(s)


def needed_bytes(r: RunRequest, variant: str | None = None) -> int:
    """Arena bytes the firmware allocates for this request: 8-byte aligned buffers, plus the
    SIMD kernels' scratch when ``variant`` is ``simd`` (the board's ``kernels`` fact)."""
    ins, outs = buffer_plan(r)
    return sum(_align8(cnt * np.dtype(dt).itemsize) for cnt, dt, *_ in ins + outs) + \
        scratch_bytes(r, variant)
