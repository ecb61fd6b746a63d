"""The cost database: SQLite via sqlite-utils, WAL mode, SI units.

``open(path)`` returns a ``Database``. Writers (the profiler) add devices, graphs, sessions and
measurements, each write in its own short transaction so an interrupted profile leaves a consistent
file. Readers get pandas DataFrames: ``costs()`` per graph node, ``ops()`` per distinct signature,
``summary()`` per model and device. Columns are documented in docs/data-model.md.
"""
from __future__ import annotations

import builtins
import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import sqlite_utils

from costdb import schema
from costdb.errors import CostdbError
from costdb.records import DONE_STATUSES, Measurement, now_iso

_COST_COLUMNS = """
    m.status, m.runtime_s, m.runtime_stdev_s, m.runtime_iqr_s, m.runtime_cv, m.samples,
    m.unstable, m.runtime_provenance, m.peak_memory_bytes, m.energy_j, m.energy_net_j,
    m.energy_provenance, m.session_id, m.measured_at
"""


def _is_sqlite(path: Path) -> bool:
    try:
        with builtins.open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head == b"SQLite format 3\x00" or head == b""


def preflight(path: Path, create: bool = False, readonly: bool = False) -> bool:
    """Check a database path before any work is done; returns whether the file exists.

    Raises CostdbError for a missing, corrupt, foreign or unwritable file, so a command fails in
    its first second rather than after minutes of tracing and measuring.
    """
    path = Path(path)
    exists = path.exists()
    if not exists and not create:
        raise CostdbError(f"database {path} does not exist; run 'costdb profile --db "
                          f"{path} ...' first or check the path")
    if exists and path.is_dir():
        raise CostdbError(f"database path {path} is a directory; give a file name")
    if exists and not _is_sqlite(path):
        raise CostdbError(f"{path} is not a costdb database (not SQLite or corrupt); "
                          "give another --db path")
    if not exists:
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise CostdbError(f"cannot create database {path}: directory {parent} does "
                              "not exist")
        if not os.access(parent, os.W_OK):
            raise CostdbError(f"cannot create database {path}: directory {parent} is "
                              "not writable; choose another --db path")
    elif not readonly and not os.access(path, os.W_OK):
        raise CostdbError(f"database {path} is read-only; choose a writable --db path")
    return exists


class Database:
    """A cost database file. Use ``costdb.open(path)`` rather than the constructor."""

    def __init__(self, path: str | os.PathLike, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        exists = preflight(self.path, create, readonly)
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True,
                                       check_same_thread=False)
                conn.execute("PRAGMA query_only = 1")
            else:
                conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            conn.execute("PRAGMA foreign_keys = ON")
            found = schema.version(conn)
        except sqlite3.DatabaseError as e:
            if not exists:
                raise CostdbError(f"cannot create database {self.path} ({e}); choose a writable "
                                  "--db path") from None
            raise CostdbError(f"{self.path} is not a usable costdb database ({e}); give another "
                              "--db path") from None
        if found > schema.LATEST:
            conn.close()
            raise CostdbError(f"database {self.path} has schema version {found}, newer than this "
                              f"costdb supports ({schema.LATEST}); upgrade costdb")
        if found < schema.LATEST and readonly and found > 0 and os.access(self.path, os.W_OK):
            # an older file: migrate it once through a writable connection, then read
            conn.close()
            Database(self.path).close()
            conn = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True,
                                   check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA foreign_keys = ON")
            found = schema.version(conn)
        if found < schema.LATEST:
            if readonly:
                if found == 0 and not self._has_tables(conn):
                    conn.close()
                    raise CostdbError(f"{self.path} is an empty database; run 'costdb profile' first")
                conn.close()
                raise CostdbError(f"database {self.path} has schema version {found}; open it once "
                                  f"writable to migrate it to version {schema.LATEST}")
            if found == 0 and self._has_tables(conn):
                conn.close()
                raise CostdbError(f"{self.path} is an SQLite file but not a costdb database; "
                                  "give another --db path")
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                schema.migrate(conn)
            except sqlite3.DatabaseError as e:
                conn.close()
                raise CostdbError(f"cannot migrate {self.path}: {e}") from None
        elif not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        self.conn = conn
        self.db = sqlite_utils.Database(conn)

    @staticmethod
    def _has_tables(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0] > 0

    @property
    def version(self) -> int:
        return schema.version(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- writes ----------------------------------------------------------------------------

    def upsert_device(self, profile: Any) -> None:
        now = now_iso()
        with self.conn:
            row = self.conn.execute("SELECT first_seen FROM devices WHERE name = ?",
                                    (profile.name,)).fetchone()
            self.db["devices"].upsert({
                "name": profile.name, "board": profile.board, "cpu": profile.cpu,
                "arch": profile.arch, "transport": profile.transport,
                "profile_json": json.dumps(profile.to_dict(), sort_keys=True),
                "first_seen": row[0] if row else now, "last_seen": now}, pk="name")

    def save_graph(self, graph: Any) -> int:
        """Store a training graph (its ops and nodes) once; returns the model id."""
        row = self.conn.execute("SELECT id FROM models WHERE key = ?", (graph.key,)).fetchone()
        if row:
            return row[0]
        with self.conn:
            ops = []
            for spec in graph.distinct_specs():
                ops.append({"signature": spec["signature"], "op": spec["op"], "phase": spec["phase"],
                            "dtype": spec["dtype"], "inputs_json": json.dumps(spec["inputs"]),
                            "params_json": json.dumps(spec["params"]),
                            "attrs_json": json.dumps(spec["attrs"], sort_keys=True),
                            "grad_inputs_json": json.dumps(spec["grad_inputs"]),
                            "spec_json": json.dumps(spec, sort_keys=True)})
            self.db["ops"].insert_all(ops, pk="signature", ignore=True)
            cur = self.conn.execute(
                "INSERT INTO models (key, name, batch, input_shape, dtype, n_nodes, n_signatures,"
                " param_bytes, activation_bytes, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (graph.key, graph.model, graph.batch, "x".join(map(str, graph.input_shape)),
                 graph.dtype, len(graph.nodes), len(graph.signatures()), graph.param_bytes,
                 graph.activation_bytes, now_iso()))
            model_id = cur.lastrowid
            self.db["graph_nodes"].insert_all(({
                "model_id": model_id, "idx": n.idx, "name": n.name, "layer": n.layer, "op": n.op,
                "phase": n.phase, "signature": n.signature, "deps_json": json.dumps(list(n.deps)),
                "input_shapes_json": json.dumps([list(s) for s in n.input_shapes]),
                "output_shape_json": json.dumps(list(n.output_shape)), "flops": n.flops,
                "output_bytes": n.output_bytes, "param_bytes": n.param_bytes}
                for n in graph.nodes))
        return model_id

    def start_session(self, device: str, environment: dict[str, Any], settings: dict[str, Any],
                      model_id: int | None, planned: int, agent_version: str | None = None,
                      energy_sensor: str | None = None, idle_power_w: float | None = None,
                      warnings: list[str] | None = None) -> int:
        from costdb import __version__
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO sessions (device, status, started_at, host, pid, costdb_version,"
                " agent_version, model_id, planned, measured, energy_sensor, idle_power_w,"
                " environment_json, settings_json, warnings_json)"
                " VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
                (device, now_iso(), socket.gethostname(), os.getpid(), __version__, agent_version,
                 model_id, planned, energy_sensor, idle_power_w,
                 json.dumps(environment, sort_keys=True, default=str),
                 json.dumps(settings, sort_keys=True, default=str), json.dumps(warnings or [])))
            return cur.lastrowid

    def update_session(self, session_id: int, **fields: Any) -> None:
        for k in ("environment", "settings", "warnings"):
            if k in fields:
                fields[f"{k}_json"] = json.dumps(fields.pop(k), sort_keys=True, default=str)
        with self.conn:
            self.db["sessions"].update(session_id, fields)

    def finish_session(self, session_id: int, status: str, warnings: list[str] | None = None) -> None:
        n = self.conn.execute("SELECT count(*) FROM measurements WHERE session_id = ?",
                              (session_id,)).fetchone()[0]
        fields: dict[str, Any] = {"status": status, "ended_at": now_iso(), "measured": n}
        if warnings is not None:
            fields["warnings"] = warnings
        self.update_session(session_id, **fields)

    def close_stale_sessions(self, device: str) -> int:
        """Mark 'running' sessions of this host whose process is gone as interrupted."""
        host = socket.gethostname()
        stale = []
        for sid, pid, shost in self.conn.execute(
                "SELECT id, pid, host FROM sessions WHERE device = ? AND status = 'running'",
                (device,)):
            if shost == host and pid is not None and pid != os.getpid() and not _pid_alive(pid):
                stale.append(sid)
        for sid in stale:
            self.finish_session(sid, "interrupted")
        return len(stale)

    def add_measurement(self, m: Measurement) -> bool:
        """Store one measurement; False (and nothing written) if the session already has it."""
        with self.conn:
            cur = self.conn.execute(
                f"INSERT OR IGNORE INTO measurements ({', '.join(m.row())}) "
                f"VALUES ({', '.join('?' for _ in m.row())})", tuple(m.row().values()))
            return cur.rowcount == 1

    def add_iteration(self, device: str, model_id: int, session_id: int | None,
                      stats: dict[str, Any]) -> int:
        """Store a measured whole training iteration (forward + loss + backward + update)."""
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO iterations (device, model_id, session_id, runtime_s, runtime_stdev_s,"
                " runtime_cv, samples, threads, optimizer, runtime_provenance, measured_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (device, model_id, session_id, stats["median"], stats.get("stdev"), stats.get("cv"),
                 stats.get("samples"), stats.get("threads"), stats.get("optimizer"),
                 stats.get("provenance", "measured"), now_iso()))
            return cur.lastrowid

    def iterations(self, device: str | None = None) -> pd.DataFrame:
        """Measured whole iterations beside the cost model's prediction (sum of node medians)."""
        sql = """SELECT i.device, m.key AS model, i.runtime_s AS measured_s, i.runtime_cv,
                        i.samples, i.threads, i.optimizer, i.runtime_provenance, i.measured_at,
                        i.model_id
                 FROM iterations i JOIN models m ON m.id = i.model_id"""
        args: tuple = ()
        if device:
            sql += " WHERE i.device = ?"
            args = (device,)
        df = pd.read_sql_query(sql + " ORDER BY i.id", self.conn, params=args)
        preds = []
        for dev, mid in zip(df["device"], df["model_id"]):
            row = self.conn.execute(
                "SELECT sum(m.runtime_s), count(*), count(m.runtime_s) FROM graph_nodes g LEFT JOIN"
                " current_measurements m ON m.signature = g.signature AND m.device = ?"
                " WHERE g.model_id = ?", (dev, mid)).fetchone()
            preds.append(row[0] if row[1] == row[2] else None)
        df["predicted_s"] = preds
        df["error"] = (df["predicted_s"] - df["measured_s"]) / df["measured_s"]
        return df.drop(columns=["model_id"])

    # --- reads -----------------------------------------------------------------------------

    def done_signatures(self, device: str) -> set[str]:
        """Signatures with a finished measurement (ok, unsupported or not fitting) on device."""
        q = ",".join("?" for _ in DONE_STATUSES)
        return {r[0] for r in self.conn.execute(
            f"SELECT signature FROM current_measurements WHERE device = ? AND status IN ({q})",
            (device, *DONE_STATUSES))}

    def devices(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT name, board, cpu, arch, transport, first_seen, last_seen "
                                 "FROM devices ORDER BY name", self.conn)

    def models(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT id, key, name, batch, input_shape, dtype, n_nodes, "
                                 "n_signatures, param_bytes, activation_bytes, created_at "
                                 "FROM models ORDER BY id", self.conn)

    def sessions(self, device: str | None = None) -> pd.DataFrame:
        sql = "SELECT * FROM sessions"
        args: tuple = ()
        if device:
            sql += " WHERE device = ?"
            args = (device,)
        return pd.read_sql_query(sql + " ORDER BY id", self.conn, params=args)

    def resolve_model(self, model: str, batch: int | None = None,
                      input_shape: Iterable[int] | str | None = None, dtype: str | None = None) -> int:
        """Model id from a name (and optional batch/input/dtype) or an exact key."""
        row = self.conn.execute("SELECT id FROM models WHERE key = ?", (model,)).fetchone()
        if row:
            return row[0]
        sql = "SELECT id, key FROM models WHERE name = ?"
        args: list[Any] = [model]
        if batch is not None:
            sql += " AND batch = ?"
            args.append(batch)
        if input_shape is not None:
            shape = input_shape if isinstance(input_shape, str) else "x".join(map(str, input_shape))
            sql += " AND input_shape = ?"
            args.append(shape)
        if dtype is not None:
            sql += " AND dtype = ?"
            args.append(dtype)
        rows = self.conn.execute(sql + " ORDER BY id", args).fetchall()
        if not rows:
            known = [r[0] for r in self.conn.execute("SELECT key FROM models ORDER BY id")]
            raise CostdbError(f"model {model!r} is not in {self.path}"
                              + (f"; stored models: {', '.join(known)}" if known
                                 else "; run 'costdb profile --model ...' first"))
        if len(rows) > 1:
            raise CostdbError(f"model {model!r} has several variants in {self.path}: "
                              f"{', '.join(r[1] for r in rows)}; pass batch/input to choose")
        return rows[0][0]

    def graph(self, model: str, batch: int | None = None, input_shape: Any = None,
              dtype: str | None = None) -> Any:
        """The stored TrainingGraph of a model."""
        from profiler.graph import Node, TrainingGraph
        mid = self.resolve_model(model, batch, input_shape, dtype)
        m = self.db["models"].get(mid)
        nodes = []
        for r in self.conn.execute(
                "SELECT g.idx, g.name, g.layer, g.op, g.phase, g.signature, g.deps_json,"
                " g.input_shapes_json, g.output_shape_json, g.flops, g.output_bytes,"
                " g.param_bytes, o.spec_json FROM graph_nodes g JOIN ops o USING (signature)"
                " WHERE g.model_id = ? ORDER BY g.idx", (mid,)):
            spec = json.loads(r[12])
            nodes.append(Node(idx=r[0], name=r[1], layer=r[2], op=r[3], phase=r[4],
                              deps=tuple(json.loads(r[6])),
                              input_shapes=tuple(tuple(s) for s in json.loads(r[7])),
                              output_shape=tuple(json.loads(r[8])), dtype=spec["dtype"],
                              flops=r[9], output_bytes=r[10], param_bytes=r[11],
                              params={k: tuple(v) for k, v in spec["params"].items()},
                              attrs=spec["attrs"], grad_inputs=tuple(spec["grad_inputs"]),
                              signature=r[5]))
        return TrainingGraph(model=m["name"], batch=m["batch"],
                             input_shape=tuple(int(x) for x in m["input_shape"].split("x")),
                             dtype=m["dtype"], nodes=tuple(nodes))

    def _require_device(self, device: str) -> None:
        if not self.conn.execute("SELECT 1 FROM devices WHERE name = ?", (device,)).fetchone():
            known = [r[0] for r in self.conn.execute("SELECT name FROM devices ORDER BY name")]
            raise CostdbError(f"device {device!r} has no data in {self.path}"
                              + (f"; devices with data: {', '.join(known)}" if known else ""))

    def costs(self, device: str, model: str, batch: int | None = None, input_shape: Any = None,
              dtype: str | None = None) -> pd.DataFrame:
        """One row per graph node of ``model`` with the device's current measurement of its op.

        Nodes whose op has not been measured yet have NaN costs (status None).
        """
        self._require_device(device)
        mid = self.resolve_model(model, batch, input_shape, dtype)
        df = pd.read_sql_query(f"""
            SELECT g.idx, g.name, g.layer, g.op, g.phase, g.signature, g.deps_json AS deps,
                   g.flops, g.output_bytes, g.param_bytes, {_COST_COLUMNS}
            FROM graph_nodes g
            LEFT JOIN current_measurements m ON m.signature = g.signature AND m.device = ?
            WHERE g.model_id = ? ORDER BY g.idx""", self.conn, params=(device, mid))
        df["deps"] = df["deps"].map(json.loads)
        df["unstable"] = df["unstable"].map(lambda v: bool(v) if v == v and v is not None else None)
        df.insert(0, "device", device)
        return df

    def ops(self, device: str | None = None) -> pd.DataFrame:
        """One row per (device, distinct op signature) with its current measurement."""
        sql = f"""
            SELECT m.device, o.signature, o.op, o.phase, o.dtype, o.inputs_json AS inputs,
                   o.params_json AS params, o.attrs_json AS attrs, m.output_bytes,
                   (SELECT count(*) FROM graph_nodes g WHERE g.signature = o.signature) AS uses,
                   {_COST_COLUMNS}, m.runtime_min_s, m.runtime_max_s, m.inner_loops, m.error
            FROM current_measurements m JOIN ops o USING (signature)"""
        args: tuple = ()
        if device:
            self._require_device(device)
            sql += " WHERE m.device = ?"
            args = (device,)
        return pd.read_sql_query(sql + " ORDER BY m.device, m.runtime_s DESC", self.conn, params=args)

    def summary(self, device: str | None = None) -> pd.DataFrame:
        """Per (device, model): nodes measured, summed runtime and energy per phase and total."""
        devices = [device] if device else [r[0] for r in self.conn.execute(
            "SELECT DISTINCT device FROM measurements ORDER BY device")]
        rows = []
        for dev in devices:
            for mid, key, name in self.conn.execute("SELECT id, key, name FROM models ORDER BY id").fetchall():
                df = self.costs(dev, key)
                measured = df["status"].eq("ok")
                if not measured.any():
                    continue
                row = {"device": dev, "model": name, "key": key, "nodes": len(df),
                       "nodes_measured": int(measured.sum()),
                       "runtime_s": float(df["runtime_s"].sum()),
                       "energy_j": float(df["energy_j"].sum()),
                       "param_bytes": int(df.loc[df.phase == "fwd", "param_bytes"].sum()),
                       "activation_bytes": int(df.loc[df.phase == "fwd", "output_bytes"].sum()),
                       "max_peak_memory_bytes": float(df["peak_memory_bytes"].max()),
                       "unstable_ops": int(df.drop_duplicates("signature")["unstable"].eq(True).sum()),
                       "energy_provenance": ",".join(sorted(set(df["energy_provenance"].dropna()))),
                       "runtime_provenance": ",".join(sorted(set(df["runtime_provenance"].dropna())))}
                for phase in ("fwd", "loss", "bwd_data", "bwd_weight", "update"):
                    row[f"{phase}_runtime_s"] = float(df.loc[df.phase == phase, "runtime_s"].sum())
                rows.append(row)
        return pd.DataFrame(rows)

    def query(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        """Run read-only SQL; writes are refused by SQLite (query_only)."""
        ro = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True)
        try:
            ro.execute("PRAGMA query_only = 1")
            return pd.read_sql_query(sql, ro, params=tuple(params))
        except (sqlite3.Error, pd.errors.DatabaseError) as e:
            msg = str(e).splitlines()[0]
            if "Execution failed on sql" in msg:
                msg = msg.split(": ", 1)[-1] if ": " in msg else msg
            raise CostdbError(f"query failed: {msg}") from None
        finally:
            ro.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open(path: str | os.PathLike, create: bool = False, readonly: bool = False) -> Database:  # noqa: A001
    """Open a cost database. ``create=True`` makes a new file; older schemas are migrated."""
    return Database(path, create=create, readonly=readonly)
