"""Click commands ``costdb run`` (execute a stored schedule on a device) and ``costdb storage``
(measure a device's paging speed). Thin: the work is in ``solver.execute``; torch is imported
only when a command runs."""
from __future__ import annotations

import os

import click

_db = click.option("--db", "db_path", default=lambda: os.environ.get("COSTDB_DB", "costs.db"),
                   show_default="costs.db or $COSTDB_DB", type=click.Path(dir_okay=False),
                   help="SQLite cost database file.")


def _inventory(path):
    from devices.inventory import load
    return load(path, required=bool(path))


@click.command()
@click.option("--device", required=True, help="Device to run on (catalog or inventory name).")
@click.option("--schedule", "schedule_id", type=int, default=None,
              help="Id of a stored schedule (costdb solve / pareto print it).")
@click.option("--sweep", "sweep_id", type=int, default=None,
              help="Run every Pareto point's schedule of this sweep instead (costdb pareto).")
@click.option("--all-points", is_flag=True, help="With --sweep: every point, not only the Pareto ones.")
@click.option("--model", default=None, help="Refuse unless the schedule is for this model.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Refuse unless the schedule is for this batch size.")
@click.option("--iterations", type=click.IntRange(min=1), default=3, show_default=True,
              help="Measured iterations (each checked against a plain iteration).")
@click.option("--warmups", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--tolerance", type=click.FloatRange(min=0.0), default=None,
              help="Accept relative differences up to this from the plain iteration (default: "
                   "bit-exact, as deterministic CPU algorithms give).")
@click.option("--storage-path", default=None,
              help="Directory for paging files on the device (default: the inventory's "
                   "storage_path, else ~/.cache/costdb/paging).")
@click.option("--no-store", is_flag=True, help="Print, do not store the run.")
@click.option("--inventory", type=click.Path(dir_okay=False), default=None,
              help="Inventory TOML (default: $COSTDB_INVENTORY or ~/.config/costdb/inventory.toml).")
@_db
def run(device, schedule_id, sweep_id, all_points, model, batch, iterations, warmups, tolerance,
        storage_path, no_store, inventory, db_path):
    """Execute a solved rematerialization + paging schedule on the device, check it against a
    plain training iteration, and store predicted vs measured (runtime, peak memory, paged
    bytes, energy) in the runs table.

    \b
      costdb solve --device local --model resnet18 --memory 40MiB
      costdb run --device local --schedule 1
      costdb run --device local --sweep 2      # every Pareto point of a sweep
    """
    from costdb.errors import CostdbError
    from solver.execute import run_schedule, summary_lines, sweep_schedules
    if (schedule_id is None) == (sweep_id is None):
        raise CostdbError("give either --schedule ID or --sweep ID")
    ids = [schedule_id] if sweep_id is None else sweep_schedules(db_path, sweep_id, not all_points)
    inv = _inventory(inventory)
    for k, sid in enumerate(ids):
        rec = run_schedule(db_path, sid, device, model=model, batch=batch, inventory=inv,
                           iterations=iterations, warmups=warmups, tolerance=tolerance,
                           store=not no_store, storage_path=storage_path)
        if k:
            click.echo("")
        for line in summary_lines(rec):
            click.echo(line)


@click.command()
@click.option("--device", required=True, help="Device whose storage path to measure.")
@click.option("--size", "total", default="16MiB", show_default=True,
              help="Bytes written and read back per repeat.")
@click.option("--storage-path", default=None, help="Directory to measure (default: as costdb run).")
@click.option("--inventory", type=click.Path(dir_okay=False), default=None)
@_db
def storage(device, total, storage_path, inventory, db_path):
    """Measure the paging speed (write + fsync, read with the page cache dropped, 4 KiB latency)
    of a device's storage path and store it in storage_profiles."""
    from costdb.units import fmt_bytes, fmt_seconds, parse_size
    from solver.execute import measure_storage
    rec = measure_storage(db_path, device, _inventory(inventory), total_bytes=parse_size(total),
                          storage_path=storage_path)
    click.echo(f"{device} {rec.path}: write {fmt_bytes(rec.write_bytes_per_s)}/s "
               f"(latency {fmt_seconds(rec.write_latency_s)}), read {fmt_bytes(rec.read_bytes_per_s)}/s "
               f"(latency {fmt_seconds(rec.read_latency_s)}); stored as storage profile #{rec.id}")


COMMANDS = [run, storage]
