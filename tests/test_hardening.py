"""Hostile inputs and hostile files: every one is one line and exit 2, nothing half-written,
nothing outside the database created or replaced (issue 13).

Real files throughout: SQLite files, FIFOs, /dev/null and /dev/full, symlinks, and (as root) a
small tmpfs for a full disk and a read-only remount for read-only storage.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path

import pytest

import costdb
from costdb import schema
from costdb.cli import cli
from costdb.errors import CostdbError
from costdb.files import write_output, write_text_atomic
from costdb.units import parse_duration, parse_size
from costdb.validate import check_graph, read_json
from devices.inventory import load

ROOT = os.geteuid() == 0


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


# --- units and options -----------------------------------------------------------------------

@pytest.mark.parametrize("text", ["4096", "1e308", "1e400B", "99999999999999999999999TiB",
                                  "nanB", "-1B", "12 parsecs", ""])
def test_sizes_need_a_unit_and_a_range(text):
    with pytest.raises(CostdbError) as e:
        parse_size(text)
    assert "\n" not in str(e.value)


def test_sizes_and_durations_with_units():
    assert parse_size("4096B") == 4096 and parse_size("1KiB") == 1024
    assert parse_size(2**63 - 1) == 2**63 - 1
    assert parse_duration("150ms") == pytest.approx(0.15) and parse_duration(2) == 2.0
    for bad in ("2", "1e400s", "inf", "nan s", "400d"):
        with pytest.raises(CostdbError):
            parse_duration(bad)


@pytest.mark.parametrize("args, expected", [
    (["profile", "--min-sample-time", "nan"], "'--min-sample-time': 'nan' is not a finite number"),
    (["profile", "--min-sample-time", "inf"], "is not a finite number"),
    (["profile", "--min-sample-time", "1e300"], "is out of range"),
    (["profile", "--samples", "99999999999999999999999"], "'--samples'"),
    (["profile", "--batch", "1000000000", "--model", "mlp"], "more than 2^31"),
    (["profile", "--input", "3x100000x100000", "--model", "mlp"], "elements, more than"),
    (["solve", "--memory", "1e400"], "has no unit"),
    (["solve", "--memory", "1e308B"], "is too large"),
    (["solve", "--memory", "99999999999999999999999TiB"], "is too large"),
    (["solve", "--deadline", "1e400s"], "out of range"),
    (["solve", "--deadline", "2"], "has no unit"),
    (["solve", "--time-limit", "nan"], "not a finite number"),
    (["solve", "-o", "/nonexistent/dir/s.json"], "directory /nonexistent/dir does not exist"),
    (["pareto", "--points", "0"], "out of range"),
    (["costs", "--model", "m", "--session", "-3"], "out of range"),
])
def test_bad_options_are_one_line_before_any_work(runner, tmp_path, args, expected):
    db = tmp_path / "c.db"
    r = runner.invoke(cli, [*args, "--db", str(db)])
    assert r.exit_code == 2, r.output
    assert expected in _one_error_line(r.output)
    assert not db.exists()          # refused before the database was even created


# --- inventory schema ------------------------------------------------------------------------

@pytest.mark.parametrize("line, key, expected", [
    ("hostname = 5", "hostname", "a host name or IP address as a string"),
    ("user = 5", "user", "a user name as a string"),
    ("key = 5", "key", "a path as a string"),
    ("known_hosts = 5", "known_hosts", "a path as a string"),
    ("remote_dir = 5", "remote_dir", "a path as a string"),
    ("python = [1]", "python", "a path as a string"),
    ('threads = "abc"', "threads", "an integer 1-4096"),
    ("threads = -1", "threads", "an integer 1-4096"),
    ("timeout = nan", "timeout", "a number of seconds"),
    ("start_timeout = 0", "start_timeout", "a number of seconds"),
    ('hostname = "' + "a" * 64 + '.example"', "hostname",
     "a host name or IP address as a string (labels of at most 63"),
    ('user = "pi\\nroot"', "user", "a user name as a string"),
])
def test_inventory_values_are_checked_against_the_schema(tmp_path, line, key, expected):
    f = tmp_path / "inv.toml"
    host = "" if line.startswith("hostname") else 'host = "h"\n'
    f.write_text(f'[devices.pi]\nbased_on = "rpi4b"\n{host}{line}\n')
    with pytest.raises(CostdbError) as e:
        load(f)
    msg = str(e.value)
    assert msg.startswith(f"inventory {f} line ") and f"device 'pi': {key} must be {expected}" in msg
    assert "\n" not in msg


def test_inventory_unknown_key_did_you_mean_and_profile_types(tmp_path):
    f = tmp_path / "inv.toml"
    f.write_text('[devices.pi]\nbased_on = "rpi4b"\nhost = "h"\nhostnme = "x"\n')
    with pytest.raises(CostdbError, match=r"line 1: device 'pi': unknown key\(s\) hostnme "
                                          r"\(did you mean 'hostname'\?\)"):
        load(f)
    f.write_text('[devices.pi]\nbased_on = "rpi4b"\nhost = "h"\n[devices.pi.profile]\n'
                 'ram_bytes = "8G"\n')
    with pytest.raises(CostdbError, match="profile.ram_bytes must be a non-negative integer"):
        load(f)
    f.write_bytes(b'[devices.pi]\nbased_on = "rpi4b"\nhost = "\xff"\n')
    with pytest.raises(CostdbError, match="line 3: not UTF-8 text"):
        load(f)
    f.write_text("devices = 5\n")
    with pytest.raises(CostdbError, match="devices must be a table"):
        load(f)


def test_devices_check_with_a_64_character_label_is_one_line(runner, tmp_path):
    f = tmp_path / "inv.toml"
    f.write_text('[devices.pi]\nbased_on = "rpi4b"\nhostname = "' + "b" * 64 + '"\n')
    r = runner.invoke(cli, ["devices", "--check", "--inventory", str(f)])
    assert r.exit_code == 2 and "labels of at most 63" in _one_error_line(r.output)


# --- graph JSON --------------------------------------------------------------------------------

@pytest.mark.parametrize("doc, expected", [
    ({"nodes": [{"id": "a", "deps": 5, "runtime_s": 1, "energy_j": 1, "output_bytes": 1}]},
     "deps must be a list of node ids"),
    ({"nodes": [{"id": [1], "runtime_s": 1, "energy_j": 1, "output_bytes": 1}]},
     "id must be a string or an integer"),
    ({"nodes": [{"id": {"x": 1}, "runtime_s": 1, "energy_j": 1, "output_bytes": 1}]},
     "id must be a string or an integer"),
    ({"nodes": [{"id": "a", "phase": "bwd", "runtime_s": 1, "energy_j": 1, "output_bytes": 1}]},
     "no forward node"),
    ({"nodes": [{"id": "a", "runtime_s": 1, "energy_j": 1, "output_bytes": 2**60}]},
     "whole number of bytes"),
    ({"nodes": [{"id": "a", "runtime_s": 1e300, "energy_j": 1, "output_bytes": 1}]},
     "finite number"),
    ({"nodes": [{"id": "a", "runtime_s": 1, "energy_j": 1, "output_bytes": 1}], "edges": 3},
     "'edges' must be a list"),
    ({"nodes": []}, "non-empty list"),
    ([1, 2], "must be an object"),
])
def test_graph_json_schema(doc, expected):
    with pytest.raises(CostdbError, match=expected):
        check_graph(doc)


def test_graph_files_that_are_not_json(tmp_path):
    bad = tmp_path / "g.json"
    bad.write_bytes(b'{"nodes": [{"id": "\xff"}]}')
    with pytest.raises(CostdbError, match="not UTF-8"):
        read_json(bad, "graph file")
    bad.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CostdbError, match="nests .* levels deep"):
        read_json(bad, "graph file")
    bad.write_text('{"nodes": NaN}')
    with pytest.raises(CostdbError, match="not valid JSON"):
        read_json(bad, "graph file")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(CostdbError, match="not a regular file"):
        read_json(fifo, "graph file")        # refused without opening: no hang


# --- the read-only query door ------------------------------------------------------------------

@pytest.mark.parametrize("sql, expected", [
    ("", "query is empty"),
    ("   -- only a comment", "query is empty"),
    ("BEGIN", "query refused: transactions"),
    ("SAVEPOINT x", "query refused: SAVEPOINT"),
    ("PRAGMA x = y", "query refused: PRAGMA x = y"),
    ("PRAGMA user_version = 99", "query refused: PRAGMA user_version = 99"),
    ("PRAGMA journal_mode = DELETE", "query refused: PRAGMA journal_mode"),
    ("DELETE FROM ops", "query refused: DELETE ops"),
    ("DROP TABLE ops", "query refused: DROP TABLE"),
    ("CREATE TABLE t (x)", "query refused: CREATE TABLE"),
    ("ATTACH 'ATTACHED.db' AS a", "query refused: ATTACH"),
    ("VACUUM INTO 'VACUUMED.db'", "query refused: ATTACH (and VACUUM INTO)"),
    ("SELECT 1; DELETE FROM ops", "one statement at a time"),
])
def test_query_refuses_everything_but_reading(runner, profiled_mlp, tmp_path, monkeypatch, sql,
                                              expected):
    monkeypatch.chdir(tmp_path)
    before = Path(profiled_mlp).read_bytes()
    r = runner.invoke(cli, ["query", sql, "--db", profiled_mlp])
    assert r.exit_code == 2, r.output
    assert expected in _one_error_line(r.output)
    assert Path(profiled_mlp).read_bytes() == before
    assert not list(tmp_path.iterdir())                 # no ATTACHED.db / VACUUMED.db


def test_query_reading_pragmas_work(profiled_mlp):
    with costdb.open(profiled_mlp, readonly=True) as db:
        assert "signature" in set(db.query("PRAGMA table_info(measurements)")["name"])
        assert int(db.query("PRAGMA user_version").iloc[0, 0]) == schema.LATEST
        assert len(db.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                            "WHERE x < 5) SELECT x FROM c")) == 5


# --- output files ------------------------------------------------------------------------------

def test_output_through_a_symlink_keeps_the_link(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]


def test_output_to_device_nodes_is_written_through_never_replaced():
    st = os.stat("/dev/null")
    write_output("/dev/null", b"x" * 100000)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == st.st_rdev
    if os.path.exists("/dev/full"):
        with pytest.raises(CostdbError, match="no space left"):
            write_output("/dev/full", b"x" * 10)
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_output_to_a_fifo_reaches_the_reader_and_no_reader_is_refused(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    with pytest.raises(CostdbError, match="FIFO with no reader"):
        write_output(fifo, b"data")
    got = {}

    def reader():
        with open(fifo, "rb") as f:
            got["data"] = f.read()
    t = threading.Thread(target=reader)
    t.start()
    payload = os.urandom(300000)        # more than a pipe buffer
    import time
    deadline = time.monotonic() + 60
    while True:                          # until the reader has opened its end
        try:
            write_output(fifo, payload)
            break
        except CostdbError:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    t.join(60)
    assert got["data"] == payload and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_export_to_dev_null_and_stdout_through_the_cli(runner, profiled_mlp, tmp_path):
    r = runner.invoke(cli, ["export", "--db", profiled_mlp, "--format", "csv", "-o", "/dev/null"])
    assert r.exit_code == 0, r.output
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    r = runner.invoke(cli, ["export", "--db", profiled_mlp, "--format", "csv", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory" in _one_error_line(r.output)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str = "1m", ro: bool = False):
    path.mkdir(exist_ok=True)
    if not ROOT or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                   str(path)], capture_output=True).returncode != 0:
        pytest.skip("needs root and mount (tmpfs) to make a full or read-only file system")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_output_on_a_full_disk_is_an_error_and_leaves_the_old_file(tmp_path):
    with _tmpfs(tmp_path / "mnt", "64k") as mnt:
        target = mnt / "out.bin"
        target.write_bytes(b"old")
        with pytest.raises(CostdbError, match="no space left"):
            write_output(target, os.urandom(1 << 20))
        assert target.read_bytes() == b"old"
        assert [p.name for p in mnt.iterdir()] == ["out.bin"]     # no temp file left


# --- database files ------------------------------------------------------------------------------

def test_fifo_and_device_database_paths_are_refused_without_blocking(runner, tmp_path):
    fifo = tmp_path / "db.fifo"
    os.mkfifo(fifo)
    for cmd in (["sessions"], ["query", "SELECT 1"], ["costs", "--model", "m"]):
        r = runner.invoke(cli, [*cmd, "--db", str(fifo)])
        assert r.exit_code == 2 and "is a FIFO" in _one_error_line(r.output)
    r = runner.invoke(cli, ["sessions", "--db", "/dev/null"])
    assert r.exit_code == 2 and "is a device" in _one_error_line(r.output)


def _corrupt(path: Path) -> None:
    """Flip bits in every page but the header page."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for off in range(page, len(data), 97):
        data[off] ^= 0x5A
    path.write_bytes(bytes(data))


def test_corrupted_pages_are_one_line(runner, profiled_mlp, tmp_path):
    db = tmp_path / "bad.db"
    with costdb.open(profiled_mlp, readonly=True) as src:
        dst = sqlite3.connect(db)
        src.conn.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
        dst.close()
    _corrupt(db)
    for cmd in (["sessions"], ["settings"], ["costs", "--model", "mlp"],
                ["query", "SELECT * FROM measurements"], ["export", "--format", "json"]):
        r = runner.invoke(cli, [*cmd, "--db", str(db)])
        assert r.exit_code == 2, (cmd, r.output)
        _one_error_line(r.output)


def test_wal_database_on_read_only_storage_opens_for_every_read_command(runner, profiled_mlp,
                                                                          tmp_path):
    with _tmpfs(tmp_path / "ro", "64m") as mnt:
        db = mnt / "c.db"
        shutil.copy(profiled_mlp, db)
        with costdb.open(db) as d:
            assert d.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        before = db.read_bytes()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        for cmd in (["sessions"], ["settings"], ["costs", "--model", "mlp"],
                    ["query", "SELECT count(*) FROM measurements"],
                    ["export", "--format", "csv"]):
            r = runner.invoke(cli, [*cmd, "--db", str(db)])
            assert r.exit_code == 0, (cmd, r.output)
        r = runner.invoke(cli, ["solve", "--db", str(db), "--device", "local", "--model", "mlp"])
        assert r.exit_code == 2 and "read-only" in _one_error_line(r.output)
        assert db.read_bytes() == before
        assert sorted(p.name for p in mnt.iterdir()) == ["c.db"]


def test_disk_full_while_writing_the_database_is_one_line_and_consistent(runner, tmp_path):
    with _tmpfs(tmp_path / "full", "300k") as mnt:
        db = mnt / "c.db"
        g = tmp_path / "g.json"
        g.write_text('{"nodes": [' + ",".join(
            f'{{"id": {i}, "deps": [{i - 1}], "runtime_s": 1, "energy_j": 1, "output_bytes": 8, '
            f'"name": "{"n" * 2000}{i}"}}' if i else
            '{"id": 0, "runtime_s": 1, "energy_j": 1, "output_bytes": 8}' for i in range(60))
            + "]}")
        filler = mnt / "filler"
        codes = set()
        for _ in range(40):        # solve until the schedules no longer fit
            r = runner.invoke(cli, ["solve", "--db", str(db), "--graph", str(g), "--method",
                                    "lp_round", "--time-limit", "5"])
            codes.add(r.exit_code)
            if r.exit_code == 2:
                assert "full" in _one_error_line(r.output)
                break
            with open(filler, "ab") as f:   # eat the space left
                with contextlib.suppress(OSError):
                    f.write(b"\0" * 16384)
        assert 2 in codes
        filler.unlink(missing_ok=True)
        with costdb.open(db, readonly=True) as d:   # every stored schedule is complete
            assert d.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for s in d.schedule_list():
                assert s.schedule_json


def test_newer_migration_appended_keeps_older_files_working(tmp_path):
    conn = sqlite3.connect(tmp_path / "v1.db")
    assert schema.migrate(conn, target=1) == 1
    conn.close()
    with costdb.open(tmp_path / "v1.db") as db:
        assert db.version == schema.LATEST
        assert db.claims() == []
