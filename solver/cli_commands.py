"""Click commands ``costdb solve`` and ``costdb pareto`` (registered by ``costdb.cli``). Thin:
option parsing and printing only; the work is in ``solver.commands``. Heavy imports are lazy so
``costdb --help`` stays fast."""
from __future__ import annotations

import os

import click

from costdb.clitypes import BoundedInt, Duration, FiniteFloat, OutputFile, Size
from costdb.units import MAX_DURATION_S, MAX_ELEMENTS

MODES = ("integrated", "remat", "paging")
_db = click.option("--db", "db_path", default=lambda: os.environ.get("COSTDB_DB", "costs.db"),
                   show_default="costs.db or $COSTDB_DB", type=click.Path(dir_okay=False),
                   help="SQLite cost database file (created if missing).")


def _common(f):
    opts = [
        click.option("--device", default=None, help="Device name (catalog or inventory)."),
        click.option("--model", default=None, help="Zoo model or stored model key."),
        click.option("--graph", default=None, type=click.Path(dir_okay=False, exists=True),
                     help="Solve a training DAG in the JSON graph format instead (docs/solver.md)."),
        click.option("--batch", type=BoundedInt(min=1, max=MAX_ELEMENTS), default=None),
        click.option("--input", "input_shape", default=None, metavar="CxHxW"),
        click.option("--granularity", type=click.Choice(["layer", "op"]), default="layer",
                     show_default=True, help="layer: POET's one forward + one backward node per layer."),
        click.option("--mode", type=click.Choice(MODES), default="integrated", show_default=True,
                     help="integrated remat+paging, remat-only (Checkmate) or paging-only."),
        click.option("--solver", type=click.Choice(["highs", "cbc"]), default="highs", show_default=True),
        click.option("--time-limit", type=FiniteFloat(min=0.5, max=MAX_DURATION_S), default=60.0, show_default=True,
                     help="Wall-time limit in seconds: of the whole command for solve (model building "
                          "included; returns the best schedule found with its bound and gap), of "
                          "each point for pareto."),
        click.option("--gap", type=FiniteFloat(min=0.0, max=1e6), default=1e-4, show_default=True,
                     help="Relative optimality gap at which to stop."),
        click.option("--compat", is_flag=True,
                     help="Published POET formulation: activations only, paging outside the deadline."),
        click.option("--overlap", is_flag=True, help="Paging overlaps compute (DMA)."),
        click.option("--method", type=click.Choice(["auto", "milp", "cpsat", "lp_round"]),
                     default="auto", show_default=True,
                     help="auto: the faster formulation for the instance; milp: the PuLP/HiGHS MILP; "
                          "cpsat: the retention-interval model (OR-Tools CP-SAT); lp_round: LP "
                          "relaxation + rounding (fast, approximate)."),
        click.option("--max-computations", type=click.IntRange(min=1), default=None,
                     help="cpsat: computations (and page-ins) per value, default 2; a schedule "
                          "needing more is cut off (docs/solver.md)."),
        click.option("--inventory", type=click.Path(dir_okay=False), default=None,
                     help="Inventory TOML for user-defined devices."),
        click.option("--settings", default=None, metavar="latest|ID",
                     help="Costs measured under this settings fingerprint (id or fingerprint, see "
                          "'costdb settings'); needed when the model was profiled under several."),
        click.option("--kind", type=click.Choice(["auto", "in_context", "isolated"]), default="auto",
                     show_default=True,
                     help="auto (default): in-context costs where the model has them on the device, else "
                          "isolated; in_context: attributed from traced real iterations; isolated: "
                          "each op alone in a calibrated loop (docs/usage.md)."),
        _db,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _inventory(path):
    if not path:
        return None
    from devices.inventory import load
    return load(path, required=True)


@click.command()
@_common
@click.option("--memory", type=Size(), default=None, help="RAM budget, e.g. 256MiB or 1.5GB.")
@click.option("--deadline", type=Duration(), default=None, help="Runtime limit, e.g. 2s or 150ms.")
@click.option("--threads", type=BoundedInt(min=1, max=4096), default=None, help="Solver threads.")
@click.option("-o", "--output", default=None, type=OutputFile(),
              help="Write the schedule as JSON.")
@click.option("--binary", "binary_output", default=None, type=OutputFile(),
              help="Write the compact binary schedule (what a device receives).")
def solve(device, model, graph, batch, input_shape, granularity, mode, solver, time_limit, gap,
          compat, overlap, method, max_computations, inventory, settings, kind, db_path, memory,
          deadline, threads, output, binary_output):
    """Energy-optimal training schedule (rematerialization + paging) under a RAM budget and a
    deadline; validated by the simulator, stored in the schedules table.

    \b
      costdb solve --device rpi4b --model resnet18 --memory 256MiB --deadline 2s
      costdb solve --graph mygraph.json --memory 64KiB --mode remat
    """
    from solver.commands import run_solve, summary_lines
    res, inst, sid = run_solve(db_path, device, model, graph, memory, deadline, mode, solver,
                               time_limit, gap, threads, compat, overlap, method, batch,
                               input_shape, granularity, output, binary_output,
                               inventory=_inventory(inventory), settings=settings, kind=kind,
                               max_computations=max_computations)
    for line in summary_lines(res, inst, sid):
        click.echo(line)
    if output:
        click.echo(f"wrote {output}")
    if binary_output:
        click.echo(f"wrote {binary_output}")


@click.command()
@_common
@click.option("--budgets", default=None, help="Comma-separated RAM budgets (default: --points "
                                               "from the minimum to the no-savings peak).")
@click.option("--points", "n_budgets", type=BoundedInt(min=1, max=10_000), default=5, show_default=True)
@click.option("--deadlines", default=None, help="Comma-separated deadlines, 'none' for no limit.")
@click.option("--executor", type=click.Choice(["process", "dask", "serial"]), default="process",
              show_default=True, help="Where sweep points run.")
@click.option("--workers", type=BoundedInt(min=1, max=4096), default=None,
              help="Worker processes (default: the cores of this machine).")
@click.option("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786 "
                                                "(default with --executor dask: a local cluster).")
def pareto(device, model, graph, batch, input_shape, granularity, mode, solver, time_limit, gap,
           compat, overlap, method, max_computations, inventory, settings, kind, db_path, budgets,
           n_budgets, deadlines, executor, workers, scheduler):
    """Sweep RAM budgets x deadlines, store every point and mark the non-dominated set
    (energy, runtime, peak memory).

    \b
      costdb pareto --device rpi4b --model resnet18 --budgets 92MB,93MB --deadlines 1s,2s
    """
    from costdb.units import fmt_bytes, fmt_joules, fmt_seconds
    from solver.commands import run_pareto

    def progress(done, total):
        click.echo(f"\r{done}/{total} points", nl=done == total, err=True)

    out, inst = run_pareto(db_path, device, model, graph, budgets, deadlines, n_budgets, mode,
                           solver, time_limit, gap, compat, overlap, method, executor, workers,
                           scheduler, batch, input_shape, granularity, progress,
                           inventory=_inventory(inventory), settings=settings, kind=kind,
                           max_computations=max_computations)
    click.echo(f"sweep #{out.sweep_id}: {inst.name} on {inst.device or '-'}, {mode}, "
               f"{len(out.results)} points, {sum(out.pareto)} Pareto")
    click.echo(f"{'budget':>11} {'deadline':>9} {'status':>10} {'energy':>10} {'runtime':>9} "
               f"{'peak':>10}  pareto  schedule")
    for r, p, sid in zip(out.results, out.pareto, out.schedule_ids):
        click.echo(f"{fmt_bytes(r.budget_bytes):>11} {fmt_seconds(r.deadline_s):>9} {r.status:>10} "
                   f"{fmt_joules(r.energy_j):>10} {fmt_seconds(r.runtime_s):>9} "
                   f"{fmt_bytes(r.peak_memory_bytes):>10}  {'*' if p else ' ':^6}  {sid or '-'}"
                   + (f"  {r.message}" if r.status == "error" and r.message else ""))
