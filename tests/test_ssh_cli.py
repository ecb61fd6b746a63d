"""``costdb profile`` over ssh from the command line: several devices in parallel, host keys."""
from __future__ import annotations

import os
import sqlite3
import sys

import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from fake_boards import make_pi_tree, make_tx2_tree  # noqa: E402
from sshd import sshd, untrusted_sshd  # noqa: E402,F401

from costdb.cli import cli  # noqa: E402
from profiler.parallel import profile_many  # noqa: E402
from profiler.zoo import model_graph  # noqa: E402

pytestmark = pytest.mark.timeout(150)

ARGS = ["--model", "mlp", "--batch", "2", "--samples", "3", "--min-sample-time", "0.001",
        "--no-iteration", "-q", "--top", "3"]


def _inventory(server, tmp_path, names=("rpi4b", "jetson-tx2")):
    pi, tx2 = tmp_path / "pi", tmp_path / "tx2"
    make_pi_tree(pi)
    make_tx2_tree(tx2, {"VDD_IN": 4000.0})
    roots = {"rpi4b": pi, "jetson-tx2": tx2}
    text = "".join(server.inventory_toml(n, sysfs_root=str(roots[n])) for n in names)
    p = tmp_path / "inventory.toml"
    p.write_text(text)
    return p


def test_cli_all_devices_in_parallel(sshd, tmp_path):
    inv = _inventory(sshd, tmp_path)
    db = tmp_path / "costs.db"
    r = CliRunner().invoke(cli, ["profile", "--all", "--inventory", str(inv), "--db", str(db)] + ARGS,
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    n = len(model_graph("mlp", 2, None).distinct_specs())
    con = sqlite3.connect(db)
    try:
        per_device = dict(con.execute("SELECT device, count(*) FROM measurements GROUP BY device"))
        dups = con.execute("SELECT count(*) FROM (SELECT device, signature FROM measurements "
                           "GROUP BY device, signature HAVING count(*) > 1)").fetchone()[0]
        prov = dict(con.execute("SELECT device, group_concat(DISTINCT energy_provenance) "
                                "FROM measurements GROUP BY device"))
    finally:
        con.close()
    assert per_device == {"rpi4b": n, "jetson-tx2": n} and dups == 0
    assert prov == {"rpi4b": "modeled", "jetson-tx2": "measured"}


def test_cli_unknown_host_key_needs_the_flag(untrusted_sshd, tmp_path):
    inv = _inventory(untrusted_sshd, tmp_path, names=("rpi4b",))
    db = tmp_path / "costs.db"
    base = ["profile", "--device", "rpi4b", "--inventory", str(inv), "--db", str(db)] + ARGS
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "--accept-new-host-key" in lines[0] and "rpi4b" in lines[0]
    r = CliRunner().invoke(cli, base + ["--accept-new-host-key"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert untrusted_sshd.known_hosts.exists()


def test_profile_many_reports_a_failing_device_and_finishes_the_others(sshd, tmp_path):
    inv = _inventory(sshd, tmp_path)
    text = inv.read_text().replace('python = "', 'python = "/nonexistent', 1)  # first device only
    inv.write_text(text)
    res = profile_many(str(tmp_path / "costs.db"), ["rpi4b", "jetson-tx2"],
                       model=model_graph("mlp", 2, None),
                       settings={"samples": 3, "min_sample_time": 0.001, "warmups": 1},
                       inventory=str(inv))
    assert "not found on the device" in str(res["rpi4b"])
    assert res["jetson-tx2"].status == "complete"
