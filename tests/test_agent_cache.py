"""The agent cache on a shared machine: another local user must never get their code run as
the profiling user (issue 13).

A real second user (``useradd``; needs root) attacks a real sshd session: a shared sticky
directory (mode 1777, as /tmp) is refused as the cache, a cache directory that user created
first is refused, and while the user keeps trying to swap ``agent.pyz`` in our (private) cache,
ten agent starts run our agent every time. The launcher refuses a cached file whose hash
changed after the check, and what it runs is a private copy of the bytes it hashed.
"""
from __future__ import annotations

import io
import os
import pwd
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import sys

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd import sshd  # noqa: E402,F401

from costdb.errors import CostdbError  # noqa: E402
from devices.agent_bundle import bundle  # noqa: E402
from devices.ssh import LAUNCHER, open_session, open_ssh_agent  # noqa: E402

MALLORY = "costdb-mallory"


@pytest.fixture(scope="module")
def mallory():
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to act as a second local user")
    try:
        pwd.getpwnam(MALLORY)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", MALLORY],
                       check=True, capture_output=True)
    return pwd.getpwnam(MALLORY)


@pytest.fixture
def shared():
    """A shared sticky directory directly under /tmp (reachable by every user), like /tmp."""
    d = Path(tempfile.mkdtemp(prefix="costdb-shared-", dir="/tmp"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _evil_pyz(canary: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__main__.py", f"open({str(canary)!r}, 'w').write('pwned')\n")
    return buf.getvalue()


def _as(user, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                             "--clear-groups", "--", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_shared_sticky_directory_is_refused_naming_the_fix(sshd, shared):
    entry = sshd.inventory_entry("rpi4b", remote_dir=str(shared))
    with pytest.raises(CostdbError) as e:
        open_ssh_agent(entry)
    msg = str(e.value)
    assert f"refusing the agent cache {shared}" in msg and "writable by group and others" in msg
    assert f"chmod go-w {shared}" in msg and "\n" not in msg
    assert not any(shared.iterdir())                 # nothing uploaded, nothing run


def test_a_cache_directory_another_user_created_is_refused(sshd, shared, mallory):
    canary = shared / "PWNED"
    cache = shared / "cache"
    _, digest, dirname = bundle()
    # the attacker prepares the cache (the bundle name is deterministic) with their own agent
    (cache / dirname).mkdir(parents=True)
    (cache / dirname / "agent.pyz").write_bytes(_evil_pyz(canary))
    for p in (cache, cache / dirname, cache / dirname / "agent.pyz"):
        os.chown(p, mallory.pw_uid, mallory.pw_gid)
        p.chmod(0o777 if p.is_dir() else 0o666)
    entry = sshd.inventory_entry("rpi4b", remote_dir=str(cache))
    for _ in range(3):
        with pytest.raises(CostdbError) as e:
            open_ssh_agent(entry)
        assert f"owned by uid {mallory.pw_uid}, not by you" in str(e.value)
    assert not canary.exists()


SWAPPER = r"""
T="$1"; EVIL="$2"; LOG="$3"; STOP="$4"
while [ ! -e "$STOP" ]; do
  if cp "$EVIL" "$T/agent.pyz.x" 2>/dev/null && mv -f "$T/agent.pyz.x" "$T/agent.pyz" 2>/dev/null
  then echo swapped >> "$LOG"; else echo refused >> "$LOG"; fi
  if cp "$EVIL" "$T/agent.pyz" 2>/dev/null; then echo swapped >> "$LOG"; fi
done
"""


def test_another_user_swapping_the_agent_never_runs_their_code(sshd, shared, mallory):
    canary = shared / "PWNED"
    cache = shared / "mine"
    entry = sshd.inventory_entry("rpi4b", remote_dir=str(cache))
    a = open_ssh_agent(entry)                   # creates our private cache first
    a.close()
    _, digest, dirname = bundle()
    target = cache / dirname
    assert (cache.stat().st_mode & 0o077) == 0 and (target.stat().st_mode & 0o077) == 0
    work = Path(tempfile.mkdtemp(prefix="mallory-", dir="/tmp"))
    os.chown(work, mallory.pw_uid, mallory.pw_gid)
    evil = work / "evil.pyz"
    evil.write_bytes(_evil_pyz(canary))
    os.chown(evil, mallory.pw_uid, mallory.pw_gid)
    log, stop = work / "log", work / "stop"
    attacker = _as(mallory, "sh", "-c", SWAPPER, "sh", str(target), str(evil), str(log), str(stop))
    try:
        for _ in range(10):
            a = open_ssh_agent(entry)
            try:
                assert a.hello()["agent_version"]
            finally:
                a.close()
    finally:
        stop.touch()
        attacker.communicate(timeout=120)
    tries = log.read_text().split() if log.exists() else []
    assert tries and "swapped" not in tries          # it tried, and could not
    assert not canary.exists()
    assert (target / "agent.pyz").read_bytes() == bundle()[0]
    assert not [p for p in target.iterdir() if p.name.startswith("run-")]  # private copies gone
    shutil.rmtree(work, ignore_errors=True)


def test_the_launcher_refuses_a_file_changed_after_the_check(sshd, tmp_path):
    canary = tmp_path / "PWNED"
    s = open_session(sshd.inventory_entry("rpi4b"))
    try:
        path, _ = s.ensure_agent()
        Path(path).write_bytes(_evil_pyz(canary))       # changed after ensure_agent checked it
        py = sshd.inventory_entry("rpi4b").connection["python"]
        res = s.run([py, "-c", LAUNCHER, path, bundle()[1]], check=False)
        assert res.status == 5 and b"does not match its sha256" in res.stderr
        assert not canary.exists()
        assert s.ensure_agent() == (path, True)          # the next start uploads a good copy
    finally:
        s.close()
