"""The inventory's schema: every key of a ``[devices.NAME]`` table, its type and its range.

``check_entry`` validates one device table on load (``devices.inventory.load``), so a wrong
value (``hostname = 5``, ``threads = "abc"``, ``baud = -1``, a 64-character host label) is one
line naming the file, the line, the device, the key and what is expected — never a traceback
later in paramiko, the socket layer or the remote agent. Unknown keys get a did-you-mean.

Timeouts are settings (seconds, ``0 < t <= 1e6``): ``timeout`` (one remote request or command),
``connect_timeout`` (TCP + SSH handshake), ``start_timeout`` (the agent's start: python + torch
import), ``command_timeout`` (small helper commands: kill, df, id), ``session_timeout`` (the
agent process as a whole) and ``reconnect_timeout`` (how long a lost link is retried).
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import fields
from typing import Any, Callable

from devices.catalog import DeviceProfile, StorageProfile

INT64_MAX = 2**63 - 1
MAX_TIMEOUT_S = 1e6

#: (check, expected) per key; ``check(value)`` returns True when the value is valid
Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _text(v: Any, limit: int = 4096) -> bool:
    """A non-empty single-line string without control characters."""
    return (isinstance(v, str) and 0 < len(v) <= limit and v.strip() == v
            and not any(ord(c) < 32 or ord(c) == 127 for c in v))


_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def valid_host(v: Any) -> bool:
    """A host name (labels of 1-63 letters, digits, '-', '_'; 253 characters at most), an IPv4
    or IPv6 address, or an ssh_config alias of the same characters."""
    if not _text(v, 253):
        return False
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    if ":" in v:   # IPv6
        return bool(re.fullmatch(r"[0-9A-Fa-f:.%a-zA-Z0-9]+", v))
    return all(_LABEL.match(label) for label in v.rstrip(".").split("."))


def valid_name(v: Any) -> bool:
    """A device name: it names database rows and log lines (1-128 characters on one line;
    the reports escape it, the remote commands quote it)."""
    return _text(v, 128)


def _int_range(lo: int, hi: int) -> tuple[Check, str]:
    return (lambda v: _is_int(v) and lo <= v <= hi), f"an integer {lo}-{hi}"


def _seconds() -> tuple[Check, str]:
    return (lambda v: _is_number(v) and 0 < v <= MAX_TIMEOUT_S), \
        f"a number of seconds (0 < t <= {MAX_TIMEOUT_S:g})"


_STRING = (_text, "a non-empty string (one line)")
_PATH = (_text, "a path as a string")
_TABLE = (lambda v: isinstance(v, dict), "a table")

SSH_SCHEMA: dict[str, tuple[Check, str]] = {
    "host": (valid_host, "a host name or ssh_config alias as a string (labels of at most 63 "
                         "characters)"),
    "hostname": (valid_host, "a host name or IP address as a string (labels of at most 63 "
                             "characters)"),
    "user": (lambda v: _text(v, 256) and not any(c.isspace() for c in v),
             "a user name as a string (no spaces)"),
    "port": _int_range(1, 65535),
    "key": _PATH,
    "proxy_jump": _STRING,
    "python": _PATH,
    "remote_dir": _PATH,
    "known_hosts": _PATH,
    "timeout": _seconds(),
    "connect_timeout": _seconds(),
    "start_timeout": _seconds(),
    "command_timeout": _seconds(),
    "session_timeout": _seconds(),
    "reconnect_timeout": _seconds(),
}
SERIAL_SCHEMA: dict[str, tuple[Check, str]] = {
    "serial": (lambda v: _text(v), "a serial port or pyserial URL as a string"),
    "baud": _int_range(50, 20_000_000),
    "board": _STRING,
    "timeout": _seconds(),
}
COMMON_SCHEMA: dict[str, tuple[Check, str]] = {
    "based_on": _STRING,
    "profile": _TABLE,
    "description": (lambda v: isinstance(v, str) and len(v) <= 4096, "a string"),
    "sensor": _STRING,
    "sensor_options": _TABLE,
    "sysfs_root": _PATH,
    "threads": _int_range(1, 4096),
    "storage_path": _PATH,
    "compute_unit": (lambda v: v in ("cpu", "cuda"), "'cpu' or 'cuda'"),
}
ALL_KEYS = sorted(set(SSH_SCHEMA) | set(SERIAL_SCHEMA) | set(COMMON_SCHEMA))


def did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(entry: dict[str, Any]) -> str | None:
    """The problem with a device table's keys and values, or None (first problem only)."""
    unknown = sorted(k for k in entry if k not in ALL_KEYS)
    if unknown:
        hints = "".join(did_you_mean(k, ALL_KEYS) for k in unknown[:1])
        return (f"unknown key(s) {', '.join(map(str, unknown))}{hints}; known keys: "
                f"{', '.join(ALL_KEYS)}")
    for key, value in entry.items():
        for schema in (SSH_SCHEMA, SERIAL_SCHEMA, COMMON_SCHEMA):
            if key in schema:
                ok, expected = schema[key]
                if not ok(value):
                    return f"{key} must be {expected}, got {_show(value)}"
                break
    return None


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _field_check(tp: Any, name: str) -> tuple[Check, str]:
    t = str(tp)
    if t in ("int",):
        return (lambda v: _is_int(v) and 0 <= v <= INT64_MAX), "a non-negative integer"
    if t in ("float",):
        return (lambda v: _is_number(v) and v >= 0 and float(v) < 1e300), \
            "a finite non-negative number"
    if t.startswith("tuple"):
        return (lambda v: isinstance(v, list) and all(_text(x, 64) for x in v) and len(v) <= 64,
                "a list of strings")
    if t.startswith("dict"):
        return (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                "a table of strings")
    return (lambda v: isinstance(v, str) and len(v) <= 4096), "a string"


_PROFILE_FIELDS = {f.name: _field_check(f.type, f.name) for f in fields(DeviceProfile)
                   if f.name not in ("name", "storage", "based_on")}
_STORAGE_FIELDS = {f.name: _field_check(f.type, f.name) for f in fields(StorageProfile)}


def check_profile(overrides: dict[str, Any]) -> str | None:
    """The problem with a ``[devices.NAME.profile]`` table, or None."""
    for key, value in overrides.items():
        if key == "storage":
            if not isinstance(value, dict):
                return f"profile.storage must be a table, got {_show(value)}"
            for sk, sv in value.items():
                if sk not in _STORAGE_FIELDS:
                    return (f"unknown key profile.storage.{sk}"
                            f"{did_you_mean(sk, sorted(_STORAGE_FIELDS))}; known keys: "
                            f"{', '.join(sorted(_STORAGE_FIELDS))}")
                ok, expected = _STORAGE_FIELDS[sk]
                if not ok(sv):
                    return f"profile.storage.{sk} must be {expected}, got {_show(sv)}"
            continue
        if key not in _PROFILE_FIELDS:
            return (f"unknown key profile.{key}{did_you_mean(key, sorted(_PROFILE_FIELDS))}; "
                    f"known keys: {', '.join(sorted(_PROFILE_FIELDS))}, storage")
        ok, expected = _PROFILE_FIELDS[key]
        if not ok(value):
            return f"profile.{key} must be {expected}, got {_show(value)}"
        if key == "transport" and value not in ("local", "ssh", "serial"):
            return f"profile.transport must be one of local, ssh, serial, got {_show(value)}"
    return None
