"""The ``costdb`` command line: a thin click layer over the library, one module per command group.

Every command's work is a function in ``costdb``, ``devices``, ``profiler``, ``solver`` or
``reports``; the modules here parse options, draw progress and tables, and turn ``CostdbError``
into one line on stderr and exit status 2 (handled once, in ``CostdbGroup``). This package is the
only place that imports every other package, and it does so inside the commands: ``costdb --help``
loads click and nothing heavy (no pandas, torch, solver or rich).

    profile.py   costdb profile
    read.py      costdb costs | export | query
    catalog.py   costdb models | devices
    history.py   costdb sessions | settings
    fleet.py     costdb compare | merge
    report.py    costdb report
    plan.py      costdb plan-update (solver/sparse_update.py)
    board.py     costdb board build | start | stop | status (emulated SSH boards)
    (solver/cli_commands.py: costdb solve | pareto; solver/cli_run.py: costdb run | storage)
"""
from __future__ import annotations

import os
import sys
import sqlite3
from typing import Any

import click

from costdb import __version__
from costdb.errors import CostdbError

__all__ = ["cli", "main", "CostdbGroup"]


class CostdbGroup(click.Group):
    """Turns user errors into one line and exit 2; Ctrl-C into a resumable message and 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CostdbError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)
        except sqlite3.Error as e:   # full disk, damaged file, lock held too long: one line
            from costdb.database import explain_sqlite_error
            err = explain_sqlite_error(e)
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)
        except MemoryError:
            click.echo("Error: out of memory; give smaller inputs (--batch, --input) or free "
                       "memory", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:  # a bug: one line (exit 1); COSTDB_DEBUG=1 shows the traceback
            if os.environ.get("COSTDB_DEBUG"):
                raise
            msg = " ".join(str(e).split())[:300]
            click.echo(f"Error: internal error (a bug in costdb): {type(e).__name__}: {msg}; "
                       "rerun with COSTDB_DEBUG=1 for the traceback and report it", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            # The interrupted work has unwound (its finally blocks closed the session and the
            # database). Exit at once with 130: after an interrupt inside torch's autograd
            # engine, letting the interpreter shut down normally sometimes ended the process by
            # SIGINT instead (exit -2, 1 run in 3 of tests/test_resume.py), which no caller can
            # tell from a crash.
            import signal
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            click.echo("Interrupted: measurements taken so far are saved; run the same command "
                       "again to resume.", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)


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


def _register() -> None:
    from costdb.cli import board, catalog, fleet, history, plan, profile, read, report
    from solver import cli_run
    from solver.cli_commands import pareto, solve
    for mod in (profile, read, catalog, history, report, fleet, plan, board):
        for cmd in mod.COMMANDS:
            cli.add_command(cmd)
    cli.add_command(solve, "solve")
    cli.add_command(pareto, "pareto")
    for cmd in cli_run.COMMANDS:
        cli.add_command(cmd)


_register()


def main() -> None:
    cli(prog_name="costdb")
