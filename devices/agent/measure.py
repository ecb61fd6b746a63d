"""Time, memory and energy of one training op, the way pyperf times a benchmark.

Warm-ups first, then ``samples`` repeated samples; the median per-call time is the estimate;
stdev, IQR, min, max and CV are kept. An op whose CV exceeds ``cv_threshold`` is measured again
with twice the samples and flagged unstable if still above.

Cache state (``cache`` setting). ``warm`` (default) is the classic calibrated inner loop
(doubling, like ``timeit.autorange``, until a sample lasts ``min_sample_time``). In a training
iteration, though, every op runs after other ops have evicted its data, code and scratch buffers
from the private caches, so a hot loop under-estimates it. ``cold`` writes a buffer of twice the
L2 size (single-threaded memset, untimed) before every call and times each call on its own; a
sample is the mean of up to ``max_cold_calls`` calls. Measured on ResNet-18 (docs/benchmarks.md):
single-threaded, cold predicts a whole iteration within a few percent where warm is ~24 % low;
with two intra-op threads cold over-estimates, so it is not the default. Energy from a sensor is
always integrated over a warm inner loop, so eviction writes never enter it.
"""
import ctypes
import math
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
    "cache": "warm",
    "evict_bytes": None,      # default: twice the L2 size read from sysfs, else 8 MiB
    "max_cold_calls": 40,
}

_EVICTORS = {}


class Evictor(object):
    """Writes a buffer larger than the private caches so that the next call starts cold."""

    def __init__(self, nbytes, device):
        self.nbytes = int(nbytes)
        self.value = 0
        self.device = device
        if device.startswith("cuda"):
            self.buf = torch.empty(self.nbytes, dtype=torch.uint8, device=device)
        else:
            # a plain single-threaded memset: leaves torch's thread pool alone between calls
            self.buf = ctypes.create_string_buffer(self.nbytes)

    def __call__(self):
        self.value = (self.value + 1) & 0xFF
        if self.device.startswith("cuda"):
            self.buf.fill_(self.value)
        else:
            ctypes.memset(self.buf, self.value, self.nbytes)


def evictor(nbytes, device):
    key = (int(nbytes), device)
    if key not in _EVICTORS:
        _EVICTORS[key] = Evictor(nbytes, device)
    return _EVICTORS[key]


def default_evict_bytes(root="/"):
    from . import sysinfo
    l2 = sysinfo.cache_sizes(root).get("L2")
    return 2 * l2 if l2 else 8 << 20


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


def _sample_cold(call, n, count, device, evict):
    times = []
    for _ in range(count):
        total = 0.0
        for _ in range(n):
            evict()
            _sync(device)
            t0 = time.perf_counter()
            call()
            _sync(device)
            total += time.perf_counter() - t0
        times.append(total / n)
    return times


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
        samples = int(s["samples"])
        if s["cache"] == "cold":
            evict = evictor(s.get("evict_bytes") or default_evict_bytes(), device)
            probe = sorted(_sample_cold(call, 1, 3, device, evict))[1]
            n = max(1, min(int(s["max_cold_calls"]),
                           int(math.ceil(float(s["min_sample_time"]) / max(probe, 1e-9)))))

            def take(count):
                return _sample_cold(call, n, count, device, evict), None, None
        else:
            n = calibrate(call, device, float(s["min_sample_time"]), int(s["max_inner_loops"]))

            def take(count):
                return _sample(call, n, count, device, meter)
        times, window, energy = take(samples)
        stats = summarize(times)
        remeasured = False
        raw = {"inner_loops": n}
        if stats["cv"] > s["cv_threshold"]:
            remeasured = True
            raw["first_values"] = times
            times, window, energy = take(2 * samples)
            stats = summarize(times)
        raw["values"] = times
        calls = n * len(times)
        if meter is not None and energy is None:  # cold timing: energy over a warm loop
            n_warm = calibrate(call, device, float(s["min_sample_time"]), int(s["max_inner_loops"]))
            _, window, energy = _sample(call, n_warm, samples, device, meter)
            calls = n_warm * samples
        result["runtime"] = stats
        result["raw"] = raw
        result["inner_loops"] = n
        result["cache"] = s["cache"]
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
