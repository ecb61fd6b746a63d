"""Pack the measurement agent (``devices/agent/``) into one zipapp file shipped to SSH devices.

The bytes are deterministic (sorted entries, fixed timestamps and permissions, no ``__pycache__``),
so the content hash identifies the agent exactly: it names the remote cache directory
(``~/.cache/costdb-agent/<version>-<hash>/agent.pyz``) and the file is uploaded only when no copy
with that hash is on the device yet. The archive runs with ``python3 agent.pyz`` on Python 3.6+:
the package is stored as ``costdb_agent/`` and a top-level ``__main__.py`` starts it.
"""
from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from pathlib import Path

from devices.agent import AGENT_VERSION

AGENT_DIR = Path(__file__).resolve().parent / "agent"
PACKAGE = "costdb_agent"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)

_MAIN = (
    "import sys\n"
    "if sys.version_info < (3, 6):\n"
    "    sys.stderr.write('costdb agent: Python 3.6 or newer is needed, this is %s\\n'\n"
    "                     % sys.version.split()[0])\n"
    "    sys.exit(4)\n"
    "from costdb_agent.__main__ import main\n"
    "sys.exit(main())\n"
)


def agent_sources() -> list[Path]:
    """The agent's source files, sorted (what goes into the bundle)."""
    return sorted(p for p in AGENT_DIR.glob("*.py") if p.is_file())


def build_bundle() -> bytes:
    """The zipapp bytes; identical for identical sources."""
    buf = io.BytesIO()
    # a zipapp may start with a shebang line; python3 agent.pyz does not need it
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        entries = [("__main__.py", _MAIN.encode())]
        entries += [(f"{PACKAGE}/{p.name}", p.read_bytes()) for p in agent_sources()]
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, data, compresslevel=9)
    return buf.getvalue()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=1)
def _cached() -> tuple[bytes, str]:
    data = build_bundle()
    return data, content_hash(data)


def bundle() -> tuple[bytes, str, str]:
    """(bytes, sha256 hex, cache directory name ``<version>-<hash16>``).

    Cached per process; sources do not change under a running host."""
    data, digest = _cached()
    return data, digest, f"{AGENT_VERSION}-{digest[:16]}"


def write_bundle(path: str | Path) -> str:
    """Write the zipapp to ``path`` (for copying by hand); returns its sha256."""
    data, digest, _ = bundle()
    Path(path).write_bytes(data)
    return digest
