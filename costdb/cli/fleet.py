"""``costdb compare`` and ``costdb merge``: measurements side by side, databases combined."""
from __future__ import annotations

import click

from costdb.cli.common import console, db_option, emit_frame, escape, kind_option, table


@click.command()
@click.argument("a")
@click.argument("b")
@db_option
@click.option("--device", default=None, help="Device of a settings:ID side (when several have it).")
@click.option("--model", default=None, help="Only the ops of this stored model.")
@kind_option
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text",
              show_default=True)
def compare(a: str, b: str, db_path: str, device: str | None, model: str | None, kind: str,
            fmt: str) -> None:
    """Compare two sessions or two settings op by op, like pyperf compare_to.

    A and B are session ids (3 or session:3) or settings fingerprints (settings:2 or
    settings:<fingerprint>, see 'costdb settings'). Per op: the medians, the ratio B/A and whether
    the difference is significant given the raw samples (Welch's t-test at 95%); then the
    geometric mean of the ratios and the ops measured on one side only.

    \b
      costdb compare 1 2
      costdb compare settings:1 settings:2 --device local --model resnet18
    """
    import costdb
    from costdb.compare import ratio_text
    from costdb.units import fmt_seconds
    with costdb.open(db_path, readonly=True) as db:
        c = db.compare(a, b, device=device, model=model, kind=kind)
    if fmt != "text":
        emit_frame(c.frame(), fmt, None)
        return
    con = console()
    t = table(escape(f"{c.a.label} -> {c.b.label}: {c.kind} measurements of {len(c.rows)} ops"),
              (("op", "left"), ("phase", "left"), ("input", "left"), ("A median ± stdev", "right"),
               ("B median ± stdev", "right"), ("B/A", "right"), ("", "left"), ("significant", "left")))
    for r in c.rows:
        t.add_row(escape(r.op), escape(r.phase), escape(r.shapes),
                  f"{fmt_seconds(r.a_median_s)} ± {fmt_seconds(r.a_stdev_s)}",
                  f"{fmt_seconds(r.b_median_s)} ± {fmt_seconds(r.b_stdev_s)}", f"{r.ratio:.3f}",
                  ratio_text(r.ratio),
                  {True: "yes", False: "no", None: "n/a (no raw samples)"}[r.significant])
    con.print(t)
    gm = c.geometric_mean
    n_sig = sum(1 for r in c.rows if r.significant)
    con.print(f"Geometric mean: {ratio_text(gm) if gm else '-'} ({n_sig} of {len(c.rows)} "
              "differences significant at 95%)")
    for side, only in ((c.a, c.only_a), (c.b, c.only_b)):
        if only:
            con.print(escape(f"Only in {side.label} ({len(only)}): {', '.join(only)}"))


@click.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
def merge(out: str, inputs: tuple[str, ...]) -> None:
    """Merge databases from several machines into OUT (created if missing).

    Ops are matched by signature, settings by fingerprint, models by key and sessions by
    (device, host, start, pid): a session already in OUT is merged once, a conflicting duplicate
    is kept as a separate session. Idempotent; OUT is written in one transaction, so an error
    leaves it unchanged.
    """
    from costdb.merge import merge as run_merge
    res = run_merge(out, list(inputs))
    for c in res.conflicts:
        click.echo(f"Warning: {c}", err=True)
    click.echo(res.summary(), err=True)


COMMANDS = [compare, merge]
