"""``costdb sessions``: the profiling sessions stored in a database."""
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
                           "sensor", "torch", "warnings"))
    for r in recs:
        t.add_row(str(r.id), escape(r.device), r.status, r.started_at or "", r.ended_at or "",
                  str(r.planned), str(r.measured), r.energy_sensor or "modeled",
                  str(r.facts.get("torch", "")), str(len(r.warnings)))
    console().print(t)


COMMANDS = [sessions]
