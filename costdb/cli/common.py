"""Options and output helpers shared by the command modules (rich is imported on first use)."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from costdb.clitypes import BoundedInt, OutputFile
from costdb.errors import CostdbError

DEFAULT_DB = "costs.db"

db_option = click.option("--db", "db_path", default=lambda: os.environ.get("COSTDB_DB", DEFAULT_DB),
                         show_default="costs.db or $COSTDB_DB", type=click.Path(dir_okay=False),
                         help="SQLite cost database file.")
settings_option = click.option(
    "--settings", default=None, metavar="latest|ID",
    help="Measurements of this settings fingerprint (an id or fingerprint from 'costdb settings', "
         "or latest); needed when the model was profiled under several settings.")
session_option = click.option("--session", type=BoundedInt(min=1), default=None,
                              help="Only the measurements of this session (see 'costdb sessions').")
kind_option = click.option("--kind", type=click.Choice(["isolated", "in_context"]),
                           default="isolated", show_default=True,
                           help="isolated: each op alone in a calibrated loop; in_context: "
                                "attributed from traced real training iterations.")
estimate_option = click.option(
    "--kind", type=click.Choice(["auto", "in_context", "isolated"]), default="auto",
    show_default=True,
    help="Which estimate: auto = in_context where the model has in-context costs on the device, "
         "else isolated; in_context: attributed from traced real training iterations; isolated: "
         "each op alone in a calibrated loop (docs/usage.md, 'Which estimate').")
#: ``-o FILE``: the directory must exist before any work (costdb.clitypes.OutputFile); the file
#: is written atomically, or through a device node, FIFO or symlink (costdb.files.write_output)
def output_option(default: str | None = None, help: str = "Output file.") -> Any:  # noqa: A002
    return click.option("-o", "--output", default=default, show_default=default is not None,
                        type=OutputFile(), help=help)


inventory_option = click.option("--inventory", type=click.Path(dir_okay=False), default=None,
                                help="Inventory TOML (default: $COSTDB_INVENTORY or "
                                     "~/.config/costdb/inventory.toml).")


def console(err: bool = False) -> Any:
    from rich.console import Console
    return Console(stderr=err, highlight=False, soft_wrap=False,
                   width=None if sys.stdout.isatty() else 160)


def escape(text: str) -> str:
    from rich.markup import escape as _escape
    return _escape(text)


def table(title: str | None = None, columns: Any = ()) -> Any:
    """A rich table with the given (name, justify) or name columns."""
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for c in columns:
        name, just = c if isinstance(c, tuple) else (c, "left")
        t.add_column(name, justify=just)
    return t


def emit_frame(df: Any, fmt: str, output: str | None, title: str = "") -> None:
    """A DataFrame as a terminal table, or csv/json/parquet to stdout or (atomically) a file."""
    from costdb.files import write_atomic
    if fmt == "table":
        if output:
            raise CostdbError("--format table prints to the terminal; use csv, json or parquet with -o")
        t = table(title or None, [str(c) for c in df.columns])
        for row in df.itertuples(index=False):
            t.add_row(*("" if v is None else escape(str(v)) for v in row))
        console().print(t)
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
