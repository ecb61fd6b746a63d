"""A real OpenSSH sshd on 127.0.0.1 for tests: free port, generated host and user keys, temp dir.

Use the ``sshd`` / ``ssh_inventory`` fixtures (import them into a test module), or :class:`Sshd`
directly. ``stop()`` kills the listener *and* every per-connection sshd and remote process it
started (a killed ``sshd -D`` leaves its session children running), which is what a crashed or
rebooted device looks like to the host; ``start()`` brings it back on the same port with the same
host key.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "costdb-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


class Sshd:
    def __init__(self, tmp: Path, port: int | None = None):
        self.dir = Path(tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.user_key = self.dir / "id_ed25519"
        self.authorized_keys = self.dir / "authorized_keys"
        self.config = self.dir / "sshd_config"
        self.known_hosts = self.dir / "known_hosts"
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen | None = None
        if not self.host_key.exists():
            keygen(self.host_key)
        if not self.user_key.exists():
            keygen(self.user_key)
            shutil.copy(f"{self.user_key}.pub", self.authorized_keys)
        self.write_config()

    def write_config(self, extra: str = "") -> None:
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\nPidFile {self.dir / 'sshd.pid'}\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "AllowTcpForwarding yes\nSubsystem sftp internal-sftp\nMaxStartups 100\n"
            "MaxSessions 100\nClientAliveInterval 0\nLogLevel ERROR\n" + extra)

    def host_key_line(self) -> str:
        kind, b64 = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}\n"

    def trust(self, path: Path | None = None) -> Path:
        """Write (or add to) a known_hosts file holding this server's host key."""
        path = Path(path or self.known_hosts)
        with open(path, "a") as f:
            f.write(self.host_key_line())
        return path

    def start(self, timeout: float = 10.0) -> "Sshd":
        os.makedirs("/run/sshd", exist_ok=True)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=logf,
                                     stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sshd did not come up on port {self.port}")

    def stop(self) -> None:
        """Kill sshd and every process it started (connections drop like a crashed device)."""
        if self.proc is None:
            return
        pids = descendants(self.proc.pid)
        for pid in [self.proc.pid] + pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.proc = None

    def kill_connections(self) -> None:
        """Kill the per-connection sshd processes and their children, keep listening."""
        if self.proc is None:
            return
        for pid in descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remote_processes(self, needle: str) -> list[int]:
        """Pids of processes under sshd whose command line contains ``needle``."""
        out = []
        for pid in descendants(self.proc.pid) if self.proc else []:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if needle.encode() in f.read():
                        out.append(pid)
            except OSError:
                pass
        return out

    def inventory_entry(self, name: str = "rpi4b", based_on: str | None = None, **extra):
        """An InventoryEntry reaching this server (python = this interpreter, which has torch)."""
        from devices.catalog import catalog
        from devices.inventory import InventoryEntry
        profiles = catalog()
        base = based_on or (name if name in profiles else "rpi4b")
        profile = profiles[base] if base == name else profiles[base].with_overrides(name, {})
        conn = {"hostname": "127.0.0.1", "port": self.port, "user": "root",
                "key": str(self.user_key), "known_hosts": str(self.known_hosts),
                "python": sys.executable, "remote_dir": str(self.dir / "agent-cache"),
                "timeout": 60}
        settings = {}
        for k in ("sensor", "sensor_options", "sysfs_root", "threads"):
            if k in extra:
                settings[k] = extra.pop(k)
        conn.update(extra)
        return InventoryEntry(name, profile, "ssh", conn, settings, "test")

    def inventory_toml(self, name: str = "rpi4b", **extra) -> str:
        """TOML text for an inventory with one device reaching this server."""
        e = self.inventory_entry(name, **extra)
        lines = [f'[devices."{name}"]']
        if name not in ("rpi4b", "jetson-tx2"):
            lines.append(f'based_on = "{e.profile.based_on or "rpi4b"}"')
        import json
        for k, v in {**e.connection, **e.settings}.items():
            lines.append(f"{k} = {json.dumps(v)}")
        return "\n".join(lines) + "\n"


@pytest.fixture
def sshd(tmp_path):
    """A running sshd whose host key is already trusted (known_hosts in its temp dir)."""
    server = Sshd(tmp_path / "sshd").start()
    server.trust()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def untrusted_sshd(tmp_path):
    server = Sshd(tmp_path / "sshd").start()
    try:
        yield server
    finally:
        server.stop()
