"""``costdb models`` and ``costdb devices``: what can be profiled, and where."""
from __future__ import annotations

import click

from costdb.cli.common import console, escape, inventory_option, table
from costdb.units import fmt_bytes


@click.command()
@click.option("--db", "db_path", default=None, type=click.Path(dir_okay=False),
              help="Also list the model variants stored in this database.")
def models(db_path: str | None) -> None:
    """List the zoo models (and the models stored in a database)."""
    from profiler.zoo import MODELS
    t = table("Model zoo (or any torch.nn.Module as path/to/file.py:factory)",
              ("name", "default input", "default batch", "description"))
    for m in MODELS.values():
        t.add_row(m.name, "x".join(map(str, m.default_input)), str(m.default_batch), m.description)
    con = console()
    con.print(t)
    if db_path:
        import costdb
        with costdb.open(db_path, readonly=True) as db:
            stored = db.model_list()
        t = table(f"Stored in {db_path}", ("key", "nodes", "distinct ops", "parameters", "activations"))
        for m in stored:
            t.add_row(escape(m.key), str(m.n_nodes), str(m.n_signatures), fmt_bytes(m.param_bytes),
                      fmt_bytes(m.activation_bytes))
        con.print(t)


@click.command()
@inventory_option
@click.option("--check", is_flag=True, help="Try to reach each device and report.")
def devices(inventory: str | None, check: bool) -> None:
    """List catalog devices and inventory devices with their transport."""
    from devices.catalog import catalog
    from devices.inventory import load
    from devices.reach import check_reachable
    inv = load(inventory)
    t = table("Devices", ("name", "board", "cpu", "RAM", "transport", "address", "source")
              + (("reachable",) if check else ()))
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
    console().print(t)


COMMANDS = [models, devices]
