"""Benchmark: does a solved schedule do on the device what the solver predicted? (issue 11)

ResNet-18 (batch 8, 3x32x32) on ``local``: profile it (isolated + in-context costs, the cost
model of issue 10) unless the database already has it, then at ``--points`` memory budgets
between the minimum feasible budget and the no-savings peak solve it integrated, remat-only and
paging-only (``costdb solve``), execute every feasible schedule (``costdb run``: each iteration
checked bit-exact against a plain iteration) and print predicted vs measured runtime, activation
peak and paged bytes, and the energy (modelled on ``local``: no sensor here).

Targets: measured activation peak <= budget at every point; measured runtime within +-10 % of the
prediction; the energy ordering integrated <= remat-only, paging-only (POET Fig. 5) reproduced by
the measured figures. Needs a quiet machine for the runtime target.

    python benchmarks/bench_execute.py                                   # the full benchmark
    python benchmarks/bench_execute.py --model tinycnn --quick --no-profile   # smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone

import torch

import costdb
from costdb.errors import CostdbError
from costdb.units import fmt_bytes, parse_shape
from devices.inventory import Inventory

MODES = ("integrated", "remat", "paging")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input", default="3x32x32")
    ap.add_argument("--points", type=int, default=4, help="memory budgets")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--solver", default="highs", choices=["highs", "cbc"])
    ap.add_argument("--method", default="milp", choices=["milp", "lp_round"])
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per MILP")
    ap.add_argument("--iterations", type=int, default=5, help="measured iterations per run")
    ap.add_argument("--warmups", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (profile and run)")
    ap.add_argument("--db", default=None, help="database to use (default: a fresh temporary one)")
    ap.add_argument("--no-profile", action="store_true",
                    help="solve with modelled costs (the runtime target is then meaningless)")
    ap.add_argument("--quick", action="store_true",
                    help="2 budgets, 2 iterations, 1 warm-up, 20 s per MILP")
    args = ap.parse_args()
    if args.quick:
        args.points, args.iterations, args.warmups = 2, 2, 1
        args.time_limit = min(args.time_limit, 20.0)
    torch.set_num_threads(args.threads)
    shape = parse_shape(args.input) if args.input else None
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory()
        args.db = os.path.join(tmp.name, "bench.db")
    print(f"# bench_execute {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {platform.machine()} {os.cpu_count()} cores; python "
          f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s); "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    from solver.commands import load_instance
    with costdb.open(args.db, create=True) as db:
        have = False
        try:
            mid = db.resolve_model(args.model, args.batch, shape)
            have = mid in db.measured_models("local")
        except CostdbError:
            pass
    if not have and not args.no_profile:
        from profiler.session import profile
        t0 = time.perf_counter()
        profile(args.db, device="local", model=args.model, batch=args.batch, input_shape=shape,
                threads=args.threads, in_context=True)
        print(f"# profiled {args.model} on local in {time.perf_counter() - t0:.0f} s")
    with costdb.open(args.db, create=True) as db:
        inst = load_instance(db, "local", args.model, None, args.batch, args.input)
    from solver.commands import run_solve
    from solver.execute import run_schedule
    from solver.solve import InfeasibleError, min_feasible_budget
    lo, exact = min_feasible_budget(inst, "integrated", solver=args.solver,
                                    time_limit=args.time_limit)
    hi = inst.no_savings_peak()
    budgets = sorted({int(lo + k * (hi - lo) / args.points) for k in range(args.points)})
    print(f"# {inst.name}: {inst.n} solver nodes, costs {inst.cost_provenance()}; fixed "
          f"{fmt_bytes(inst.fixed_bytes)}; minimum feasible budget {fmt_bytes(lo)}"
          f"{'' if exact else ' (upper bound)'}, no-savings peak {fmt_bytes(hi)}")
    print("# energy on local is modelled (measured compute time x the profile's power + paging "
          "model): there is no sensor on this machine")
    print("| budget | mode | status | runtime pred | runtime meas | err | act. peak pred | "
          "act. peak meas | peak <= budget | paged out pred / meas | energy pred | energy meas | "
          "recomputes | check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    inv = Inventory(None, {})
    for b in budgets:
        for mode in args.modes.split(","):
            try:
                res, _, sid = run_solve(args.db, "local", args.model, memory=f"{b}B", mode=mode,
                                        solver=args.solver, time_limit=args.time_limit,
                                        method=args.method, batch=args.batch,
                                        input_shape=args.input)
            except InfeasibleError:
                print(f"| {fmt_bytes(b)} | {mode} | infeasible | | | | | | | | | | | |")
                continue
            rec = run_schedule(args.db, sid, "local", inventory=inv, iterations=args.iterations,
                               warmups=args.warmups)
            err = rec.runtime_s / rec.predicted_runtime_s - 1
            ok_peak = rec.peak_memory_bytes <= b
            rows.append((b, mode, rec, err, ok_peak))
            print(f"| {fmt_bytes(b)} | {mode} | {res.status} | {1e3 * rec.predicted_runtime_s:.1f} ms | "
                  f"{1e3 * rec.runtime_s:.1f} ms | {100 * err:+.1f}% | "
                  f"{fmt_bytes(rec.predicted_activation_peak_bytes)} | "
                  f"{fmt_bytes(rec.activation_peak_bytes)} | {'yes' if ok_peak else 'NO'} | "
                  f"{fmt_bytes(rec.predicted_pageout_bytes)} / {fmt_bytes(rec.pageout_bytes)} | "
                  f"{1e3 * rec.predicted_energy_j:.1f} mJ | {1e3 * rec.energy_j:.1f} mJ | "
                  f"{rec.recomputes} | {'bit-exact' if rec.bit_exact else 'tolerance'} |")
    print(f"# load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if rows:
        peaks = all(r[4] for r in rows)
        within = sum(abs(r[3]) <= 0.10 for r in rows)
        print(f"# peak <= budget at every point: {'yes' if peaks else 'NO'}; runtime within "
              f"+-10 %: {within}/{len(rows)}")
        for b in budgets:
            e = {m: r.energy_j for bb, m, r, _, _ in rows if bb == b}
            if "integrated" in e and len(e) > 1:
                order = all(e["integrated"] <= v * (1 + 1e-9) for v in e.values())
                print(f"# {fmt_bytes(b)}: measured energy integrated <= others: "
                      f"{'yes' if order else 'NO'} ({', '.join(f'{m} {1e3 * v:.1f} mJ' for m, v in e.items())})")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
