"""Output files (``-o``): nothing half-written, nothing replaced that is not ours to replace.

* A regular file (or a path that does not exist yet) is written to a temp file in its directory,
  flushed to disk and renamed over the target: a crash or a full disk never leaves a half-written
  export, report or schedule, and the old file stays until the new one is complete.
* A symlink is followed: the file it points to is replaced that way, the link stays a link.
* A device node or a FIFO (``/dev/stdout``, ``/dev/null``, a pipe to another program) is written
  through, never replaced by a regular file (as root that would replace a system node). A FIFO
  without a reader is refused rather than waited on.
* Every short or failed write (``/dev/full``, ENOSPC, EIO, a closed pipe) is a one-line
  ``CostdbError``.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from costdb.errors import CostdbError

__all__ = ["write_atomic", "write_text_atomic", "write_output"]


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device; free some space or write elsewhere"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; choose a writable path"
    if e.errno == errno.EROFS:
        return "read-only file system; write elsewhere"
    if e.errno == errno.EPIPE:
        return "the reader closed the pipe"
    return f"{e.strerror or e}; check the path"


def _resolve(target: Path) -> tuple[Path, os.stat_result | None]:
    """The path to write (a symlink followed to its target) and its stat, None if absent."""
    real = Path(os.path.realpath(target)) if target.is_symlink() else target
    try:
        return real, os.stat(real)
    except FileNotFoundError:
        return real, None
    except OSError as e:
        raise CostdbError(f"cannot write {target}: {_why(e)}") from None


def _write_all(fd: int, data: bytes, target: Path) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            import select
            select.select([], [fd], [], 60)
            continue
        if n <= 0:
            raise CostdbError(f"cannot write {target}: short write ({len(data) - len(view)} of "
                              f"{len(data)} bytes); check the device")
        view = view[n:]


def _write_through(target: Path, real: Path, st: os.stat_result, data: bytes) -> None:
    """Write ``data`` into an existing non-regular file (device, FIFO) without replacing it."""
    flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    if stat.S_ISFIFO(st.st_mode):
        try:  # a FIFO nobody reads would block forever: ENXIO instead
            fd = os.open(real, flags | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise CostdbError(f"cannot write {target}: it is a FIFO with no reader; start "
                                  "the reading program first or write to a file") from None
            raise CostdbError(f"cannot write {target}: {_why(e)}") from None
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        try:
            fd = os.open(real, flags)
        except OSError as e:
            raise CostdbError(f"cannot write {target}: {_why(e)}") from None
    else:
        raise CostdbError(f"cannot write {target}: it is not a regular file, device or FIFO "
                          "(a socket?); give a file name")
    try:
        _write_all(fd, data, target)
        if stat.S_ISBLK(st.st_mode):
            os.fsync(fd)
    except OSError as e:
        raise CostdbError(f"cannot write {target}: {_why(e)}") from None
    finally:
        try:
            os.close(fd)
        except OSError as e:  # a deferred write error (NFS, FUSE) surfaces at close
            raise CostdbError(f"cannot write {target}: {_why(e)}") from None


def _check_target(target: Path) -> tuple[Path, os.stat_result | None]:
    if not str(target) or str(target).endswith(os.sep):
        raise CostdbError(f"cannot write {target!s}: give a file name")
    real, st = _resolve(target)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise CostdbError(f"cannot write {target}: it is a directory; give a file name")
    parent = real.parent if str(real.parent) else Path(".")
    if st is None and not parent.is_dir():
        raise CostdbError(f"cannot write {target}: directory {parent} does not exist")
    return real, st


def write_atomic(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` and put the result at ``path``; returns the target path.

    A regular target is replaced atomically (temp file in its directory, fsync, rename); a
    symlink's target likewise (the link stays); a device node or FIFO is written through."""
    target = Path(path)
    real, st = _check_target(target)
    if st is not None and not stat.S_ISREG(st.st_mode):
        # render into a private temp file, then stream it through the device / FIFO
        with tempfile.TemporaryDirectory(prefix="costdb-out-") as d:
            tmp = os.path.join(d, "out")
            try:
                write(tmp)
                data = Path(tmp).read_bytes()
            except OSError as e:
                raise CostdbError(f"cannot write {target}: {_why(e)}") from None
        _write_through(target, real, st, data)
        return target
    parent = real.parent if str(real.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{real.name}.", suffix=".tmp")
    except OSError as e:
        raise CostdbError(f"cannot write {target}: {_why(e)}") from None
    os.close(fd)
    try:
        write(tmp)
        # flush to disk before the rename: a full disk or an I/O error shows here, not later
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, st.st_mode & 0o7777 if st is not None else mode)
        os.replace(tmp, real)
    except OSError as e:
        raise CostdbError(f"cannot write {target}: {_why(e)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def write_output(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (``write_atomic``'s rules); the bytes on disk are checked."""
    def write(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            _write_all(fd, data, Path(path))
        finally:
            os.close(fd)
        if os.path.getsize(tmp) != len(data):
            raise OSError(errno.EIO, f"short write ({os.path.getsize(tmp)} of {len(data)} bytes)")
    return write_atomic(path, write)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text to ``path`` (``write_output``)."""
    return write_output(path, text.encode("utf-8"))
