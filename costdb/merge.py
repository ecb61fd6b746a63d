"""Merge cost databases from several machines into one (``costdb merge OUT IN...``).

Identity, not row ids, decides what is the same: an op is its signature, a settings row its
fingerprint, a model its key, a device its name. A session is identified by (device, host,
started_at, pid): a session present in OUT with the same identity *and* the same content (status,
counts, environment, settings, its measurements) is merged once; one with the same identity but
different content (say, a copy taken while it was still running) is a conflicting duplicate and is
kept as a separate session, with a warning saying so. Iterations, sweeps, schedules and Pareto
points are copied with their references remapped and are recognised again by their content, so
merging the same input twice changes nothing.

All of OUT is written in one transaction (a new OUT in a temporary file renamed into place), so an
error leaves OUT exactly as it was. The inputs are read from in-memory snapshots and never
modified (older schemas are migrated in the snapshot only).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from costdb.database import Database
from costdb.errors import CostdbError

__all__ = ["MergeResult", "merge"]

_TABLES = ("devices", "settings", "ops", "models", "sessions", "measurements", "iterations",
           "sweeps", "schedules", "pareto_points")


@dataclass
class MergeResult:
    """What a merge added (rows per table), recognised as already present, and the conflicts."""

    out: Path
    inputs: list[Path]
    added: dict[str, int] = field(default_factory=lambda: {t: 0 for t in _TABLES})
    present: dict[str, int] = field(default_factory=lambda: {t: 0 for t in _TABLES})
    conflicts: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.added[t]} {t.replace('_', ' ')}" for t in _TABLES if self.added[t]]
        same = sum(self.present[t] for t in ("sessions", "iterations", "schedules", "sweeps",
                                             "pareto_points"))
        text = (f"merged {len(self.inputs)} database{'s' if len(self.inputs) != 1 else ''} into "
                f"{self.out}: added " + (", ".join(parts) if parts else "nothing"))
        if same:
            text += f"; {same} rows were already there"
        if self.conflicts:
            text += f"; {len(self.conflicts)} conflicting session(s) kept separately"
        return text


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class _Merger:
    def __init__(self, dst: Database, result: MergeResult):
        self.dst = dst
        self.r = result

    # helpers: every write goes through the destination's connection, inside one transaction
    def rows(self, db: Database, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return db._rows(sql, args)

    def insert(self, table: str, row: dict[str, Any]) -> int:
        row = {k: v for k, v in row.items() if k != "id"}
        cur = self.dst.conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES "
                                    f"({', '.join('?' for _ in row)})", tuple(row.values()))
        self.r.added[table] += 1
        return int(cur.lastrowid)

    # --- per table ---------------------------------------------------------------------------
    def devices(self, src: Database) -> None:
        for d in self.rows(src, "SELECT * FROM devices"):
            have = self.rows(self.dst, "SELECT * FROM devices WHERE name = ?", (d["name"],))
            if not have:
                self.insert("devices", d)
                continue
            h = have[0]
            newer = d if (d["last_seen"] or "") > (h["last_seen"] or "") else h
            first = min(x for x in (d["first_seen"], h["first_seen"]) if x) \
                if (d["first_seen"] or h["first_seen"]) else None
            self.dst.conn.execute(
                "UPDATE devices SET board = ?, cpu = ?, arch = ?, transport = ?, profile_json = ?,"
                " first_seen = ?, last_seen = ? WHERE name = ?",
                (newer["board"], newer["cpu"], newer["arch"], newer["transport"],
                 newer["profile_json"], first, newer["last_seen"], d["name"]))
            self.r.present["devices"] += 1

    def settings(self, src: Database) -> dict[int, int]:
        out = {}
        for s in self.rows(src, "SELECT * FROM settings ORDER BY id"):
            have = self.dst.conn.execute("SELECT id FROM settings WHERE fingerprint = ?",
                                         (s["fingerprint"],)).fetchone()
            if have:
                out[s["id"]] = have[0]
                self.r.present["settings"] += 1
            else:
                out[s["id"]] = self.insert("settings", s)
        return out

    def ops(self, src: Database) -> None:
        for o in self.rows(src, "SELECT * FROM ops"):
            if self.dst.conn.execute("SELECT 1 FROM ops WHERE signature = ?",
                                     (o["signature"],)).fetchone():
                self.r.present["ops"] += 1
            else:
                self.insert("ops", o)

    def models(self, src: Database) -> dict[int, int]:
        out = {}
        for m in self.rows(src, "SELECT * FROM models ORDER BY id"):
            nodes = self.rows(src, "SELECT * FROM graph_nodes WHERE model_id = ? ORDER BY idx",
                              (m["id"],))
            have = self.dst.conn.execute("SELECT id FROM models WHERE key = ?", (m["key"],)).fetchone()
            if have:
                theirs = [r[0] for r in self.dst.conn.execute(
                    "SELECT signature FROM graph_nodes WHERE model_id = ? ORDER BY idx", (have[0],))]
                if theirs != [n["signature"] for n in nodes]:
                    raise CostdbError(
                        f"model {m['key']} has a different training graph in {src.path} than in "
                        f"{self.r.out} (built by another costdb version?); nothing was merged")
                out[m["id"]] = have[0]
                self.r.present["models"] += 1
                continue
            mid = self.insert("models", m)
            out[m["id"]] = mid
            for n in nodes:
                self.dst.conn.execute(
                    f"INSERT INTO graph_nodes ({', '.join(n)}) VALUES ({', '.join('?' for _ in n)})",
                    tuple({**n, "model_id": mid}.values()))
        return out

    def _session_digest(self, db: Database, s: dict[str, Any]) -> str:
        key = db.conn.execute("SELECT key FROM models WHERE id = ?", (s["model_id"],)).fetchone()
        fp = db.conn.execute("SELECT fingerprint FROM settings WHERE id = ?",
                             (s["settings_id"],)).fetchone()
        ms = db.conn.execute(
            "SELECT m.signature, m.kind, m.status, m.measured_at, m.runtime_s, st.fingerprint"
            " FROM measurements m LEFT JOIN settings st ON st.id = m.settings_id"
            " WHERE m.session_id = ? ORDER BY m.signature, m.kind", (s["id"],)).fetchall()
        fields = {k: v for k, v in s.items() if k not in ("id", "model_id", "settings_id",
                                                           "warnings_json")}
        return _digest(fields, key and key[0], fp and fp[0], ms)

    def sessions(self, src: Database, models: dict[int, int], settings: dict[int, int]) -> dict[int, int]:
        out = {}
        for s in self.rows(src, "SELECT * FROM sessions ORDER BY id"):
            mine = self._session_digest(src, s)
            same = self.rows(self.dst, "SELECT * FROM sessions WHERE device = ? AND host IS ? AND"
                                       " started_at = ? AND pid IS ? ORDER BY id",
                             (s["device"], s["host"], s["started_at"], s["pid"]))
            match = next((c for c in same if self._session_digest(self.dst, c) == mine), None)
            if match is not None:
                out[s["id"]] = match["id"]
                self.r.present["sessions"] += 1
                continue
            row = {**s, "model_id": models.get(s["model_id"]), "settings_id": settings.get(s["settings_id"])}
            if same:
                note = (f"merge: same device, host, start and pid as session(s) "
                        f"{', '.join(str(c['id']) for c in same)} but different content; kept "
                        "separately")
                row["warnings_json"] = json.dumps(list(json.loads(s["warnings_json"] or "[]")) + [note])
            sid = self.insert("sessions", row)
            if same:
                self.r.conflicts.append(f"{src.path} session {s['id']} ({s['device']}, started "
                                        f"{s['started_at']}) -> session {sid}: {note}")
            out[s["id"]] = sid
            for m in self.rows(src, "SELECT * FROM measurements WHERE session_id = ? ORDER BY id",
                               (s["id"],)):
                self.insert("measurements", {**m, "session_id": sid,
                                             "settings_id": settings.get(m["settings_id"])})
        return out

    def _copy_once(self, src: Database, table: str, key_cols: Sequence[str],
                   remap: dict[str, dict[int, int]]) -> dict[int, int]:
        """Copy rows not present yet (same ``key_cols`` after remapping); id map src -> dst."""
        out = {}
        for row in self.rows(src, f"SELECT * FROM {table} ORDER BY id"):
            new = dict(row)
            for col, mapping in remap.items():
                if new.get(col) is not None:
                    new[col] = mapping.get(new[col])
            where = " AND ".join(f"{c} IS ?" for c in key_cols)
            have = self.dst.conn.execute(f"SELECT id FROM {table} WHERE {where} ORDER BY id",
                                         tuple(new[c] for c in key_cols)).fetchone()
            if have:
                out[row["id"]] = have[0]
                self.r.present[table] += 1
            else:
                out[row["id"]] = self.insert(table, new)
        return out

    def merge(self, src: Database) -> None:
        self.devices(src)
        self.ops(src)
        settings = self.settings(src)
        models = self.models(src)
        sessions = self.sessions(src, models, settings)
        self._copy_once(src, "iterations", ("device", "model_id", "session_id", "measured_at",
                                            "runtime_s"),
                        {"model_id": models, "session_id": sessions, "settings_id": settings})
        sweeps = self._copy_once(src, "sweeps", ("device", "model_id", "graph_digest", "mode",
                                                 "started_at", "options_json"),
                                 {"model_id": models, "settings_id": settings})
        schedules = self._copy_once(src, "schedules", (
            "device", "model_id", "graph_digest", "mode", "method", "budget_bytes", "deadline_s",
            "status", "created_at", "schedule_json"),
            {"model_id": models, "sweep_id": sweeps, "settings_id": settings})
        self._copy_once(src, "pareto_points", ("sweep_id", "device", "model_id", "mode", "baseline",
                                               "budget_bytes", "deadline_s", "status", "created_at"),
                        {"model_id": models, "sweep_id": sweeps, "schedule_id": schedules})


def merge(out: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> MergeResult:
    """Merge ``inputs`` into ``out`` (created if missing), atomically and idempotently."""
    out = Path(out)
    if not inputs:
        raise CostdbError("give at least one input database: costdb merge OUT IN...")
    ins = [Path(p) for p in inputs]
    for p in ins:
        if not p.exists():
            raise CostdbError(f"input database {p} does not exist")
        if out.exists() and os.path.samefile(p, out):
            raise CostdbError(f"{p} is the output database; merge other files into it")
    snapshots = [Database.snapshot(p) for p in ins]       # all inputs readable before any write
    result = MergeResult(out, ins)
    fresh = not out.exists()
    if fresh:
        parent = out.parent if str(out.parent) else Path(".")
        if not parent.is_dir():
            raise CostdbError(f"cannot create {out}: directory {parent} does not exist")
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=".merge")
        os.close(fd)
        os.unlink(tmp)
        target = Path(tmp)
    else:
        target = out
    done = False
    dst = Database(target, create=fresh)
    try:
        dst.conn.execute("BEGIN IMMEDIATE")
        try:
            m = _Merger(dst, result)
            for snap in snapshots:
                m.merge(snap)
            bad = dst.conn.execute("PRAGMA foreign_key_check").fetchall()
            if bad:
                raise CostdbError(f"merging left {len(bad)} dangling references (first: {bad[0]}); "
                                  "nothing was merged")
            dst.conn.commit()
            done = True
        except BaseException:
            dst.conn.rollback()
            raise
    finally:
        dst.close()
        for snap in snapshots:
            snap.close()
        if fresh and not done:
            for suffix in ("", "-wal", "-shm"):
                Path(str(target) + suffix).unlink(missing_ok=True)
    if fresh:
        os.replace(target, out)
    return result
