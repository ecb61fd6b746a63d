"""``costdb profile``: measure a model's distinct training ops on one or more devices."""
from __future__ import annotations

import os
from typing import Any

import click

from costdb.cli.common import console, db_option, escape, inventory_option
from costdb.cli.read import print_costs
from costdb.errors import CostdbError
from costdb.clitypes import BoundedInt, FiniteFloat
from costdb.units import MAX_ELEMENTS, fmt_seconds, parse_shape


def _model_or_stored_graph(model: str, db_path: str, batch: int | None,
                           shape: tuple[int, ...] | None) -> Any:
    """A zoo name or file model as given; otherwise a model stored in the database (by key, or
    by name with --batch/--input), as its stored graph: the commands the report and
    ``costdb models --db`` print name models by key."""
    from profiler.zoo import MODELS, is_file_model
    if model in MODELS or is_file_model(model) or not os.path.isfile(db_path):
        return model
    import costdb
    try:
        with costdb.open(db_path, readonly=True) as db:
            return db.graph(db.resolve_model(model, batch, shape))
    except CostdbError:
        return model          # not stored either: the zoo's "unknown model" error names both


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


def unstable_summary(db_path: str, model_key: str, signatures: list[str], named: int = 6) -> str:
    """One line for the ops still unstable after re-measuring: how many, and the worst few by
    op, phase and shapes (the cost table's input column), with the remedy."""
    import costdb
    from costdb.cli.read import op_labels
    with costdb.open(db_path, readonly=True) as db:
        graph = db.graph(model_key)
    labels = op_labels(graph)
    first = {}
    for n in graph.nodes:
        first.setdefault(n.signature, n)
    uniq = list(dict.fromkeys(signatures))
    names = [f"{first[s].op}:{first[s].phase} {labels.get(s, '')}".strip() if s in first else s[:12]
             for s in uniq]
    shown = ", ".join(names[:named]) + (f" and {len(names) - named} more" if len(names) > named else "")
    return (f"{len(uniq)} of {len(first)} distinct ops stay unstable (CV above 10% after "
            f"re-measuring with twice the samples): {shown}; they are flagged in the cost table. "
            "On a busy machine profile with --threads 1 (see docs/usage.md), then --force")


def next_steps(db_path: str, devices: list[str], model_key: str) -> list[str]:
    """What to do with the costs just stored: two command lines that work when pasted (the
    comment after ``#`` is ignored by the shell)."""
    import shlex

    import costdb
    with costdb.open(db_path, readonly=True) as db:
        m = db.model(model_key)
        variants = [o for o in db.model_list() if o.name == m.name]
    ref = shlex.quote(m.name if len(variants) == 1 else m.key)
    db_opt = "" if db_path == os.environ.get("COSTDB_DB", "costs.db") else f" --db {shlex.quote(db_path)}"
    dev = shlex.quote(devices[0])
    report = (f"costdb report --device {dev}" if len(devices) == 1 else
              "costdb report " + " ".join(f"--device {shlex.quote(d)}" for d in devices))
    solve = f"costdb solve --device {dev} --model {ref}{db_opt}"
    report = f"{report} --model {ref}{db_opt} -o report.html"
    width = max(len(solve), len(report))
    return [f"{solve:<{width}}  # next: an energy-optimal schedule (add --memory 64MiB --deadline 2s)",
            f"{report:<{width}}  # costs, charts and solver results in one HTML file"]


class _ProgressView:
    """Rich progress bar fed by the session's progress events (one bar per device)."""

    def __init__(self, console: Any, quiet: bool):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self.quiet = quiet
        self.progress = Progress(TextColumn("[bold]{task.fields[device]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, transient=False, disable=quiet)
        self.tasks: dict[str, Any] = {}
        self.ic_tasks: dict[str, Any] = {}

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
        elif event == "in_context":
            self.ic_tasks[dev] = self.progress.add_task(
                "in-context: real iterations under torch.profiler", total=info["total"], device=dev)
        elif event == "in_context_iteration":
            self.progress.update(self.ic_tasks[dev], completed=info["done"], total=info["total"])
        elif event == "iteration" and dev in self.tasks:
            self.progress.update(self.tasks[dev], description="whole training iteration")
        elif event == "done" and dev in self.tasks:
            self.progress.update(self.tasks[dev], description="done")


def print_iteration_check(db_path: str, device: str, model_key: str, con: Any) -> None:
    """The newest measured iteration of the model against each estimate, total and per phase."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        it = db.iterations(device)
    rows = it[it.model == model_key]
    if not len(rows):
        return
    row = rows.iloc[-1]

    def err(pred: Any, meas: Any) -> str:
        if pred is None or pred != pred or meas is None or meas != meas:
            return "-"
        return f"{fmt_seconds(pred)} ({100 * (pred - meas) / meas:+.1f}%)"
    phases = "".join(f", {g} {fmt_seconds(row[f'{g}_measured_s'])}" for g in ("fwd", "bwd", "update")
                     if row[f"{g}_measured_s"] == row[f"{g}_measured_s"])
    con.print(f"Whole iteration measured {fmt_seconds(row['measured_s'])}{phases}")
    for k in ("in_context", "isolated"):
        pred = row[f"{k}_predicted_s"]
        if pred is None or pred != pred:
            continue
        default = " (default)" if row["kind"] == k else ""
        per = ""
        if row["kind"] == k:
            per = "; " + ", ".join(f"{g} {err(row[f'{g}_predicted_s'], row[f'{g}_measured_s'])}"
                                   for g in ("fwd", "bwd", "update"))
        con.print(f"  {k}{default} cost model predicts {err(pred, row['measured_s'])}{per}")


@click.command()
@click.option("--device", "devices", multiple=True, default=("local",), show_default=True,
              help="Device to profile (repeatable).")
@click.option("--model", default="resnet18", show_default=True,
              help="Zoo model name (see 'costdb models'), path/to/file.py:factory, or the key of a "
                   "model stored in --db (profiles its stored graph: isolated costs only).")
@click.option("--batch", type=BoundedInt(min=1, max=MAX_ELEMENTS), default=None, help="Batch size (default: the model's).")
@click.option("--input", "input_shape", default=None, metavar="CxHxW",
              help="Input shape without batch, e.g. 3x32x32 (default: the model's).")
@click.option("--dtype", default="float32", show_default=True,
              help="Tensor dtype of the graph (int8: the quantised graph, Cortex-M firmware only).")
@db_option
@inventory_option
@click.option("--force", is_flag=True, help="Measure again even ops already measured on the device.")
@click.option("--cpus", default=None, help="Pin the local agent to these CPUs, e.g. 0 or 0-1.")
@click.option("--threads", type=BoundedInt(min=1, max=4096), default=None,
              help="Torch intra-op threads. Default (local device): those of the device's latest "
                   "session in --db (a re-run resumes); else 1 on a busy machine (load average "
                   "above half the cores), else all cores.")
@click.option("--samples", type=BoundedInt(min=3, max=100_000), default=15, show_default=True,
              help="Timing samples per op.")
@click.option("--min-sample-time", type=FiniteFloat(min=1e-4, max=60.0), default=0.01, show_default=True,
              help="Seconds one sample lasts at least (inner loop is calibrated to it).")
@click.option("--cache", type=click.Choice(["warm", "cold"]), default="warm", show_default=True,
              help="warm: classic hot inner loop; cold: evict the CPU caches before every timed "
                   "call, as the other ops of a training iteration do (closer to a real iteration "
                   "single-threaded, see docs/usage.md).")
@click.option("--in-context/--no-in-context", "in_context", default=None,
              help="Also run real training iterations under torch.profiler and store each op's "
                   "in-context cost, the default estimate (docs/usage.md). Default: where "
                   "possible (the local device); --in-context warns where it is not.")
@click.option("--iterations", "in_context_iterations", type=BoundedInt(min=3, max=100_000), default=40,
              show_default=True, help="Profiled training iterations of the in-context step.")
@click.option("--iteration/--no-iteration", default=None,
              help="Also time whole training iterations, independently, to check the cost model. "
                   "Default: where possible (the local device, a zoo or file model); --iteration "
                   "is refused elsewhere.")
@click.option("--top", type=BoundedInt(min=0), default=30, show_default=True,
              help="Rows of the cost table to print (0 = all).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--all", "all_devices", is_flag=True,
              help="Profile every inventory device, in parallel (instead of --device).")
@click.option("--accept-new-host-key", is_flag=True,
              help="Trust an SSH device's host key on first contact and record it in known_hosts "
                   "(a changed key is always refused).")
def profile(devices: tuple[str, ...], model: str, batch: int | None, input_shape: str | None,
            dtype: str, db_path: str, inventory: str | None, force: bool, cpus: str | None,
            threads: int | None, samples: int, min_sample_time: float, cache: str,
            in_context: bool | None, in_context_iterations: int, iteration: bool | None, top: int,
            quiet: bool, all_devices: bool, accept_new_host_key: bool) -> None:
    """Measure every distinct training op of MODEL on DEVICE and store the costs.

    Resumable: an interrupted run keeps what it measured; running it again measures only the
    missing ops. A complete profile measures nothing new unless --force.
    """
    from profiler.session import profile as run_profile
    shape = parse_shape(input_shape) if input_shape else None
    if batch is not None or shape is not None:   # refuse what cannot be allocated, up front
        from costdb.validate import check_input_size
        from profiler.zoo import MODELS
        zm = MODELS.get(model)
        full = shape or (tuple(zm.default_input) if zm else None)
        if full is not None:
            check_input_size(batch or (zm.default_batch if zm else 1), full,
                             {"float64": 8, "float16": 2, "bfloat16": 2}.get(dtype, 4))
    model = _model_or_stored_graph(model, db_path, batch, shape)
    cpu_list = _parse_cpus(cpus)
    out = console()
    err = console(err=True)
    settings = {"samples": samples, "min_sample_time": min_sample_time, "cache": cache,
                "in_context_iterations": in_context_iterations}
    warn = lambda w: err.print(f"[yellow]Warning:[/] {escape(w)}")  # noqa: E731
    connect_options = {"accept_new_host_key": accept_new_host_key, "on_warning": warn}
    if all_devices:
        from profiler.parallel import all_devices as inventory_devices
        devices = tuple(inventory_devices(inventory))
    parallel, device_errors = None, 0
    done: dict[str, str] = {}          # device -> model key, for the next-step lines
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
                                  in_context=in_context, progress=view, on_warning=warn,
                                  connect_options=connect_options)
        done[device] = res.model_key
        if res.threads_note:
            err.print(f"[cyan]Note:[/] {escape(res.threads_note)}")
        if res.planned == 0 and res.session_id is None and res.in_context is None:
            err.print(escape(f"{device}: all {res.skipped} distinct ops of {res.model_key} are "
                             "already measured; use --force to measure again"))
        else:
            err.print(escape(f"{device}: measured {res.measured} of {res.planned} ops ({res.skipped} "
                             f"already in the database), session {res.session_id} {res.status}"))
        if res.unstable:
            err.print(f"[yellow]Warning:[/] {escape(unstable_summary(db_path, res.model_key, res.unstable))}")
        for f in res.failed:
            err.print(f"[red]Failed:[/] {escape(f)}")
        if res.in_context is not None:
            ic = res.in_context
            err.print(escape(
                f"{device}: in-context costs of {ic['ops']} ops from {ic['iterations']} profiled "
                f"iterations; unattributed {100 * ic['unattributed_share']:.2f}% of the iteration "
                f"({', '.join(sorted(ic['unattributed'])) or '-'}); profiler overhead removed "
                f"{100 * ic['overhead_removed_share']:.2f}%"
                + (f"; {ic['unstable']} ops unstable (CV above 10%)" if ic["unstable"] else "")))
        print_costs(db_path, device, res.model_key, top, out, settings=res.settings_id)
        if res.iteration_s is not None:
            print_iteration_check(db_path, device, res.model_key, out)
    if done:
        for line in next_steps(db_path, list(done), next(iter(done.values()))):
            click.echo(line, err=True)      # not through rich: never wrapped, so it pastes
    if device_errors:
        raise CostdbError(f"{device_errors} of {len(devices)} devices failed (errors above); the "
                          "others are saved, run the same command again to retry")


COMMANDS = [profile]
