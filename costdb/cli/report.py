"""``costdb report``: one self-contained HTML file (reports/)."""
from __future__ import annotations

import click

from costdb.cli.common import db_option, estimate_option, output_option, settings_option


@click.command()
@click.option("--device", "devices", multiple=True, help="Device to report on (repeatable).")
@click.option("--model", default=None, help="Model as 'costdb solve' takes it: a zoo name, a stored "
                                            "key or path/to/file.py:factory (default: every model "
                                            "with data on the device).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch size of the --model variant (when several are stored).")
@click.option("--input", "input_shape", default=None, metavar="CxHxW",
              help="Input shape of the --model variant (when several are stored).")
@click.option("--all", "all_devices", is_flag=True, help="Every device in the database, with a "
                                                         "fleet comparison.")
@db_option
@output_option("report.html", help="HTML file to write (a device, FIFO or symlink is written "
                              "through).")
@settings_option
@estimate_option
def report(devices: tuple[str, ...], model: str | None, batch: int | None,
           input_shape: str | None, all_devices: bool, db_path: str, output: str,
           settings: str | None, kind: str) -> None:
    """Write a self-contained HTML report: costs, charts, solver results, device comparison.

    Covers every device with data in the database (measurements, or schedules and sweeps of a
    device that was only solved for) and every model with data on it.
    """
    from reports.build import write_report
    path = write_report(db_path, output, devices=list(devices), model=model, all_devices=all_devices,
                        settings=settings, kind=kind, batch=batch, input_shape=input_shape)
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", err=True)


COMMANDS = [report]
