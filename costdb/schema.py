"""The on-disk format: tables, indexes and ordered migrations, versioned with ``PRAGMA user_version``.

Each migration is SQL run in one explicit transaction together with the version bump, so a crash
mid-migration leaves the previous version intact. Opening an older database runs the missing
migrations; a newer one is refused (see ``costdb.database``). To change the schema append a
migration; never edit one that has shipped. Tables are documented in docs/data-model.md.
"""
from __future__ import annotations

import sqlite3

_CURRENT_VIEW = """
CREATE VIEW current_measurements AS
SELECT m.* FROM measurements m
JOIN (SELECT device, signature, MAX(id) AS id FROM measurements
      GROUP BY device, signature) latest ON m.id = latest.id;
"""

V1_CORE = """
CREATE TABLE devices (
    name TEXT PRIMARY KEY, board TEXT, cpu TEXT, arch TEXT, transport TEXT,
    profile_json TEXT, first_seen TEXT, last_seen TEXT
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL REFERENCES devices(name),
    status TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, host TEXT, pid INTEGER,
    costdb_version TEXT, agent_version TEXT, model_id INTEGER, planned INTEGER, measured INTEGER,
    energy_sensor TEXT, idle_power_w REAL, environment_json TEXT, settings_json TEXT,
    warnings_json TEXT
);
CREATE INDEX idx_sessions_device ON sessions(device);
CREATE TABLE ops (
    signature TEXT PRIMARY KEY, op TEXT NOT NULL, phase TEXT NOT NULL, dtype TEXT NOT NULL,
    inputs_json TEXT, params_json TEXT, attrs_json TEXT, grad_inputs_json TEXT,
    spec_json TEXT NOT NULL
);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL REFERENCES devices(name),
    signature TEXT NOT NULL REFERENCES ops(signature),
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    status TEXT NOT NULL, error TEXT,
    runtime_s REAL, runtime_mean_s REAL, runtime_stdev_s REAL, runtime_iqr_s REAL,
    runtime_min_s REAL, runtime_max_s REAL, runtime_cv REAL, samples INTEGER, inner_loops INTEGER,
    unstable INTEGER, remeasured INTEGER, runtime_provenance TEXT,
    peak_memory_bytes INTEGER, output_bytes INTEGER,
    energy_j REAL, energy_provenance TEXT, energy_sensor TEXT,
    measured_at TEXT NOT NULL, extra_json TEXT
);
CREATE UNIQUE INDEX idx_measurements_unique ON measurements(device, signature, session_id);
CREATE INDEX idx_measurements_session ON measurements(session_id);
CREATE TABLE models (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, name TEXT NOT NULL, batch INTEGER NOT NULL,
    input_shape TEXT NOT NULL, dtype TEXT NOT NULL, n_nodes INTEGER, n_signatures INTEGER,
    param_bytes INTEGER, activation_bytes INTEGER, created_at TEXT
);
CREATE INDEX idx_models_name ON models(name);
CREATE TABLE graph_nodes (
    model_id INTEGER NOT NULL REFERENCES models(id), idx INTEGER NOT NULL, name TEXT, layer TEXT,
    op TEXT, phase TEXT, signature TEXT NOT NULL REFERENCES ops(signature), deps_json TEXT,
    input_shapes_json TEXT, output_shape_json TEXT, flops INTEGER, output_bytes INTEGER,
    param_bytes INTEGER, PRIMARY KEY (model_id, idx)
);
CREATE INDEX idx_graph_nodes_signature ON graph_nodes(signature);
""" + _CURRENT_VIEW

V2_NET_ENERGY = """
ALTER TABLE measurements ADD COLUMN energy_net_j REAL;
ALTER TABLE measurements ADD COLUMN energy_window_s REAL;
CREATE INDEX idx_measurements_device_signature ON measurements(device, signature);
CREATE TABLE iterations (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL REFERENCES devices(name),
    model_id INTEGER NOT NULL REFERENCES models(id), session_id INTEGER REFERENCES sessions(id),
    runtime_s REAL NOT NULL, runtime_stdev_s REAL, runtime_cv REAL, samples INTEGER,
    threads INTEGER, optimizer TEXT, runtime_provenance TEXT NOT NULL, measured_at TEXT NOT NULL
);
CREATE INDEX idx_iterations_device_model ON iterations(device, model_id);
DROP VIEW current_measurements;
""" + _CURRENT_VIEW

#: v1: core tables; v2: net energy (gross minus the session's idle baseline) per measurement and
#: measured whole training iterations (to check the per-node cost model against).
V3_SCHEDULES = """
CREATE TABLE sweeps (
    id INTEGER PRIMARY KEY, device TEXT, model_id INTEGER REFERENCES models(id), graph_name TEXT,
    graph_digest TEXT, mode TEXT, budgets_json TEXT, deadlines_json TEXT, objectives_json TEXT,
    options_json TEXT, executor TEXT, n_points INTEGER, status TEXT, started_at TEXT,
    ended_at TEXT
);
CREATE TABLE schedules (
    id INTEGER PRIMARY KEY, device TEXT, model_id INTEGER REFERENCES models(id),
    graph_name TEXT, graph_digest TEXT, granularity TEXT, mode TEXT, method TEXT,
    compat INTEGER, overlap INTEGER, budget_bytes INTEGER, deadline_s REAL, solver TEXT,
    status TEXT, objective_energy_j REAL, energy_j REAL, bound_energy_j REAL, gap REAL,
    runtime_s REAL, peak_memory_bytes INTEGER, compute_energy_j REAL, paging_energy_j REAL,
    recomputes INTEGER, pageins INTEGER, pageouts INTEGER, solve_time_s REAL,
    build_time_s REAL, n_variables INTEGER, n_constraints INTEGER, n_nodes INTEGER,
    cost_provenance TEXT, validated INTEGER, record_json TEXT, schedule_json TEXT,
    schedule_blob BLOB, sweep_id INTEGER REFERENCES sweeps(id), created_at TEXT
);
CREATE INDEX idx_schedules_device_model ON schedules(device, model_id);
CREATE TABLE pareto_points (
    id INTEGER PRIMARY KEY, sweep_id INTEGER REFERENCES sweeps(id), device TEXT,
    model_id INTEGER REFERENCES models(id), graph_name TEXT, mode TEXT, baseline TEXT,
    budget_bytes INTEGER, deadline_s REAL, status TEXT, energy_j REAL, runtime_s REAL,
    peak_memory_bytes INTEGER, schedule_id INTEGER REFERENCES schedules(id), pareto INTEGER,
    created_at TEXT
);
CREATE INDEX idx_pareto_points_sweep ON pareto_points(sweep_id);
CREATE INDEX idx_pareto_points_device_model ON pareto_points(device, model_id);
"""

#: v4: settings fingerprints (measurements are comparable only under one), measurement kinds
#: (isolated / in_context) and raw samples; failure messages and cost settings of schedules and
#: Pareto points; per-phase measured times and settings of iterations. Old measurements get a
#: settings row rebuilt from their session's environment and settings JSON (unknown fields NULL).
V4_SETTINGS = """
CREATE TABLE settings (
    id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, threads INTEGER, affinity TEXT,
    cache TEXT, dtype TEXT, compute_unit TEXT, torch_version TEXT, onednn_version TEXT,
    mkl_version TEXT, agent_version TEXT, kernel_variant TEXT, extra_json TEXT, created_at TEXT
);
ALTER TABLE measurements ADD COLUMN kind TEXT NOT NULL DEFAULT 'isolated';
ALTER TABLE measurements ADD COLUMN settings_id INTEGER REFERENCES settings(id);
ALTER TABLE measurements ADD COLUMN samples_json TEXT;
ALTER TABLE sessions ADD COLUMN settings_id INTEGER REFERENCES settings(id);
ALTER TABLE iterations ADD COLUMN settings_id INTEGER REFERENCES settings(id);
ALTER TABLE iterations ADD COLUMN fwd_runtime_s REAL;
ALTER TABLE iterations ADD COLUMN bwd_runtime_s REAL;
ALTER TABLE iterations ADD COLUMN update_runtime_s REAL;
ALTER TABLE schedules ADD COLUMN message TEXT;
ALTER TABLE schedules ADD COLUMN settings_id INTEGER REFERENCES settings(id);
ALTER TABLE schedules ADD COLUMN cost_kind TEXT;
ALTER TABLE sweeps ADD COLUMN settings_id INTEGER REFERENCES settings(id);
ALTER TABLE sweeps ADD COLUMN cost_kind TEXT;
ALTER TABLE pareto_points ADD COLUMN message TEXT;

-- the settings each old measurement was taken under, from its session (and device transport)
CREATE TEMP TABLE v4_identity AS
WITH base AS (
    SELECT m.id AS measurement_id, s.environment_json AS env, s.settings_json AS cfg,
           s.agent_version, md.dtype,
           CASE WHEN coalesce(json_extract(s.environment_json, '$.transport'), d.transport) = 'serial'
                THEN 'firmware'
                WHEN lower(coalesce(json_extract(m.extra_json, '$.compute_unit'), 'cpu')) LIKE 'cuda%'
                  OR lower(json_extract(m.extra_json, '$.compute_unit')) = 'gpu' THEN 'cuda'
                ELSE 'cpu' END AS compute_unit
    FROM measurements m JOIN sessions s ON s.id = m.session_id
    LEFT JOIN models md ON md.id = s.model_id LEFT JOIN devices d ON d.name = s.device
), ident AS (
    SELECT measurement_id, compute_unit, dtype, agent_version,
           CASE WHEN compute_unit = 'firmware' THEN NULL ELSE coalesce(
               json_extract(env, '$.facts.threads'), json_extract(env, '$.threads')) END AS threads,
           CASE WHEN compute_unit = 'firmware' THEN NULL
                ELSE json_extract(env, '$.facts.affinity') END AS affinity_list,
           CASE WHEN compute_unit = 'firmware' THEN NULL ELSE json_extract(cfg, '$.cache') END AS cache,
           CASE WHEN compute_unit = 'firmware' THEN NULL
                ELSE json_extract(env, '$.facts.torch') END AS torch_version,
           json_extract(env, '$.facts.kernel_variant') AS kernel_variant,
           CASE WHEN compute_unit = 'firmware' THEN json_patch('{}', json_object(
                    'board', json_extract(env, '$.facts.board'),
                    'clock_hz', json_extract(env, '$.facts.clock_hz'),
                    'icount_shift', json_extract(env, '$.facts.icount_shift')))
                ELSE '{}' END AS extra_json
    FROM base
)
SELECT ident.*, costdb_fingerprint(json_object(
           'threads', threads, 'affinity', json(affinity_list), 'cache', cache, 'dtype', dtype,
           'compute_unit', compute_unit, 'torch_version', torch_version, 'onednn_version', NULL,
           'mkl_version', NULL, 'agent_version', agent_version, 'kernel_variant', kernel_variant,
           'extra', json(extra_json))) AS fingerprint
FROM ident;

INSERT OR IGNORE INTO settings (fingerprint, threads, affinity, cache, dtype, compute_unit,
                                torch_version, agent_version, kernel_variant, extra_json, created_at)
SELECT fingerprint, threads, costdb_cpu_list(affinity_list), cache, dtype, compute_unit,
       torch_version, agent_version, kernel_variant, extra_json, strftime('%Y-%m-%dT%H:%M:%fZ')
FROM v4_identity GROUP BY fingerprint ORDER BY min(measurement_id);

UPDATE measurements SET settings_id = (
    SELECT st.id FROM v4_identity v JOIN settings st ON st.fingerprint = v.fingerprint
    WHERE v.measurement_id = measurements.id);
UPDATE sessions SET settings_id = (
    SELECT min(m.settings_id) FROM measurements m WHERE m.session_id = sessions.id);
UPDATE iterations SET settings_id = (
    SELECT s.settings_id FROM sessions s WHERE s.id = iterations.session_id);
DROP TABLE v4_identity;

DROP INDEX idx_measurements_unique;
CREATE UNIQUE INDEX idx_measurements_unique ON measurements(device, signature, session_id, kind);
CREATE INDEX idx_measurements_settings ON measurements(device, kind, settings_id, signature);
DROP VIEW current_measurements;
CREATE VIEW current_measurements AS
SELECT m.*, o.op, o.phase, o.dtype FROM measurements m JOIN ops o ON o.signature = m.signature
JOIN (SELECT MAX(id) AS id FROM measurements
      GROUP BY device, signature, settings_id, kind) latest ON m.id = latest.id;
"""

#: v5: op claims, so that two profiles of one device and model running at once never measure
#: an op twice: a profile claims an op (under one settings fingerprint and kind) before measuring
#: it; a claim counts while its session is ``running`` and is dropped when the session ends.
#: ``settings_id`` 0 stands for "no fingerprint" (the key cannot hold NULL).
V5_CLAIMS = """
CREATE TABLE op_claims (
    device TEXT NOT NULL, signature TEXT NOT NULL, settings_id INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL, session_id INTEGER NOT NULL REFERENCES sessions(id),
    claimed_at TEXT NOT NULL, PRIMARY KEY (device, signature, settings_id, kind)
);
CREATE INDEX idx_op_claims_session ON op_claims(session_id);
CREATE INDEX idx_sessions_status ON sessions(status);
"""

#: v6: executed schedules (``costdb run``): predicted vs measured per run, with the correctness
#: check against a plain iteration; and measured secondary-storage profiles (paging speed).
V6_RUNS = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, schedule_id INTEGER NOT NULL REFERENCES schedules(id),
    device TEXT NOT NULL, model_id INTEGER REFERENCES models(id), mode TEXT, status TEXT NOT NULL,
    compute_unit TEXT, storage_path TEXT, iterations INTEGER, warmups INTEGER,
    predicted_runtime_s REAL, runtime_s REAL, runtime_min_s REAL, runtime_max_s REAL,
    compute_s REAL, pagein_s REAL, pageout_s REAL, plain_runtime_s REAL,
    predicted_peak_bytes INTEGER, peak_memory_bytes INTEGER, fixed_bytes INTEGER,
    predicted_activation_peak_bytes INTEGER, activation_peak_bytes INTEGER,
    saved_state_peak_bytes INTEGER, process_peak_bytes INTEGER, process_base_bytes INTEGER,
    process_peak_kind TEXT, budget_bytes INTEGER,
    predicted_pageout_bytes INTEGER, pageout_bytes INTEGER, predicted_pagein_bytes INTEGER,
    pagein_bytes INTEGER, files_written INTEGER, recomputes INTEGER, pageins INTEGER,
    pageouts INTEGER,
    predicted_energy_j REAL, energy_j REAL, energy_provenance TEXT, energy_sensor TEXT,
    check_passed INTEGER NOT NULL, bit_exact INTEGER, max_abs_diff REAL, tolerance REAL,
    deterministic INTEGER, torch_version TEXT, agent_version TEXT, threads INTEGER,
    costs_changed INTEGER, cost_provenance TEXT, samples_json TEXT, extra_json TEXT,
    started_at TEXT, created_at TEXT
);
CREATE INDEX idx_runs_schedule ON runs(schedule_id);
CREATE INDEX idx_runs_device_model ON runs(device, model_id);
CREATE TABLE storage_profiles (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, path TEXT, block_bytes INTEGER,
    total_bytes INTEGER, write_bytes_per_s REAL, read_bytes_per_s REAL, write_latency_s REAL,
    read_latency_s REAL, provenance TEXT NOT NULL, samples_json TEXT, created_at TEXT
);
CREATE INDEX idx_storage_profiles_device ON storage_profiles(device);
"""

MIGRATIONS: list[str] = [V1_CORE, V2_NET_ENERGY, V3_SCHEDULES, V4_SETTINGS, V5_CLAIMS, V6_RUNS]
LATEST = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def register_functions(conn: sqlite3.Connection) -> None:
    """SQL functions the migrations use: ``costdb_fingerprint(identity_json)`` and
    ``costdb_cpu_list(json_list)`` (costdb.settings)."""
    from costdb.settings import cpu_list, sql_fingerprint
    conn.create_function("costdb_fingerprint", 1, sql_fingerprint, deterministic=True)
    conn.create_function("costdb_cpu_list", 1, cpu_list, deterministic=True)


def statements(script: str) -> list[str]:
    """A migration script split into complete SQL statements (``sqlite3.complete_statement``)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip().strip(";").strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip()
                               for ln in buf.splitlines()):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buf.strip()[:80]}")
    return out


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Apply the migrations up to ``target`` (default ``LATEST``); returns the version reached.

    Safe against concurrent processes: the version is read and every missing migration applied
    inside ONE exclusive transaction (``BEGIN EXCLUSIVE`` waits up to the connection's busy
    timeout), so a second process opening the same new or old file waits, then finds it migrated
    and does nothing; a crash or an error leaves the previous version intact (rolled back)."""
    target = len(MIGRATIONS) if target is None else target
    register_functions(conn)
    if version(conn) >= target:   # the common case: no lock needed
        return version(conn)
    isolation = conn.isolation_level
    conn.isolation_level = None   # we issue BEGIN/COMMIT ourselves
    try:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            for v in range(version(conn) + 1, target + 1):
                for stmt in statements(MIGRATIONS[v - 1]):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {int(v)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.isolation_level = isolation
    return version(conn)
