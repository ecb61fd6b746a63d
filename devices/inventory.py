"""The user's inventory: which real devices exist and how to reach them (TOML).

```toml
[devices.jetson-tx2]          # a catalog name: reach the built-in profile over ssh
host = "tx2"                  # an ~/.ssh/config alias (HostName, User, Port, IdentityFile apply)

[devices.lab-pi]
based_on = "rpi4b"            # a new device built on a catalog profile
hostname = "192.0.2.10"
user = "pi"
port = 22
key = "~/.ssh/id_ed25519"
[devices.lab-pi.profile]      # override profile figures
ram_bytes = 8589934592

[devices.nrf]
based_on = "nrf52840"
serial = "/dev/ttyACM0"       # any pyserial URL: socket://host:port, rfc2217://...
baud = 115200                 # the board's UART rate (firmware: make BAUD=)
timeout = 120                 # seconds one op may compute on the board (wire time is added)
```
Default location: ``$COSTDB_INVENTORY`` or ``$XDG_CONFIG_HOME/costdb/inventory.toml``.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costdb.errors import CostdbError
from devices import inventory_schema
from devices.catalog import DeviceProfile, catalog

SSH_KEYS = set(inventory_schema.SSH_SCHEMA)
SERIAL_KEYS = set(inventory_schema.SERIAL_SCHEMA)
COMMON_KEYS = set(inventory_schema.COMMON_SCHEMA)


@dataclass(frozen=True)
class InventoryEntry:
    name: str
    profile: DeviceProfile
    transport: str
    connection: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: str = ""

    @property
    def address(self) -> str:
        c = self.connection
        if self.transport == "ssh":
            host = c.get("host") or c.get("hostname")
            user = f"{c['user']}@" if c.get("user") else ""
            port = f":{c['port']}" if c.get("port") else ""
            return f"{user}{host}{port}"
        if self.transport == "serial":
            return f"{c.get('serial')} @ {c.get('baud', 115200)} baud"
        return "in-process"


@dataclass(frozen=True)
class Inventory:
    path: Path | None
    devices: dict[str, InventoryEntry]


#: an inventory lists devices; a file beyond this is not one
MAX_INVENTORY_BYTES = 1 << 20


def default_path() -> Path:
    env = os.environ.get("COSTDB_INVENTORY")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "costdb" / "inventory.toml"


def _line_of(text: str, name: str) -> int:
    pat = re.compile(r"^[ \t]*\[\s*devices\.(\"?)" + re.escape(name) + r"\1\s*[\].]", re.M)
    m = pat.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else 1


def _key_line(text: str, table_line: int, key: str) -> int:
    """The line of ``key = ...`` in the table starting at ``table_line`` (else that line)."""
    lines = text.splitlines()
    for k in range(table_line, len(lines)):
        if lines[k].lstrip().startswith("["):
            break
        if re.match(r"\s*" + re.escape(key) + r"\s*=", lines[k]):
            return k + 1
    return table_line


def load(path: str | os.PathLike | None = None, required: bool = False) -> Inventory:
    """Parse and validate an inventory; a missing default file is an empty inventory."""
    explicit = path is not None
    p = Path(path) if explicit else default_path()
    try:
        exists = p.is_file()
        if not exists and p.exists():
            raise CostdbError(f"inventory {p} is not a regular file (a directory, FIFO or device); "
                              "give the TOML file")
        raw = b""
        if exists:
            with p.open("rb") as f:
                raw = f.read(MAX_INVENTORY_BYTES + 1)
        if len(raw) > MAX_INVENTORY_BYTES:
            raise CostdbError(f"inventory {p} is larger than {MAX_INVENTORY_BYTES // 1024} KiB; "
                              "give the TOML file of your devices")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise CostdbError(f"inventory {p} line {line}: not UTF-8 text; save the file as "
                          "UTF-8") from None
    except OSError as e:
        if not (explicit or required):
            return Inventory(None, {})  # an unreadable default location is no inventory
        raise CostdbError(f"cannot read inventory {p}: {e.strerror}; fix its permissions") from None
    if not exists:
        if explicit or required:
            raise CostdbError(f"inventory {p} does not exist; create it or drop --inventory")
        return Inventory(None, {})
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"line {m.group(1)}" if m else "line ?"
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise CostdbError(f"inventory {p} {where}: {msg}; fix the TOML syntax") from None
    unknown_top = set(data) - {"devices"}
    if unknown_top:
        raise CostdbError(f"inventory {p} line 1: unknown top-level table(s) {sorted(unknown_top)}; "
                          "only [devices.NAME] tables are allowed")
    if not isinstance(data.get("devices", {}), dict):
        raise CostdbError(f"inventory {p} line 1: devices must be a table of [devices.NAME] "
                          f"tables, got {data['devices']!r:.40}")
    profiles = catalog()
    devices: dict[str, InventoryEntry] = {}
    for name, entry in (data.get("devices") or {}).items():
        line = _line_of(text, name)
        if not inventory_schema.valid_name(name):
            raise CostdbError(f"inventory {p} line {line}: device name {name!r:.80} is not "
                              "allowed; use 1-128 characters on one line, without leading or trailing spaces")

        def bad(problem: str) -> CostdbError:
            return CostdbError(f"inventory {p} line {line}: device {name!r}: {problem}")
        if not isinstance(entry, dict):
            raise bad("must be a table [devices.NAME]")
        problem = inventory_schema.check_keys(entry)
        if problem:
            line = _key_line(text, line, problem.split()[0])
            raise bad(problem)
        base = entry.get("based_on", name)
        if base not in profiles:
            raise bad(f"based_on {base!r} is not a catalog device ({', '.join(profiles)})")
        overrides = entry.get("profile") or {}
        if not isinstance(overrides, dict):
            raise bad("profile must be a table of overrides")
        problem = inventory_schema.check_profile(overrides)
        if problem:
            raise bad(problem)
        try:
            profile = profiles[base].with_overrides(name, overrides) if (overrides or base != name) \
                else profiles[base]
        except CostdbError as e:
            raise bad(str(e).split(": ", 1)[-1]) from None
        has_ssh = bool({"host", "hostname"} & set(entry))
        has_serial = "serial" in entry
        if has_ssh and has_serial:
            raise bad("give either host/hostname (ssh) or serial, not both")
        if has_ssh:
            transport = "ssh"
            conn = {k: entry[k] for k in SSH_KEYS if k in entry}
            if "port" in conn and not (isinstance(conn["port"], int) and 0 < conn["port"] < 65536):
                raise bad(f"port must be an integer 1-65535, got {conn['port']!r}")
        elif has_serial:
            transport = "serial"
            conn = {k: entry[k] for k in SERIAL_KEYS if k in entry}
            baud = conn.setdefault("baud", 115200)
            if not isinstance(baud, int) or baud <= 0:
                raise bad(f"baud must be a positive integer, got {baud!r}")
        else:
            transport = profile.transport
            conn = {}
            if transport != "local":
                raise bad(f"a {transport} device needs "
                          + ("host or hostname" if transport == "ssh" else "serial = \"URL\""))
        settings = {k: entry[k] for k in COMMON_KEYS - {"based_on", "profile"} if k in entry}
        devices[name] = InventoryEntry(name, profile, transport, conn, settings, f"{p}:{line}")
    return Inventory(p, devices)
