"""Emulated SSH boards: a QEMU ``virt`` machine with ``-cpu cortex-a72`` booting a Debian 12 arm64
image that costdb builds itself (``image``), started, reached over SSH on 127.0.0.1 and stopped by
``vm``. The agent on it is the normal SSH agent; its runtimes are stored as ``emulated``.

    costdb board build qemu-a72          # once: ~1.5 GB image in the user cache directory
    costdb profile --device qemu-a72 --model mlp

See docs/emulated.md.
"""
from __future__ import annotations

import os
from pathlib import Path

BOARDS = ("qemu-a72",)


def cache_root() -> Path:
    """``$COSTDB_CACHE_DIR``, else ``$XDG_CACHE_HOME/costdb``, else ``~/.cache/costdb``."""
    env = os.environ.get("COSTDB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "costdb"


def board_dir(board: str = "qemu-a72", cache_dir: str | os.PathLike | None = None) -> Path:
    """Where one board's image, keys, known_hosts and run state live."""
    return Path(cache_dir).expanduser() / board if cache_dir else cache_root() / "boards" / board
