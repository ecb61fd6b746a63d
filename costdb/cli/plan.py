"""``costdb plan-update``: a sparse-update plan (which layers and channel fractions to train)
under a memory budget, from the device's measured op costs (solver/sparse_update.py)."""
from __future__ import annotations

import json

import click

from costdb.cli.common import console, db_option, escape, estimate_option, settings_option, table


@click.command("plan-update")
@db_option
@click.option("--device", required=True, help="Device whose measurements to use.")
@click.option("--model", required=True, help="Model (profiled on the device).")
@click.option("--memory", required=True, help="RAM budget for training, e.g. 12KiB or 256KiB.")
@click.option("--contributions", type=click.Path(dir_okay=False), default=None,
              help='JSON table of what updating each layer is worth: {"conv2": {"weight": 0.3, '
                   '"bias": 0.05}} (weight may be {"0.25": 0.2, "1": 0.3} per channel '
                   "fraction). Default: a depth heuristic (docs/solver.md, 'Sparse update').")
@click.option("--batch", type=int, default=None)
@settings_option
@estimate_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan and baselines as JSON.")
def plan_update_cmd(db_path, device, model, memory, contributions, batch, settings, kind,
                    as_json):
    """Choose which layers' weights (and what fraction of their output channels) and biases
    to update in on-device training within a memory budget; prints the plan with its peak
    memory, runtime and energy per iteration from the database, beside the full-update,
    bias-only and last-k baselines.

    \b
      costdb plan-update --device qemu-m0 --model tinycnn --memory 12KiB
    """
    from costdb.units import fmt_bytes, fmt_joules, fmt_seconds, parse_size
    from solver.sparse_update import plan_sparse_update
    budget = parse_size(memory)
    res = plan_sparse_update(db_path, device, model, budget, contributions, settings=settings,
                             kind=kind, batch=batch)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    layers = list(res.plan.choices)
    t = table(f"Sparse update of {escape(res.model)} on {escape(device)} within "
              f"{fmt_bytes(budget)} (contributions: {escape(res.contribution_source)})",
              ["scheme"] + layers + [("contribution", "right"), ("peak memory", "right"),
                                     ("runtime/iter", "right"), ("energy/iter", "right"),
                                     "fits"])
    for p in [res.plan] + res.baselines:
        t.add_row(escape(p.name), *[p.choices[n].label() for n in layers],
                  f"{p.contribution:.3g}", fmt_bytes(p.peak_memory_bytes), fmt_seconds(p.runtime_s),
                  fmt_joules(p.energy_j), "yes" if p.fits else "no")
    console().print(t)
    p = res.plan
    click.echo(f"plan: {p.kept_activation_bytes} B kept activations + {p.trainable_bytes} B "
               f"trainable + {p.working_set_bytes} B largest op working set = "
               f"{p.peak_memory_bytes} B (a model from the graph and measured working sets)"
               + (f"; estimated, not measured: {', '.join(p.estimated)}" if p.estimated else ""))


COMMANDS = [plan_update_cmd]
