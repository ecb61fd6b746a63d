"""Solver benchmark (issue 12's grid; figures for docs/benchmarks.md). Costs are *modelled*
(POET's analytic model from the device catalog), labelled so in the output.

1. ResNet-18 at POET granularity (one forward + one backward node per layer), devices rpi4b and
   nrf52840, three memory budgets between the minimum feasible and the no-savings peak (5 %, 50 %,
   95 % of the way), deadlines 1.5x and 7.6x the compute time: wall time to proven optimality
   (gap <= 1e-4) of the MILP (HiGHS) and of the CP-SAT retention-interval model, each under a
   wall-time limit (``--time-limit``, default 300 s), plus the keep-everything instances (the
   no-savings peak), which must end in under a second.
2. MobileNetV2 and ResNet-50 (rpi4b, 5 % budget, 1.5x deadline): the gap each method reaches
   within ``--time-limit``; model building time of both formulations.
3. The non-dominated filter on 10^4, 10^5, 10^6 uniform random points in 2 and 3 objectives
   (moocore; and the own O(n log n) fallback).

    python benchmarks/bench_solver.py                       # the full grid (hours; quiet machine)
    python benchmarks/bench_solver.py --quick               # reduced: 1 device, 1 deadline, 20 s

Every solve goes through ``solver.commands.solve_within`` (the CLI's path: a child process killed
at the limit), so the wall times include model building. Prints markdown.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time


def row(cells):
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def fmt(v, spec=".5f"):
    return "-" if v is None else format(v, spec)


def instance(model: str, device: str):
    from devices.catalog import get_profile
    from profiler.zoo import model_graph
    from solver.problem import instance_from_graph
    return instance_from_graph(model_graph(model), get_profile(device), granularity="layer")


def one(inst, budget, deadline, method, limit, threads):
    from solver.commands import solve_within
    t0 = time.perf_counter()
    r = solve_within(inst, limit, budget=budget, deadline=deadline, method=method,
                     threads=threads, gap=1e-4, explain_infeasible=False)
    return r, time.perf_counter() - t0


def grid(a) -> None:
    from solver.solve import min_feasible_budget
    print("## ResNet-18 (POET granularity): time to proven optimality (gap <= 1e-4)\n")
    print(f"Wall-time limit {a.time_limit:g} s per solve (whole call: presolve, heuristics, model "
          "building, solving); costs modelled. `optimal` = proven within the limit.\n")
    row(["device", "budget", "deadline", "method", "status", "energy (J)", "bound (J)", "gap",
         "wall (s)", "build (s)", "variables"])
    row(["---"] * 11)
    for device in a.devices:
        inst = instance("resnet18", device)
        peak = inst.no_savings_peak()
        lo, exact = min_feasible_budget(inst)
        fracs = [float(x) for x in a.fractions.split(",")]
        for f in fracs + [1.0]:
            budget = peak if f >= 1.0 else int(lo + f * (peak - lo))
            for dlf in a.deadlines:
                for method in a.methods:
                    r, wall = one(inst, budget, inst.compute_runtime_s * dlf, method,
                                  a.time_limit, a.threads)
                    row([device, f"{f:.0%} ({budget} B)", f"{dlf}x", method, r.status,
                         fmt(r.energy_j), fmt(r.bound_energy_j),
                         "-" if r.gap is None else f"{r.gap:.2e}", f"{wall:.2f}",
                         f"{r.build_time_s:.2f}", r.n_variables])
                    if f >= 1.0:
                        break        # keep-everything: the formulation does not matter


def large(a) -> None:
    from solver.solve import min_feasible_budget
    print("\n## MobileNetV2 and ResNet-50 (rpi4b, 5 % budget, 1.5x deadline): gap within the "
          "limit\n")
    row(["model", "nodes", "method", "status", "energy (J)", "bound (J)", "gap", "wall (s)",
         "build (s)", "variables", "constraints"])
    row(["---"] * 11)
    for model in a.large:
        inst = instance(model, "rpi4b")
        peak = inst.no_savings_peak()
        lo, _ = min_feasible_budget(inst, time_limit=30)
        budget = int(lo + 0.05 * (peak - lo))
        for method in a.methods:
            r, wall = one(inst, budget, inst.compute_runtime_s * 1.5, method, a.large_limit,
                          a.threads)
            row([model, inst.n, method, r.status, fmt(r.energy_j), fmt(r.bound_energy_j),
                 "-" if r.gap is None else f"{r.gap:.2e}", f"{wall:.1f}", f"{r.build_time_s:.2f}",
                 r.n_variables, r.n_constraints])


def pareto(a) -> None:
    import numpy as np
    from solver.pareto import nondominated
    print("\n## Non-dominated filter (uniform random points)\n")
    row(["points", "objectives", "front", "moocore (s)", "own O(n log n) (s)"])
    row(["---"] * 5)
    rng = np.random.default_rng(0)
    nondominated(rng.random((100, 3)), use_moocore=False)      # numba compile / cache
    for n in a.pareto_sizes:
        for d in (2, 3):
            pts = rng.random((n, d))
            t0 = time.perf_counter()
            m = nondominated(pts)
            t1 = time.perf_counter()
            m2 = nondominated(pts, use_moocore=False)
            t2 = time.perf_counter()
            assert (m == m2).all()
            row([n, d, int(m.sum()), f"{t1 - t0:.3f}", f"{t2 - t1:.3f}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", nargs="+", default=["rpi4b", "nrf52840"])
    ap.add_argument("--deadlines", nargs="+", type=float, default=[1.5, 7.6])
    ap.add_argument("--fractions", default="0.05,0.5,0.95")
    ap.add_argument("--methods", nargs="+", default=["milp", "cpsat"])
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--large", nargs="*", default=["mobilenetv2", "resnet50"])
    ap.add_argument("--large-limit", type=float, default=300.0)
    ap.add_argument("--pareto-sizes", nargs="*", type=int, default=[10**4, 10**5, 10**6])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true",
                    help="reduced run: rpi4b, 1.5x, 5%% and 95%% budgets, 20 s, no large models")
    a = ap.parse_args()
    if a.quick:
        a.devices, a.deadlines, a.fractions = ["rpi4b"], [1.5], "0.05"
        a.time_limit, a.large, a.pareto_sizes = 20.0, [], [10**4, 10**6]
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"# bench_solver {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
          f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}); load average at start {load[0]:.2f}; costs modelled\n")
    grid(a)
    if a.large:
        large(a)
    if a.pareto_sizes:
        pareto(a)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"\nload average at the end {load[0]:.2f}")


if __name__ == "__main__":
    main()
