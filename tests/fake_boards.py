"""Fake sysfs trees of the boards the agent reads: Jetson TX2 INA3221 rails, RAPL, Pi vcgencmd."""
from __future__ import annotations

import os
import threading
from pathlib import Path

# TX2 (L4T 32.x): 0-0040 = GPU, SOC, WIFI; 0-0041 = IN, CPU, DDR (positions differ on purpose
# from what a hard-coded reader would expect)
TX2_RAILS = {
    "0-0040/iio:device0": ["VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI"],
    "0-0041/iio:device1": ["VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR"],
}


def make_tx2_tree(root: Path, mw: dict[str, float] | None = None, layout: str = "iio") -> dict[str, Path]:
    """Write a TX2 INA3221 tree; returns rail name -> power file (mW for iio layouts).

    layout: "iio" (L4T 28.2-32.x), "iio_device" (L4T 28.1) or "hwmon" (mainline ina3221, L4T 34+;
    the returned path is the current file, voltage is fixed at 5000 mV)."""
    mw = mw or {}
    files = {}
    (root / "proc/device-tree").mkdir(parents=True, exist_ok=True)
    (root / "proc/device-tree/model").write_text("quill\x00")
    for i, (sub, rails) in enumerate(TX2_RAILS.items()):
        addr = sub.split("/")[0]
        if layout == "hwmon":
            d = root / "sys/bus/i2c/drivers/ina3221" / addr / "hwmon" / f"hwmon{i + 1}"
        elif layout == "iio_device":
            d = root / "sys/bus/i2c/drivers/ina3221x" / addr / "iio_device"
        else:
            d = root / "sys/bus/i2c/drivers/ina3221x" / sub
        d.mkdir(parents=True, exist_ok=True)
        for ch, name in enumerate(rails):
            p = mw.get(name, 1000.0)
            if layout == "hwmon":
                n = ch + 1
                (d / f"in{n}_label").write_text(name + "\n")
                (d / f"in{n}_input").write_text("5000\n")
                (d / f"curr{n}_input").write_text(f"{p / 5.0:g}\n")
                files[name] = d / f"curr{n}_input"
            else:
                (d / f"rail_name_{ch}").write_text(name + "\n")
                (d / f"in_power{ch}_input").write_text(f"{int(p)}\n")
                (d / f"in_current{ch}_input").write_text(f"{int(p / 5)}\n")
                (d / f"in_voltage{ch}_input").write_text("5000\n")
                files[name] = d / f"in_power{ch}_input"
        if layout == "hwmon":
            (d / "update_interval").write_text("10\n")
    return files


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class PowerScript(threading.Thread):
    """Changes a power file over time: ``steps`` is a list of (seconds, milliwatts)."""

    def __init__(self, path: Path, steps: list[tuple[float, float]]):
        super().__init__(daemon=True)
        self.path, self.steps = path, steps
        self.stop_event = threading.Event()
        self.times: list[tuple[float, float]] = []

    def run(self) -> None:
        import time
        for secs, mw in self.steps:
            write_atomic(self.path, f"{int(mw)}\n")
            self.times.append((time.perf_counter(), mw))
            if self.stop_event.wait(secs):
                return


def make_rapl_tree(root: Path, packages: list[tuple[int, int]], readable: bool = True) -> list[Path]:
    """intel-rapl:N with (energy_uj, max_energy_range_uj), plus a sub-domain that must be skipped."""
    out = []
    for i, (uj, rng) in enumerate(packages):
        d = root / "sys/class/powercap" / f"intel-rapl:{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(f"package-{i}\n")
        (d / "energy_uj").write_text(f"{uj}\n")
        (d / "max_energy_range_uj").write_text(f"{rng}\n")
        sub = root / "sys/class/powercap" / f"intel-rapl:{i}:0"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("5\n")
        (sub / "max_energy_range_uj").write_text(f"{rng}\n")
        out.append(d / "energy_uj")
    return out


def make_pi_tree(root: Path, throttled: str = "0x0", arm_hz: int = 1500000000,
                 temp: float = 48.3) -> Path:
    """A Pi 4B tree with a fake vcgencmd at <root>/usr/bin/vcgencmd (what the agent looks for)."""
    (root / "proc/device-tree").mkdir(parents=True, exist_ok=True)
    (root / "proc/device-tree/model").write_text("Raspberry Pi 4 Model B Rev 1.4\x00")
    tool = root / "usr/bin/vcgencmd"
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  measure_clock) echo "frequency(48)={arm_hz}" ;;\n'
        f"  measure_temp) echo \"temp={temp}'C\" ;;\n"
        f'  get_throttled) echo "throttled=$(cat {root / "throttled"})" ;;\n'
        '  *) echo "error=1 error_msg=\\"Command not registered\\"" ; exit 1 ;;\n'
        "esac\n")
    tool.chmod(0o755)
    (root / "throttled").write_text(throttled + "\n")   # change it to throttle mid-session
    return tool
