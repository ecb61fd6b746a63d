"""The cost database on real SQLite files: schema versions, migrations, refusals, read API."""
from __future__ import annotations

import json
import os
import sqlite3

import pytest

import costdb
from costdb import schema
from costdb.errors import CostdbError
from costdb.records import Measurement
from devices.catalog import get_profile
from profiler.zoo import model_graph


def _v1_database(path):
    """A database as costdb wrote it at schema version 1, with one measurement in it."""
    conn = sqlite3.connect(path)
    assert schema.migrate(conn, target=1) == 1
    conn.execute("INSERT INTO devices (name, board, transport) VALUES ('local', 'host', 'local')")
    conn.execute("INSERT INTO sessions (id, device, status, started_at) VALUES (1, 'local', 'complete', 't')")
    conn.execute("INSERT INTO ops (signature, op, phase, dtype, spec_json) VALUES ('s1', 'relu', 'fwd', 'float32', '{}')")
    conn.execute("INSERT INTO measurements (device, signature, session_id, status, runtime_s, samples,"
                 " energy_j, energy_provenance, runtime_provenance, measured_at)"
                 " VALUES ('local', 's1', 1, 'ok', 0.5, 3, 2.0, 'modeled', 'measured', 't')")
    conn.commit()
    conn.close()


def test_new_database_is_latest_version_in_wal_mode(db_path):
    db = costdb.open(db_path, create=True)
    assert db.version == schema.LATEST
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    db.close()


def test_older_database_is_migrated_keeping_its_data(db_path):
    _v1_database(db_path)
    db = costdb.open(db_path)
    assert db.version == schema.LATEST
    row = db.conn.execute("SELECT runtime_s, energy_j, energy_net_j FROM current_measurements").fetchone()
    assert row == (0.5, 2.0, None)                     # kept, new column present and empty
    assert db.iterations().empty
    db.close()


def test_newer_database_is_refused(db_path):
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    conn.close()
    with pytest.raises(CostdbError) as e:
        costdb.open(db_path)
    assert str(e.value) == (f"database {db_path} has schema version {schema.LATEST + 1}, newer than "
                            f"this costdb supports ({schema.LATEST}); upgrade costdb")


def test_failed_migration_leaves_previous_version(db_path, monkeypatch):
    _v1_database(db_path)
    monkeypatch.setattr(schema, "MIGRATIONS", [schema.MIGRATIONS[0], schema.MIGRATIONS[1] + "\nSELECT * FROM no_such_table;"])
    monkeypatch.setattr(schema, "LATEST", 2)
    with pytest.raises(CostdbError, match="cannot migrate"):
        costdb.open(db_path)
    conn = sqlite3.connect(db_path)
    assert schema.version(conn) == 1
    cols = [r[1] for r in conn.execute("PRAGMA table_info(measurements)")]
    assert "energy_net_j" not in cols                  # the half-done migration was rolled back
    conn.close()


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CostdbError, match="does not exist"):
        costdb.open(tmp_path / "nope.db")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(CostdbError) as e:
        costdb.open(bad)
    assert str(e.value) == f"{bad} is not a costdb database (not SQLite or corrupt); give another --db path"
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (x)")
    c.close()
    with pytest.raises(CostdbError, match="not a costdb database"):
        costdb.open(other)
    assert sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]


def test_query_is_read_only(profiled_mlp):
    db = costdb.open(profiled_mlp, readonly=True)
    assert len(db.query("SELECT * FROM ops")) > 0
    with pytest.raises(CostdbError, match="query refused: DELETE ops is not allowed"):
        db.query("DELETE FROM ops")
    db.close()


def test_costs_frame_one_row_per_node(profiled_mlp):
    db = costdb.open(profiled_mlp)
    g = model_graph("mlp", batch=4)
    df = db.costs("local", "mlp")
    assert len(df) == len(g.nodes)
    assert list(df["idx"]) == list(range(len(g.nodes)))
    for col in ("signature", "phase", "runtime_s", "runtime_stdev_s", "runtime_cv", "peak_memory_bytes",
                "output_bytes", "energy_j", "energy_provenance", "runtime_provenance", "session_id"):
        assert col in df.columns
    assert df["status"].eq("ok").all()
    assert (df["runtime_s"] > 0).all()
    # no sensor on this machine: energy is modelled, and says so
    assert set(df["energy_provenance"]) == {"modeled"}
    prof = get_profile("local")
    assert df["energy_j"].tolist() == pytest.approx((df["runtime_s"] * prof.active_power_w).tolist())
    ops = db.ops("local")
    assert len(ops) == df["signature"].nunique()
    summary = db.summary("local")
    assert summary.loc[0, "runtime_s"] == pytest.approx(df["runtime_s"].sum())
    with pytest.raises(CostdbError, match="model 'resnet18' is not in"):
        db.costs("local", "resnet18")
    with pytest.raises(CostdbError, match="device 'rpi4b' has no data"):
        db.costs("rpi4b", "mlp")
    db.close()


def test_graph_round_trips_through_the_database(db_path):
    g = model_graph("tinycnn")
    db = costdb.open(db_path, create=True)
    mid = db.save_graph(g)
    assert db.save_graph(g) == mid                       # idempotent
    assert db.graph("tinycnn") == g
    db.close()


def test_measurement_rows_are_never_duplicated(db_path):
    db = costdb.open(db_path, create=True)
    db.upsert_device(get_profile("local"))
    g = model_graph("mlp", batch=2)
    db.save_graph(g)
    sid = db.start_session("local", {}, {}, None, 1)
    m = Measurement(device="local", signature=g.nodes[0].signature, session_id=sid, status="ok",
                    runtime_s=1e-3, samples=3)
    assert db.add_measurement(m) is True
    assert db.add_measurement(m) is False
    assert db.conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == 1
    db.close()


@pytest.mark.parametrize("bad", [
    {"status": "great"}, {"runtime_s": -1.0}, {"runtime_s": float("nan")},
    {"runtime_provenance": "guessed"}, {"energy_provenance": "hoped"}, {"samples": 0},
    {"peak_memory_bytes": -5},
])
def test_measurement_record_refuses_impossible_values(bad):
    base = dict(device="d", signature="s", session_id=1, status="ok", runtime_s=1.0, samples=3)
    with pytest.raises(ValueError):
        Measurement(**{**base, **bad})


def test_stale_running_session_is_closed(db_path):
    db = costdb.open(db_path, create=True)
    db.upsert_device(get_profile("local"))
    sid = db.start_session("local", {}, {}, None, 5)
    db.conn.execute("UPDATE sessions SET pid = 2147483000 WHERE id = ?", (sid,))
    db.conn.commit()
    assert db.close_stale_sessions("local") == 1
    assert db.session(sid).status == "interrupted"
    db.close()
