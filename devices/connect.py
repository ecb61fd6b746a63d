"""Open an agent connection to a device by name, whatever its transport."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from costdb.errors import CostdbError
from devices.catalog import DeviceProfile
from devices.inventory import Inventory, InventoryEntry


def _local_entry(profile: DeviceProfile) -> InventoryEntry:
    return InventoryEntry(profile.name, profile, profile.transport, {}, {}, "catalog")


def entry_for(name: str, inventory: Inventory) -> InventoryEntry:
    """The inventory entry of a device; catalog devices that need no address work without one."""
    from devices.catalog import get_profile
    if name in inventory.devices:
        return inventory.devices[name]
    profile = get_profile(name, inventory)
    if profile.transport == "local":
        return _local_entry(profile)
    if profile.transport == "serial" and name.startswith("qemu-"):
        return InventoryEntry(name, profile, "serial", {"qemu": True}, {}, "catalog")
    if profile.transport == "ssh" and name.startswith("qemu-"):  # devices/emulated: own VM
        return InventoryEntry(name, profile, "ssh", {"qemu": True}, {}, "catalog")
    where = inventory.path or "the inventory (~/.config/costdb/inventory.toml)"
    if profile.transport == "ssh":
        fix = f'add [devices.{name}] with host = "ssh-alias" to {where}'
    else:
        fix = f'add [devices.{name}] with serial = "/dev/ttyACM0" to {where}'
    raise CostdbError(f"device {name!r} has no address; {fix}")


@contextlib.contextmanager
def connect(entry: InventoryEntry, cpus: list[int] | None = None, threads: int | None = None,
            options: dict[str, Any] | None = None) -> Iterator[Any]:
    """Yield an AgentConnection (devices.transport) to the device, closed afterwards."""
    options = options or {}
    settings = entry.settings
    if entry.transport == "local":
        from devices.local import LocalAgent
        agent = LocalAgent(sysfs_root=settings.get("sysfs_root", options.get("sysfs_root", "/")),
                           cpus=cpus, threads=threads or settings.get("threads"),
                           sensor=settings.get("sensor"),
                           sensor_options=settings.get("sensor_options"))
        try:
            yield agent
        finally:
            agent.close()
        return
    if entry.transport == "ssh" and entry.connection.get("qemu"):
        from devices.emulated.agent import open_emulated_agent
        with open_emulated_agent(entry, threads=threads, options=options) as agent:
            yield agent
        return
    if entry.transport == "ssh":
        try:
            from devices.ssh import open_ssh_agent
        except ImportError:
            raise CostdbError("the ssh transport is not available in this build") from None
        agent = open_ssh_agent(entry, threads=threads, options=options)
        try:
            yield agent
        finally:
            agent.close()
        return
    if entry.transport == "serial":
        try:
            from devices.serial.transport import open_serial_agent
        except ImportError:
            raise CostdbError("the serial transport is not available in this build") from None
        from devices.serial.boards import BOARDS
        conn = entry.connection
        timeout = conn.get("timeout", 120.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 < timeout < 1e6:
            raise CostdbError(f"device {entry.name!r} ({entry.source}): timeout must be a number "
                              f"of seconds (0 < timeout < 1e6), got {timeout!r}")
        if conn.get("qemu"):
            from devices.serial.qemu import start_qemu_board
            with start_qemu_board(entry.name) as url:
                agent = open_serial_agent(url, baud=115200, board=entry.name, emulated=True,
                                          timeout=timeout)
                try:
                    yield agent
                finally:
                    agent.close()
            return
        board = conn.get("board") or entry.profile.based_on or entry.name
        # a QEMU board reached through a URL (a proxy, another host) is still emulated
        emulated = bool(board in BOARDS and BOARDS[board].qemu_machine)
        agent = open_serial_agent(conn["serial"], baud=conn.get("baud", 115200), board=board,
                                  emulated=emulated, timeout=timeout)
        try:
            yield agent
        finally:
            agent.close()
        return
    raise CostdbError(f"device {entry.name!r}: unknown transport {entry.transport!r}")
