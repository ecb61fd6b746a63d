"""Built-in device profiles. Every datasheet figure names its source in ``sources``.

Figures are SI units (bytes, seconds, watts, hertz, joules). ``flops_per_s`` is the *effective*
rate the analytic cost model uses for devices that have not been profiled yet (provenance
``modeled``); measured costs always replace it.

Sources cited by key:
- POET: Patil et al., "POET: Training Neural Networks on Tiny Devices with Integrated
  Rematerialization and Paging", ICML 2022, and its released ``poet/chipsets.py``.
- TX2-DS: NVIDIA Jetson TX2 Series Module Data Sheet (DS-08470), v1.x.
- RPI4-PB: Raspberry Pi 4 Model B product brief / datasheet (2019-2024).
- SAMD21-DS: Microchip SAM D21/DA1 family data sheet (DS40001882), electrical characteristics.
- NRF52840-PS: Nordic nRF52840 Product Specification v1.7, section 5.2 (current consumption).
- MKR1000: Arduino MKR1000 WiFi product page / schematics (SAMD21G18A, 48 MHz, 32 KB SRAM).
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, replace
from typing import Any

from costdb.errors import CostdbError

TRANSPORTS = ("local", "ssh", "serial")


@dataclass(frozen=True)
class StorageProfile:
    """Secondary storage used for paging activations (POET's page-in / page-out)."""

    kind: str
    read_bytes_per_s: float
    write_bytes_per_s: float
    read_latency_s: float
    write_latency_s: float
    #: energy per byte paged = storage power / throughput (POET's MEMORY_POWER / THROUGHPUT)
    read_energy_j_per_byte: float
    write_energy_j_per_byte: float


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    board: str
    cpu: str
    arch: str
    cores: int
    clock_hz: float
    ram_bytes: int
    storage: StorageProfile
    idle_power_w: float
    active_power_w: float
    flops_per_s: float
    transport: str
    compute_units: tuple[str, ...] = ("cpu",)
    energy_sensors: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    description: str = ""
    based_on: str | None = None

    @property
    def net_active_power_w(self) -> float:
        """Power attributable to compute: active minus idle (POET's POWER figure)."""
        return max(0.0, self.active_power_w - self.idle_power_w)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "storage"}
        d["storage"] = dict(self.storage.__dict__)
        d["compute_units"] = list(self.compute_units)
        d["energy_sensors"] = list(self.energy_sensors)
        return d

    def with_overrides(self, name: str, overrides: dict[str, Any]) -> "DeviceProfile":
        """A new profile based on this one (inventory ``based_on``), overriding scalar fields."""
        storage = self.storage
        fields = dict(overrides)
        if "storage" in fields:
            s = fields.pop("storage")
            try:
                storage = replace(storage, **s)
            except TypeError as e:
                raise CostdbError(f"device {name}: bad storage field ({e})") from None
        for k in ("compute_units", "energy_sensors"):
            if k in fields:
                fields[k] = tuple(fields[k])
        try:
            return replace(self, name=name, storage=storage, based_on=self.name, **fields)
        except TypeError as e:
            raise CostdbError(f"device {name}: unknown profile field ({e})") from None


def _sd(read_bps, write_bps, read_lat, write_lat, power_w, kind="microSD"):
    return StorageProfile(kind, read_bps, write_bps, read_lat, write_lat,
                          power_w / read_bps, power_w / write_bps)


def _local_profile() -> DeviceProfile:
    """This host. Power figures are nominal assumptions (no datasheet for an unknown machine);
    override them in the inventory, or attach a RAPL sensor for measured energy."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 0
    cores = os.cpu_count() or 1
    return DeviceProfile(
        name="local", board=platform.node() or "this host", cpu=platform.processor() or platform.machine(),
        arch=platform.machine(), cores=cores, clock_hz=0.0, ram_bytes=ram,
        storage=StorageProfile("disk", 500e6, 400e6, 100e-6, 100e-6, 2.0 / 500e6, 2.0 / 400e6),
        idle_power_w=5.0 * cores, active_power_w=15.0 * cores, flops_per_s=10e9 * cores,
        transport="local", energy_sensors=("rapl",),
        sources={"power": "assumed nominal 15 W/core active, 5 W/core idle (no datasheet)",
                 "storage": "assumed NVMe/SSD-class figures (no datasheet)",
                 "flops_per_s": "assumed 10 GFLOP/s per core effective"},
        description="the machine costdb runs on (in-process agent)")


CATALOG: dict[str, DeviceProfile] = {}


def _register(p: DeviceProfile) -> None:
    CATALOG[p.name] = p


_register(DeviceProfile(
    name="jetson-tx2", board="NVIDIA Jetson TX2", cpu="2x Denver2 + 4x Cortex-A57",
    arch="aarch64", cores=6, clock_hz=2.0e9, ram_bytes=8 * 1024**3,
    storage=_sd(108.5e6, 94.37e6, 0.54e-3, 2.396e-3, 0.309, kind="eMMC/SD"),
    idle_power_w=0.229, active_power_w=0.995, flops_per_s=30e9, transport="ssh",
    compute_units=("cpu", "gpu"), energy_sensors=("ina3221",),
    sources={"cpu/ram/clock": "TX2-DS: 2x Denver2 2.0 GHz + 4x A57 2.0 GHz, 8 GB LPDDR4",
             "gpu": "TX2-DS: 256-core Pascal, 1.3 GHz",
             "storage": "POET chipsets.py JetsonTX2: page-in 0.54 ms / 108.5 MB/s, page-out 2.396 ms / 94.37 MB/s, memory power 309 mW",
             "power": "POET chipsets.py JetsonTX2: 995 mW one CPU busy, 229 mW baseline",
             "flops_per_s": "assumed effective 30 GFLOP/s (GPU, small batches); POET measured per layer"},
    description="Jetson TX2 over SSH; INA3221 rails give measured energy"))

_register(DeviceProfile(
    name="rpi4b", board="Raspberry Pi 4 Model B", cpu="4x Cortex-A72", arch="aarch64", cores=4,
    clock_hz=1.5e9, ram_bytes=4 * 1024**3,
    storage=_sd(45.5e6, 24.5e6, 5.09561e-6, 18.5314e-6, 0.15),
    idle_power_w=2.7, active_power_w=2.7 + 3.0, flops_per_s=2e9, transport="ssh",
    energy_sensors=("ina219", "ina260"),
    sources={"cpu/clock/ram": "RPI4-PB: BCM2711 4x A72 1.5 GHz, 1/2/4/8 GB (4 GB assumed)",
             "storage": "POET chipsets.py RPi: page-in 5.1 us / 45.5 MB/s, page-out 18.5 us / 24.5 MB/s (cached), memory power 30 mA x 5 V",
             "power": "POET chipsets.py RPi: 600 mA x 5 V over idle; idle 2.7 W from RPI4-PB measurements",
             "flops_per_s": "POET chipsets.py RPi FLOPS = 2 GFLOP/s nominal"},
    description="Raspberry Pi 4B over SSH; energy modelled unless an INA219/INA260 is configured"))

_register(DeviceProfile(
    name="mkr1000", board="Arduino MKR1000 (SAMD21G18A)", cpu="Cortex-M0+", arch="armv6-m",
    cores=1, clock_hz=48e6, ram_bytes=32 * 1024,
    storage=_sd(4616.51e3, 4440e3, 0.109e-3, 0.113e-3, 0.33),
    idle_power_w=0.0, active_power_w=20e-3 * 3.3, flops_per_s=2000 / 0.012, transport="serial",
    sources={"cpu/clock/ram": "MKR1000 / SAMD21-DS: Cortex-M0+ 48 MHz, 32 KB SRAM, 256 KB flash",
             "storage": "POET chipsets.py MKR1000: SD page-in 0.109 ms / 4.62 MB/s, page-out 0.113 ms / 4.44 MB/s, 100 mA x 3.3 V",
             "power": "POET chipsets.py MKR1000: 20 mA x 3.3 V active",
             "flops_per_s": "POET chipsets.py MKR1000: 2000 FLOP / 12 ms (software float)"},
    description="Cortex-M0+ over serial (C firmware agent)"))

_register(DeviceProfile(
    name="nrf52840", board="Nordic nRF52840", cpu="Cortex-M4F", arch="armv7e-m", cores=1,
    clock_hz=64e6, ram_bytes=256 * 1024,
    storage=_sd(4616.51e3, 4440e3, 0.109e-3, 0.113e-3, 0.33, kind="SD/flash"),
    idle_power_w=0.0, active_power_w=3.328e-3 * 3.3, flops_per_s=16283 * 100 * 1000 / 255.6237,
    transport="serial",
    sources={"cpu/clock/ram": "NRF52840-PS: Cortex-M4F 64 MHz, 256 KB RAM, 1 MB flash",
             "storage": "POET chipsets.py M4F: same SD figures as MKR1000",
             "power": "POET chipsets.py M4F / NRF52840-PS: 3.328 mA x 3.3 V running from flash",
             "flops_per_s": "POET chipsets.py M4F: 6.37 MFLOP/s measured"},
    description="Cortex-M4F over serial (C firmware agent)"))

# Emulated boards: the same firmware on QEMU (devices/serial/qemu.py). Timings are QEMU -icount
# instruction counts (provenance "emulated"); energy is modelled with the power figures of the
# real board each one stands in for.
_register(replace(
    CATALOG["mkr1000"], name="qemu-m0", board="QEMU microbit (nRF51822, emulated)",
    cpu="Cortex-M0", arch="armv6-m", clock_hz=16e6, ram_bytes=16 * 1024,
    sources={**CATALOG["mkr1000"].sources,
             "cpu/clock/ram": "QEMU 'microbit' machine: nRF51822 Cortex-M0, 16 MHz, 16 KB RAM",
             "power": "modelled with the MKR1000 figures (POET chipsets.py: 20 mA x 3.3 V)"},
    description="Emulated Cortex-M0 (QEMU microbit) over TCP serial; stands in for mkr1000"))

_register(replace(
    CATALOG["nrf52840"], name="qemu-m4f", board="QEMU mps2-an386 (emulated, RAM limited to 256 KB)",
    cpu="Cortex-M4F", arch="armv7e-m", clock_hz=25e6, ram_bytes=256 * 1024,
    sources={**CATALOG["nrf52840"].sources,
             "cpu/clock/ram": "QEMU 'mps2-an386' machine: Cortex-M4 with FPU, 25 MHz; the firmware's linker script limits RAM to the nRF52840's 256 KB",
             "power": "modelled with the nRF52840 figures (NRF52840-PS: 3.328 mA x 3.3 V)"},
    description="Emulated Cortex-M4F (QEMU mps2-an386) over TCP serial; stands in for nrf52840"))


# The SSH side's emulated board: QEMU's `virt` machine with `-cpu cortex-a72` (the Pi 4B's core,
# ARMv8.0-A) booting a Debian 12 arm64 image costdb builds itself (devices/emulated/). Runtimes
# are QEMU TCG wall-clock times (provenance "emulated"): never Pi 4B timings.
_register(replace(
    CATALOG["rpi4b"], name="qemu-a72", board="QEMU virt (Cortex-A72, emulated)",
    cpu="4x Cortex-A72 (QEMU TCG)", ram_bytes=2 * 1024**3, clock_hz=0.0,
    energy_sensors=(),
    sources={**CATALOG["rpi4b"].sources,
             "cpu/clock/ram": "QEMU 'virt' machine, -cpu cortex-a72 -smp 4 -m 2G (2-4 GiB, "
                              "costdb board start --memory); no clock: TCG translates, it does "
                              "not count cycles",
             "power": "modelled with the Raspberry Pi 4B figures (POET chipsets.py RPi)"},
    description="Emulated Cortex-A72 board (QEMU virt, Debian 12 arm64, PyPI's aarch64 torch) "
                "over SSH on 127.0.0.1; stands in for rpi4b"))


def catalog() -> dict[str, DeviceProfile]:
    """All built-in profiles, ``local`` computed for this host."""
    out = dict(CATALOG)
    out["local"] = _local_profile()
    return dict(sorted(out.items()))


def get_profile(name: str, inventory: Any = None) -> DeviceProfile:
    """Profile of a device from the inventory (if given) or the catalog."""
    if inventory is not None:
        entry = inventory.devices.get(name)
        if entry is not None:
            return entry.profile
    profiles = catalog()
    if name not in profiles:
        known = list(profiles)
        if inventory is not None:
            known = sorted(set(known) | set(inventory.devices))
        from costdb.errors import did_you_mean
        raise CostdbError(f"unknown device {name!r}{did_you_mean(name, known)}; known devices: "
                          f"{', '.join(known)}")
    return profiles[name]
