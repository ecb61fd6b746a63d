"""Hostile names and paths reach the device literally, never through an unquoted shell.

Every check runs a real command through the real sshd (which hands it to the login shell, bash)
and compares what the remote process received with what we sent.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from sshd import Sshd  # noqa: E402

from costdb.errors import CostdbError  # noqa: E402
from devices.ssh import open_session, open_ssh_agent  # noqa: E402

pytestmark = pytest.mark.timeout(170)

CHARS = st.text(alphabet="ab ;$()`'\"\\|&<>*?~!#{}[]\n\t-=%", min_size=1, max_size=12)
INJECTIONS = st.sampled_from(["$(touch PWNED)", "`touch PWNED`", "'; touch PWNED; '", "${HOME}",
                              "\"; touch PWNED; \"", "-n", "--", " ", "\n"])
HOSTILE = st.lists(st.one_of(CHARS, INJECTIONS), min_size=1, max_size=3).map("".join)
NAME = HOSTILE.filter(lambda s: "/" not in s and s not in (".", "..") and "\x00" not in s)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = Sshd(tmp_path_factory.mktemp("sshd-quoting")).start()
    d.trust()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def session(server):
    s = open_session(server.inventory_entry("rpi4b"))
    yield s
    s.close()


def _canary(server) -> list[Path]:
    return list(server.dir.rglob("PWNED")) + list(Path("/root").glob("PWNED"))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=st.lists(HOSTILE, min_size=1, max_size=4))
def test_arguments_arrive_literally(session, server, args):
    res = session.run(["printf", "%s\\0"] + args, timeout=10)
    assert res.stdout.split(b"\0")[:-1] == [a.encode() for a in args]
    assert not _canary(server)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(dirname=NAME, pyname=NAME)
def test_hostile_remote_dir_and_python_path(session, server, dirname, pyname):
    base = server.dir / "hostile"
    base.mkdir(exist_ok=True)
    # remote_dir: created over SFTP (no shell at all), then used as an argument
    target = str(base / dirname / "sub")
    session.makedirs(target)
    assert (base / dirname / "sub").is_dir()
    # python path: a symlink to this interpreter under a hostile name, run through the shell
    link = base / dirname / ("py-" + pyname)
    if not link.exists():
        link.symlink_to(sys.executable)
    res = session.run([str(link), "-c", "import sys; sys.stdout.write(sys.argv[1])", target],
                      timeout=30)
    assert res.text == target
    assert not _canary(server)


def test_hostile_device_name_remote_dir_and_python_end_to_end(server, tmp_path):
    """The whole agent start (SFTP upload, exec, hello) with every name hostile."""
    weird = "dev $(touch PWNED); `id` 'x\" \n"
    rdir = server.dir / weird / "cache"
    pydir = server.dir / ("bin " + weird)
    pydir.mkdir(parents=True)
    py = pydir / "python3 ;$(touch PWNED)"
    # a wrapper that execs this interpreter by its own path, not a symlink to it: a symlinked
    # venv python finds no pyvenv.cfg beside the link and starts the base interpreter, without
    # the venv's packages (torch)
    py.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    py.chmod(0o755)
    entry = server.inventory_entry("rpi4b", remote_dir=str(rdir), python=str(py))
    object.__setattr__(entry, "name", weird)
    a = open_ssh_agent(entry)
    try:
        hello = a.hello()
        assert hello["agent_version"]
        # the agent runs in this test's environment (venv or not)
        assert hello["facts"]["python_executable"] == sys.executable
        assert Path(a.agent_path).is_file() and a.agent_path.startswith(str(rdir))
    finally:
        a.close()
    assert not _canary(server)
    # error messages name the device even when its name is hostile, on one line
    bad = server.inventory_entry("rpi4b", python=str(pydir / "missing $(touch PWNED)"))
    object.__setattr__(bad, "name", weird)
    with pytest.raises(CostdbError) as e:
        open_ssh_agent(bad)
    assert "not found on the device" in str(e.value) and repr(weird) in str(e.value)
    assert not _canary(server)
