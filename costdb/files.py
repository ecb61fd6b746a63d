"""Atomic file output: write to a temp file in the target's directory, then rename.

A crash or a full disk mid-write never leaves a half-written export, report or schedule.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from costdb.errors import CostdbError


def write_atomic(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` and move the result over ``path``; returns the target path."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise CostdbError(f"cannot write {target}: directory {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
    except PermissionError:
        raise CostdbError(f"cannot write {target}: permission denied") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except PermissionError:
        raise CostdbError(f"cannot write {target}: permission denied") from None
    except OSError as e:
        raise CostdbError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return write_atomic(path, write)
