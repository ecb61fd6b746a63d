"""numpy reference for every firmware kernel, and the firmware's input generator.

The firmware fills a request's input buffers from xorshift32 seeded with the request seed, in
``ops.buffer_plan`` order; ``make_inputs`` replays that stream, ``reference`` computes the
expected outputs. int8 results are defined bit-exactly (int32 accumulation, TFLite
requantisation, halves-away-from-zero division); float32 is compared with a tolerance.
Layouts as the firmware's (docs/firmware.md): float32 NCHW / OIHW; int8 NHWC, OHWI weights and
[KH][KW][OC] depthwise weights. The reference computes in NCHW and converts at the edges.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from devices.serial.ops import KNAME, buffer_plan
from devices.serial.protocol import RunRequest

LUT_H = Path(__file__).resolve().parent.parent / "firmware" / "src" / "ce_lut.h"


def _lut(name: str) -> np.ndarray:
    text = LUT_H.read_text()
    body = re.search(name + r"\[\d+\] = \{(.*?)\};", text, re.S).group(1)
    return np.array([int(v) for v in body.replace("\n", " ").split(",") if v.strip()], np.int64)


def make_inputs(r: RunRequest) -> list[np.ndarray]:
    """The input buffers exactly as the firmware generated them (flat arrays)."""
    x = (r.seed & 0xFFFFFFFF) or 0x9E3779B9
    ins, _ = buffer_plan(r)
    classes = r.p[1] if len(r.p) > 1 else 1
    out = []
    for count, dt, kind in ins:
        vals = np.empty(count, np.int64)
        for i in range(count):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            vals[i] = x
        if kind == "L":
            out.append((vals % classes).astype(np.int32))
        elif kind == "Q":   # per-channel (mult, shift): mult in [2^30, 2^31), shift - 0..3
            q = np.where(np.arange(count) % 2 == 0, (1 << 30) | (vals >> 2), r.qshift - (vals & 3))
            out.append(q.astype(np.int32))
        elif dt == "int8":
            out.append(((vals >> 24) - ((vals >> 31) << 8)).astype(np.int8))
        elif dt == "int32":
            signed = np.where(vals >= 1 << 31, vals - (1 << 32), vals)
            out.append((signed >> 20).astype(np.int32))
        else:
            out.append((((vals >> 8) - 8388608).astype(np.float64) / 8388608.0)
                       .astype(np.float32))
    return out


def requant(acc: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier on int32 accumulators, without saturation."""
    a = np.asarray(acc, np.int64)
    left, right = max(shift, 0), max(-shift, 0)
    a = (a << left) & 0xFFFFFFFF
    a = np.where(a >= 1 << 31, a - (1 << 32), a)
    ab = a * np.int64(mult)
    t = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    h = np.where(t >= 0, t >> 31, -((-t) >> 31))
    h = np.where((a == -(1 << 31)) & (mult == -(1 << 31)), (1 << 31) - 1, h)
    mask = (1 << right) - 1
    rem = h & mask
    thr = (mask >> 1) + (h < 0)
    return (h >> right) + (rem > thr)


def sat8(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -128, 127).astype(np.int8)


def round_div(num: np.ndarray, den: int) -> np.ndarray:
    num = np.asarray(num, np.int64)
    return np.where(num >= 0, (num + den // 2) // den, -((-num + den // 2) // den))


def _conv_geometry(p):
    n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g = p[:12]
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g, oh, ow


def _conv_acc(x, wt, p):
    """Forward accumulators (float64 or int64), NCHW."""
    n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g, oh, ow = _conv_geometry(p)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    cpg, opg = c // g, oc // g
    y = np.zeros((n, oc, oh, ow), x.dtype)
    for gi in range(g):
        xs = xp[:, gi * cpg:(gi + 1) * cpg]
        ws = wt[gi * opg:(gi + 1) * opg]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
                y[:, gi * opg:(gi + 1) * opg] += np.einsum("nchw,oc->nohw", patch, ws[:, :, ky, kx])
    return y


def _conv_bwd_data_acc(dy, wt, p):
    n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g, oh, ow = _conv_geometry(p)
    cpg, opg = c // g, oc // g
    dxp = np.zeros((n, c, h + 2 * ph + sh * ow + kh, w + 2 * pw + sw * ow + kw), dy.dtype)
    for gi in range(g):
        ds = dy[:, gi * opg:(gi + 1) * opg]
        ws = wt[gi * opg:(gi + 1) * opg]
        for ky in range(kh):
            for kx in range(kw):
                contrib = np.einsum("nohw,oc->nchw", ds, ws[:, :, ky, kx])
                dxp[:, gi * cpg:(gi + 1) * cpg, ky:ky + sh * (oh - 1) + 1:sh,
                    kx:kx + sw * (ow - 1) + 1:sw] += contrib
    return dxp[:, :, ph:ph + h, pw:pw + w]


def _conv_bwd_weight_acc(x, dy, p):
    n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g, oh, ow = _conv_geometry(p)
    cpg, opg = c // g, oc // g
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    dw = np.zeros((oc, cpg, kh, kw), x.dtype)
    for gi in range(g):
        xs = xp[:, gi * cpg:(gi + 1) * cpg]
        ds = dy[:, gi * opg:(gi + 1) * opg]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
                dw[gi * opg:(gi + 1) * opg, :, ky, kx] = np.einsum("nchw,nohw->oc", patch, ds)
    return dw


def _pool_windows(p):
    n, c, h, w, kh, kw, sh, sw, ph, pw = p[:10]
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow


def _nchw(a: np.ndarray, n: int, c: int, h: int, w: int, nhwc: bool) -> np.ndarray:
    return a.reshape(n, h, w, c).transpose(0, 3, 1, 2) if nhwc else a.reshape(n, c, h, w)


def _flat(a: np.ndarray, nhwc: bool) -> np.ndarray:
    """NCHW result -> the firmware's flat layout."""
    return (a.transpose(0, 2, 3, 1) if nhwc else a).ravel()


def _oihw(wt: np.ndarray, p: list[int], s8: bool) -> np.ndarray:
    n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g = p[:12]
    if not s8:
        return wt.reshape(oc, c // g, kh, kw)
    if g > 1 and g == c and oc == c:                  # depthwise [KH][KW][OC]
        return wt.reshape(kh, kw, oc).transpose(2, 0, 1)[:, None]
    return wt.reshape(oc, kh, kw, c // g).transpose(0, 3, 1, 2)


def _weight_flat(dw: np.ndarray, p: list[int], s8: bool) -> np.ndarray:
    n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g = p[:12]
    if not s8:
        return dw.ravel()
    if g > 1 and g == c and oc == c:
        return dw[:, 0].transpose(1, 2, 0).ravel()
    return dw.transpose(0, 2, 3, 1).ravel()


def reference(r: RunRequest, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Expected outputs (flat) of one run; SGD returns its updated parameter."""
    name, p, s8 = KNAME[r.kernel], list(r.p) + [0] * 12, r.dtype == "int8"
    acc_t = np.int64 if s8 else np.float64
    ins = [a.astype(acc_t) if a.dtype != np.int32 or s8 else a.astype(np.float64)
           for a in inputs]

    def store(acc):
        return sat8(requant(acc, r.qmult, r.qshift)) if s8 else acc.astype(np.float32)

    def bias_out(acc):
        return acc.astype(np.int32) if s8 else acc.astype(np.float32)

    if name.startswith("conv"):
        n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g, oh, ow = _conv_geometry(p)
        if name == "conv_fwd":
            y = _conv_acc(_nchw(ins[0], n, c, h, w, s8), _oihw(ins[1], p, s8), p)
            if r.bias:
                y = y + ins[2].reshape(1, oc, 1, 1)
            return [_flat(store(y), s8)]
        if name == "conv_bwd_data":
            dx = _conv_bwd_data_acc(_nchw(ins[0], n, oc, oh, ow, s8), _oihw(ins[1], p, s8), p)
            return [_flat(store(dx), s8)]
        dy = _nchw(ins[1], n, oc, oh, ow, s8)
        dw = _conv_bwd_weight_acc(_nchw(ins[0], n, c, h, w, s8), dy, p)
        outs = [_weight_flat(store(dw), p, s8)]
        if r.bias:
            outs.append(bias_out(dy.sum(axis=(0, 2, 3))))
        return outs
    if name.startswith("linear"):
        n, fin, fout = p[:3]
        if name == "linear_fwd":
            y = ins[0].reshape(n, fin) @ ins[1].reshape(fout, fin).T
            if r.bias:
                y = y + ins[2]
            return [store(y).ravel()]
        if name == "linear_bwd_data":
            return [store(ins[0].reshape(n, fout) @ ins[1].reshape(fout, fin)).ravel()]
        dy = ins[1].reshape(n, fout)
        outs = [store(dy.T @ ins[0].reshape(n, fin)).ravel()]
        if r.bias:
            outs.append(bias_out(dy.sum(axis=0)))
        return outs
    six = p[1] if s8 else 6.0
    t = np.int8 if s8 else np.float32
    if name == "relu_fwd":
        return [np.maximum(ins[0], 0).astype(t)]
    if name == "relu6_fwd":
        return [np.clip(ins[0], 0, six).astype(t)]
    if name == "relu_bwd":
        return [np.where(ins[0] > 0, ins[1], 0).astype(t)]
    if name == "relu6_bwd":
        return [np.where((ins[0] > 0) & (ins[0] < six), ins[1], 0).astype(t)]
    if name == "add":
        s = ins[0] + ins[1]
        return [sat8(s) if s8 else s.astype(np.float32)]
    if "pool" in name:
        n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow = _pool_windows(p)
        (out,) = _pool_reference(name, ins, p, s8, acc_t, t)
        hh, ww = (h, w) if name.endswith("bwd") else (oh, ow)
        return [_flat(out.reshape(n, c, hh, ww), s8)]
    return _ce_sgd_reference(r, name, p, s8, ins, inputs)


def _pool_reference(name, ins, p, s8, acc_t, t):
    """Pool kernels in NCHW (planes of n*c), inputs converted from the firmware's layout."""
    n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow = _pool_windows(p)
    if name != "avgpool_bwd":
        ins = [_nchw(ins[0], n, c, h, w, s8)] + \
              ([_nchw(ins[1], n, c, oh, ow, s8)] if name == "maxpool_bwd" else [])
    else:
        ins = [_nchw(ins[0], n, c, oh, ow, s8)]
    x = ins[0].reshape(n * c, h, w) if name != "avgpool_bwd" else None
    if name == "maxpool_fwd":
        y = np.full((n * c, oh, ow), -np.inf)
        for ky in range(kh):
            for kx in range(kw):
                for oy in range(oh):
                    iy = oy * sh - ph + ky
                    if not 0 <= iy < h:
                        continue
                    for ox in range(ow):
                        ix = ox * sw - pw + kx
                        if 0 <= ix < w:
                            y[:, oy, ox] = np.maximum(y[:, oy, ox], x[:, iy, ix])
        return [y.astype(t).ravel()]
    if name == "avgpool_fwd":
        xp = np.zeros((n * c, h + 2 * ph, w + 2 * pw), acc_t)
        xp[:, ph:ph + h, pw:pw + w] = x
        s = sum(xp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
                for ky in range(kh) for kx in range(kw))
        y = sat8(round_div(s, kh * kw)) if s8 else (s / (kh * kw)).astype(np.float32)
        return [y.ravel()]
    if name == "maxpool_bwd":
        dy = ins[1].reshape(n * c, oh, ow)
        dx = np.zeros((n * c, h * w), acc_t)
        for nc in range(n * c):
            for oy in range(oh):
                for ox in range(ow):
                    best = -1
                    for ky in range(kh):
                        iy = oy * sh - ph + ky
                        if not 0 <= iy < h:
                            continue
                        for kx in range(kw):
                            ix = ox * sw - pw + kx
                            if 0 <= ix < w and (best < 0 or x[nc, iy, ix] > x.flat[nc * h * w + best]):
                                best = iy * w + ix
                    if best >= 0:
                        v = dx[nc, best] + dy[nc, oy, ox]
                        dx[nc, best] = np.clip(v, -128, 127) if s8 else v
        return [dx.astype(t).ravel()]
    # avgpool_bwd: gather of the windows that cover each input position
    dy = ins[0].reshape(n * c, oh, ow)
    dxp = np.zeros((n * c, h + 2 * ph + sh * oh + kh, w + 2 * pw + sw * ow + kw), acc_t)
    for ky in range(kh):
        for kx in range(kw):
            dxp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw] += dy
    s = dxp[:, ph:ph + h, pw:pw + w]
    y = sat8(round_div(s, kh * kw)) if s8 else (s / (kh * kw)).astype(np.float32)
    return [y.ravel()]


def _ce_sgd_reference(r, name, p, s8, ins, inputs):
    if name in ("ce_fwd", "ce_bwd"):
        n, k = p[:2]
        labels = inputs[1].astype(np.int64)
        if s8:
            exp_lut, nll_lut = _lut("CE_EXP_LUT"), _lut("CE_NLL_LUT")
            x = inputs[0].astype(np.int64).reshape(n, k)
            e = exp_lut[x.max(axis=1, keepdims=True) - x]
            prob = (e << 15) // e.sum(axis=1, keepdims=True)
            if name == "ce_fwd":
                return [nll_lut[prob[np.arange(n), labels] >> 7].astype(np.int32)]
            onehot = np.zeros((n, k), np.int64)
            onehot[np.arange(n), labels] = 32768
            return [sat8(round_div(prob - onehot, 256 * n)).ravel()]
        x = inputs[0].astype(np.float64).reshape(n, k)
        m = x.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
        if name == "ce_fwd":
            return [np.array([(lse - x[np.arange(n), labels]).mean()], np.float32)]
        prob = np.exp(x - lse[:, None])
        prob[np.arange(n), labels] -= 1.0
        return [(prob / n).astype(np.float32).ravel()]
    if name == "sgd":
        if s8:   # per-channel QAS multipliers, channel-major parameter
            ch = max(1, p[1])
            per = p[0] // ch
            q = inputs[2].astype(np.int64)
            g = ins[1].reshape(ch, per)
            upd = np.stack([requant(g[i], int(q[2 * i]), int(q[2 * i + 1])) for i in range(ch)])
            return [sat8(ins[0] - upd.ravel())]
        lr, mom = r.f
        g = ins[1]
        if mom:
            g = mom * ins[2] + g
        return [(ins[0] - lr * g).astype(np.float32)]
    raise ValueError(f"no reference for {name}")


def decode_outputs(r: RunRequest, raw: list[bytes]) -> list[np.ndarray]:
    _ins, outs = buffer_plan(r)
    if not outs:
        outs = [(buffer_plan(r)[0][0][0], "int8" if r.dtype == "int8" else "float32")]
    return [np.frombuffer(b, dtype=dt) for b, (_cnt, dt) in zip(raw, outs)]
