"""Board-specific energy sensors and facts: Jetson INA3221 rails, INA219/INA260 on I2C, Pi vcgencmd.

Python 3.6 compatible, standard library only. Every path is read below ``root`` so tests can point
the readers at a fake sysfs tree.

Jetson (TX2, Nano, Xavier) power monitors, in the layouts of the L4T releases:

* L4T 28.2 - 32.x (JetPack 3.2 - 4.6, the TX2's releases): the downstream ``ina3221x`` IIO driver,
  ``/sys/bus/i2c/drivers/ina3221x/0-0040/iio:device0/`` and ``0-0041/iio:device1/`` on a TX2, each
  with ``rail_name_{0,1,2}`` and ``in_power{0,1,2}_input`` (mW), ``in_current*_input`` (mA),
  ``in_voltage*_input`` (mV).
* L4T 28.1: the same driver with the directory named ``iio_device``.
* L4T 34+ (JetPack 5, mainline driver): ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/`` with
  ``in{1,2,3}_label``, ``in*_input`` (mV), ``curr*_input`` (mA) and ``update_interval`` (ms).

Monitors and rails are discovered from these files, never from fixed positions. The default rail is
``VDD_IN`` (the module input: whole-board power); ``rail`` / ``rails`` in the sensor options choose
others (several rails are summed).
"""
import glob
import os
import re
import shutil
import subprocess
import time

from .sensors import PowerSampler, SensorUnavailable

DEFAULT_RAIL = "VDD_IN"
#: Default sampling interval: 20x faster than tegrastats' 1 s default.
DEFAULT_INTERVAL_S = 0.05
#: Never sample faster than this, whatever the probe says.
MIN_INTERVAL_S = 0.002


def _read(path):
    with open(path) as f:
        return f.read().strip().strip("\x00")


def _try_read(path):
    try:
        return _read(path)
    except (IOError, OSError):
        return None


def _jp(root, rel):
    return os.path.join(root, rel.lstrip("/"))


# --- INA3221 discovery --------------------------------------------------------------------------

class Rail(object):
    """One INA3221 channel: ``read_mw()`` returns its power in milliwatts."""

    def __init__(self, name, monitor, channel, power_path=None, volt_path=None, curr_path=None):
        self.name = name
        self.monitor = monitor
        self.channel = channel
        self.power_path = power_path
        self.volt_path = volt_path
        self.curr_path = curr_path

    def read_mw(self):
        if self.power_path:
            return float(_read(self.power_path))
        # mainline hwmon: mV x mA / 1000 = mW
        return float(_read(self.volt_path)) * float(_read(self.curr_path)) / 1000.0

    def __repr__(self):
        return "Rail(%r, %r, %r)" % (self.name, self.monitor, self.channel)


def _iio_rails(root):
    rails = []
    dirs = set()
    for pattern in ("sys/bus/i2c/drivers/ina3221x/*/iio:device*",
                    "sys/bus/i2c/drivers/ina3221x/*/iio_device"):
        dirs.update(glob.glob(os.path.join(root, pattern)))
    for d in sorted(dirs):
        monitor = os.path.basename(os.path.dirname(d))
        for pf in sorted(glob.glob(os.path.join(d, "in_power*_input"))):
            m = re.match(r"in_power(\d+)_input$", os.path.basename(pf))
            if not m:
                continue
            ch = int(m.group(1))
            name = _try_read(os.path.join(d, "rail_name_%d" % ch)) or "%s:ch%d" % (monitor, ch)
            rails.append(Rail(name, monitor, ch, power_path=pf))
    return rails


def _hwmon_ina3221_dirs(root):
    return sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")))


def _hwmon_rails(root):
    rails = []
    for d in _hwmon_ina3221_dirs(root):
        monitor = os.path.basename(os.path.dirname(os.path.dirname(d)))
        for lf in sorted(glob.glob(os.path.join(d, "in*_label"))):
            m = re.match(r"in(\d+)_label$", os.path.basename(lf))
            if not m:
                continue
            ch = int(m.group(1))
            volt = os.path.join(d, "in%d_input" % ch)
            curr = os.path.join(d, "curr%d_input" % ch)
            if not (os.path.exists(volt) and os.path.exists(curr)):
                continue
            enable = _try_read(os.path.join(d, "in%d_enable" % ch))
            if enable == "0":
                continue
            name = _try_read(lf) or "%s:ch%d" % (monitor, ch)
            rails.append(Rail(name, monitor, ch, volt_path=volt, curr_path=curr))
    return rails


def ina3221_rails(root="/"):
    """All INA3221 rails found under ``root`` (any supported L4T layout), readable or not."""
    return _iio_rails(root) + _hwmon_rails(root)


def _update_interval_s(root):
    """The conversion cycle the driver reports (mainline ``update_interval``, ms), or None."""
    for d in _hwmon_ina3221_dirs(root):
        v = _try_read(os.path.join(d, "update_interval"))
        try:
            if v is not None and int(v) > 0:
                return int(v) / 1000.0
        except ValueError:
            pass
    return None


def probe_update_period(read, duration=0.25, poll=0.001):
    """Seconds between changes of a sensor reading (its conversion period), or None if the value
    did not change at least three times in ``duration`` (a constant load, or a fake tree)."""
    changes = []
    last = None
    t_end = time.perf_counter() + duration
    while time.perf_counter() < t_end:
        try:
            v = read()
        except (IOError, OSError, ValueError):
            return None
        now = time.perf_counter()
        if last is not None and v != last:
            changes.append(now)
        last = v
        time.sleep(poll)
    if len(changes) < 3:
        return None
    gaps = sorted(b - a for a, b in zip(changes, changes[1:]))
    return gaps[len(gaps) // 2]


class Ina3221Sensor(PowerSampler):
    """Integrates one (or the sum of several) INA3221 rails, sampled on a background thread.

    Options: ``rail`` (default VDD_IN) or ``rails`` (list, summed); ``interval_s`` (sampling
    interval; never below the sensor's conversion period); ``probe`` (measure the conversion
    period at start, default True).
    """

    def __init__(self, root="/", rail=None, rails=None, interval_s=None, probe=True):
        found = ina3221_rails(root)
        if not found:
            raise SensorUnavailable("no INA3221 power monitor under %s" % root)
        wanted = list(rails) if rails else [rail or DEFAULT_RAIL]
        by_name = {}
        for r in found:
            by_name.setdefault(r.name.upper(), r)
        chosen = []
        for w in wanted:
            r = by_name.get(str(w).upper())
            if r is None and not rail and not rails:
                # no VDD_IN on this module: take the first input rail (e.g. POM_5V_IN on Nano)
                ins = [x for x in found if x.name.upper().endswith("_IN")]
                r = ins[0] if ins else None
            if r is None:
                raise SensorUnavailable("INA3221 rail %s not found; rails: %s"
                                        % (w, ", ".join(x.name for x in found)))
            chosen.append(r)
        for r in chosen:
            try:
                r.read_mw()
            except (IOError, OSError, ValueError) as e:
                raise SensorUnavailable("INA3221 rail %s unreadable: %s" % (r.name, e))
        self.rails = chosen
        self.all_rails = [r.name for r in found]

        def read_w():
            return sum(r.read_mw() for r in chosen) / 1000.0

        conversion = _update_interval_s(root)
        if conversion is None and probe:
            conversion = probe_update_period(read_w)
        self.conversion_s = conversion
        interval = float(interval_s) if interval_s else DEFAULT_INTERVAL_S
        interval = max(interval, conversion or 0.0, MIN_INTERVAL_S)
        name = "ina3221:" + "+".join(r.name for r in chosen)
        PowerSampler.__init__(self, name, read_w, interval)


# --- INA219 / INA226 / INA260 through hwmon ------------------------------------------------------

INA2XX_CHIPS = ("ina219", "ina220", "ina226", "ina230", "ina231", "ina260")


class HwmonPowerSensor(PowerSampler):
    """An external INA219/INA226/INA260 on I2C bound to the kernel's ina2xx hwmon driver.

    Used only when configured in the inventory (``sensor_options = {hwmon = {chip = "ina219"}}``,
    or ``path = "/sys/class/hwmon/hwmon2"``, or ``i2c = "1-0040"``): the Pi has no on-board power
    monitor and an unconfigured I2C device may measure something else. Reads ``power1_input`` (uW),
    or voltage x current when the driver has no power attribute.
    """

    def __init__(self, root="/", chip=None, path=None, i2c=None, interval_s=None, probe=True):
        if not (chip or path or i2c):
            raise SensorUnavailable("no INA2xx configured (sensor_options.hwmon.chip/path/i2c)")
        candidates = []
        if path:
            candidates = [_jp(root, path)]
        else:
            for d in sorted(glob.glob(os.path.join(root, "sys/class/hwmon/hwmon*"))):
                name = _try_read(os.path.join(d, "name")) or ""
                if chip and name != chip:
                    continue
                if not chip and name not in INA2XX_CHIPS:
                    continue
                if i2c:
                    dev = os.path.realpath(os.path.join(d, "device"))
                    if os.path.basename(dev) != i2c:
                        continue
                candidates.append(d)
        for d in candidates:
            power = os.path.join(d, "power1_input")
            volt, curr = os.path.join(d, "in1_input"), os.path.join(d, "curr1_input")
            if os.path.exists(power):
                def read_w(p=power):
                    return float(_read(p)) / 1e6
            elif os.path.exists(volt) and os.path.exists(curr):
                def read_w(v=volt, c=curr):
                    return float(_read(v)) * float(_read(c)) / 1e6
            else:
                continue
            try:
                read_w()
            except (IOError, OSError, ValueError):
                continue
            conversion = None
            v = _try_read(os.path.join(d, "update_interval"))
            if v and v.isdigit() and int(v) > 0:
                conversion = int(v) / 1000.0
            elif probe:
                conversion = probe_update_period(read_w)
            self.conversion_s = conversion
            interval = float(interval_s) if interval_s else DEFAULT_INTERVAL_S
            interval = max(interval, conversion or 0.0, MIN_INTERVAL_S)
            chip_name = _try_read(os.path.join(d, "name")) or "ina2xx"
            PowerSampler.__init__(self, "hwmon:%s:%s" % (chip_name, os.path.basename(d)),
                                  read_w, interval)
            return
        raise SensorUnavailable("configured INA2xx (%s) not found under %s"
                                % (chip or path or i2c, root))


def sensor_factories():
    """(kind, factory) pairs tried before RAPL by ``sensors.find_sensor``."""
    return [("ina3221", Ina3221Sensor), ("hwmon", HwmonPowerSensor)]


# --- Raspberry Pi: vcgencmd ---------------------------------------------------------------------

THROTTLE_BITS = {0: "under_voltage", 1: "arm_frequency_capped", 2: "throttled",
                 3: "soft_temperature_limit"}


def decode_throttled(value):
    """``get_throttled`` bits: 0-3 happening now, 16-19 happened since boot."""
    v = int(value, 16) if isinstance(value, str) else int(value)
    now = dict((name, bool(v >> bit & 1)) for bit, name in THROTTLE_BITS.items())
    since = dict((name, bool(v >> (bit + 16) & 1)) for bit, name in THROTTLE_BITS.items())
    return {"raw": "0x%x" % v, "now": now, "since_boot": since,
            "throttled_now": bool(v & 0xF), "throttled_since_boot": bool(v & 0xF0000)}


def find_vcgencmd(root="/"):
    """The vcgencmd tool: ``<root>/usr/bin/vcgencmd`` in a fake tree, else on PATH."""
    if root not in ("/", ""):
        for rel in ("usr/bin/vcgencmd", "opt/vc/bin/vcgencmd"):
            p = os.path.join(root, rel)
            if os.access(p, os.X_OK):
                return p
    found = shutil.which("vcgencmd")
    if found:
        return found
    p = "/opt/vc/bin/vcgencmd"
    return p if os.access(p, os.X_OK) else None


def _vcgencmd(tool, *args):
    try:
        p = subprocess.Popen([tool] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True)
    except OSError:
        return None
    try:
        out, _ = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None
    return out.strip() if p.returncode == 0 else None


def vcgencmd_facts(root="/"):
    """Pi firmware facts: ARM clock (Hz), SoC temperature and throttling flags, or {}."""
    tool = find_vcgencmd(root)
    if not tool:
        return {}
    facts = {"vcgencmd": tool}
    out = _vcgencmd(tool, "measure_clock", "arm")
    m = re.search(r"=\s*(\d+)", out or "")
    facts["arm_clock_hz"] = int(m.group(1)) if m else None
    out = _vcgencmd(tool, "measure_temp")
    m = re.search(r"temp=([-\d.]+)", out or "")
    facts["soc_temp_c"] = float(m.group(1)) if m else None
    out = _vcgencmd(tool, "get_throttled")
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", out or "")
    facts["throttled"] = decode_throttled(m.group(1)) if m else None
    return facts


def board_facts(root="/"):
    """Facts added to ``sysinfo.collect``: power rails (Jetson) and vcgencmd readings (Pi)."""
    facts = {}
    rails = ina3221_rails(root)
    if rails:
        facts["power_rails"] = [r.name for r in rails]
    facts.update(vcgencmd_facts(root))
    return facts
