"""The CLI through click's CliRunner: outputs, exit codes and exact error texts."""
from __future__ import annotations

import json
import os
import sqlite3
import shutil
from pathlib import Path

import pandas as pd
import pytest

import costdb
from costdb.cli import cli
from profiler.zoo import model_graph

FAST = ["--samples", "3", "--min-sample-time", "0.001", "--iterations", "3", "--no-iteration", "-q"]


def test_profile_prints_cost_table_and_stores_every_distinct_op(runner, db_path):
    r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "4", "--db", db_path, *FAST])
    assert r.exit_code == 0, r.output
    g = model_graph("mlp", batch=4)
    assert f"measured {len(g.signatures())} of {len(g.signatures())} ops" in r.output
    assert "mlp[batch=4,input=784,dtype=float32] on local" in r.output
    assert "runtime (median)" in r.output and "(modeled)" in r.output
    assert f"in-context costs of {len(g.signatures())} ops from" in r.output
    with costdb.open(db_path) as db:
        for kind in ("isolated", "in_context"):  # every op alone, and inside real iterations
            n = db.conn.execute("SELECT count(*), count(DISTINCT signature) FROM measurements"
                                " WHERE kind = ?", (kind,)).fetchone()
            assert n == (len(g.signatures()), len(g.signatures()))
        s = db.sessions("local").iloc[0]
        assert s["status"] == "complete"
        env = json.loads(s["environment_json"])
        for key in ("cpu_model", "cores", "kernel", "python", "torch", "affinity"):
            assert key in env["facts"]
        assert s["costdb_version"] == costdb.__version__
    # a complete profile measures nothing new...
    r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "4", "--db", db_path, *FAST])
    assert r.exit_code == 0
    assert f"all {len(g.signatures())} distinct ops of mlp[batch=4,input=784,dtype=float32] are already measured" in r.output
    # ...unless forced
    r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "4", "--db", db_path, "--force", *FAST])
    assert r.exit_code == 0
    with costdb.open(db_path) as db:
        assert db.conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == 4 * len(g.signatures())
        df = db.costs("local", "mlp")
        assert len(df) == len(g.nodes)    # the latest measurement per op
        assert df.attrs["kind"] == "in_context" and set(df["kind"]) == {"in_context"}


def test_models_sharing_ops_are_measured_once(runner, db_path):
    r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "4", "--db", db_path, *FAST])
    assert r.exit_code == 0
    # same MLP, another input width: its first layer differs, the rest is shared
    r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "4", "--input", "100", "--db", db_path, *FAST])
    assert r.exit_code == 0
    a, b = model_graph("mlp", batch=4), model_graph("mlp", batch=4, input_shape=(100,))
    shared = set(a.signatures()) & set(b.signatures())
    assert shared
    assert f"({len(shared)} already in the database)" in r.output


@pytest.mark.parametrize("args, message", [
    (["profile", "--device", "cray-1"],
     "Error: unknown device 'cray-1'; known devices: jetson-tx2, local, mkr1000, nrf52840, qemu-a72, qemu-m0, qemu-m4f, rpi4b"),
    (["profile", "--model", "alexnet"],
     "Error: unknown model 'alexnet'; known models: resnet18, resnet50, vgg16, mobilenetv2, bert-tiny, "
     "mlp, tinycnn (or path/to/file.py:factory)"),
    (["profile", "--model", "mlp", "--input", "3xx2"],
     "Error: bad shape '3xx2'; write dimensions separated by x, e.g. 3x32x32"),
    (["profile", "--model", "resnet18", "--input", "3x32"],
     "Error: this model needs a CxHxW input, got 3x32"),
    (["profile", "--device", "rpi4b", "--model", "mlp"],
     "Error: device 'rpi4b' has no address; add [devices.rpi4b] with host = \"ssh-alias\" to the "
     "inventory (~/.config/costdb/inventory.toml)"),
    (["profile", "--cpus", "0,99"],
     "Error: --cpus 0,99: CPU(s) [99] not available; this machine has"),
])
def test_usage_errors_are_one_line_exit_2(runner, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    db = str(tmp_path / "c.db")
    r = runner.invoke(cli, [*args, "--db", db, *FAST])
    assert r.exit_code == 2, r.output
    assert r.output.startswith(message)
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not os.path.exists(db) or args[0] != "profile" or "cpus" in str(args)  # nothing half-written


def test_database_errors(runner, tmp_path):
    missing = tmp_path / "missing.db"
    r = runner.invoke(cli, ["query", "SELECT 1", "--db", str(missing)])
    assert r.exit_code == 2
    assert r.output == (f"Error: database {missing} does not exist; run 'costdb profile --db {missing} ...'"
                        " first or check the path\n")
    assert not missing.exists()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 100)
    before = corrupt.read_bytes()
    r = runner.invoke(cli, ["profile", "--model", "mlp", "--db", str(corrupt), *FAST])
    assert r.exit_code == 2
    assert r.output == f"Error: {corrupt} is not a costdb database (not SQLite or corrupt); give another --db path\n"
    assert corrupt.read_bytes() == before


def test_read_only_path_as_unprivileged_user(tmp_path):
    """Root ignores permissions, so the check runs in a child that drops to 'nobody'."""
    import devices.local  # noqa: F401  (the child cannot import from root's home directory)
    import profiler.session  # noqa: F401
    import tempfile
    base = tempfile.mkdtemp(prefix="costdb-ro-")       # /tmp itself: traversable by nobody
    os.chmod(base, 0o755)
    d = Path(base) / "locked"
    d.mkdir()
    os.chmod(d, 0o555)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, run the CLI, report through the pipe
        code, out = 99, ""
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            from click.testing import CliRunner
            r = CliRunner().invoke(cli, ["profile", "--model", "mlp", "--db", str(d / "x.db"), *FAST])
            code, out = r.exit_code, r.output + (repr(r.exception) if r.exit_code == 1 else "")
        finally:
            os.write(wfd, json.dumps([code, out]).encode())
            os._exit(0)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 65536):
        data += chunk
    os.waitpid(pid, 0)
    code, out = json.loads(data)
    assert code == 2
    assert out == (f"Error: cannot create database {d / 'x.db'}: directory {d} is not writable; "
                   "choose another --db path\n")
    assert not (d / "x.db").exists()
    shutil.rmtree(base)


def test_query_formats_and_read_only(runner, profiled_mlp):
    r = runner.invoke(cli, ["query", "SELECT op, phase FROM ops ORDER BY op LIMIT 2", "--db", profiled_mlp,
                            "--format", "csv"])
    assert r.exit_code == 0
    assert r.output.splitlines()[0] == "op,phase"
    r = runner.invoke(cli, ["query", "SELECT count(*) AS n FROM measurements", "--db", profiled_mlp,
                            "--format", "json"])
    assert json.loads(r.output)[0]["n"] > 0
    r = runner.invoke(cli, ["query", "DROP TABLE ops", "--db", profiled_mlp])
    assert r.exit_code == 2
    assert r.output.startswith("Error: query refused: DROP TABLE is not allowed; ")
    assert r.output.count("\n") == 1
    r = runner.invoke(cli, ["query", "SELECT nope FROM ops", "--db", profiled_mlp])
    assert r.output == "Error: query failed: no such column: nope\n"


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export(runner, profiled_mlp, tmp_path, fmt):
    out = tmp_path / f"costs.{fmt}"
    r = runner.invoke(cli, ["export", "--db", profiled_mlp, "--format", fmt, "--device", "local",
                            "--model", "mlp", "-o", str(out)])
    assert r.exit_code == 0, r.output
    df = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[fmt](out)
    assert len(df) == len(model_graph("mlp", batch=4).nodes)
    assert {"signature", "runtime_s", "energy_j", "energy_provenance"} <= set(df.columns)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_export_parquet_needs_a_file(runner, profiled_mlp):
    r = runner.invoke(cli, ["export", "--db", profiled_mlp, "--format", "parquet"])
    assert r.exit_code == 2
    assert r.output == "Error: --format parquet needs an output file: -o costs.parquet\n"


def test_costs_models_sessions_devices(runner, profiled_mlp, tmp_path, monkeypatch):
    r = runner.invoke(cli, ["costs", "--model", "mlp", "--db", profiled_mlp, "--top", "0"])
    assert r.exit_code == 0 and "linear" in r.output and "Per iteration" in r.output
    r = runner.invoke(cli, ["models", "--db", profiled_mlp])
    assert r.exit_code == 0 and "bert-tiny" in r.output and "mlp[batch=4" in r.output
    r = runner.invoke(cli, ["sessions", "--db", profiled_mlp])
    assert r.exit_code == 0 and "complete" in r.output
    inv = tmp_path / "inv.toml"
    inv.write_text('[devices.pi]\nbased_on = "rpi4b"\nhostname = "127.0.0.1"\nport = 9\n')
    r = runner.invoke(cli, ["devices", "--inventory", str(inv), "--check"])
    assert r.exit_code == 0, r.output
    lines = {ln.split("│")[1].strip(): ln for ln in r.output.splitlines() if ln.startswith("│")}
    assert "local" in lines and "yes" in lines["local"]
    assert "pi" in lines and "no" in lines["pi"]              # nothing listens on port 9
    assert "mkr1000" in lines and "serial" in lines["mkr1000"]


def test_malformed_inventory_on_the_command_line(runner, tmp_path):
    inv = tmp_path / "inv.toml"
    inv.write_text("[devices.x\n")
    r = runner.invoke(cli, ["devices", "--inventory", str(inv)])
    assert r.exit_code == 2
    assert r.output.startswith(f"Error: inventory {inv} line 1: ")
    assert r.output.count("\n") == 1


def test_help_explains(runner):
    r = runner.invoke(cli, ["profile", "--help"])
    assert r.exit_code == 0
    assert "Resumable" in r.output and "--cpus" in r.output and "--threads" in r.output
