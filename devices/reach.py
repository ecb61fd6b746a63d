"""Reachability checks for ``costdb devices --check``: cheap, bounded in time, never raising."""
from __future__ import annotations

import os
import shutil
import socket

from costdb.errors import CostdbError
from devices.connect import entry_for
from devices.inventory import Inventory


def _ssh_target(conn: dict) -> tuple[str, int]:
    host, port = conn.get("hostname") or conn.get("host"), conn.get("port")
    if conn.get("host") and not conn.get("hostname"):
        try:
            import paramiko
            path = os.path.expanduser("~/.ssh/config")
            if os.path.exists(path):
                cfg = paramiko.SSHConfig.from_path(path).lookup(conn["host"])
                host = cfg.get("hostname", host)
                port = port or int(cfg.get("port", 22))
        except Exception:  # a broken ssh config is reported by the connection itself
            pass
    return host, int(port or 22)


def check_reachable(name: str, inventory: Inventory, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        entry = entry_for(name, inventory)
    except CostdbError as e:
        return False, str(e).split("; ", 1)[-1]
    if entry.transport == "local":
        return True, "in-process"
    if entry.transport == "ssh" and entry.connection.get("qemu"):
        from devices.emulated.image import load_image
        img = load_image(entry.name)
        if not shutil.which("qemu-system-aarch64"):
            return False, "qemu-system-aarch64 not installed (apt-get install qemu-system-arm)"
        if img is None:
            return False, f"no image yet: costdb board build {entry.name}"
        return True, f"image {img.dir} (torch {img.manifest.get('torch')}), started on demand"
    if entry.transport == "ssh":
        host, port = _ssh_target(entry.connection)
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                banner = s.recv(64).decode("ascii", "replace").strip()
        except (OSError, UnicodeError, ValueError) as e:   # a bad name fails in the IDNA codec
            return False, f"{host}:{port} {getattr(e, 'strerror', None) or e}"
        # the port answers: log in for real (host key verified, key accepted), run nothing
        try:
            from devices.ssh import SshSession, resolve_target
            target = resolve_target(entry.name, dict(entry.connection), {"timeout": timeout})
            SshSession(target).close()
        except CostdbError as e:
            return False, str(e).split(": ", 1)[-1]
        except Exception as e:  # never raise from a check
            return False, f"{host}:{port} {banner}: {type(e).__name__}: {e}"
        return True, f"{host}:{port} {banner}, host key verified, login ok"
    if entry.connection.get("qemu"):
        exe = shutil.which("qemu-system-arm")
        return (True, exe) if exe else (False, "qemu-system-arm not installed")
    url = entry.connection.get("serial", "")
    if "://" not in url:
        return (True, url) if os.path.exists(url) else (False, f"{url} does not exist")
    try:
        import serial
        port = serial.serial_for_url(url, baudrate=entry.connection.get("baud", 115200), timeout=timeout)
        port.close()
        return True, url
    except Exception as e:  # pyserial raises SerialException and OSError subclasses
        return False, f"{url}: {e}"
