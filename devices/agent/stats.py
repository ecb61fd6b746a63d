"""Summary statistics of repeated timing samples (median estimate, dispersion kept)."""
import math


def _quantile(sorted_values, q):
    """Linear-interpolated quantile of an already sorted list (numpy's default method)."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    pos = (n - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] * (1.0 - frac) + sorted_values[hi] * frac


def summarize(samples):
    """Median, stdev, IQR, min, max, CV and count of per-call times (seconds)."""
    if not samples:
        raise ValueError("no samples")
    values = sorted(float(v) for v in samples)
    n = len(values)
    mean = sum(values) / n
    if n > 1:
        var = sum((v - mean) ** 2 for v in values) / (n - 1)
        stdev = math.sqrt(var)
    else:
        stdev = 0.0
    median = _quantile(values, 0.5)
    return {
        "median": median,
        "mean": mean,
        "stdev": stdev,
        "iqr": _quantile(values, 0.75) - _quantile(values, 0.25),
        "min": values[0],
        "max": values[-1],
        # CV relative to the mean (pyperf's definition); 0 for a zero-time op.
        "cv": (stdev / mean) if mean > 0 else 0.0,
        "samples": n,
    }
