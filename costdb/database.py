"""The cost database: the one module that opens, migrates, reads and writes the SQLite file.

``open(path)`` returns a ``Database``. Writers (the profiler, the solver) hand it typed records
(``costdb.records``) and get row ids back, each write in its own short transaction so an
interrupted run leaves a consistent file. Readers get records back (``session(id)``,
``schedule_list(...)``...) or pandas DataFrames: ``costs()`` per graph node, ``ops()`` per
distinct signature, ``summary()`` per model and device. Nothing outside ``costdb/`` runs SQL
against the file (tests/test_layering.py checks it); ``query()`` is the read-only SQL door for
users. Columns are documented in docs/data-model.md.

pandas is imported only by the DataFrame methods, so ``import costdb`` (and every package that
only needs ``costdb.errors``) stays light.
"""
from __future__ import annotations

import builtins
import json
import os
import socket
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from costdb import schema
from costdb.errors import CostdbError, did_you_mean
from costdb.process import pid_alive
from costdb.graph import Node, TrainingGraph
from costdb.settings import IDENTITY, SettingsRecord, describe, differing
from costdb.records import (DONE_STATUSES, KINDS, DeviceRecord, IterationRecord, Measurement,
                            ModelRecord, OpRecord, ParetoPointRecord, RunRecord, ScheduleRecord,
                            SessionRecord, StorageProfileRecord, SweepRecord, from_row, now_iso,
                            shape_label, to_row)

if TYPE_CHECKING:
    import pandas as pd

_COST_COLUMNS = """
    m.status, m.runtime_s, m.runtime_stdev_s, m.runtime_iqr_s, m.runtime_cv, m.samples,
    m.unstable, m.runtime_provenance, m.peak_memory_bytes, m.energy_j, m.energy_net_j,
    m.energy_provenance, m.session_id, m.measured_at, m.settings_id, m.kind
"""
PHASE_GROUPS = {"fwd": ("fwd", "loss"), "bwd": ("bwd_data", "bwd_weight"), "update": ("update",)}
#: what ``settings=`` accepts besides an id or a fingerprint (prefix)
LATEST = "latest"
#: what ``kind=`` accepts in a cost table: a measurement kind, or ``auto`` (the default):
#: in-context figures where the model has them on the device, else isolated ones
#: (docs/usage.md "Which estimate" has the measurements behind the choice)
AUTO = "auto"
ESTIMATES = (AUTO, *KINDS)


def _pick(extra: str = "") -> str:
    """SQL of the ``pick`` CTE: per signature of model ``?`` the newest measurement on device
    ``?`` of kind ``?`` under settings ``?`` (``extra``: further conditions on ``m``). In-context
    figures depend on the model they were traced in, so for them a row from a session of this
    model (``?``) wins over a newer one traced in another model sharing the op."""
    return f"""pick AS (
        SELECT signature, id FROM (
            SELECT m.signature, m.id, ROW_NUMBER() OVER (
                PARTITION BY m.signature
                ORDER BY (m.kind = 'in_context' AND s.model_id IS ?) DESC, m.id DESC) AS rn
            FROM measurements m LEFT JOIN sessions s ON s.id = m.session_id
            WHERE m.signature IN (SELECT signature FROM graph_nodes WHERE model_id = ?)
              AND m.device = ? AND m.kind = ? AND m.settings_id IS ?{extra})
        WHERE rn = 1)"""


def _pd() -> Any:
    import pandas
    return pandas


#: seconds a writer waits for another process's lock (migration, a write) before giving up
BUSY_TIMEOUT_S = 60.0


def busy_timeout() -> float:
    """``$COSTDB_BUSY_TIMEOUT`` (seconds) or ``BUSY_TIMEOUT_S``."""
    try:
        v = float(os.environ.get("COSTDB_BUSY_TIMEOUT", BUSY_TIMEOUT_S))
    except ValueError:
        raise CostdbError(f"COSTDB_BUSY_TIMEOUT={os.environ['COSTDB_BUSY_TIMEOUT']!r} is not a "
                          "number of seconds; unset it or give e.g. 60") from None
    if not 0 <= v <= 86400 or v != v:
        raise CostdbError(f"COSTDB_BUSY_TIMEOUT={v!r} is out of range; give 0 .. 86400 seconds")
    return v


def _is_sqlite(path: Path) -> bool:
    try:
        with builtins.open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head == b"SQLite format 3\x00" or head == b""


def _read_only_storage(path: Path) -> bool:
    """The file system holding ``path`` is mounted read-only, or its directory is not
    writable by us (then SQLite cannot create the WAL index it needs to read a WAL file)."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if os.statvfs(parent).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        pass
    return not os.access(parent, os.W_OK)


def preflight(path: Path, create: bool = False, readonly: bool = False) -> bool:
    """Check a database path before any work is done; returns whether the file exists.

    Raises CostdbError for a missing, corrupt, foreign or unwritable file, and for a path that
    is not a regular file (a FIFO would block the open forever, a device is no database), so a
    command fails in its first second rather than after minutes of tracing and measuring.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise CostdbError(f"cannot use database path {path}: {e.strerror or e}; check the "
                          "path") from None
    exists = st is not None
    if not exists and path.is_symlink():
        raise CostdbError(f"database path {path} is a symlink to a missing file; fix the link "
                          "or give another --db path")
    if not exists and not create:
        raise CostdbError(f"database {path} does not exist; run 'costdb profile --db "
                          f"{path} ...' first or check the path")
    if exists and stat.S_ISDIR(st.st_mode):
        raise CostdbError(f"database path {path} is a directory; give a file name")
    if exists and not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if (
            stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else "not a regular file"
        raise CostdbError(f"database path {path} is {kind}, not a database file; give a file "
                          "name")
    if exists and not _is_sqlite(path):
        raise CostdbError(f"{path} is not a costdb database (not SQLite or corrupt); "
                          "give another --db path")
    if not exists:
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise CostdbError(f"cannot create database {path}: directory {parent} does "
                              "not exist")
        if not os.access(parent, os.W_OK) or _read_only_storage(path):
            raise CostdbError(f"cannot create database {path}: directory {parent} is "
                              "not writable; choose another --db path")
    elif not readonly and (not os.access(path, os.W_OK) or _read_only_storage(path)):
        raise CostdbError(f"database {path} is read-only; choose a writable --db path "
                          "(read commands open it read-only)")
    return exists


def _decode_text(path: Path) -> Any:
    """A text_factory: invalid UTF-8 in a TEXT column is a damaged file, said in one line."""
    def decode(b: bytes) -> str:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise CostdbError(f"database {path} holds text that is not UTF-8 (damaged pages?); "
                              f"check it with: sqlite3 {path} 'PRAGMA integrity_check', and "
                              "restore it from a backup or merge its readable parts with 'sqlite3 "
                              ".recover'") from None
    return decode


def _connect_ro(path: Path, immutable: bool = False) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``: never writes, never switches the journal mode);
    ``immutable`` for read-only storage, where SQLite could not create the WAL index."""
    uri = "file:" + quote(str(Path(path).resolve())) + "?mode=ro" + (
        "&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=busy_timeout())
    conn.text_factory = _decode_text(Path(path))
    conn.execute("PRAGMA query_only = 1")
    return conn


def _connect_rw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=busy_timeout())
    conn.text_factory = _decode_text(path)
    return conn


def explain_sqlite_error(e: BaseException, path: str | os.PathLike | None = None) -> CostdbError:
    """One line for an SQLite error that reached the top (full disk, damaged file, lock held
    too long, read-only file): what happened and what to do. The transaction it interrupted was
    rolled back, so the file holds everything up to the last complete write."""
    msg = " ".join(str(e).split()) or type(e).__name__
    db = f" {path}" if path else ""
    low = msg.lower()
    if "disk is full" in low or "disk full" in low:
        return CostdbError(f"the disk holding the database{db} is full ({msg}); the unfinished "
                           "write was rolled back: free some space and run the command again")
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return CostdbError(f"the database{db} is damaged ({msg}); check it with 'sqlite3 FILE "
                           "\"PRAGMA integrity_check\"' and restore it from a backup")
    if "locked" in low or "busy" in low:
        return CostdbError(f"the database{db} is locked by another process for longer than "
                           f"{busy_timeout():g} s ({msg}); wait for it or raise "
                           "COSTDB_BUSY_TIMEOUT")
    if "readonly" in low or "read-only" in low:
        return CostdbError(f"the database{db} is read-only ({msg}); choose a writable --db path")
    if "disk i/o" in low or "unable to open" in low:
        return CostdbError(f"cannot access the database{db} ({msg}); check the disk and the "
                           "path")
    return CostdbError(f"database error{db and ' in' + db}: {msg}")


class Database:
    """A cost database file. Use ``costdb.open(path)`` rather than the constructor.

    Opening is safe with concurrent processes: a writer waits up to the busy timeout for
    another's lock; a new or older file is migrated under an exclusive lock (the second process
    waits, then finds it migrated). Every open closes the sessions left ``running`` by a process
    of this host that is gone (as ``interrupted``). ``readonly`` opens with ``mode=ro`` (no
    write, no journal switch), and ``immutable`` on read-only storage.
    """

    def __init__(self, path: str | os.PathLike, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._immutable = False
        exists = preflight(self.path, create, readonly)
        try:
            conn = self._open(readonly)
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
        if found < schema.LATEST and readonly and found > 0 and not self._immutable \
                and os.access(self.path, os.W_OK) and not _read_only_storage(self.path):
            # an older file: migrate it once through a writable connection, then read
            conn.close()
            Database(self.path).close()
            conn = self._open(True)
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
                self._wal(conn)
                schema.migrate(conn)
            except sqlite3.DatabaseError as e:
                conn.close()
                if "disk is full" in str(e) or "locked" in str(e):
                    raise explain_sqlite_error(e, self.path) from None
                raise CostdbError(f"cannot migrate {self.path}: {e}") from None
        elif not readonly:
            try:
                self._wal(conn)
            except sqlite3.DatabaseError as e:
                conn.close()
                raise explain_sqlite_error(e, self.path) from None
        conn.execute("PRAGMA foreign_keys = ON")
        self.conn = conn
        self._close_stale_at_open()

    def _open(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            return _connect_rw(self.path)
        if _read_only_storage(self.path):
            conn = _connect_ro(self.path)
            try:
                schema.version(conn)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError:   # WAL file on read-only storage: no WAL index
                conn.close()
            self._immutable = True
            return _connect_ro(self.path, immutable=True)
        return _connect_ro(self.path)

    @staticmethod
    def _wal(conn: sqlite3.Connection) -> None:
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")

    def _close_stale_at_open(self) -> None:
        """Close stale sessions of this host (``close_stale_sessions``); from a read-only open
        through a short writable connection, and only when there is something to close."""
        if not self.readonly:
            try:
                self.close_stale_sessions()
            except sqlite3.OperationalError:
                pass   # locked or full: the next open tries again
            return
        if self._immutable or not self._stale_session_ids() or not os.access(self.path, os.W_OK):
            return
        try:
            rw = Database(self.path)
            rw.close()
        except CostdbError:
            pass

    def _stale_session_ids(self) -> list[int]:
        host = socket.gethostname()
        me = os.getpid()
        return [sid for sid, pid, shost in self.conn.execute(
            "SELECT id, pid, host FROM sessions WHERE status = 'running'").fetchall()
            if shost == host and pid is not None and pid != me and not pid_alive(pid)]

    @classmethod
    def snapshot(cls, path: str | os.PathLike) -> "Database":
        """A read-only, in-memory copy of ``path`` at the latest schema: for reading a file
        that must not change (the inputs of ``costdb merge``); an older file is migrated in
        the copy only."""
        path = Path(path)
        preflight(path, readonly=True)
        try:
            src = _connect_ro(path)
            mem = sqlite3.connect(":memory:", check_same_thread=False)
            mem.text_factory = _decode_text(path)
            try:
                try:
                    src.backup(mem)
                except sqlite3.OperationalError:
                    if not _read_only_storage(path):
                        raise
                    src.close()     # a WAL file on read-only storage: read it immutable
                    src = _connect_ro(path, immutable=True)
                    src.backup(mem)
            finally:
                src.close()
            found = schema.version(mem)
        except sqlite3.DatabaseError as e:
            raise CostdbError(f"{path} is not a usable costdb database ({e}); give another "
                              "file") from None
        if found > schema.LATEST:
            raise CostdbError(f"database {path} has schema version {found}, newer than this "
                              f"costdb supports ({schema.LATEST}); upgrade costdb")
        if found == 0:
            raise CostdbError(f"{path} is not a costdb database (no costdb schema); give another file")
        mem.execute("PRAGMA foreign_keys = ON")
        if found < schema.LATEST:
            schema.migrate(mem)
        db = cls.__new__(cls)
        db.path, db.readonly, db.conn = path, True, mem
        return db

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

    # --- low-level helpers (the only SQL in the code base besides schema.py) ---------------------

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, tuple(args))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def _insert(self, table: str, row: dict[str, Any], verb: str = "INSERT") -> int:
        cur = self.conn.execute(f"{verb} INTO {table} ({', '.join(row)}) VALUES "
                                f"({', '.join('?' for _ in row)})", tuple(row.values()))
        return int(cur.lastrowid) if cur.rowcount == 1 else 0

    def _frame(self, sql: str, args: Sequence[Any] = ()) -> "pd.DataFrame":
        return _pd().read_sql_query(sql, self.conn, params=tuple(args))

    # --- devices -----------------------------------------------------------------------------

    def upsert_device(self, profile: Any) -> None:
        """Record (or refresh) a device from its ``devices.catalog.DeviceProfile``."""
        now = now_iso()
        with self.conn:
            row = self.conn.execute("SELECT first_seen FROM devices WHERE name = ?",
                                    (profile.name,)).fetchone()
            rec = DeviceRecord(name=profile.name, board=profile.board, cpu=profile.cpu,
                               arch=profile.arch, transport=profile.transport,
                               profile=profile.to_dict(), first_seen=row[0] if row else now,
                               last_seen=now)
            row = to_row(rec)
            self.conn.execute(
                f"INSERT INTO devices ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})"
                " ON CONFLICT(name) DO UPDATE SET "
                + ", ".join(f"{k} = excluded.{k}" for k in row if k not in ("name", "first_seen")),
                tuple(row.values()))

    def device(self, name: str) -> DeviceRecord | None:
        rows = self._rows("SELECT * FROM devices WHERE name = ?", (name,))
        return from_row(DeviceRecord, rows[0]) if rows else None

    def device_list(self) -> list[DeviceRecord]:
        return [from_row(DeviceRecord, r) for r in self._rows("SELECT * FROM devices ORDER BY name")]

    def require_device(self, device: str) -> DeviceRecord:
        """The device's record; a CostdbError naming the devices with data if it has none."""
        rec = self.device(device)
        if rec is None:
            known = [d.name for d in self.device_list()]
            raise CostdbError(f"device {device!r} has no data in {self.path}"
                              + did_you_mean(device, known)
                              + (f"; devices with data: {', '.join(known)}" if known else ""))
        return rec

    _require_device = require_device

    # --- models and graphs -------------------------------------------------------------------

    def save_graph(self, graph: TrainingGraph) -> int:
        """Store a training graph (its ops and nodes) once; returns the model id."""
        row = self.conn.execute("SELECT id FROM models WHERE key = ?", (graph.key,)).fetchone()
        if row:
            return row[0]
        with self.conn:
            ops = []
            for spec in graph.distinct_specs():
                ops.append(to_row(OpRecord(
                    signature=spec["signature"], op=spec["op"], phase=spec["phase"],
                    dtype=spec["dtype"], inputs=spec["inputs"], params=spec["params"],
                    attrs=spec["attrs"], grad_inputs=spec["grad_inputs"], spec=spec)))
            self.conn.executemany(
                f"INSERT OR IGNORE INTO ops ({', '.join(ops[0])}) VALUES "
                f"({', '.join('?' for _ in ops[0])})", [tuple(o.values()) for o in ops])
            model_id = self._insert("models", {
                "key": graph.key, "name": graph.model, "batch": graph.batch,
                "input_shape": "x".join(map(str, graph.input_shape)), "dtype": graph.dtype,
                "n_nodes": len(graph.nodes), "n_signatures": len(graph.signatures()),
                "param_bytes": graph.param_bytes, "activation_bytes": graph.activation_bytes,
                "created_at": now_iso()})
            self.conn.executemany(
                "INSERT INTO graph_nodes (model_id, idx, name, layer, op, phase, signature,"
                " deps_json, input_shapes_json, output_shape_json, flops, output_bytes,"
                " param_bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(model_id, n.idx, n.name, n.layer, n.op, n.phase, n.signature,
                  json.dumps(list(n.deps)), json.dumps([list(s) for s in n.input_shapes]),
                  json.dumps(list(n.output_shape)), n.flops, n.output_bytes, n.param_bytes)
                 for n in graph.nodes])
        return model_id

    def model_id(self, key: str) -> int | None:
        """Id of the model variant with exactly this key, or None."""
        row = self.conn.execute("SELECT id FROM models WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def resolve_model(self, model: str | int, batch: int | None = None,
                      input_shape: Iterable[int] | str | None = None, dtype: str | None = None) -> int:
        """Model id from an id, an exact key, or a name (and optional batch/input/dtype)."""
        if isinstance(model, int):
            if self.conn.execute("SELECT 1 FROM models WHERE id = ?", (model,)).fetchone():
                return model
            raise CostdbError(f"model id {model} is not in {self.path}")
        mid = self.model_id(model)
        if mid is not None:
            return mid
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
            names = {r[0] for r in self.conn.execute("SELECT name FROM models")}
            raise CostdbError(f"model {model!r} is not in {self.path}"
                              + did_you_mean(model, sorted(names) + known)
                              + (f"; stored models: {', '.join(known)}" if known
                                 else "; run 'costdb profile --model ...' first"))
        if len(rows) > 1:
            raise CostdbError(f"model {model!r} has several variants in {self.path}: "
                              f"{', '.join(r[1] for r in rows)}; pass batch/input to choose")
        return rows[0][0]

    def model(self, model: str | int, batch: int | None = None, input_shape: Any = None,
              dtype: str | None = None) -> ModelRecord:
        """The stored model variant (see ``resolve_model`` for how ``model`` is matched)."""
        mid = self.resolve_model(model, batch, input_shape, dtype)
        return from_row(ModelRecord, self._rows("SELECT * FROM models WHERE id = ?", (mid,))[0])

    def model_list(self) -> list[ModelRecord]:
        return [from_row(ModelRecord, r) for r in self._rows("SELECT * FROM models ORDER BY id")]

    def graph(self, model: str | int, batch: int | None = None, input_shape: Any = None,
              dtype: str | None = None) -> TrainingGraph:
        """The stored TrainingGraph of a model (no torch needed)."""
        m = self.model(model, batch, input_shape, dtype)
        nodes = []
        for r in self.conn.execute(
                "SELECT g.idx, g.name, g.layer, g.op, g.phase, g.signature, g.deps_json,"
                " g.input_shapes_json, g.output_shape_json, g.flops, g.output_bytes,"
                " g.param_bytes, o.dtype, o.params_json, o.attrs_json, o.grad_inputs_json"
                " FROM graph_nodes g JOIN ops o USING (signature)"
                " WHERE g.model_id = ? ORDER BY g.idx", (m.id,)):
            params = json.loads(r[13] or "{}")
            nodes.append(Node(idx=r[0], name=r[1], layer=r[2], op=r[3], phase=r[4],
                              deps=tuple(json.loads(r[6])),
                              input_shapes=tuple(tuple(s) for s in json.loads(r[7])),
                              output_shape=tuple(json.loads(r[8])), dtype=r[12],
                              flops=r[9], output_bytes=r[10], param_bytes=r[11],
                              params={k: tuple(v) for k, v in params.items()},
                              attrs=json.loads(r[14] or "{}"),
                              grad_inputs=tuple(json.loads(r[15] or "[]")), signature=r[5]))
        return TrainingGraph(model=m.name, batch=m.batch, input_shape=m.input_dims,
                             dtype=m.dtype, nodes=tuple(nodes))

    def node_labels(self, model: str | int) -> dict[int, str]:
        """Graph node idx -> its input and weight shapes (``records.shape_label``); cheaper
        than ``graph()`` for tables of 10,000 nodes."""
        mid = self.resolve_model(model)
        return {idx: shape_label(json.loads(ins or "[]"), json.loads(params or "{}"))
                for idx, ins, params in self.conn.execute(
                    "SELECT g.idx, g.input_shapes_json, o.params_json FROM graph_nodes g"
                    " JOIN ops o USING (signature) WHERE g.model_id = ?", (mid,))}

    def op_records(self, signatures: Iterable[str] | None = None) -> dict[str, OpRecord]:
        """Distinct ops by signature (all of them, or those named)."""
        if signatures is None:
            rows = self._rows("SELECT * FROM ops")
        else:
            sigs = list(dict.fromkeys(signatures))
            rows = []
            for k in range(0, len(sigs), 500):
                part = sigs[k:k + 500]
                rows += self._rows(f"SELECT * FROM ops WHERE signature IN "
                                   f"({','.join('?' for _ in part)})", part)
        return {r["signature"]: from_row(OpRecord, r) for r in rows}

    # --- sessions ----------------------------------------------------------------------------

    def start_session(self, device: str, environment: dict[str, Any], settings: dict[str, Any],
                      model_id: int | None, planned: int, agent_version: str | None = None,
                      energy_sensor: str | None = None, idle_power_w: float | None = None,
                      warnings: list[str] | None = None, settings_id: int | None = None) -> int:
        """Open a ``running`` session of this process on ``device``; returns its id.
        ``settings`` are the measurement options (samples...); ``settings_id`` the fingerprint
        (``add_settings``) its measurements are taken under."""
        from costdb import __version__
        with self.conn:
            return self._insert("sessions", {
                "device": device, "status": "running", "started_at": now_iso(),
                "host": socket.gethostname(), "pid": os.getpid(), "costdb_version": __version__,
                "agent_version": agent_version, "model_id": model_id, "planned": planned,
                "measured": 0, "energy_sensor": energy_sensor, "idle_power_w": idle_power_w,
                "environment_json": json.dumps(environment, sort_keys=True, default=str),
                "settings_json": json.dumps(settings, sort_keys=True, default=str),
                "warnings_json": json.dumps(warnings or []), "settings_id": settings_id})

    def update_session(self, session_id: int, **fields: Any) -> None:
        """Set session columns; ``environment``, ``settings``, ``warnings`` are JSON-encoded."""
        for k in ("environment", "settings", "warnings"):
            if k in fields:
                fields[f"{k}_json"] = json.dumps(fields.pop(k), sort_keys=True, default=str)
        allowed = {c[1] for c in self.conn.execute("PRAGMA table_info(sessions)")} - {"id"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"sessions has no column(s) {sorted(bad)}")
        if not fields:
            return
        with self.conn:
            self.conn.execute(f"UPDATE sessions SET {', '.join(f'{k} = ?' for k in fields)}"
                              " WHERE id = ?", (*fields.values(), session_id))

    def finish_session(self, session_id: int, status: str, warnings: list[str] | None = None) -> None:
        """End a session (``complete``, ``interrupted``...) and drop its op claims."""
        n = self.conn.execute("SELECT count(*) FROM measurements WHERE session_id = ?",
                              (session_id,)).fetchone()[0]
        fields: dict[str, Any] = {"status": status, "ended_at": now_iso(), "measured": n}
        if warnings is not None:
            fields["warnings"] = warnings
        self.update_session(session_id, **fields)
        with self.conn:
            self.conn.execute("DELETE FROM op_claims WHERE session_id = ?", (session_id,))

    def close_stale_sessions(self, device: str | None = None) -> int:
        """Mark ``running`` sessions (of ``device``, or all) whose process is gone as
        ``interrupted``; returns how many. A session records its host and pid; only sessions of
        this host can be checked (a process elsewhere may still be running). Every open does
        this, so a killed profile never stays ``running``; its measurements stay and count as
        done for the next run (``done_signatures``)."""
        stale = self._stale_session_ids()
        if device is not None:
            stale = [sid for sid in stale if self.session(sid).device == device]
        for sid in stale:
            self.finish_session(sid, "interrupted")
        return len(stale)

    # --- op claims (two profiles of one device at once) ----------------------------------------

    #: what ``claim_op`` returns when the op has a finished measurement already
    DONE = 0

    def claim_op(self, session_id: int, device: str, signature: str, settings_id: int | None,
                 kind: str = "isolated", since: str | None = None) -> int | None:
        """Claim an op for ``session_id`` before measuring it: None when claimed (measure it),
        ``Database.DONE`` when a finished measurement of it exists (taken at or after ``since``,
        an ISO time, when given: ``--force`` ignores older ones), else the id of the running
        session that holds the claim (another profile is measuring it now).

        Check and claim happen in one ``BEGIN IMMEDIATE`` transaction, so two processes never
        both get None for the same op. A claim counts while its session is ``running``
        (``close_stale_sessions`` ends a dead one's) and is dropped when its session finishes."""
        q = ",".join("?" for _ in DONE_STATUSES)
        sid_key = settings_id if settings_id is not None else 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            done = self.conn.execute(
                f"SELECT 1 FROM measurements WHERE device = ? AND signature = ? AND settings_id IS ?"
                f" AND kind = ? AND status IN ({q})" + (" AND measured_at >= ?" if since else "")
                + " LIMIT 1", (device, signature, settings_id, kind, *DONE_STATUSES,
                               *([since] if since else []))).fetchone()
            if done:
                self.conn.execute("COMMIT")
                return self.DONE
            held = self.conn.execute(
                "SELECT c.session_id FROM op_claims c JOIN sessions s ON s.id = c.session_id"
                " WHERE c.device = ? AND c.signature = ? AND c.settings_id = ? AND c.kind = ?"
                " AND c.session_id != ? AND s.status = 'running'",
                (device, signature, sid_key, kind, session_id)).fetchone()
            if held:
                self.conn.execute("COMMIT")
                return int(held[0])
            self.conn.execute(
                "INSERT OR REPLACE INTO op_claims (device, signature, settings_id, kind,"
                " session_id, claimed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (device, signature, sid_key, kind, session_id, now_iso()))
            self.conn.execute("COMMIT")
            return None
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def claims(self, device: str | None = None) -> list[dict[str, Any]]:
        """Current op claims (of ``device``), with their session's status."""
        sql = ("SELECT c.*, s.status FROM op_claims c LEFT JOIN sessions s ON s.id = c.session_id"
               + (" WHERE c.device = ?" if device else "") + " ORDER BY c.claimed_at")
        return self._rows(sql, (device,) if device else ())

    def session(self, session_id: int) -> SessionRecord:
        rows = self._rows("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise CostdbError(f"session {session_id} is not in {self.path}; list them with "
                              "'costdb sessions'")
        return from_row(SessionRecord, rows[0])

    def session_list(self, device: str | None = None) -> list[SessionRecord]:
        sql, args = "SELECT * FROM sessions", ()
        if device:
            sql, args = sql + " WHERE device = ?", (device,)
        return [from_row(SessionRecord, r) for r in self._rows(sql + " ORDER BY id", args)]

    # --- measurements and iterations -------------------------------------------------------------

    def add_measurement(self, m: Measurement) -> bool:
        """Store one measurement; False (and nothing written) if the session already has one of
        this op and kind. ``m.kind`` is ``isolated`` or ``in_context``; ``m.settings_id`` the
        fingerprint (``add_settings``); ``m.raw`` the raw samples; ``m.extra`` any further
        payload (e.g. per-node figures of an in-context attribution)."""
        with self.conn:
            return self._insert("measurements", m.row(), "INSERT OR IGNORE") != 0

    def add_measurements(self, ms: Iterable[Measurement]) -> int:
        """Store several measurements in ONE transaction (all or none: the in-context step writes
        every op of a model at once); returns how many were new (as ``add_measurement``)."""
        with self.conn:
            return sum(self._insert("measurements", m.row(), "INSERT OR IGNORE") != 0 for m in ms)

    def measurement_list(self, device: str | None = None, session_id: int | None = None,
                         signatures: Iterable[str] | None = None, settings_id: int | None = None,
                         kind: str | None = None) -> list[Measurement]:
        """Stored measurements (oldest first), optionally of one device, session, settings,
        kind or set of signatures."""
        where, args = [], []
        for col, val in (("device", device), ("session_id", session_id),
                         ("settings_id", settings_id), ("kind", kind)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if signatures is not None:
            sigs = list(signatures)
            where.append(f"signature IN ({','.join('?' for _ in sigs)})")
            args += sigs
        sql = "SELECT * FROM measurements" + (" WHERE " + " AND ".join(where) if where else "")
        return [from_row(Measurement, r) for r in self._rows(sql + " ORDER BY id", args)]

    def done_signatures(self, device: str, settings_id: int | None,
                        kind: str = "isolated", model: int | None = None) -> set[str]:
        """Signatures with a finished measurement (ok, unsupported or not fitting) on ``device``
        under settings ``settings_id``: what a resumed profile need not measure again. A profile
        under other settings (``--threads 2`` after ``--threads 1``) reuses nothing. ``model``
        (an id) counts only measurements taken in sessions of that model (in-context figures
        belong to the model they were traced in)."""
        q = ",".join("?" for _ in DONE_STATUSES)
        if model is None:
            return {r[0] for r in self.conn.execute(
                f"SELECT signature FROM current_measurements WHERE device = ? AND settings_id IS ?"
                f" AND kind = ? AND status IN ({q})", (device, settings_id, kind, *DONE_STATUSES))}
        return {r[0] for r in self.conn.execute(
            f"SELECT m.signature FROM measurements m JOIN sessions s ON s.id = m.session_id"
            f" WHERE m.device = ? AND m.settings_id IS ? AND m.kind = ? AND m.status IN ({q})"
            f" AND s.model_id = ?", (device, settings_id, kind, *DONE_STATUSES, model))}

    # --- settings ----------------------------------------------------------------------------

    def add_settings(self, rec: SettingsRecord) -> int:
        """The id of the settings row with ``rec``'s fingerprint, inserted if new."""
        with self.conn:
            self._insert("settings", to_row(rec), "INSERT OR IGNORE")
        return self.conn.execute("SELECT id FROM settings WHERE fingerprint = ?",
                                 (rec.fingerprint,)).fetchone()[0]

    def get_settings(self, ref: int | str) -> SettingsRecord:
        """A settings row by id (``3`` or ``"3"``) or fingerprint (or a unique prefix of one)."""
        text = str(ref).strip()
        if text.isdigit():
            rows = self._rows("SELECT * FROM settings WHERE id = ?", (int(text),))
        else:
            rows = self._rows("SELECT * FROM settings WHERE fingerprint LIKE ? ORDER BY id",
                              (text.lower() + "%",)) if text else []
        if len(rows) > 1:
            raise CostdbError(f"settings {text!r} is ambiguous ({len(rows)} fingerprints start "
                              "with it); give more digits or the id ('costdb settings' lists them)")
        if not rows:
            raise CostdbError(f"settings {text!r} is not in {self.path}; 'costdb settings' lists "
                              "the settings ids and fingerprints")
        return from_row(SettingsRecord, rows[0])

    def settings_list(self, device: str | None = None) -> list[SettingsRecord]:
        """Settings rows (of the measurements of ``device``, if given), oldest first."""
        if device is None:
            rows = self._rows("SELECT * FROM settings ORDER BY id")
        else:
            rows = self._rows("SELECT * FROM settings WHERE id IN (SELECT DISTINCT settings_id"
                              " FROM measurements WHERE device = ?) ORDER BY id", (device,))
        return [from_row(SettingsRecord, r) for r in rows]

    def settings_devices(self, settings_id: int) -> list[str]:
        """Devices with measurements under settings ``settings_id``."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT device FROM measurements WHERE settings_id = ? ORDER BY device",
            (settings_id,))]

    def settings(self, device: str | None = None) -> "pd.DataFrame":
        """One row per (device, settings fingerprint, kind) with measurements: how many, from
        which sessions, when, and the settings' fields."""
        sql = """SELECT m.device, m.settings_id AS id, st.fingerprint, m.kind,
                        count(*) AS measurements, count(DISTINCT m.signature) AS ops,
                        group_concat(DISTINCT m.session_id) AS sessions,
                        min(m.measured_at) AS first_measured, max(m.measured_at) AS last_measured
                 FROM measurements m LEFT JOIN settings st ON st.id = m.settings_id"""
        args: tuple = ()
        if device:
            self.require_device(device)
            sql, args = sql + " WHERE m.device = ?", (device,)
        df = self._frame(sql + " GROUP BY m.device, m.settings_id, m.kind ORDER BY m.device,"
                               " m.settings_id, m.kind", args)
        recs = {r.id: r for r in self.settings_list()}
        for k in IDENTITY:
            df[k] = [getattr(recs[int(i)], k) if i == i and i is not None and int(i) in recs
                     else None for i in df["id"]]
        return df

    def resolve_settings(self, device: str, model: str | int | None = None,
                         settings: int | str | None = None, kind: str = "isolated",
                         session: int | None = None) -> int | None:
        """The one settings id a cost table of ``model`` on ``device`` is built from.

        ``settings``: None (the only fingerprint the model's measurements have, or the only one
        that covers all of the model's ops when others cover a few ops it shares with other
        models; refused with a one-line CostdbError naming the differing settings when several
        remain), ``"latest"``
        (the settings of the newest measurement), an id or a fingerprint (prefix). ``session``
        restricts the choice to that session's measurements.
        """
        if kind not in KINDS:
            raise CostdbError(f"unknown measurement kind {kind!r}; use {' or '.join(KINDS)}")
        where = ["m.device = ?", "m.kind = ?"]
        args: list[Any] = [device, kind]
        if model is not None:
            where.append("m.signature IN (SELECT signature FROM graph_nodes WHERE model_id = ?)")
            args.append(self.resolve_model(model))
        if session is not None:
            rec = self.session(session)
            if rec.device != device:
                raise CostdbError(f"session {session} profiled {rec.device!r}, not {device!r}")
            where.append("m.session_id = ?")
            args.append(session)
        groups = self.conn.execute(
            f"SELECT m.settings_id, max(m.id), count(DISTINCT m.signature) FROM measurements m"
            f" WHERE {' AND '.join(where)} GROUP BY m.settings_id ORDER BY max(m.id)", args).fetchall()
        ids = [g[0] for g in groups]
        n_ops = {g[0]: g[2] for g in groups}
        m = self.model(model) if model is not None else None
        what = (f"{m.key} on {device}" if m is not None else device) + \
            (f" in session {session}" if session is not None else "")
        if settings is not None and str(settings).strip().lower() == LATEST:
            return ids[-1] if ids else None
        if settings is not None:
            rec = self.get_settings(settings)
            if rec.id not in ids:
                raise CostdbError(
                    f"settings #{rec.id} has no {kind} measurements of {what}; "
                    + (f"settings with data: {', '.join(f'#{i}' for i in ids if i is not None)}"
                       if ids else "profile it first"))
            return rec.id
        if len(ids) <= 1:
            return ids[0] if ids else None
        if m is not None and session is None:
            # ops shared with another model (an SGD update of a bias of the same shape) may
            # have been measured under that model's settings: one fingerprint that covers every
            # op of this model is the unambiguous choice, the partial ones are not a conflict
            complete = [i for i in ids if n_ops[i] >= (m.n_signatures or 0) > 0]
            if len(complete) == 1:
                return complete[0]
        recs = [self.get_settings(i) if i is not None else SettingsRecord() for i in ids]
        diff = differing(recs)
        listed = "; ".join(f"#{i if i is not None else '?'} {describe(r, diff)}, " +
                           (f"{n_ops[i]}/{m.n_signatures} ops" if m is not None else f"{n_ops[i]} ops")
                           for i, r in zip(ids, recs))
        raise CostdbError(
            f"the {kind} measurements of {what} were taken under {len(ids)} different settings "
            f"({listed}); costs are never mixed across settings: choose one with --settings "
            f"latest|ID (in Python settings='latest' or an id; 'costdb settings --device "
            f"{device}' lists them)")

    # --- iterations --------------------------------------------------------------------------------

    def add_iteration(self, device: str, model_id: int, session_id: int | None,
                      stats: dict[str, Any], settings_id: int | None = None) -> int:
        """Store a measured whole training iteration (forward + loss + backward + update).

        ``stats``: ``median`` (s), ``stdev``, ``cv``, ``samples``, ``threads``, ``optimizer``,
        ``provenance`` and, when measured, the phase medians ``fwd_s`` (forward incl. loss),
        ``bwd_s`` and ``update_s`` — what ``profiler.iteration.measure_iteration`` returns.
        """
        rec = IterationRecord(device=device, model_id=model_id, session_id=session_id,
                              runtime_s=stats["median"], runtime_stdev_s=stats.get("stdev"),
                              runtime_cv=stats.get("cv"), samples=stats.get("samples"),
                              threads=stats.get("threads"), optimizer=stats.get("optimizer"),
                              runtime_provenance=stats.get("provenance", "measured"),
                              settings_id=settings_id, fwd_runtime_s=stats.get("fwd_s"),
                              bwd_runtime_s=stats.get("bwd_s"), update_runtime_s=stats.get("update_s"))
        with self.conn:
            return self._insert("iterations", to_row(rec))

    def iteration_list(self, device: str | None = None,
                       model_id: int | None = None) -> list[IterationRecord]:
        where, args = [], []
        if device:
            where.append("device = ?")
            args.append(device)
        if model_id is not None:
            where.append("model_id = ?")
            args.append(model_id)
        sql = "SELECT * FROM iterations" + (" WHERE " + " AND ".join(where) if where else "")
        return [from_row(IterationRecord, r) for r in self._rows(sql + " ORDER BY id", args)]

    def predicted_runtime(self, device: str, model_id: int, settings_id: int | None = None,
                          kind: str = "isolated") -> dict[str, float | None]:
        """The cost model's iteration time under one settings fingerprint: ``{"total", "fwd",
        "bwd", "update"}`` sums of node medians (None while a node of the group is unmeasured)."""
        rows = self.conn.execute(
            f"""WITH {_pick()}
               SELECT g.phase, sum(m.runtime_s), count(*), count(m.runtime_s)
               FROM graph_nodes g LEFT JOIN pick p ON p.signature = g.signature
               LEFT JOIN measurements m ON m.id = p.id
               WHERE g.model_id = ? GROUP BY g.phase""",
            (model_id, model_id, device, kind, settings_id, model_id)).fetchall()
        by_phase = {ph: (tot, n, n_rt) for ph, tot, n, n_rt in rows}

        def total(phases: Iterable[str]) -> float | None:
            parts = [by_phase[p] for p in phases if p in by_phase]
            if not parts or any(n != n_rt for _, n, n_rt in parts):
                return None
            return float(sum(t or 0.0 for t, _, _ in parts))
        out = {g: total(ph) for g, ph in PHASE_GROUPS.items()}
        out["total"] = total(by_phase)
        return out

    def iterations(self, device: str | None = None) -> "pd.DataFrame":
        """Measured whole iterations beside the cost model's prediction (sum of the node
        medians taken under the iteration's settings) of the default estimate (``kind``:
        in-context where the model has a complete set, else isolated): totals and, where the
        phases were timed, forward / backward / update with their relative errors; and the
        totals of both estimates (``isolated_predicted_s``, ``in_context_error``, ...)."""
        sql = """SELECT i.device, m.key AS model, i.runtime_s AS measured_s, i.runtime_cv,
                        i.samples, i.threads, i.optimizer, i.runtime_provenance, i.measured_at,
                        i.settings_id, i.fwd_runtime_s AS fwd_measured_s,
                        i.bwd_runtime_s AS bwd_measured_s, i.update_runtime_s AS update_measured_s,
                        i.model_id
                 FROM iterations i JOIN models m ON m.id = i.model_id"""
        args: tuple = ()
        if device:
            sql += " WHERE i.device = ?"
            args = (device,)
        df = self._frame(sql + " ORDER BY i.id", args)
        by_kind = {k: [] for k in KINDS}
        for dev, mid, sid in zip(df["device"], df["model_id"], df["settings_id"]):
            sid = None if sid != sid or sid is None else int(sid)
            for k in KINDS:
                by_kind[k].append(self.predicted_runtime(dev, int(mid), sid, kind=k))
        # the default estimate (auto): in-context where the model has a complete prediction
        df["kind"] = ["in_context" if ic["total"] is not None else "isolated"
                      for ic in by_kind["in_context"]]
        preds = [by_kind[k][j] for j, k in enumerate(df["kind"])]
        df["predicted_s"] = [p["total"] for p in preds]
        df["error"] = (df["predicted_s"] - df["measured_s"]) / df["measured_s"]
        for g in PHASE_GROUPS:
            df[f"{g}_predicted_s"] = [p[g] for p in preds]
            df[f"{g}_error"] = ((df[f"{g}_predicted_s"].astype(float) - df[f"{g}_measured_s"].astype(float))
                                / df[f"{g}_measured_s"].astype(float))
        for k in KINDS:  # both estimates, for comparison
            df[f"{k}_predicted_s"] = [p["total"] for p in by_kind[k]]
            df[f"{k}_error"] = (df[f"{k}_predicted_s"].astype(float) - df["measured_s"]) / df["measured_s"]
        return df.drop(columns=["model_id"])

    # --- what has data -----------------------------------------------------------------------------

    def measured_devices(self, model_id: int | None = None) -> list[str]:
        """Devices with at least one ok current measurement (of the model's ops, if given)."""
        if model_id is None:
            sql, args = ("SELECT DISTINCT device FROM current_measurements WHERE status = 'ok'"
                         " ORDER BY device"), ()
        else:
            sql, args = ("SELECT DISTINCT m.device FROM current_measurements m JOIN graph_nodes g"
                         " ON g.signature = m.signature WHERE g.model_id = ? AND m.status = 'ok'"
                         " ORDER BY m.device"), (model_id,)
        return [r[0] for r in self.conn.execute(sql, args)]

    def measured_models(self, device: str) -> list[int]:
        """Ids of the models with at least one current measurement on ``device``."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT g.model_id FROM graph_nodes g JOIN current_measurements m"
            " ON m.signature = g.signature AND m.device = ? ORDER BY g.model_id", (device,))]

    def devices_with_data(self) -> list[str]:
        """Every device the file holds anything for: a device record (it was profiled), or
        schedules, sweeps or Pareto points (it was only solved for, from catalog figures)."""
        return [r[0] for r in self.conn.execute(
            "SELECT name FROM devices UNION SELECT device FROM schedules WHERE device IS NOT NULL"
            " UNION SELECT device FROM sweeps WHERE device IS NOT NULL"
            " UNION SELECT device FROM pareto_points WHERE device IS NOT NULL ORDER BY 1")]

    def models_with_data(self, device: str) -> list[int]:
        """Ids of the models profiled on ``device`` (a session of the model measured something
        there) or with schedules, sweeps or Pareto points on it: what a report of the device
        covers. A model that merely shares an op with a profiled one (an SGD update of a bias
        of the same shape) is not listed."""
        return [r[0] for r in self.conn.execute(
            "SELECT s.model_id FROM sessions s WHERE s.device = ? AND s.model_id IS NOT NULL"
            " AND EXISTS (SELECT 1 FROM measurements m WHERE m.session_id = s.id)"
            " UNION SELECT model_id FROM schedules WHERE device = ? AND model_id IS NOT NULL"
            " UNION SELECT model_id FROM sweeps WHERE device = ? AND model_id IS NOT NULL"
            " UNION SELECT model_id FROM pareto_points WHERE device = ? AND model_id IS NOT NULL"
            " ORDER BY 1", (device,) * 4)]

    def node_costs_unmeasured(self, model: str | int) -> "pd.DataFrame":
        """The columns of a cost table (``costs``) for a device that was never profiled: every
        node of ``model``, costs NaN, status None."""
        mid = self.resolve_model(model)
        return self._cost_frame("", mid, None, KINDS[0])

    def provenance_counts(self, device: str) -> dict[str, dict[str, int]]:
        """How many current measurements (and iterations) of ``device`` have each provenance:
        ``{"runtime": {...}, "energy": {...}, "iteration": {...}}``."""
        out: dict[str, dict[str, int]] = {}
        for key, sql in (
                ("runtime", "SELECT runtime_provenance, count(*) FROM current_measurements"
                            " WHERE device = ? GROUP BY 1"),
                ("energy", "SELECT energy_provenance, count(*) FROM current_measurements"
                           " WHERE device = ? GROUP BY 1"),
                ("iteration", "SELECT runtime_provenance, count(*) FROM iterations"
                              " WHERE device = ? GROUP BY 1")):
            out[key] = {p: n for p, n in self.conn.execute(sql, (device,)) if p}
        return out

    # --- solver results ----------------------------------------------------------------------------

    def add_schedule(self, rec: ScheduleRecord) -> int:
        """Store a solve result (the solver validated it first); returns the schedules row id."""
        with self.conn:
            return self._insert("schedules", to_row(rec))

    def schedule(self, schedule_id: int) -> ScheduleRecord:
        rows = self._rows("SELECT * FROM schedules WHERE id = ?", (schedule_id,))
        if not rows:
            raise CostdbError(f"schedule {schedule_id} is not in {self.path}; list them with "
                              "'costdb query \"SELECT id, device, mode FROM schedules\"'")
        return from_row(ScheduleRecord, rows[0])

    def schedule_list(self, device: str | None = None, model_id: int | None = None,
                      sweep_id: int | None = None) -> list[ScheduleRecord]:
        return [from_row(ScheduleRecord, r) for r in self._select(
            "schedules", device=device, model_id=model_id, sweep_id=sweep_id)]

    def add_sweep(self, rec: SweepRecord) -> int:
        with self.conn:
            return self._insert("sweeps", to_row(rec))

    def finish_sweep(self, sweep_id: int, status: str = "done") -> None:
        with self.conn:
            self.conn.execute("UPDATE sweeps SET status = ?, ended_at = ? WHERE id = ?",
                              (status, now_iso(), sweep_id))

    def sweep(self, sweep_id: int) -> SweepRecord:
        rows = self._rows("SELECT * FROM sweeps WHERE id = ?", (sweep_id,))
        if not rows:
            raise CostdbError(f"sweep {sweep_id} is not in {self.path}")
        return from_row(SweepRecord, rows[0])

    def sweep_list(self, device: str | None = None, model_id: int | None = None) -> list[SweepRecord]:
        return [from_row(SweepRecord, r) for r in self._select("sweeps", device=device,
                                                               model_id=model_id)]

    def add_pareto_point(self, rec: ParetoPointRecord) -> int:
        with self.conn:
            return self._insert("pareto_points", to_row(rec))

    def pareto_point_list(self, sweep_id: int | None = None, device: str | None = None,
                          model_id: int | None = None) -> list[ParetoPointRecord]:
        return [from_row(ParetoPointRecord, r) for r in self._select(
            "pareto_points", device=device, model_id=model_id, sweep_id=sweep_id)]

    # --- executed schedules ------------------------------------------------------------------------

    def add_run(self, rec: RunRecord) -> int:
        """Store one executed schedule (its check passed: RunRecord refuses anything else)."""
        self.schedule(rec.schedule_id)          # a clear error for an unknown schedule
        with self.conn:
            return self._insert("runs", to_row(rec))

    def run(self, run_id: int) -> RunRecord:
        rows = self._rows("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise CostdbError(f"run {run_id} is not in {self.path}; list them with 'costdb runs'")
        return from_row(RunRecord, rows[0])

    def run_list(self, device: str | None = None, schedule_id: int | None = None,
                 model_id: int | None = None) -> list[RunRecord]:
        return [from_row(RunRecord, r) for r in self._select(
            "runs", device=device, schedule_id=schedule_id, model_id=model_id)]

    def runs(self, device: str | None = None) -> "pd.DataFrame":
        """Executed schedules, predicted beside measured, with the schedule's budget, mode and
        sweep (one row per run)."""
        sql = ("SELECT r.*, s.sweep_id, s.deadline_s, s.granularity, m.key AS model "
               "FROM runs r JOIN schedules s ON s.id = r.schedule_id "
               "LEFT JOIN models m ON m.id = r.model_id")
        args: tuple = ()
        if device:
            sql, args = sql + " WHERE r.device = ?", (device,)
        return self._frame(sql + " ORDER BY r.id", args)

    def add_storage_profile(self, rec: StorageProfileRecord) -> int:
        with self.conn:
            return self._insert("storage_profiles", to_row(rec))

    def storage_profile_list(self, device: str | None = None) -> list[StorageProfileRecord]:
        return [from_row(StorageProfileRecord, r) for r in self._select("storage_profiles",
                                                                        device=device)]

    def storage_profiles(self, device: str | None = None) -> "pd.DataFrame":
        sql, args = "SELECT * FROM storage_profiles", ()
        if device:
            sql, args = sql + " WHERE device = ?", (device,)
        return self._frame(sql + " ORDER BY id", args)

    def _select(self, table: str, **eq: Any) -> list[dict[str, Any]]:
        where = [(k, v) for k, v in eq.items() if v is not None]
        sql = f"SELECT * FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(f"{k} = ?" for k, _ in where)
        return self._rows(sql + " ORDER BY id", [v for _, v in where])

    # --- DataFrames --------------------------------------------------------------------------------

    def devices(self) -> "pd.DataFrame":
        return self._frame("SELECT name, board, cpu, arch, transport, first_seen, last_seen "
                           "FROM devices ORDER BY name")

    def models(self) -> "pd.DataFrame":
        return self._frame("SELECT id, key, name, batch, input_shape, dtype, n_nodes, "
                           "n_signatures, param_bytes, activation_bytes, created_at "
                           "FROM models ORDER BY id")

    def sessions(self, device: str | None = None) -> "pd.DataFrame":
        sql, args = "SELECT * FROM sessions", ()
        if device:
            sql, args = sql + " WHERE device = ?", (device,)
        return self._frame(sql + " ORDER BY id", args)

    def costs(self, device: str, model: str | int, batch: int | None = None,
              input_shape: Any = None, dtype: str | None = None, settings: int | str | None = None,
              kind: str = AUTO, session: int | None = None) -> "pd.DataFrame":
        """One row per graph node of ``model``: the device's newest measurement of its op under
        ONE settings fingerprint and kind (``resolve_settings``: ``settings`` None refuses when
        the measurements differ in settings, ``"latest"`` or an id chooses). ``kind``:
        ``isolated``, ``in_context`` or ``auto`` (``resolve_kind``: in-context where the model
        has such figures). ``session`` keeps only that session's measurements. Nodes without one
        have NaN costs (status None); columns and ``attrs`` ``settings_id`` and ``kind`` say what
        the figures are.
        """
        self.require_device(device)
        mid = self.resolve_model(model, batch, input_shape, dtype)
        kind = self.resolve_kind(device, mid, kind, settings, session)
        sid = self.resolve_settings(device, mid, settings, kind, session)
        return self._cost_frame(device, mid, sid, kind, session)

    def resolve_kind(self, device: str, model: str | int, kind: str = AUTO,
                     settings: int | str | None = None, session: int | None = None) -> str:
        """The measurement kind a cost table uses. ``auto``: ``in_context`` when the model has
        in-context measurements on ``device`` traced in the model itself (under ``settings``
        when it names one, in ``session`` when given), else ``isolated``. An op another model
        shares (an SGD update of the same bias shape) and that was traced there does not make a
        model in-context: its table would be one node in-context and the rest unmeasured."""
        if kind not in ESTIMATES:
            raise CostdbError(f"unknown estimate {kind!r}; use {', '.join(ESTIMATES)}")
        if kind != AUTO:
            return kind
        mid = self.resolve_model(model)
        where = ["m.device = ?", "m.kind = 'in_context'", "m.status = 'ok'",
                 "m.signature IN (SELECT signature FROM graph_nodes WHERE model_id = ?)",
                 # traced in this model (a session that names no model may have been)
                 "m.session_id IN (SELECT id FROM sessions WHERE model_id = ? OR model_id IS NULL)"]
        args: list[Any] = [device, mid, mid]
        if settings is not None and str(settings).strip().lower() != LATEST:
            where.append("m.settings_id = ?")
            args.append(self.get_settings(settings).id)
        if session is not None:
            where.append("m.session_id = ?")
            args.append(session)
        found = self.conn.execute(f"SELECT 1 FROM measurements m WHERE {' AND '.join(where)}"
                                  " LIMIT 1", args).fetchone()
        return "in_context" if found else "isolated"

    def _cost_frame(self, device: str, mid: int, sid: int | None, kind: str,
                    session: int | None = None) -> "pd.DataFrame":
        extra, args = "", [mid, mid, device, kind, sid]
        if session is not None:
            extra, args = " AND m.session_id = ?", args + [session]
        df = self._frame(f"""
            WITH {_pick(extra)}
            SELECT g.idx, g.name, g.layer, g.op, g.phase, g.signature, g.deps_json AS deps,
                   g.flops, g.output_bytes, g.param_bytes, {_COST_COLUMNS}
            FROM graph_nodes g LEFT JOIN pick p ON p.signature = g.signature
            LEFT JOIN measurements m ON m.id = p.id
            WHERE g.model_id = ? ORDER BY g.idx""", (*args, mid))
        df["deps"] = df["deps"].map(json.loads)
        df["unstable"] = df["unstable"].map(lambda v: bool(v) if v == v and v is not None else None)
        df.insert(0, "device", device)
        df.attrs.update(settings_id=sid, kind=kind, model_id=mid)
        return df

    def ops(self, device: str | None = None, settings: int | str | None = None,
            kind: str | None = None) -> "pd.DataFrame":
        """One row per (device, distinct op signature, settings, kind) with its newest
        measurement; ``settings`` (an id, fingerprint or ``"latest"`` per device) and ``kind``
        filter. Rows of different settings are separate, never merged."""
        sql = f"""
            SELECT m.device, o.signature, o.op, o.phase, o.dtype, o.inputs_json AS inputs,
                   o.params_json AS params, o.attrs_json AS attrs, m.output_bytes,
                   (SELECT count(*) FROM graph_nodes g WHERE g.signature = o.signature) AS uses,
                   {_COST_COLUMNS}, m.runtime_min_s, m.runtime_max_s, m.inner_loops, m.error
            FROM current_measurements m JOIN ops o ON o.signature = m.signature"""
        where, args = [], []
        if device:
            self.require_device(device)
            where.append("m.device = ?")
            args.append(device)
        if kind is not None:
            where.append("m.kind = ?")
            args.append(kind)
        if settings is not None:
            if str(settings).strip().lower() == LATEST:
                where.append("m.settings_id IS (SELECT m2.settings_id FROM measurements m2"
                             " WHERE m2.device = m.device ORDER BY m2.id DESC LIMIT 1)")
            else:
                where.append("m.settings_id = ?")
                args.append(self.get_settings(settings).id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._frame(sql + " ORDER BY m.device, m.settings_id, m.kind, m.runtime_s DESC", args)

    def summary(self, device: str | None = None) -> "pd.DataFrame":
        """Per (device, model, settings, kind) with ok measurements: nodes measured, summed
        runtime and energy per phase and total (one row per fingerprint: never mixed)."""
        if device:
            self.require_device(device)
        combos = self.conn.execute(
            "SELECT DISTINCT m.device, g.model_id, m.settings_id, m.kind FROM measurements m"
            " JOIN graph_nodes g ON g.signature = m.signature WHERE m.status = 'ok'"
            + (" AND m.device = ?" if device else "") + " ORDER BY 1, 2, 3, 4",
            (device,) if device else ()).fetchall()
        models = {m.id: m for m in self.model_list()}
        rows = []
        for dev, mid, sid, kind in combos:
            m = models[mid]
            df = self._cost_frame(dev, mid, sid, kind)
            measured = df["status"].eq("ok")
            row = {"device": dev, "model": m.name, "key": m.key, "settings_id": sid, "kind": kind,
                   "nodes": len(df), "nodes_measured": int(measured.sum()),
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
        return _pd().DataFrame(rows)

    def compare(self, a: Any, b: Any, device: str | None = None, model: str | int | None = None,
                kind: str = "isolated") -> Any:
        """Op-by-op comparison of two sessions or settings (``costdb.compare.compare``)."""
        from costdb.compare import compare
        return compare(self, a, b, device=device, model=model, kind=kind)

    def query(self, sql: str, params: Iterable[Any] = ()) -> "pd.DataFrame":
        """Run one read-only SQL statement (``costdb.sqlguard``: writes, ATTACH, VACUUM INTO,
        transactions and pragma assignments are refused with one line)."""
        from costdb import sqlguard
        ro = self._connect_query()
        try:
            cols, rows = sqlguard.run(ro, sql, tuple(params))
        finally:
            ro.close()
        return _pd().DataFrame.from_records(rows, columns=cols)

    def _connect_query(self) -> sqlite3.Connection:
        try:
            return _connect_ro(self.path, immutable=getattr(self, "_immutable", False))
        except sqlite3.DatabaseError as e:
            raise CostdbError(f"cannot read {self.path}: {e}; check the file") from None




def open(path: str | os.PathLike, create: bool = False, readonly: bool = False) -> Database:  # noqa: A001
    """Open a cost database. ``create=True`` makes a new file; older schemas are migrated."""
    return Database(path, create=create, readonly=readonly)
