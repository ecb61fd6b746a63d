"""Board facts the host needs before (or without) a handshake: firmware target, QEMU machine,
clock, memory, and the datasheet figures the energy model uses. The device catalog
(devices/catalog.py) is the user-facing list; this table is what the serial code itself needs.

Datasheet figures (active current while running from flash, typical):
- SAMD21G18A (MKR1000): ~3.1 mA at 48 MHz, 3.3 V, CoreMark from flash — Microchip SAM D21
  datasheet DS40001882, "Active Current Consumption" table (IDD ACTIVE, CPU running CoreMark).
  POET's chipsets.py uses 20 mA x 3.3 V for the whole MKR1000 board; that is kept as the
  board-level figure (it includes regulators and the WINC1500 module idle draw).
- nRF52840: 3.3 mA at 64 MHz running CoreMark from flash, DC/DC on (Nordic nRF52840 Product
  Specification v1.7, 5.2 "CPU", I_CPU,FLASH), 3.0 V nominal; POET uses 3.328 mA x 3.3 V.
- QEMU boards: emulated stand-ins; their energy is modelled with the real board they stand in
  for (qemu-m0 -> MKR1000's Cortex-M0+, qemu-m4f -> nRF52840) and stays provenance `modeled`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Board:
    name: str
    cpu: str
    clock_hz: int
    ram_bytes: int
    flash_bytes: int
    arena_bytes: int
    qemu_machine: str | None = None     # None: a real board only
    icount_shift: int = 0               # QEMU -icount shift: 2^shift ns per instruction
    stands_in_for: str | None = None
    supply_v: float = 3.3
    active_a: float = 0.0
    source: str = ""


BOARDS: dict[str, Board] = {
    "mkr1000": Board("mkr1000", "cortex-m0plus", 48_000_000, 32768, 262144, 28 * 1024,
                     supply_v=3.3, active_a=0.020,
                     source="POET chipsets.py (20 mA x 3.3 V board); SAMD21 datasheet "
                            "DS40001882 IDD active ~3.1 mA at 48 MHz (core only)"),
    "nrf52840": Board("nrf52840", "cortex-m4f", 64_000_000, 262144, 1048576, 240 * 1024,
                      supply_v=3.3, active_a=0.003328,
                      source="nRF52840 PS v1.7 sec. 5.2: 3.3 mA CPU from flash at 64 MHz "
                             "(DC/DC); POET chipsets.py 3.328 mA x 3.3 V"),
    "qemu-m0": Board("qemu-m0", "cortex-m0", 16_000_000, 16384, 262144, 13568,
                     qemu_machine="microbit", icount_shift=6, stands_in_for="mkr1000",
                     supply_v=3.3, active_a=0.020,
                     source="emulated (QEMU microbit); energy modelled with mkr1000 figures"),
    "qemu-m4f": Board("qemu-m4f", "cortex-m4f", 25_000_000, 262144, 1048576, 240 * 1024,
                      qemu_machine="mps2-an386", icount_shift=6, stands_in_for="nrf52840",
                      supply_v=3.3, active_a=0.003328,
                      source="emulated (QEMU mps2-an386); energy modelled with nrf52840 "
                             "figures"),
}


def get_board(name: str) -> Board:
    from costdb.errors import CostdbError
    try:
        return BOARDS[name]
    except KeyError:
        raise CostdbError(f"unknown serial board {name!r}; known: {', '.join(sorted(BOARDS))}") \
            from None
