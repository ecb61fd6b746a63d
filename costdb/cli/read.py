"""``costdb costs``, ``costdb export``, ``costdb query``: reading the cost database."""
from __future__ import annotations

from typing import Any

import click

from costdb.cli.common import (console, db_option, emit_frame, escape, estimate_option,
                               output_option, session_option, settings_option, table)
from costdb.clitypes import BoundedInt
from costdb.errors import CostdbError
from costdb.units import fmt_bytes, fmt_joules, fmt_seconds, parse_shape


def op_labels(graph: Any) -> dict[str, str]:
    """Signature -> input label of the op (input and weight shapes), so that no two rows of a
    cost table look the same: where shapes coincide the differing attributes are added, and
    failing that the signature's first digits."""
    first: dict[str, Any] = {}
    for n in graph.nodes:
        first.setdefault(n.signature, n)
    from costdb.records import shape_label
    labels = {s: shape_label(n.input_shapes, n.params) for s, n in first.items()}
    groups: dict[tuple, list[str]] = {}
    for s, n in first.items():
        groups.setdefault((n.op, n.phase, labels[s]), []).append(s)
    for sigs in groups.values():
        if len(sigs) < 2:
            continue
        keys = sorted({k for s in sigs for k in first[s].attrs})
        differing = [k for k in keys if len({repr(first[s].attrs.get(k)) for s in sigs}) > 1]
        for s in sigs:
            a = first[s].attrs
            extra = " ".join(f"{k}={a.get(k)}" for k in differing) if differing else f"#{s[:6]}"
            labels[s] = f"{labels[s]} {extra}".strip()
        if len({labels[s] for s in sigs}) < len(sigs):
            for s in sigs:
                labels[s] = f"{labels[s]} #{s[:6]}"
    return labels


def cost_table(df: Any, title: str, top: int | None) -> Any:
    """Rich table of distinct ops (aggregated over the graph nodes that use them)."""
    t = table(title, (("op", "left"), ("phase", "left"), ("input", "left"), ("uses", "right"),
                      ("runtime (median)", "right"), ("± stdev", "right"), ("CV", "right"),
                      ("peak mem", "right"), ("energy (gross)", "right"), ("flags", "left")))
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
        t.add_row(escape(r["op"]), escape(r["phase"]), escape(r.get("input", "") or ""),
                  str(r["uses"]), runtime, fmt_seconds(r["runtime_stdev_s"]),
                  "-" if r["runtime_cv"] != r["runtime_cv"] or r["runtime_cv"] is None
                  else f"{100 * r['runtime_cv']:.1f}%",
                  fmt_bytes(r["peak_memory_bytes"]), energy, " ".join(flags))
    if top and len(ops) > top:
        t.caption = f"{len(ops) - top} more ops not shown; use --top 0 for all"
    return t


def print_costs(db_path: str, device: str, model_key: str, top: int | None, con: Any,
                **select: Any) -> None:
    """The cost table and per-iteration totals of a stored model (reads no torch)."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        df = db.costs(device, model_key, **select)
        graph = db.graph(model_key)
        sid = df.attrs.get("settings_id")
        under = f"settings #{sid} ({db.get_settings(sid).describe()})" if sid is not None \
            else "no settings recorded"
        sessions = sorted({int(s) for s in df["session_id"].dropna()})
    df["input"] = df["signature"].map(op_labels(graph))
    con.print(cost_table(df, escape(f"{model_key} on {device}: {df.signature.nunique()} distinct "
                                    f"ops, {len(df)} graph nodes"), top))
    kind = df.attrs.get("kind", "isolated")
    con.print(escape(f"{kind} measurements under {under}; from session"
                     f"{'s' if len(sessions) != 1 else ''} "
                     f"{', '.join(map(str, sessions)) or '-'}"))
    measured = df["status"].eq("ok")
    prov = ",".join(sorted(set(df["energy_provenance"].dropna()))) or "-"
    rprov = ",".join(sorted(set(df["runtime_provenance"].dropna()))) or "-"
    con.print(f"Per iteration (sum over {int(measured.sum())}/{len(df)} nodes): runtime "
              f"{fmt_seconds(df['runtime_s'].sum())} ({rprov}), energy {fmt_joules(df['energy_j'].sum())} "
              f"gross ({prov}{_net(df)}); parameters {fmt_bytes(graph.param_bytes)}, activations "
              f"{fmt_bytes(graph.activation_bytes)}; unstable ops "
              f"{int(df.drop_duplicates('signature')['unstable'].eq(True).sum())}")


def _net(df: Any) -> str:
    """", net of idle X" where the measurements carry net energy (what ``solve`` optimises)."""
    if "energy_net_j" not in df or not df["energy_net_j"].notna().any():
        return ""
    return f", net of idle {fmt_joules(df['energy_net_j'].sum())}"


@click.command()
@click.option("--device", default="local", show_default=True)
@click.option("--model", required=True, help="Model name or key as stored (see 'costdb models --db').")
@click.option("--batch", type=BoundedInt(min=1), default=None)
@click.option("--input", "input_shape", default=None, metavar="CxHxW")
@db_option
@settings_option
@session_option
@estimate_option
@click.option("--top", type=BoundedInt(min=0), default=30, show_default=True)
def costs(device: str, model: str, batch: int | None, input_shape: str | None, db_path: str,
          settings: str | None, session: int | None, kind: str, top: int) -> None:
    """Print the cost table of a profiled model on a device.

    The table is built from the measurements of one settings fingerprint; when the model was
    profiled under several (--threads 1 and 2, say) choose with --settings latest|ID.
    """
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        key = db.model(model, batch, parse_shape(input_shape) if input_shape else None).key
    print_costs(db_path, device, key, top, console(), settings=settings, session=session, kind=kind)


@click.command()
@click.argument("sql")
@db_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
def query(sql: str, db_path: str, fmt: str) -> None:
    """Run a read-only SQL query against the database (tables: docs/data-model.md)."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        df = db.query(sql)
    emit_frame(df, fmt, None)


@click.command()
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), required=True)
@click.option("--device", default=None, help="Only this device.")
@click.option("--model", default=None, help="Per-node costs of this model (else: per distinct op).")
@output_option(help="Output file (default: stdout for csv/json); a device, FIFO or symlink is "
                    "written through.")
@settings_option
@session_option
@estimate_option
def export(db_path: str, fmt: str, device: str | None, model: str | None, output: str | None,
           settings: str | None, session: int | None, kind: str) -> None:
    """Export costs: per distinct op (one row per op and settings fingerprint, column
    settings_id), or per graph node of --model (needs --device; one fingerprint)."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        if model:
            if not device:
                raise CostdbError("--model needs --device: costs are per device")
            df = db.costs(device, model, settings=settings, session=session, kind=kind)
        else:
            if session is not None:
                raise CostdbError("--session selects a cost table: give --device and --model too")
            df = db.ops(device, settings=settings, kind=None if kind == "auto" else kind)
    emit_frame(df, fmt, output)


COMMANDS = [costs, export, query]
