"""``costdb board``: build, start, stop and inspect the emulated SSH board (``qemu-a72``).

The work is in ``devices.emulated`` (image builder, VM); this module only parses options and
draws the progress bar. Nothing here imports torch.
"""
from __future__ import annotations

import click

from costdb.cli.common import console, escape
from costdb.clitypes import FiniteFloat
from costdb.units import MAX_DURATION_S
from costdb.errors import CostdbError

BOARDS = ("qemu-a72",)

board_arg = click.argument("board", type=click.Choice(BOARDS), default="qemu-a72", required=False)
cache_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False), default=None,
    help="Keep the board in DIR/<board> (default: $COSTDB_CACHE_DIR/boards or "
         "~/.cache/costdb/boards).")


def _size(n: int | None) -> str:
    from costdb.units import fmt_bytes
    return fmt_bytes(n) if n is not None else "?"


@click.group()
def board() -> None:
    """Emulated boards: a QEMU Cortex-A72 running Debian 12 arm64 with PyPI's torch, profiled
    over SSH like a Raspberry Pi 4B (its runtimes are stored as emulated, docs/emulated.md)."""


@board.command("build")
@board_arg
@cache_option
@click.option("--torch", "torch_version", default=None, metavar="VERSION",
              help="torch release whose aarch64 wheel goes into the image (default: the newest "
                   "known to run on a Cortex-A72).")
@click.option("--mirror", default=None, metavar="URL",
              help="Debian mirror (default: the host's own, from its apt sources).")
@click.option("--force", is_flag=True, help="Rebuild even if a current image is cached.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def build(board: str, cache_dir: str | None, torch_version: str | None, mirror: str | None,
          force: bool, quiet: bool) -> None:
    """Build the board's disk image once and cache it (needs root; 15-30 min)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from devices.emulated.image import DEFAULT_TORCH, STEPS, build_image, is_current, load_image
    version = torch_version or DEFAULT_TORCH
    have = load_image(board, cache_dir)
    err = console(err=True)
    quiet = quiet or (have is not None and not force and is_current(have, version))
    with Progress(TextColumn(f"[bold]{board}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  disable=quiet) as bar:
        task = bar.add_task("", total=len(STEPS))

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=escape(what))
        img = build_image(board, cache_dir, torch_version=version, force=force, mirror=mirror,
                          progress=progress)
    m = img.manifest
    fresh = have is None or have.manifest.get("built_at") != m.get("built_at")
    verb = "built" if fresh else "cached (use --force to rebuild)"
    click.echo(f"{board}: image {verb}: {img.disk}, {_size(m.get('disk_bytes'))} on disk "
               f"({_size(m.get('disk_size_bytes'))} apparent), build time "
               f"{m.get('build_s', 0):.0f} s; Debian {m.get('suite')} arm64, kernel "
               f"{m.get('kernel_release')}, Python {m.get('python')}, torch {m.get('torch')}")


@board.command("start")
@board_arg
@cache_option
@click.option("--memory", default="2G", show_default=True, help="Guest RAM, 2G-4G.")
@click.option("--cpus", type=click.IntRange(1, 8), default=4, show_default=True, help="vCPUs.")
@click.option("--timeout", type=FiniteFloat(min=1, max=MAX_DURATION_S), default=1200, show_default=True,
              help="Seconds to wait for sshd.")
def start(board: str, cache_dir: str | None, memory: str, cpus: int, timeout: float) -> None:
    """Boot the board in the background and wait for sshd; profiles then reuse it."""
    from devices.emulated.image import require_image
    from devices.emulated.vm import A72Board, parse_memory
    img = require_image(board, cache_dir)
    vm = A72Board(img, parse_memory(memory), cpus)
    vm.start(detach=True)
    try:
        boot = vm.wait_for_sshd(timeout)
    except CostdbError:
        vm.stop(grace=0)
        raise
    click.echo(f"{board}: running (pid {vm.pid}), sshd on 127.0.0.1:{vm.port} after {boot:.0f} s; "
               f"ssh -i {img.user_key} -o UserKnownHostsFile={img.known_hosts} -p {vm.port} "
               f"{img.user}@127.0.0.1; stop it with 'costdb board stop {board}'")


@board.command("stop")
@board_arg
@cache_option
def stop(board: str, cache_dir: str | None) -> None:
    """Power the running board off (its disk keeps the agent cache)."""
    from devices.emulated.image import require_image
    from devices.emulated.vm import attach
    vm = attach(require_image(board, cache_dir))
    if vm is None:
        click.echo(f"{board}: not running")
        return
    vm.stop()
    click.echo(f"{board}: stopped")


@board.command("status")
@board_arg
@cache_option
def status(board: str, cache_dir: str | None) -> None:
    """Image and run state of the board."""
    from devices.emulated import board_dir
    from devices.emulated.image import load_image
    from devices.emulated.vm import qemu_version, running_board
    img = load_image(board, cache_dir)
    if img is None:
        click.echo(f"{board}: no image in {board_dir(board, cache_dir)}; build it with "
                   f"'costdb board build {board}'")
        return
    m = img.manifest
    click.echo(f"{board}: image {img.disk} ({_size(m.get('disk_bytes'))}, built {m.get('built_at')} "
               f"in {m.get('build_s', 0):.0f} s, torch {m.get('torch')}, kernel "
               f"{m.get('kernel_release')}); QEMU {qemu_version() or 'not installed'}")
    state = running_board(img)
    click.echo(f"{board}: running, pid {state['pid']}, sshd 127.0.0.1:{state['port']}, "
               f"{state['memory_mib']} MiB, {state['cpus']} vCPUs" if state else f"{board}: stopped")


COMMANDS = [board]
