"""Time, memory and energy of one training op, the way pyperf times a benchmark.

Warm-ups first; then an inner loop calibrated (doubling, like ``timeit.autorange``) until one
sample lasts at least ``min_sample_time``; then ``samples`` repeated samples. The median per-call
time is the estimate; stdev, IQR, min, max and CV are kept. An op whose CV exceeds
``cv_threshold`` is measured again with twice the samples and flagged unstable if still above.
"""
import os
import sys
import time

import torch

from . import kernels
from .stats import summarize

DEFAULTS = {
    "warmups": 3,
    "min_sample_time": 0.01,
    "samples": 15,
    "max_inner_loops": 1 << 20,
    "cv_threshold": 0.10,
    "measure_memory": True,
}


_OOM_MARKERS = ("out of memory", "not enough memory", "can't allocate memory",
                "cannot allocate memory")


def _is_oom(e):
    msg = str(e).lower()
    return isinstance(e, MemoryError) or any(m in msg for m in _OOM_MARKERS)


def needed_bytes(spec):
    """Lower bound of the memory an op needs: its inputs and parameters (4 bytes/element here)."""
    size = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}.get(spec.get("dtype"), 4)
    total = 0
    shapes = list(spec.get("inputs") or []) + [s for s in (spec.get("params") or {}).values() if s]
    for shape in shapes:
        n = 1
        for d in shape:
            n *= int(d)
        total += n * size
    return total


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _out_bytes(result):
    if isinstance(result, torch.Tensor):
        return kernels.tensor_bytes(result)
    if isinstance(result, (tuple, list)):
        return sum(_out_bytes(r) for r in result if r is not None)
    return 0


class _quiet_stderr(object):
    """Silence C++-level stderr chatter (kineto prints on every profiler start) for a moment."""

    def __enter__(self):
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            self._null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(self._null, 2)
        except (OSError, ValueError, AttributeError):
            self._saved = None
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            os.close(self._null)
        return False


def peak_memory_bytes(runnable, device):
    """Bytes allocated by one call beyond its inputs, at the call's high-water mark."""
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        r = runnable.call()
        _sync(device)
        peak = torch.cuda.max_memory_allocated() - base
        del r
        return max(0, int(peak))
    with _quiet_stderr():
        with torch.autograd.profiler.profile(profile_memory=True) as prof:
            r = runnable.call()
            del r
    events = sorted(prof.function_events, key=lambda e: e.time_range.start)
    running = 0
    peak = 0
    for e in events:
        running += getattr(e, "self_cpu_memory_usage", 0) or 0
        peak = max(peak, running)
    return int(peak)


def _time_calls(call, n, device):
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    _sync(device)
    return time.perf_counter() - t0


def calibrate(call, device, min_time, max_loops):
    n = 1
    while True:
        dt = _time_calls(call, n, device)
        if dt >= min_time or n >= max_loops:
            return n
        if dt > 0:
            n = min(max_loops, max(n * 2, int(n * min_time / dt * 1.2) + 1))
        else:
            n = min(max_loops, n * 10)


def _sample(call, n, count, device, meter):
    times = []
    if meter is not None:
        meter.start()
    t_start = time.perf_counter()
    for _ in range(count):
        times.append(_time_calls(call, n, device) / n)
    window = time.perf_counter() - t_start
    energy = meter.stop() if meter is not None else None
    # the meter's own window is the one its energy covers (a few microseconds wider)
    window = getattr(meter, "last_window_s", None) or window
    return times, window, energy


def measure_op(spec, settings=None, device="cpu", meter=None):
    """Measure ``spec`` and return a JSON-serialisable result dict (see docs/protocol.md)."""
    s = dict(DEFAULTS)
    s.update(settings or {})
    result = {"signature": spec.get("signature"), "status": "ok", "error": None,
              "runtime_provenance": "measured", "device": device}
    try:
        runnable = kernels.prepare(spec, device)
    except kernels.UnsupportedOp as e:
        result.update(status="unsupported", error=str(e))
        return result
    except (MemoryError, RuntimeError) as e:
        if _is_oom(e):
            result.update(status="does_not_fit", error=str(e).splitlines()[0][:300],
                          needed_bytes=needed_bytes(spec))
            return result
        raise
    try:
        call = runnable.call
        out = None
        for _ in range(max(1, int(s["warmups"]))):
            out = call()
        _sync(device)
        result["output_bytes"] = _out_bytes(out)
        del out
        n = calibrate(call, device, float(s["min_sample_time"]), int(s["max_inner_loops"]))
        times, window, energy = _sample(call, n, int(s["samples"]), device, meter)
        stats = summarize(times)
        remeasured = False
        if stats["cv"] > s["cv_threshold"]:
            remeasured = True
            times, window, energy = _sample(call, n, 2 * int(s["samples"]), device, meter)
            stats = summarize(times)
        calls = n * len(times)
        result["runtime"] = stats
        result["inner_loops"] = n
        result["remeasured"] = remeasured
        result["unstable"] = stats["cv"] > s["cv_threshold"]
        if energy is not None:
            result["energy"] = {"gross_j": energy / calls, "window_s": window / calls,
                                "sensor": getattr(meter, "name", "sensor")}
        if s["measure_memory"]:
            result["peak_memory_bytes"] = peak_memory_bytes(runnable, device)
        result["input_bytes"] = runnable.inputs_bytes
    except (MemoryError, RuntimeError) as e:
        if _is_oom(e):
            result.update(status="does_not_fit", error=str(e).splitlines()[0][:300],
                          needed_bytes=needed_bytes(spec))
            return result
        result.update(status="error", error=("%s: %s" % (type(e).__name__, e)).splitlines()[0][:300])
    return result


def measure_idle_power(meter, seconds=1.0):
    """Average watts while the agent sleeps: the per-session baseline for net energy."""
    if meter is None:
        return None
    meter.start()
    time.sleep(seconds)
    joules = meter.stop()
    return joules / (getattr(meter, "last_window_s", None) or seconds)
