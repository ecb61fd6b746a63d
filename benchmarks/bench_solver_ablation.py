"""Solver benchmark: ResNet-18 at POET's granularity (one forward + one backward node per layer).

For budgets between the minimum feasible and the no-savings peak: instance size, solve time and
status / gap of the integrated MILP with HiGHS and with CBC, and the energy of integrated vs
remat-only vs paging-only vs Chen's sqrt(n) vs the paging heuristic; then an ablation of the
speed-ups on one budget (presolve, symmetry cuts, warm start, LP relaxation + rounding).

    python benchmarks/bench_solver_ablation.py [--device rpi4b] [--model resnet18] [--time-limit 60]

Prints a markdown section (the source of docs/benchmarks.md's solver section).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform

from devices.catalog import get_profile
from profiler.zoo import model_graph
from solver.baselines import capuchin_paging, checkpoint_all, chen_sqrt
from solver.problem import instance_from_graph
from solver.simulate import simulate
from solver.solve import min_feasible_budget, solve


def fmt_e(j):
    return "-" if j is None else f"{j:.5f}"


def row(cells):
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="rpi4b")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--deadline-factor", type=float, default=1.25)
    ap.add_argument("--fractions", default="0.25,0.5,0.75")
    ap.add_argument("--no-ablation", action="store_true")
    a = ap.parse_args()
    g = model_graph(a.model, batch=a.batch)
    prof = get_profile(a.device)
    inst = instance_from_graph(g, prof)
    tl = a.time_limit
    peak = inst.no_savings_peak()
    lo, _ = min_feasible_budget(inst)
    deadline = inst.compute_runtime_s * a.deadline_factor
    print(f"# bench_solver: {g.key} on {a.device} ({inst.cost_provenance()} costs), "
          f"{datetime.date.today()}")
    print(f"# host: {platform.node()} {platform.machine()} {os.cpu_count()} cores, python "
          f"{platform.python_version()}; time limit {tl:g} s per MILP, gap 1e-4")
    print(f"# {inst.n} solver nodes ({len(g.nodes)} graph nodes); fixed memory {inst.fixed_bytes} B; "
          f"activations at the no-savings peak {peak - inst.fixed_bytes} B")
    print(f"# minimum feasible budget {lo} B, no-savings peak {peak} B; deadline "
          f"{deadline:.4f} s = {a.deadline_factor} x compute runtime {inst.compute_runtime_s:.4f} s; "
          f"compute energy {inst.compute_energy_j:.5f} J")
    print()
    fracs = [float(x) for x in a.fractions.split(",")]
    budgets = [int(lo + f * (peak - lo)) for f in fracs]
    print("## Integrated MILP: size and solve time\n")
    row(["budget (B)", "budget (frac)", "solver", "variables", "constraints", "status",
         "energy (J)", "bound (J)", "gap", "solve (s)", "build (s)", "warm start"])
    row(["---"] * 12)
    energies: dict[tuple[int, str], float | None] = {}
    for f, b in zip(fracs, budgets):
        for s in ("highs", "cbc"):
            r = solve(inst, budget=b, deadline=deadline, solver=s, time_limit=tl, method="milp",
                      explain_infeasible=False)
            energies[b, f"integrated-{s}"] = r.energy_j
            row([b, f, s, r.n_variables, r.n_constraints, r.status, fmt_e(r.energy_j),
                 fmt_e(r.bound_energy_j), "-" if r.gap is None else f"{r.gap:.3%}",
                 f"{r.solve_time_s:.1f}", f"{r.build_time_s:.1f}",
                 f"{r.heuristic} ({fmt_e(r.heuristic_energy_j)})" if r.warm_start else "no"])
    print("\n## Energy by strategy (J; '-' = infeasible within budget and deadline)\n")
    row(["budget (B)", "integrated", "remat-only MILP", "paging-only MILP", "Chen sqrt(n)",
         "paging heuristic", "checkpoint-all", "remat status", "paging status"])
    row(["---"] * 9)
    for f, b in zip(fracs, budgets):
        rm = solve(inst, budget=b, deadline=deadline, mode="remat", time_limit=tl, method="milp",
                   explain_infeasible=False)
        pg = solve(inst, budget=b, deadline=deadline, mode="paging", time_limit=tl, method="milp",
                   explain_infeasible=False)
        base = []
        for sched in (chen_sqrt(inst), capuchin_paging(inst, b), checkpoint_all(inst)):
            sim = simulate(inst, sched, b, deadline)
            base.append(fmt_e(sim.energy_j) if sim.ok else
                        f"- (peak {sim.peak_memory_bytes} B, {sim.runtime_s:.3f} s)")
        best = min([e for e in (energies[b, "integrated-highs"], energies[b, "integrated-cbc"]) if e is not None],
                   default=None)
        row([b, fmt_e(best), fmt_e(rm.energy_j), fmt_e(pg.energy_j), *base,
             f"{rm.status} {'' if rm.gap is None else f'{rm.gap:.2%}'}",
             f"{pg.status} {'' if pg.gap is None else f'{pg.gap:.2%}'}"])
    if a.no_ablation:
        return
    b = budgets[len(budgets) // 2]
    print(f"\n## What each speed-up buys (integrated, HiGHS, budget {b} B)\n")
    row(["variant", "variables", "constraints", "status", "energy (J)", "gap", "solve (s)"])
    row(["---"] * 7)
    variants = [
        ("all on (default)", {}),
        ("no presolve (prune=False: full T x T rows)", {"prune": False}),
        ("no symmetry cuts", {"symmetry_cuts": False}),
        ("no knapsack rows", {"knapsack_rows": False}),
        ("no warm start", {"warm_start": False}),
        ("backward remat allowed", {"allow_bwd_remat": True}),
        ("LP relaxation + rounding", {"method": "lp_round"}),
    ]
    for name, kw in variants:
        kw.setdefault("method", "milp")
        r = solve(inst, budget=b, deadline=deadline, time_limit=tl, explain_infeasible=False, **kw)
        row([name, r.n_variables, r.n_constraints, r.status, fmt_e(r.energy_j),
             "-" if r.gap is None else f"{r.gap:.3%}", f"{r.solve_time_s:.1f}"])


if __name__ == "__main__":
    main()
