"""The ssh transport against a real OpenSSH sshd on 127.0.0.1: profiling, host keys, failures."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fake_boards import make_pi_tree, make_tx2_tree  # noqa: E402
from sshd import Sshd, keygen, sshd, untrusted_sshd  # noqa: E402,F401

from costdb.errors import CostdbError  # noqa: E402
from devices.inventory import Inventory  # noqa: E402
from devices.ssh import SshSession, open_session, open_ssh_agent, remote_command, resolve_target  # noqa: E402
from profiler.session import profile  # noqa: E402
from profiler.zoo import model_graph  # noqa: E402

pytestmark = pytest.mark.timeout(120)

FAST = {"samples": 3, "min_sample_time": 0.001, "warmups": 1, "idle_seconds": 0.3}


def _inv(entry) -> Inventory:
    return Inventory(None, {entry.name: entry})


def _rows(db: Path, device: str) -> list[sqlite3.Row]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM measurements WHERE device = ?", (device,)).fetchall()
    finally:
        con.close()


def _session(db: Path, sid: int) -> sqlite3.Row:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
    finally:
        con.close()


# --- end to end -------------------------------------------------------------------------------

def test_profile_pi_over_ssh_into_database(sshd, tmp_path):
    root = tmp_path / "pi-root"
    make_pi_tree(root, throttled="0x0")
    entry = sshd.inventory_entry("rpi4b", sysfs_root=str(root))
    db = tmp_path / "costs.db"
    graph = model_graph("mlp", 2, None)
    warnings = []

    def progress(event, **info):      # the Pi starts throttling mid-session
        if event == "op" and info["index"] == 3:
            (root / "throttled").write_text("0x50005\n")
    res = profile(str(db), device="rpi4b", model=graph, settings=FAST, inventory=_inv(entry),
                  on_warning=warnings.append, progress=progress)
    n = len(graph.distinct_specs())
    assert res.status == "complete" and res.measured == n
    rows = _rows(db, "rpi4b")
    assert len(rows) == n == len({r["signature"] for r in rows})
    assert all(r["status"] == "ok" and r["runtime_s"] > 0 for r in rows)
    # the Pi has no power monitor: energy is modelled, never labelled measured
    assert {r["energy_provenance"] for r in rows} == {"modeled"}
    s = _session(db, res.session_id)
    env = json.loads(s["environment_json"])
    assert env["transport"] == "ssh"
    facts = env["facts"]
    assert facts["board"].startswith("Raspberry Pi 4")
    assert facts["arm_clock_hz"] == 1500000000 and facts["soc_temp_c"] == 48.3
    assert facts["throttled"]["raw"] == "0x0" and not facts["throttled"]["throttled_now"]
    thr = facts["end"]["throttled"]             # read again after the session
    assert thr["raw"] == "0x50005" and thr["throttled_now"] and thr["throttled_since_boot"]
    assert thr["now"]["under_voltage"] and thr["now"]["throttled"]
    assert thr["since_boot"]["under_voltage"] and thr["since_boot"]["throttled"]
    assert any("throttled during the session" in w for w in warnings)
    assert any("throttled during the session" in w for w in json.loads(s["warnings_json"]))
    # resumable: a second run finds nothing missing
    again = profile(str(db), device="rpi4b", model=graph, settings=FAST, inventory=_inv(entry))
    assert again.planned == 0 and len(_rows(db, "rpi4b")) == n


def test_profile_tx2_energy_from_fake_ina3221(sshd, tmp_path):
    root = tmp_path / "tx2-root"
    make_tx2_tree(root, {"VDD_IN": 5000.0, "VDD_SYS_CPU": 1200.0})
    entry = sshd.inventory_entry("jetson-tx2", sysfs_root=str(root),
                                 sensor_options={"ina3221": {"interval_s": 0.005}})
    db = tmp_path / "costs.db"
    graph = model_graph("mlp", 2, None)
    res = profile(str(db), device="jetson-tx2", model=graph, settings=FAST, inventory=_inv(entry))
    assert res.status == "complete"
    s = _session(db, res.session_id)
    assert s["energy_sensor"] == "ina3221:VDD_IN"
    assert s["idle_power_w"] == pytest.approx(5.0, rel=1e-6)
    rows = _rows(db, "jetson-tx2")
    assert len(rows) == len(graph.distinct_specs())
    for r in rows:
        # constant 5 W: gross energy per call is exactly 5 W x the window per call, net is zero
        assert r["energy_provenance"] == "measured" and r["energy_sensor"] == "ina3221:VDD_IN"
        assert r["energy_j"] == pytest.approx(5.0 * r["energy_window_s"], rel=1e-6)
        assert abs(r["energy_net_j"]) <= 1e-6 * r["energy_j"]
    facts = json.loads(s["environment_json"])["facts"]
    assert facts["board"] == "quill"
    assert set(facts["power_rails"]) == {"VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR", "VDD_SYS_GPU",
                                         "VDD_SYS_SOC", "VDD_4V0_WIFI"}


def test_agent_is_cached_by_content_hash(sshd):
    s = open_session(sshd.inventory_entry("rpi4b"))
    try:
        path, uploaded = s.ensure_agent()
        assert uploaded and Path(path).is_file()
        assert path.startswith(str(sshd.dir / "agent-cache"))
        from devices.agent_bundle import bundle
        data, digest, dirname = bundle()
        assert Path(path).parent.name == dirname and Path(path).read_bytes() == data
        assert s.ensure_agent() == (path, False)            # same hash there: no upload
        # a corrupted cached copy is detected by its hash and replaced
        Path(path).write_bytes(b"x" * len(data))
        assert s.ensure_agent() == (path, True) and Path(path).read_bytes() == data
    finally:
        s.close()


def test_ssh_config_alias_and_proxy_jump(sshd, tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        f"Host jumpbox\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.user_key}\n"
        f"Host board\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.user_key}\n  ProxyJump jumpbox\n")
    entry = sshd.inventory_entry("rpi4b")
    conn = {"host": "board", "known_hosts": str(sshd.known_hosts)}
    t = resolve_target("rpi4b", conn, {"ssh_config": str(cfg)})
    assert (t.hostname, t.port, t.user, t.proxy_jump) == ("127.0.0.1", sshd.port, "root", "jumpbox")
    assert t.keys == [str(sshd.user_key)]
    s = SshSession(t)
    try:
        assert s._jumps, "ProxyJump was not used"
        assert s.run(["echo", "through the jump"]).text == "through the jump\n"
    finally:
        s.close()
    del entry


# --- host keys --------------------------------------------------------------------------------

def test_unknown_host_key_is_refused_then_accepted_then_change_refused(untrusted_sshd, tmp_path):
    d = untrusted_sshd
    entry = d.inventory_entry("rpi4b")
    with pytest.raises(CostdbError) as e:
        open_session(entry)
    msg = str(e.value)
    assert "not known" in msg and "--accept-new-host-key" in msg and "rpi4b" in msg
    assert "\n" not in msg
    assert not d.known_hosts.exists()
    s = open_session(entry, {"accept_new_host_key": True})
    s.close()
    assert f"[127.0.0.1]:{d.port}" in d.known_hosts.read_text()
    open_session(entry).close()                     # now known: no flag needed
    # the device's host key changes: refused, even with the flag
    d.stop()
    d.host_key.unlink()
    Path(f"{d.host_key}.pub").unlink()
    keygen(d.host_key)
    d.start()
    for opts in ({}, {"accept_new_host_key": True}):
        with pytest.raises(CostdbError) as e:
            open_session(entry, opts)
        assert "CHANGED" in str(e.value) and "ssh-keygen -R" in str(e.value)


def test_wrong_key_gives_clear_auth_error(sshd, tmp_path):
    other = keygen(tmp_path / "other_key")
    entry = sshd.inventory_entry("rpi4b", key=str(other))
    with pytest.raises(CostdbError) as e:
        open_ssh_agent(entry)
    msg = str(e.value)
    assert "authentication failed" in msg and "rpi4b" in msg and "ssh-copy-id" in msg
    assert "\n" not in msg


def test_unreachable_host(sshd):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = sshd.inventory_entry("rpi4b", port=port)
    with pytest.raises(CostdbError) as e:
        open_ssh_agent(entry)
    assert "cannot reach" in str(e.value) and "rpi4b" in str(e.value)


# --- remote failures --------------------------------------------------------------------------

def test_missing_python3(sshd):
    entry = sshd.inventory_entry("rpi4b", python="/nonexistent/python3")
    with pytest.raises(CostdbError) as e:
        open_ssh_agent(entry)
    assert "not found on the device" in str(e.value) and "python =" in str(e.value)


def test_missing_torch(sshd, tmp_path):
    wrapper = tmp_path / "python-without-torch"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    wrapper.chmod(0o755)
    entry = sshd.inventory_entry("rpi4b", python=str(wrapper))
    with pytest.raises(CostdbError) as e:
        open_ssh_agent(entry)
    assert "PyTorch is missing" in str(e.value) and "pip3 install torch" in str(e.value)


def test_hung_remote_command_times_out(sshd):
    s = open_session(sshd.inventory_entry("rpi4b"))
    try:
        with pytest.raises(CostdbError) as e:
            s.run(["sleep", "60"], timeout=1)
        assert "timed out after 1 s" in str(e.value) and "rpi4b" in str(e.value)
        assert not sshd.remote_processes("sleep\x0060")   # ended on the device, not orphaned
        # a failing command reports its exit status and stderr
        with pytest.raises(CostdbError) as e:
            s.run(["ls", "/definitely/not/here"])
        assert "exit status 2" in str(e.value) and "No such file" in str(e.value)
    finally:
        s.close()


def test_hung_op_times_out_and_the_session_goes_on(sshd):
    entry = sshd.inventory_entry("rpi4b", timeout=2)
    specs = model_graph("mlp", 2, None).distinct_specs()[:2]
    a = open_ssh_agent(entry)
    try:
        slow = a.measure(specs[0], {"samples": 3, "min_sample_time": 5, "warmups": 1})
        assert slow["status"] == "error" and "timed out after 2 s" in slow["error"]
        ok = a.measure(specs[1], FAST)
        assert ok["status"] == "ok"
        assert a.agent_restarts == 1
    finally:
        a.close()


def test_full_remote_disk(sshd, tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        (mnt / "filler").write_bytes(b"\0" * 8192)
        entry = sshd.inventory_entry("rpi4b", remote_dir=str(mnt / "cache"))
        with pytest.raises(CostdbError) as e:
            open_ssh_agent(entry)
        msg = str(e.value)
        assert "no space left" in msg and "remote_dir" in msg and "rpi4b" in msg
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_remote_command_is_quoted_and_time_limited():
    cmd = remote_command(["python3", "a b", "$(rm -rf /)", "x;y"], 30)
    assert cmd == "timeout -k 5 30 python3 'a b' '$(rm -rf /)' 'x;y'"


def test_devices_check_logs_in_with_verified_host_key(untrusted_sshd):
    from devices.reach import check_reachable
    entry = untrusted_sshd.inventory_entry("rpi4b")
    ok, detail = check_reachable("rpi4b", _inv(entry), timeout=5)
    assert not ok and "--accept-new-host-key" in detail
    untrusted_sshd.trust()
    ok, detail = check_reachable("rpi4b", _inv(entry), timeout=5)
    assert ok and "host key verified" in detail


def test_ssh_agent_key_is_used(sshd, tmp_path, monkeypatch):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        import time
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.01)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(sshd.user_key)], env=env, check=True,
                       capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))            # no ~/.ssh/id_* to fall back on
        entry = sshd.inventory_entry("rpi4b")
        conn = {k: v for k, v in entry.connection.items() if k != "key"}
        object.__setattr__(entry, "connection", conn)
        s = open_session(entry)
        try:
            assert s.run(["echo", "via ssh-agent"]).text == "via ssh-agent\n"
        finally:
            s.close()
    finally:
        agent.kill()
        agent.wait()
