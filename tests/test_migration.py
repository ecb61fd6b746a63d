"""Schema v4 migrates files written by the schema-v3 costdb (tests/data/v3.db, made by
tests/data/make_v3.py with the code of commit f2c3c2d) keeping every row and value, and gives
every old measurement a settings row rebuilt from its session."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import costdb
from costdb import schema
from costdb.errors import CostdbError
from costdb.settings import SettingsRecord

V3 = Path(__file__).parent / "data" / "v3.db"
V3_TABLES = ("devices", "sessions", "ops", "measurements", "models", "graph_nodes", "iterations",
             "sweeps", "schedules", "pareto_points")


def _dump(path: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    con = sqlite3.connect(path)
    try:
        out = {}
        for t in V3_TABLES:
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
            out[t] = (cols, con.execute(f"SELECT {', '.join(cols)} FROM {t} ORDER BY rowid").fetchall())
        return out
    finally:
        con.close()


@pytest.fixture
def v3_copy(tmp_path):
    path = tmp_path / "v3.db"
    shutil.copy(V3, path)
    return path


def test_fixture_is_a_v3_file_with_data():
    con = sqlite3.connect(V3)
    assert schema.version(con) == 3
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in V3_TABLES}
    con.close()
    assert counts["sessions"] == 3 and counts["measurements"] == 60 and counts["schedules"] >= 2
    assert all(counts[t] > 0 for t in V3_TABLES)


def test_v3_file_migrates_keeping_every_row_and_value(v3_copy):
    before = _dump(v3_copy)
    with costdb.open(v3_copy) as db:
        assert db.version == schema.LATEST >= 4
    after = _dump(v3_copy)
    for t in V3_TABLES:
        cols, rows = before[t]
        new_cols, new_rows = after[t]
        assert new_cols[:len(cols)] == cols, t              # old columns first, unchanged
        assert len(new_rows) == len(rows), t
        assert [r[:len(cols)] for r in new_rows] == rows, t  # every value kept
    con = sqlite3.connect(v3_copy)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()


def test_old_measurements_get_settings_rebuilt_from_their_sessions(v3_copy):
    with costdb.open(v3_copy) as db:
        sessions = db.session_list()
        got = {s.id: db.get_settings(s.settings_id) for s in sessions}
        torch_version = sessions[0].facts["torch"]
        assert {k: (v.threads, v.cache) for k, v in got.items()} == \
            {1: (1, "warm"), 2: (2, "cold"), 3: (2, None)}     # session 3 named no cache: unknown
        for s in got.values():
            assert (s.affinity, s.dtype, s.compute_unit, s.torch_version, s.agent_version) == \
                ("0-1", "float32", "cpu", torch_version, "1")
            assert s.onednn_version is None and s.mkl_version is None   # not recorded by v3
            assert s.fingerprint == SettingsRecord(**{k: getattr(s, k) for k in (
                "threads", "affinity", "cache", "dtype", "compute_unit", "torch_version",
                "agent_version", "extra")}).fingerprint      # the SQL and Python hashes agree
        for m in db.measurement_list():
            assert m.kind == "isolated" and m.settings_id == db.session(m.session_id).settings_id
            assert m.values == ()                             # v3 kept no raw samples
        it = db.iteration_list()
        assert len(it) == 1 and it[0].settings_id == db.session(it[0].session_id).settings_id
        assert all(s.message is None for s in db.schedule_list())
        # the migrated history is usable: one fingerprint per cost table, chosen explicitly here
        df = db.costs("local", "mlp", settings=1)
        assert df["status"].eq("ok").all() and set(df["session_id"]) == {1}
        assert set(db.costs("local", "mlp", settings="latest")["session_id"]) == {2}
        assert db.iterations().loc[0, "predicted_s"] == pytest.approx(df["runtime_s"].sum())


def test_resumption_after_migration_is_per_fingerprint(v3_copy):
    with costdb.open(v3_copy) as db:
        assert len(db.done_signatures("local", 1)) == 20
        assert db.done_signatures("local", 3) == set()       # settings #3 belongs to 'other'
        assert len(db.done_signatures("other", 3)) == 19     # its failed op is not done


def test_v1_file_migrates_through_every_version(tmp_path):
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    schema.migrate(conn, target=1)
    conn.execute("INSERT INTO devices (name, board, transport) VALUES ('b', 'board', 'serial')")
    conn.execute("INSERT INTO sessions (id, device, status, started_at, agent_version, "
                 "environment_json) VALUES (1, 'b', 'complete', 't', '0.3', ?)",
                 (json.dumps({"facts": {"board": "qemu-m4f", "clock_hz": 25000000},
                              "transport": "serial"}),))
    conn.execute("INSERT INTO ops (signature, op, phase, dtype, spec_json) VALUES ('s1', 'relu', 'fwd', 'int8', '{}')")
    conn.execute("INSERT INTO measurements (device, signature, session_id, status, runtime_s, samples,"
                 " runtime_provenance, measured_at, extra_json) VALUES ('b', 's1', 1, 'ok', 1e-3, 3,"
                 " 'emulated', 't', '{\"compute_unit\": \"qemu-m4f\"}')")
    conn.commit()
    conn.close()
    with costdb.open(path) as db:
        (m,) = db.measurement_list()
        s = db.get_settings(m.settings_id)
        assert (s.compute_unit, s.agent_version, s.threads, s.cache, s.extra) == \
            ("firmware", "0.3", None, None, {"board": "qemu-m4f", "clock_hz": 25000000})


def test_v4_file_migrates_to_runs_and_storage_profiles(v3_copy):
    """The runs migration (costdb run) adds empty tables an old schedule can be executed into."""
    from costdb.records import RunRecord, StorageProfileRecord
    conn = sqlite3.connect(v3_copy)
    schema.migrate(conn, target=4)
    conn.close()
    with costdb.open(v3_copy) as db:
        assert db.version == schema.LATEST
        assert db.run_list() == [] and db.storage_profile_list() == []
        sched = db.schedule_list()[0]
        rid = db.add_run(RunRecord(schedule_id=sched.id, device=sched.device or "local",
                                   model_id=sched.model_id, runtime_s=0.5, energy_j=1.0,
                                   energy_provenance="modeled", bit_exact=True,
                                   samples={"runtime_s": [0.5]}))
        sp = db.add_storage_profile(StorageProfileRecord(device="local", path="/tmp",
                                                         write_bytes_per_s=1e8))
        got = db.run(rid)
        assert got.schedule_id == sched.id and got.check_passed and got.samples == {"runtime_s": [0.5]}
        assert len(db.runs()) == 1 and db.storage_profile_list()[0].id == sp
        with pytest.raises(ValueError, match="check against the plain iteration failed"):
            RunRecord(schedule_id=sched.id, device="local", model_id=None, check_passed=False)
        with pytest.raises(CostdbError, match="schedule 999"):
            db.add_run(RunRecord(schedule_id=999, device="local", model_id=None))
