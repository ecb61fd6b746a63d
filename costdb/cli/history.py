"""``costdb sessions`` and ``costdb settings``: what was measured when, and under which settings."""
from __future__ import annotations

from typing import Any

import click

from costdb.cli.common import console, db_option, escape, table


def cell(value: Any, empty: str = "") -> str:
    """A table cell from a stored value: None and NaN (a column still empty while a profile
    runs, e.g. ``ended_at``) read as ``empty``, everything else as escaped text."""
    if value is None or (isinstance(value, float) and value != value):
        return empty
    return escape(str(value))


@click.command()
@db_option
@click.option("--device", default=None, help="Only this device.")
def sessions(db_path: str, device: str | None) -> None:
    """List profiling sessions with their status and environment (a running profile shows as
    running, its end empty)."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        recs = db.session_list(device)
        # a running session's count is written when it ends: count its rows so far instead
        live = {r.id: len(db.measurement_list(session_id=r.id)) for r in recs
                if r.status == "running"}
    t = table("Sessions", ("id", "device", "status", "started", "ended", "planned", "measured",
                           "settings", "sensor", "torch", "warnings"))
    for r in recs:
        t.add_row(cell(r.id), cell(r.device), cell(r.status), cell(r.started_at), cell(r.ended_at),
                  cell(r.planned, "-"), cell(live.get(r.id, r.measured), "-"),
                  "-" if cell(r.settings_id) == "" else f"#{cell(r.settings_id)}",
                  cell(r.energy_sensor) or "modeled", cell((r.facts or {}).get("torch")),
                  str(len(r.warnings or ())))
    console().print(t)


@click.command("settings")
@db_option
@click.option("--device", default=None, help="Only this device.")
def settings_cmd(db_path: str, device: str | None) -> None:
    """List the settings fingerprints measurements were taken under, per device.

    Measurements are comparable only under one fingerprint: threads, CPU affinity, cache mode,
    dtype, compute unit, kernel library versions (torch, oneDNN, MKL), agent or firmware version
    and kernel variant. Choose one for costs, export, solve, pareto and report with --settings ID
    (or latest).
    """
    import costdb
    from costdb.settings import describe
    with costdb.open(db_path, readonly=True) as db:
        df = db.settings(device)
        recs = {r.id: r for r in db.settings_list()}
    t = table("Settings", ("device", "id", "fingerprint", "kind", "ops", "measurements",
                           "sessions", "last measured", "settings"))
    for r in df.itertuples(index=False):
        sid = None if r.id != r.id or r.id is None else int(r.id)
        t.add_row(cell(r.device), "-" if sid is None else str(sid), cell(r.fingerprint, "-"),
                  cell(r.kind), cell(r.ops), cell(r.measurements), cell(r.sessions),
                  cell(r.last_measured), escape(describe(recs[sid]) if sid in recs else "(not recorded)"))
    console().print(t)


COMMANDS = [sessions, settings_cmd]
