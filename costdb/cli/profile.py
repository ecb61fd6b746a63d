"""``costdb profile``: measure a model's distinct training ops on one or more devices."""
from __future__ import annotations

import os
from typing import Any

import click

from costdb.cli.common import console, db_option, escape, inventory_option
from costdb.cli.read import print_costs
from costdb.errors import CostdbError
from costdb.units import fmt_seconds, parse_shape


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

    def __init__(self, console: Any, quiet: bool):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
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


@click.command()
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
    out = console()
    err = console(err=True)
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
        print_costs(db_path, device, res.model_key, top, out, settings=res.settings_id)
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


COMMANDS = [profile]
