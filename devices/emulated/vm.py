"""Start, reach and stop the ``qemu-a72`` board: QEMU ``virt``, ``-cpu cortex-a72``, 4 vCPUs,
2-4 GiB, the image's own kernel and initrd, sshd forwarded to a free port on 127.0.0.1.

* A board started by ``costdb board start`` runs detached; its state (pid, port) is in
  ``board.json`` and ``costdb profile --device qemu-a72`` uses it and leaves it running.
* Otherwise ``profile`` starts its own (QEMU dies with the host process: parent-death signal),
  waits for sshd's banner, profiles and powers it off.
* Host keys stay verified: at each start costdb's own ``known_hosts`` beside the image gets the
  image's host key for ``[127.0.0.1]:PORT``; nothing is ever trusted on first use.
* The disk is the image itself, written in place like a Pi's SD card (the agent cache survives a
  reboot); QEMU's image lock refuses a second VM on the same disk.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Any, Iterator

from costdb.errors import CostdbError
from costdb.process import pid_alive
from devices.emulated.image import Image, require_image

PR_SET_PDEATHSIG = 1
QEMU = "qemu-system-aarch64"
DEFAULT_MEMORY_MIB = 2048
DEFAULT_CPUS = 4
DEFAULT_BOOT_TIMEOUT = 1200.0   # TCG on a loaded 2-core host: minutes; this bounds a hung boot
#: The agent starts (python + import torch) and one op runs far slower under TCG than on a Pi.
START_TIMEOUT = 1800.0
CONNECT_TIMEOUT = 120.0
OP_TIMEOUT = 3600.0


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_memory(text: str | int) -> int:
    """``2G``, ``3072M``, ``4096`` (MiB) -> MiB, refused outside the board's 2-4 GiB."""
    if isinstance(text, int):
        mib = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([GgMm]i?[Bb]?)?\s*", str(text))
        if not m:
            raise CostdbError(f"bad memory size {text!r}; give e.g. 2G, 3G, 4096M")
        mib = int(m.group(1)) * (1024 if (m.group(2) or "M")[0] in "Gg" else 1)
    if not 2048 <= mib <= 4096:
        raise CostdbError(f"memory {text!r} is outside the qemu-a72 board's 2-4 GiB; give 2G-4G")
    return mib


def qemu_version(exe: str | None = None) -> str | None:
    exe = exe or shutil.which(QEMU)
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else None


def ssh_banner(port: int, timeout: float = 5.0) -> str | None:
    """sshd's banner on the forwarded port, or None. QEMU's user network accepts the TCP
    connection before the guest listens, so only the banner says sshd is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(64)
    except OSError:
        return None
    return data.decode("ascii", "replace").strip() if data.startswith(b"SSH-") else None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class A72Board:
    """One QEMU process running the image."""

    def __init__(self, image: Image, memory_mib: int = DEFAULT_MEMORY_MIB, cpus: int = DEFAULT_CPUS):
        self.image = image
        self.memory_mib = parse_memory(memory_mib)
        if not 1 <= cpus <= 8:
            raise CostdbError(f"cpus {cpus} out of range; the board has 1-8 vCPUs (default 4)")
        self.cpus = cpus
        self.port = 0
        self.pid: int | None = None
        self.proc: subprocess.Popen | None = None
        self.boot_s: float | None = None
        self.started_at: float | None = None
        self.console = image.dir / "console.log"
        self.qmp = image.dir / "qmp.sock"
        self.state_file = image.dir / "board.json"

    # --- facts --------------------------------------------------------------------------------

    def emulator_facts(self) -> dict[str, Any]:
        """What the session records about the emulator (the guest's facts come from the agent)."""
        m = self.image.manifest
        return {"name": QEMU, "version": qemu_version(), "machine": "virt", "cpu": "cortex-a72",
                "accel": "tcg", "smp": self.cpus, "memory_bytes": self.memory_mib * 1024 * 1024,
                "image": {k: m.get(k) for k in ("suite", "recipe", "torch", "python",
                                                "kernel_release", "built_at",
                                                "host_key_fingerprint")},
                "boot_to_sshd_s": self.boot_s}

    def connection(self) -> dict[str, Any]:
        """Inventory-style ssh keys that reach the running board (devices.ssh.resolve_target)."""
        return {"hostname": "127.0.0.1", "port": self.port, "user": self.image.user,
                "key": str(self.image.user_key), "known_hosts": str(self.image.known_hosts),
                "python": "python3", "timeout": OP_TIMEOUT}

    # --- lifecycle ----------------------------------------------------------------------------

    def command(self) -> list[str]:
        exe = shutil.which(QEMU)
        if exe is None:
            raise CostdbError(f"{QEMU} not found; install it with 'apt-get install qemu-system-arm'")
        return [exe, "-M", "virt", "-cpu", "cortex-a72", "-smp", str(self.cpus),
                "-m", f"{self.memory_mib}M", "-accel", "tcg,thread=multi",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
                "-append", "root=/dev/vda rw console=ttyAMA0 quiet systemd.show_status=0",
                "-drive", f"file={self.image.disk},format=raw,if=virtio,cache=writeback",
                "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=net0,romfile=", "-device", "virtio-rng-pci",
                "-display", "none", "-monitor", "none", "-nodefaults", "-no-reboot",
                "-serial", f"file:{self.console}",
                "-qmp", f"unix:{self.qmp},server=on,wait=off"]

    def _write_known_hosts(self) -> None:
        kind, b64 = self.image.host_key_pub.read_text().split()[:2]
        tmp = self.image.known_hosts.with_suffix(".tmp")
        tmp.write_text(f"[127.0.0.1]:{self.port} {kind} {b64}\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.image.known_hosts)

    def start(self, detach: bool = False) -> int:
        """Start QEMU on a free port (retrying a port another process took); returns the port."""
        running = running_board(self.image)
        if running is not None:
            raise CostdbError(f"board qemu-a72 is already running (pid {running['pid']}, port "
                              f"{running['port']}); stop it with 'costdb board stop qemu-a72'")
        with contextlib.suppress(FileNotFoundError):
            self.qmp.unlink()
        last = ""
        for _attempt in range(5):
            self.port = _free_port()
            self._write_known_hosts()
            err = open(self.image.dir / "qemu.stderr", "wb")
            kwargs: dict[str, Any] = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=err)
            if detach:
                kwargs["start_new_session"] = True
            else:
                kwargs["preexec_fn"] = _die_with_parent
            self.started_at = time.time()
            self.proc = subprocess.Popen(self.command(), **kwargs)
            err.close()
            self.pid = self.proc.pid
            # QEMU fails fast on a taken port or a locked disk; give it a moment to say so
            t_end = time.monotonic() + 5
            while time.monotonic() < t_end and self.proc.poll() is None:
                if self.qmp.exists():
                    break
                time.sleep(0.05)
            if self.proc.poll() is None:
                self._save_state()
                return self.port
            last = (self.image.dir / "qemu.stderr").read_text(errors="replace").strip()
            if "host forwarding" not in last and "Address already in use" not in last:
                break
        self.proc = None
        line = last.splitlines()[-1] if last else "no output"
        if "write lock" in line:
            raise CostdbError(f"the board's disk {self.image.disk} is in use by another QEMU; stop "
                              "that one ('costdb board stop qemu-a72') first")
        raise CostdbError(f"{QEMU} failed to start: {line[:200]}")

    def _save_state(self) -> None:
        self.state_file.write_text(json.dumps({
            "pid": self.pid, "port": self.port, "memory_mib": self.memory_mib, "cpus": self.cpus,
            "started_at": self.started_at, "disk": str(self.image.disk)}) + "\n")

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def console_tail(self, n: int = 3) -> str:
        try:
            lines = [ln.strip() for ln in self.console.read_text(errors="replace").splitlines()
                     if ln.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-n:])[-300:]

    def wait_for_sshd(self, timeout: float = DEFAULT_BOOT_TIMEOUT) -> float:
        """Block until sshd's banner comes through the forwarded port; returns seconds since
        start. Polls a condition (the banner), bounded by ``timeout``."""
        t0 = self.started_at or time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                err = ""
                with contextlib.suppress(OSError):
                    err = (self.image.dir / "qemu.stderr").read_text(errors="replace").strip()
                why = err[-150:] or "no error output"
                raise CostdbError(f"the qemu-a72 board stopped while booting ({why}; console: "
                                  f"{self.console_tail()}); see {self.console}")
            if ssh_banner(self.port, timeout=5.0):
                self.boot_s = time.time() - t0
                return self.boot_s
            time.sleep(1.0)
        tail = self.console_tail()
        self.stop()
        raise CostdbError(f"the qemu-a72 board did not start sshd within {timeout:.0f} s (console: "
                          f"{tail or 'empty'}); the host may be overloaded, see {self.console}")

    def _qmp(self, *commands: str) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(self.qmp))
                f = s.makefile("rwb")
                f.readline()
                for cmd in ("qmp_capabilities",) + commands:
                    f.write((json.dumps({"execute": cmd}) + "\n").encode())
                    f.flush()
                    f.readline()
            return True
        except OSError:
            return False

    def stop(self, grace: float = 120.0) -> None:
        """Power the guest off (ACPI-less virt: the power button, handled by systemd-logind) so
        its page cache reaches the disk; after ``grace`` seconds terminate QEMU."""
        if self.pid is None:
            return
        if self.alive() and self._qmp("system_powerdown"):
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.25)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.1)
            if self.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self.proc = None
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        self.pid = None

    def kill(self) -> None:
        """Kill QEMU at once (tests: the board vanishes)."""
        if self.pid is not None and self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.stop(grace=0)


def running_board(image: Image) -> dict[str, Any] | None:
    """State of a board of this image that is running (started detached or by another process)."""
    try:
        state = json.loads((image.dir / "board.json").read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid) or str(image.disk) not in _cmdline(pid):
        return None
    return state


def attach(image: Image) -> A72Board | None:
    """An A72Board for the running board of this image, or None."""
    state = running_board(image)
    if state is None:
        return None
    b = A72Board(image, state.get("memory_mib", DEFAULT_MEMORY_MIB), state.get("cpus", DEFAULT_CPUS))
    b.pid, b.port, b.started_at = state["pid"], state["port"], state.get("started_at")
    return b


@contextlib.contextmanager
def board_running(cache_dir: str | os.PathLike | None = None,
                  memory_mib: int | str | None = None,
                  boot_timeout: float = DEFAULT_BOOT_TIMEOUT) -> Iterator[A72Board]:
    """The running board (left running afterwards) or a new one (stopped afterwards)."""
    image = require_image("qemu-a72", cache_dir)
    board = attach(image)
    if board is not None:
        board.wait_for_sshd(boot_timeout)   # started detached, maybe still booting
        yield board
        return
    if memory_mib is None:
        memory_mib = os.environ.get("COSTDB_QEMU_A72_MEMORY") or DEFAULT_MEMORY_MIB
    board = A72Board(image, parse_memory(memory_mib))
    board.start()
    try:
        board.wait_for_sshd(boot_timeout)
        yield board
    finally:
        board.stop()
