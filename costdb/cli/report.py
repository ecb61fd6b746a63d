"""``costdb report``: one self-contained HTML file (reports/)."""
from __future__ import annotations

import click

from costdb.cli.common import db_option, estimate_option, output_option, settings_option


@click.command()
@click.option("--device", "devices", multiple=True, help="Device to report on (repeatable).")
@click.option("--model", default=None, help="Model name or key as stored (default: every model "
                                            "measured on the device).")
@click.option("--all", "all_devices", is_flag=True, help="Every device in the database, with a "
                                                         "fleet comparison.")
@db_option
@output_option("report.html", help="HTML file to write (a device, FIFO or symlink is written "
                              "through).")
@settings_option
@estimate_option
def report(devices: tuple[str, ...], model: str | None, all_devices: bool, db_path: str,
           output: str, settings: str | None, kind: str) -> None:
    """Write a self-contained HTML report: costs, charts, solver results, device comparison."""
    from reports.build import write_report
    path = write_report(db_path, output, devices=list(devices), model=model, all_devices=all_devices,
                        settings=settings, kind=kind)
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", err=True)


COMMANDS = [report]
