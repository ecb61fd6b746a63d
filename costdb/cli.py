"""The ``costdb`` command line: a thin click layer over the library.

Every command's work is a function in ``costdb``, ``devices``, ``profiler``, ``solver`` or
``reports``; this module parses options, draws progress and tables, and turns ``CostdbError``
into one line on stderr and exit status 2 (handled once, in ``CostdbGroup``).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from costdb import __version__
from costdb.errors import CostdbError
from costdb.files import write_atomic
from costdb.units import fmt_bytes, fmt_joules, fmt_seconds, parse_shape

DEFAULT_DB = "costs.db"


class CostdbGroup(click.Group):
    """Turns user errors into one line and exit 2; Ctrl-C into a resumable message and 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CostdbError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: measurements taken so far are saved; run the same command "
                       "again to resume.", err=True)
            ctx.exit(130)


def _console(err: bool = False) -> Console:
    return Console(stderr=err, highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


db_option = click.option("--db", "db_path", default=lambda: os.environ.get("COSTDB_DB", DEFAULT_DB),
                         show_default="costs.db or $COSTDB_DB", type=click.Path(dir_okay=False),
                         help="SQLite cost database file.")
inventory_option = click.option("--inventory", type=click.Path(dir_okay=False), default=None,
                                help="Inventory TOML (default: $COSTDB_INVENTORY or "
                                     "~/.config/costdb/inventory.toml).")


@click.group(cls=CostdbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="costdb")
def cli() -> None:
    """Profile the training ops of neural networks on edge devices into a SQLite cost database,
    and query, solve and report on it.

    \b
    Typical use:
      costdb profile --device local --model resnet18
      costdb costs --device local --model resnet18
      costdb query "SELECT op, phase, runtime_s FROM current_measurements LIMIT 5"
    """


# --- profile ---------------------------------------------------------------------------------

def _parse_cpus(text: str | None) -> list[int] | None:
    if not text:
        return None
    cpus: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                cpus.extend(range(int(a), int(b) + 1))
            else:
                cpus.append(int(part))
    except ValueError:
        raise CostdbError(f"bad --cpus {text!r}; give CPU numbers like 0,1 or 0-3") from None
    available = sorted(os.sched_getaffinity(0))
    missing = [c for c in cpus if c not in available]
    if missing:
        raise CostdbError(f"--cpus {text}: CPU(s) {missing} not available; this machine has "
                          f"{available}")
    return cpus


class _ProgressView:
    """Rich progress bar fed by the session's progress events (one bar per device)."""

    def __init__(self, console: Console, quiet: bool):
        self.quiet = quiet
        self.progress = Progress(TextColumn("[bold]{task.fields[device]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, transient=False, disable=quiet)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "_ProgressView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: str, **info: Any) -> None:
        dev = info.get("device", "")
        if event == "start":
            self.tasks[dev] = self.progress.add_task("", total=info["total"], device=dev)
        elif event == "op":
            spec = info["spec"]
            shapes = ",".join("x".join(map(str, s)) for s in spec["inputs"][:1])
            self.progress.update(self.tasks[dev], description=escape(f"{spec['op']}:{spec['phase']} {shapes}"))
        elif event == "measured":
            self.progress.advance(self.tasks[dev])
        elif event == "iteration":
            self.progress.update(self.tasks[dev], description="whole training iteration")
        elif event == "done" and dev in self.tasks:
            self.progress.update(self.tasks[dev], description="done")


def cost_table(df: Any, title: str, top: int | None) -> Table:
    """Rich table of distinct ops (aggregated over the graph nodes that use them)."""
    t = Table(title=title, title_justify="left")
    for col, just in (("op", "left"), ("phase", "left"), ("input", "left"), ("uses", "right"),
                      ("runtime (median)", "right"), ("± stdev", "right"), ("CV", "right"),
                      ("peak mem", "right"), ("energy", "right"), ("flags", "left")):
        t.add_column(col, justify=just)
    uses = df.groupby("signature").size()
    ops = df.drop_duplicates("signature").copy()
    ops["uses"] = ops["signature"].map(uses)
    ops = ops.sort_values("runtime_s", ascending=False, na_position="last")
    shown = ops if not top else ops.head(top)
    for _, r in shown.iterrows():
        flags = []
        if r.get("unstable") is True:
            flags.append("[yellow]unstable[/]")
        if r["status"] not in ("ok", None) and r["status"] == r["status"]:
            flags.append(str(r["status"]))
        if r["status"] is None or r["status"] != r["status"]:
            flags.append("not measured")
        prov = r.get("energy_provenance")
        energy = fmt_joules(r["energy_j"]) + (f" ({prov})" if isinstance(prov, str) else "")
        rprov = r.get("runtime_provenance")
        runtime = fmt_seconds(r["runtime_s"]) + (f" ({rprov})" if isinstance(rprov, str)
                                                 and rprov != "measured" else "")
        t.add_row(escape(r["op"]), escape(r["phase"]), r.get("input", "") or "", str(r["uses"]),
                  runtime, fmt_seconds(r["runtime_stdev_s"]),
                  "-" if r["runtime_cv"] != r["runtime_cv"] or r["runtime_cv"] is None
                  else f"{100 * r['runtime_cv']:.1f}%",
                  fmt_bytes(r["peak_memory_bytes"]), energy, " ".join(flags))
    if top and len(ops) > top:
        t.caption = f"{len(ops) - top} more ops not shown; use --top 0 for all"
    return t


def _print_costs(db_path: str, device: str, model_key: str, top: int | None, console: Console) -> None:
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        df = db.costs(device, model_key)
        graph = db.graph(model_key)
    shapes = {n.signature: "x".join(map(str, n.input_shapes[0])) if n.input_shapes else ""
              for n in graph.nodes}
    df["input"] = df["signature"].map(shapes)
    console.print(cost_table(df, escape(f"{model_key} on {device}: {df.signature.nunique()} distinct "
                                        f"ops, {len(df)} graph nodes"), top))
    measured = df["status"].eq("ok")
    prov = ",".join(sorted(set(df["energy_provenance"].dropna()))) or "-"
    rprov = ",".join(sorted(set(df["runtime_provenance"].dropna()))) or "-"
    console.print(f"Per iteration (sum over {int(measured.sum())}/{len(df)} nodes): runtime "
                  f"{fmt_seconds(df['runtime_s'].sum())} ({rprov}), energy {fmt_joules(df['energy_j'].sum())} "
                  f"({prov}); parameters {fmt_bytes(graph.param_bytes)}, activations "
                  f"{fmt_bytes(graph.activation_bytes)}; unstable ops "
                  f"{int(df.drop_duplicates('signature')['unstable'].eq(True).sum())}")


@cli.command()
@click.option("--device", "devices", multiple=True, default=("local",), show_default=True,
              help="Device to profile (repeatable).")
@click.option("--model", default="resnet18", show_default=True,
              help="Zoo model name (see 'costdb models') or path/to/file.py:factory.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Batch size (default: the model's).")
@click.option("--input", "input_shape", default=None, metavar="CxHxW",
              help="Input shape without batch, e.g. 3x32x32 (default: the model's).")
@click.option("--dtype", default="float32", show_default=True, help="Tensor dtype of the graph.")
@db_option
@inventory_option
@click.option("--force", is_flag=True, help="Measure again even ops already measured on the device.")
@click.option("--cpus", default=None, help="Pin the local agent to these CPUs, e.g. 0 or 0-1.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch intra-op threads.")
@click.option("--samples", type=click.IntRange(min=3), default=15, show_default=True,
              help="Timing samples per op.")
@click.option("--min-sample-time", type=click.FloatRange(min=1e-4), default=0.01, show_default=True,
              help="Seconds one sample lasts at least (inner loop is calibrated to it).")
@click.option("--cache", type=click.Choice(["warm", "cold"]), default="warm", show_default=True,
              help="warm: classic hot inner loop; cold: evict the CPU caches before every timed "
                   "call, as the other ops of a training iteration do (closer to a real iteration "
                   "single-threaded, see docs/usage.md).")
@click.option("--iteration/--no-iteration", default=True, show_default=True,
              help="Also time a whole training iteration (local device, zoo models).")
@click.option("--top", type=click.IntRange(min=0), default=30, show_default=True,
              help="Rows of the cost table to print (0 = all).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--all", "all_devices", is_flag=True,
              help="Profile every inventory device, in parallel (instead of --device).")
@click.option("--accept-new-host-key", is_flag=True,
              help="Trust an SSH device's host key on first contact and record it in known_hosts "
                   "(a changed key is always refused).")
def profile(devices: tuple[str, ...], model: str, batch: int | None, input_shape: str | None,
            dtype: str, db_path: str, inventory: str | None, force: bool, cpus: str | None,
            threads: int | None, samples: int, min_sample_time: float, cache: str, iteration: bool, top: int,
            quiet: bool, all_devices: bool, accept_new_host_key: bool) -> None:
    """Measure every distinct training op of MODEL on DEVICE and store the costs.

    Resumable: an interrupted run keeps what it measured; running it again measures only the
    missing ops. A complete profile measures nothing new unless --force.
    """
    from profiler.session import profile as run_profile
    shape = parse_shape(input_shape) if input_shape else None
    cpu_list = _parse_cpus(cpus)
    out = _console()
    err = _console(err=True)
    settings = {"samples": samples, "min_sample_time": min_sample_time, "cache": cache}
    warn = lambda w: err.print(f"[yellow]Warning:[/] {escape(w)}")  # noqa: E731
    connect_options = {"accept_new_host_key": accept_new_host_key, "on_warning": warn}
    if all_devices:
        from profiler.parallel import all_devices as inventory_devices
        devices = tuple(inventory_devices(inventory))
    parallel, device_errors = None, 0
    if len(devices) > 1:  # several devices: in parallel, one bar each, one writer
        from profiler.parallel import profile_many
        with _ProgressView(err, quiet) as view:
            parallel = profile_many(db_path, list(devices), model=model, batch=batch,
                                    input_shape=shape, dtype=dtype, force=force, threads=threads,
                                    settings=settings, inventory=inventory, progress=view,
                                    on_warning=warn, connect_options=connect_options)
    for device in devices:
        if parallel is not None:
            res = parallel[device]
            if isinstance(res, CostdbError):
                err.print(f"[red]Error:[/] {escape(str(res))}")
                device_errors += 1
                continue
        else:
            with _ProgressView(err, quiet) as view:
                res = run_profile(db_path, device=device, model=model, batch=batch, input_shape=shape,
                                  dtype=dtype, force=force, cpus=cpu_list, threads=threads,
                                  settings=settings, inventory=inventory, iteration=iteration,
                                  progress=view, on_warning=warn, connect_options=connect_options)
        if res.planned == 0 and res.session_id is None:
            err.print(escape(f"{device}: all {res.skipped} distinct ops of {res.model_key} are "
                             "already measured; use --force to measure again"))
        else:
            err.print(escape(f"{device}: measured {res.measured} of {res.planned} ops ({res.skipped} "
                             f"already in the database), session {res.session_id} {res.status}"))
        for sig in res.unstable:
            err.print(f"[yellow]Warning:[/] op {sig} is unstable (CV above 10% after re-measuring)")
        for f in res.failed:
            err.print(f"[red]Failed:[/] {escape(f)}")
        _print_costs(db_path, device, res.model_key, top, out)
        if res.iteration_s is not None:
            import costdb
            with costdb.open(db_path, readonly=True) as db:
                it = db.iterations(device)
            row = it[it.model == res.model_key].iloc[-1]
            if row["predicted_s"] == row["predicted_s"] and row["predicted_s"] is not None:
                out.print(f"Whole iteration measured {fmt_seconds(row['measured_s'])}; cost model "
                          f"predicts {fmt_seconds(row['predicted_s'])} ({100 * row['error']:+.1f}%)")
    if device_errors:
        raise CostdbError(f"{device_errors} of {len(devices)} devices failed (errors above); the "
                          "others are saved, run the same command again to retry")


@cli.command()
@click.option("--device", default="local", show_default=True)
@click.option("--model", required=True, help="Model name or key as stored (see 'costdb models --db').")
@click.option("--batch", type=int, default=None)
@click.option("--input", "input_shape", default=None, metavar="CxHxW")
@db_option
@click.option("--top", type=click.IntRange(min=0), default=30, show_default=True)
def costs(device: str, model: str, batch: int | None, input_shape: str | None, db_path: str,
          top: int) -> None:
    """Print the cost table of a profiled model on a device."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        mid = db.resolve_model(model, batch, parse_shape(input_shape) if input_shape else None)
        key = db.db["models"].get(mid)["key"]
    _print_costs(db_path, device, key, top, _console())


# --- catalog and inventory -------------------------------------------------------------------

@cli.command()
@click.option("--db", "db_path", default=None, type=click.Path(dir_okay=False),
              help="Also list the model variants stored in this database.")
def models(db_path: str | None) -> None:
    """List the zoo models (and the models stored in a database)."""
    from profiler.zoo import MODELS
    t = Table(title="Model zoo (or any torch.nn.Module as path/to/file.py:factory)", title_justify="left")
    for c in ("name", "default input", "default batch", "description"):
        t.add_column(c)
    for m in MODELS.values():
        t.add_row(m.name, "x".join(map(str, m.default_input)), str(m.default_batch), m.description)
    con = _console()
    con.print(t)
    if db_path:
        import costdb
        with costdb.open(db_path, readonly=True) as db:
            df = db.models()
        t = Table(title=f"Stored in {db_path}", title_justify="left")
        for c in ("key", "nodes", "distinct ops", "parameters", "activations"):
            t.add_column(c)
        for _, r in df.iterrows():
            t.add_row(escape(r["key"]), str(r["n_nodes"]), str(r["n_signatures"]), fmt_bytes(r["param_bytes"]),
                      fmt_bytes(r["activation_bytes"]))
        con.print(t)


@cli.command()
@inventory_option
@click.option("--check", is_flag=True, help="Try to reach each device and report.")
def devices(inventory: str | None, check: bool) -> None:
    """List catalog devices and inventory devices with their transport."""
    from devices.catalog import catalog
    from devices.inventory import load
    from devices.reach import check_reachable
    inv = load(inventory)
    t = Table(title="Devices", title_justify="left")
    for c in ("name", "board", "cpu", "RAM", "transport", "address", "source"):
        t.add_column(c)
    if check:
        t.add_column("reachable")
    rows = []
    for name, p in catalog().items():
        if name not in inv.devices:
            rows.append((name, p, p.transport, "in-process" if p.transport == "local" else "-", "catalog"))
    for name, e in inv.devices.items():
        rows.append((name, e.profile, e.transport, e.address, e.source))
    for name, p, transport, address, source in sorted(rows, key=lambda r: r[0]):
        cells = [escape(str(c)) for c in (name, p.board, p.cpu, fmt_bytes(p.ram_bytes), transport,
                                          address, source)]
        if check:
            ok, detail = check_reachable(name, inv)
            cells.append(("[green]yes[/] " if ok else "[red]no[/] ") + escape(detail))
        t.add_row(*cells)
    _console().print(t)


# --- query and export ------------------------------------------------------------------------

def _emit_frame(df: Any, fmt: str, output: str | None, title: str = "") -> None:
    if fmt == "table":
        if output:
            raise CostdbError("--format table prints to the terminal; use csv, json or parquet with -o")
        t = Table(title=title or None, title_justify="left")
        for c in df.columns:
            t.add_column(str(c))
        for row in df.itertuples(index=False):
            t.add_row(*("" if v is None else escape(str(v)) for v in row))
        _console().print(t)
        return
    if fmt == "parquet" and not output:
        raise CostdbError("--format parquet needs an output file: -o costs.parquet")
    writers = {"csv": lambda p: df.to_csv(p, index=False),
               "json": lambda p: df.to_json(p, orient="records", indent=1),
               "parquet": lambda p: df.to_parquet(p, index=False)}
    if output:
        write_atomic(output, writers[fmt])
        click.echo(f"wrote {len(df)} rows to {output}", err=True)
    elif fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    else:
        click.echo(df.to_json(orient="records", indent=1))


@cli.command()
@click.argument("sql")
@db_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
def query(sql: str, db_path: str, fmt: str) -> None:
    """Run a read-only SQL query against the database (tables: docs/data-model.md)."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        df = db.query(sql)
    _emit_frame(df, fmt, None)


@cli.command()
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), required=True)
@click.option("--device", default=None, help="Only this device.")
@click.option("--model", default=None, help="Per-node costs of this model (else: per distinct op).")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Output file (default: stdout for csv/json).")
def export(db_path: str, fmt: str, device: str | None, model: str | None, output: str | None) -> None:
    """Export costs: per distinct op, or per graph node of --model (needs --device)."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        if model:
            if not device:
                raise CostdbError("--model needs --device: costs are per device")
            df = db.costs(device, model)
        else:
            df = db.ops(device)
    _emit_frame(df, fmt, output)


@cli.command()
@db_option
@click.option("--device", default=None)
def sessions(db_path: str, device: str | None) -> None:
    """List profiling sessions with their status and environment."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        df = db.sessions(device)
    t = Table(title="Sessions", title_justify="left")
    for c in ("id", "device", "status", "started", "ended", "planned", "measured", "sensor",
              "torch", "warnings"):
        t.add_column(c)
    for _, r in df.iterrows():
        env = json.loads(r["environment_json"] or "{}").get("facts", {})
        warns = json.loads(r["warnings_json"] or "[]")
        t.add_row(str(r["id"]), escape(r["device"]), r["status"], r["started_at"] or "", r["ended_at"] or "",
                  str(r["planned"]), str(r["measured"]), r["energy_sensor"] or "modeled",
                  str(env.get("torch", "")), str(len(warns)))
    _console().print(t)


# --- report ------------------------------------------------------------------------------------

@cli.command()
@click.option("--device", "devices", multiple=True, help="Device to report on (repeatable).")
@click.option("--model", default=None, help="Model name or key as stored (default: every model "
                                            "measured on the device).")
@click.option("--all", "all_devices", is_flag=True, help="Every device in the database, with a "
                                                         "fleet comparison.")
@db_option
@click.option("-o", "--output", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
def report(devices: tuple[str, ...], model: str | None, all_devices: bool, db_path: str,
           output: str) -> None:
    """Write a self-contained HTML report: costs, charts, solver results, device comparison."""
    from reports.build import write_report
    path = write_report(db_path, output, devices=list(devices), model=model, all_devices=all_devices)
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", err=True)


# --- solve / pareto (solver/cli_commands.py) -------------------------------------------------

from solver.cli_commands import pareto as _pareto_cmd, solve as _solve_cmd  # noqa: E402

cli.add_command(_solve_cmd, "solve")
cli.add_command(_pareto_cmd, "pareto")


def main() -> None:
    cli(prog_name="costdb")


if __name__ == "__main__":
    main()
