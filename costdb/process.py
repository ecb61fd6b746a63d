"""Is a process of this host still running? Shared by the stale-session check (costdb.database)
and the emulated boards (devices.emulated.vm)."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; another user's process counts as running, a zombie does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an unreaped child (zombie) has finished its work
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
