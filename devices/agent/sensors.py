"""Energy sensors readable on the device, all behind one small interface.

``EnergyMeter.start()`` / ``stop()`` brackets a measured window and returns the joules spent in it.
Two kinds exist: *counters* (Intel RAPL's ``energy_uj``, which wraps at ``max_energy_range_uj``) and
*power monitors* (INA3221 on the Jetson TX2, INA219/INA260 through hwmon) that are sampled by a
background thread and integrated over time (trapezoid rule). The sysfs root is a parameter so tests
can point every reader at a fake tree.
"""
import glob
import os
import threading
import time


def _read(path):
    with open(path) as f:
        return f.read().strip()


class SensorUnavailable(Exception):
    pass


class RaplCounter(object):
    """Package energy from ``/sys/class/powercap/intel-rapl:N/energy_uj`` (top-level domains only).

    Several packages are summed. Each domain's counter wraps at its ``max_energy_range_uj``; a
    window shorter than one wrap period is handled exactly (RAPL wraps after minutes, our windows
    last milliseconds). Permission denied (non-root on recent kernels) means no sensor.
    """

    kind = "counter"

    def __init__(self, root="/"):
        base = os.path.join(root, "sys/class/powercap")
        self.domains = []
        for d in sorted(glob.glob(os.path.join(base, "intel-rapl:*"))):
            name = os.path.basename(d)
            if name.count(":") != 1:  # sub-domains (core, uncore, dram) are inside the package
                continue
            try:
                max_range = int(_read(os.path.join(d, "max_energy_range_uj")))
                int(_read(os.path.join(d, "energy_uj")))
            except (IOError, OSError, ValueError):
                continue
            label = name
            try:
                label = _read(os.path.join(d, "name"))
            except (IOError, OSError):
                pass
            self.domains.append((os.path.join(d, "energy_uj"), max_range, label))
        if not self.domains:
            raise SensorUnavailable("no readable RAPL domain under %s" % base)
        self.name = "rapl:" + "+".join(label for _, _, label in self.domains)

    def read_uj(self):
        return [int(_read(path)) for path, _, _ in self.domains]

    @staticmethod
    def delta_uj(before, after, max_range):
        """Energy between two readings of one counter, across at most one wraparound."""
        if after >= before:
            return after - before
        return (max_range - before) + after

    def start(self):
        self._t0 = time.perf_counter()
        self._start = self.read_uj()

    def stop(self):
        end = self.read_uj()
        self.last_window_s = time.perf_counter() - self._t0
        total = 0
        for (path, max_range, _), b, a in zip(self.domains, self._start, end):
            total += self.delta_uj(b, a, max_range)
        return total * 1e-6


class PowerSampler(object):
    """Samples a power reading (watts) on a background thread and integrates windows of it.

    ``read_w`` is a callable returning instantaneous watts. The interval should be no shorter than
    the sensor's conversion time (faster sampling only repeats values).
    """

    kind = "power"

    def __init__(self, name, read_w, interval_s=0.005):
        self.name = name
        self.read_w = read_w
        self.interval_s = interval_s
        self._samples = []  # (t, watts)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._t0 = None

    def _run(self):
        while not self._stop.is_set():
            try:
                w = self.read_w()
            except (IOError, OSError, ValueError):
                w = None
            if w is not None:
                with self._lock:
                    self._samples.append((time.perf_counter(), w))
            self._stop.wait(self.interval_s)

    def open(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="costdb-power", daemon=True)
            self._thread.start()

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    def start(self):
        self.open()
        with self._lock:
            self._samples = []
        self._t0 = time.perf_counter()

    def stop(self):
        t1 = time.perf_counter()
        # make sure at least one sample after the window closes is taken
        try:
            w = self.read_w()
            with self._lock:
                self._samples.append((t1, w))
        except (IOError, OSError, ValueError):
            pass
        with self._lock:
            samples = list(self._samples)
        self.last_window_s = t1 - self._t0
        return integrate(samples, self._t0, t1)


def integrate(samples, t0, t1):
    """Trapezoid integral of (t, watts) samples over [t0, t1], holding end values flat."""
    pts = sorted(s for s in samples if s[1] is not None)
    if not pts or t1 <= t0:
        return 0.0
    inside = [(t, w) for t, w in pts if t0 < t < t1]
    before = [(t, w) for t, w in pts if t <= t0]
    after = [(t, w) for t, w in pts if t >= t1]
    w0 = before[-1][1] if before else (inside[0][1] if inside else after[0][1])
    w1 = after[0][1] if after else (inside[-1][1] if inside else before[-1][1])
    seq = [(t0, w0)] + inside + [(t1, w1)]
    energy = 0.0
    for (ta, wa), (tb, wb) in zip(seq, seq[1:]):
        energy += 0.5 * (wa + wb) * (tb - ta)
    return energy


def find_sensor(root="/", prefer=None, options=None):
    """The best energy sensor on this device, or None.

    ``prefer`` names a sensor kind ("rapl", "ina3221", "hwmon"); ``options`` carries inventory
    settings (e.g. the rail to integrate, the hwmon device of an INA219/INA260).
    """
    options = options or {}
    factories = [("rapl", RaplCounter)]
    try:
        from . import boards  # optional board-specific sensors (INA3221, hwmon INA2xx)
        factories = boards.sensor_factories() + factories
    except ImportError:
        pass
    for kind, factory in factories:
        if prefer and kind != prefer:
            continue
        try:
            return factory(root=root, **options.get(kind, {}))
        except SensorUnavailable:
            continue
    return None
