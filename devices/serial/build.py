"""Build the firmware with make, cached by a hash of the sources and options.

Output goes to ``$COSTDB_CACHE/firmware/<board>-<hash>/`` (default ``~/.cache/costdb``), never
into the source tree, so an installed (read-only) costdb can still build. A file lock keeps
parallel test workers from building the same target twice.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from costdb.errors import CostdbError

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
BOARDS = ("qemu-m0", "qemu-m4f", "mkr1000", "nrf52840")


class FirmwareBuildError(CostdbError):
    """The firmware could not be built (missing toolchain or a compile error)."""


def cache_root() -> Path:
    return Path(os.environ.get("COSTDB_CACHE", Path.home() / ".cache" / "costdb")) / "firmware"


def source_hash(board: str, options: dict[str, str]) -> str:
    h = hashlib.sha256()
    for p in sorted(FIRMWARE_DIR.rglob("*")):
        if p.is_file() and "build" not in p.relative_to(FIRMWARE_DIR).parts \
                and p.suffix in (".c", ".h", ".ld", ".mk", "") :
            h.update(str(p.relative_to(FIRMWARE_DIR)).encode())
            h.update(p.read_bytes())
    h.update(board.encode())
    h.update(repr(sorted(options.items())).encode())
    return h.hexdigest()[:16]


def build_firmware(board: str, protocol_version: int | None = None,
                   options: dict[str, str] | None = None, out_dir: Path | None = None) -> Path:
    """Path of ``firmware.elf`` for ``board``, building it if the cache lacks it."""
    if board not in BOARDS:
        raise FirmwareBuildError(f"no firmware target {board!r}; targets: {', '.join(BOARDS)}")
    opts = dict(options or {})
    if protocol_version is not None:
        opts["PROTOCOL_VERSION"] = str(protocol_version)
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("make") is None:
        raise FirmwareBuildError("arm-none-eabi-gcc (or make) not found: apt-get install "
                                 "gcc-arm-none-eabi libnewlib-arm-none-eabi make")
    out = Path(out_dir) if out_dir else cache_root() / f"{board}-{source_hash(board, opts)}"
    elf = out / "firmware.elf"
    if elf.exists():
        return elf
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if elf.exists():
            return elf
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = ["make", "-s", "-C", str(FIRMWARE_DIR), f"BOARD={board}", f"BUILD={tmp}"] + \
              [f"{k}={v}" for k, v in sorted(opts.items())]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["(no output)"])
            first = next((line for line in err if "error" in line.lower()), err[-1])
            raise FirmwareBuildError(f"firmware build for {board} failed: {first.strip()}")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return elf
