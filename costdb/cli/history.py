"""``costdb sessions`` and ``costdb settings``: what was measured when, and under which settings."""
from __future__ import annotations

import click

from costdb.cli.common import console, db_option, escape, table


@click.command()
@db_option
@click.option("--device", default=None)
def sessions(db_path: str, device: str | None) -> None:
    """List profiling sessions with their status and environment."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        recs = db.session_list(device)
    t = table("Sessions", ("id", "device", "status", "started", "ended", "planned", "measured",
                           "settings", "sensor", "torch", "warnings"))
    for r in recs:
        t.add_row(str(r.id), escape(r.device), r.status, r.started_at or "", r.ended_at or "",
                  str(r.planned), str(r.measured),
                  "-" if r.settings_id is None else f"#{r.settings_id}", r.energy_sensor or "modeled",
                  escape(str(r.facts.get("torch", ""))), str(len(r.warnings)))
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
        t.add_row(escape(r.device), "-" if sid is None else str(sid), r.fingerprint or "-",
                  r.kind, str(r.ops), str(r.measurements), str(r.sessions), r.last_measured or "",
                  escape(describe(recs[sid]) if sid in recs else "(not recorded)"))
    console().print(t)


COMMANDS = [sessions, settings_cmd]
