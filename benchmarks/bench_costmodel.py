"""Benchmark: does the cost model predict a real training iteration? (issue 10's target)

For each model x batch x threads: profile the model on ``local`` into a fresh database (isolated
ops, then the in-context step), read the per-node costs of the default estimate (``costdb
costs``' choice, in-context) and of the isolated one from the database, and compare their sums, total and per phase (fwd = forward +
loss, bwd = backward, update = zero_grad + optimizer step), with an INDEPENDENT timing run of
whole iterations of a freshly built copy of the model (``profiler.iteration.measure_iteration``:
the user's own nn.Module, no profiler, no instrumentation), taken after the profile.

Target: within +-5 % for resnet18, mobilenetv2 and bert-tiny at batch 2, 8, 32 and 1 and 2
threads, median CV across ops <= 5 %, on a quiet machine. A row measured while the 1-minute load
average exceeded ``--max-load`` x cores (before or after the row) is marked BUSY and left out of
the verdict; with ``--refuse-busy`` the benchmark stops instead.

    python benchmarks/bench_costmodel.py                      # the full grid (quiet machine)
    python benchmarks/bench_costmodel.py --models resnet18 --batches 8 --threads 1 --quick
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

import torch

import costdb
from costdb.units import parse_shape
from profiler.iteration import PHASE_GROUPS, measure_iteration
from profiler.session import profile

PHASES = ("total", *PHASE_GROUPS)


def _load() -> float:
    return os.getloadavg()[0]


def _predict(costs: Any) -> dict[str, float]:
    group = {p: k for k, ps in PHASE_GROUPS.items() for p in ps}
    out = {k: 0.0 for k in PHASES}
    for phase, rt in zip(costs["phase"], costs["runtime_s"]):
        out[group[phase]] += float(rt)
        out["total"] += float(rt)
    return out


def run_case(model: str, batch: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """One row: profile into a fresh DB, predict from each estimate, time an independent run."""
    shape = parse_shape(args.input) if args.input else None
    torch.set_num_threads(threads)
    load0 = _load()
    t0 = time.perf_counter()
    row: dict[str, Any] = {"model": model, "batch": batch, "threads": threads, "load0": load0}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.db")
        settings = {"samples": args.samples, "cache": "warm",
                    "in_context_iterations": args.iterations}
        res = profile(path, device="local", model=model, batch=batch, input_shape=shape,
                      threads=threads, settings=settings, in_context=True)
        ic = res.in_context
        with costdb.open(path) as db:
            default = db.costs("local", res.model_key)          # what every command uses
            other = db.costs("local", res.model_key, kind="isolated")
        row["default_kind"] = default.attrs["kind"]
        for name, df in (("in_context", default), ("isolated", other)):
            row[name] = _predict(df)
            row[f"cv_{name}"] = float(df.drop_duplicates("signature")["runtime_cv"].median())
        row["unattributed_share"] = ic["unattributed_share"]
        row["overhead_share"] = ic["overhead_removed_share"]
        row["profiled_wall_s"] = ic["wall_s"]
        row["events"] = ic["events_per_iteration"]
        row["in_situ"] = ic.get("in_situ_cost_per_event_s") or {}
    row["profile_wall_s"] = time.perf_counter() - t0
    # the independent check: a fresh model instance, plain iterations, no profiler
    it = measure_iteration(model, batch, shape, warmups=3, samples=args.check_samples)
    row["measured"] = {"total": it["median"], **{k: it["phases"][k]["median"] for k in PHASE_GROUPS}}
    row["measured_cv"] = it["cv"]
    row["load1"] = _load()
    cores = os.cpu_count() or 1
    # the load average counts this benchmark's own threads (up to the grid's largest thread
    # count): busy means OTHER work above --max-load x cores
    own = max(int(t) for t in args.threads.split(","))
    row["busy"] = max(load0, row["load1"]) - own > args.max_load * cores
    # diagnostic: the profiler cost per event implied by the profiled iteration against the
    # independent one, beside the in-situ figures (fwd / bwd / update) the correction used
    row["implied_per_event_s"] = (row["profiled_wall_s"] - it["median"]) / max(1.0, row["events"])
    for est_name in ("in_context", "isolated"):
        row[f"err_{est_name}"] = {k: (row[est_name][k] - row["measured"][k]) / row["measured"][k]
                                  for k in PHASES}
    return row


def _fmt_err(e: dict[str, float]) -> str:
    return " / ".join(f"{100 * e[k]:+.1f}" for k in PHASES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenetv2,bert-tiny")
    ap.add_argument("--batches", default="2,8,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--input", default=None, help="input shape for every model (default: each model's)")
    ap.add_argument("--iterations", type=int, default=40, help="profiled in-context iterations")
    ap.add_argument("--samples", type=int, default=15, help="isolated samples per op")
    ap.add_argument("--check-samples", type=int, default=30, help="independent timed iterations")
    ap.add_argument("--max-load", type=float, default=0.5,
                    help="mark a row BUSY when the 1-min load average exceeds this x cores")
    ap.add_argument("--refuse-busy", action="store_true", help="stop at the first busy row")
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples (5 profiled iterations, 7 isolated samples, 10 checks)")
    args = ap.parse_args()
    if args.quick:
        args.iterations, args.samples, args.check_samples = 5, 7, 10
    cores = os.cpu_count() or 1
    print(f"# bench_costmodel {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {platform.machine()} {cores} cores, {platform.processor() or '?'}; "
          f"python {platform.python_version()}, torch {torch.__version__}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; busy when the load beyond the benchmark's own threads exceeds {args.max_load * cores:.1f}")
    print("# errors: prediction vs an independent measured iteration, total / fwd / bwd / update (%)")
    print("| model | batch | threads | load (start-end) | iteration (CV) | in_context error | "
          "isolated error | median CV in_context / isolated | unattributed | profiler overhead | "
          "cost per event implied / in situ fwd, bwd, update | profile wall | default | flag |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for th in (int(t) for t in args.threads.split(",")):
                own = max(int(t) for t in args.threads.split(","))
                if args.refuse_busy and _load() - own > args.max_load * cores:
                    print(f"refusing to measure: load average {_load():.2f} on {cores} cores "
                          f"exceeds {args.max_load * cores:.1f}; stop other work and rerun")
                    sys.exit(1)
                r = run_case(model, batch, th, args)
                rows.append(r)
                print(f"| {model} | {batch} | {th} | {r['load0']:.2f}-{r['load1']:.2f} | "
                      f"{1e3 * r['measured']['total']:.2f} ms ({100 * r['measured_cv']:.1f}%) | "
                      f"{_fmt_err(r['err_in_context'])} | {_fmt_err(r['err_isolated'])} | "
                      f"{100 * r['cv_in_context']:.1f}% / {100 * r['cv_isolated']:.1f}% | "
                      f"{100 * r['unattributed_share']:.2f}% | {100 * r['overhead_share']:.2f}% | "
                      f"{1e6 * r['implied_per_event_s']:.2f} / "
                      f"{', '.join(f'{1e6 * v:.2f}' for v in r['in_situ'].values()) or '-'} us | "
                      f"{r['profile_wall_s']:.0f} s | {r['default_kind']} | {'BUSY' if r['busy'] else ''} |",
                      flush=True)
    quiet = [r for r in rows if not r["busy"]]
    print(f"# {len(quiet)} of {len(rows)} rows measured on a quiet machine")
    for est in ("in_context", "isolated"):
        if not quiet:
            break
        within = sum(abs(r[f"err_{est}"]["total"]) <= 0.05 for r in quiet)
        worst = max(quiet, key=lambda r: abs(r[f"err_{est}"]["total"]))
        cv = statistics.median(r[f"cv_{est}"] for r in quiet)
        print(f"# {est}: {within}/{len(quiet)} quiet rows within +-5% (worst "
              f"{100 * worst[f'err_{est}']['total']:+.1f}% {worst['model']} b{worst['batch']} "
              f"t{worst['threads']}); median over rows of the median CV across ops {100 * cv:.2f}%")
    if not quiet:
        print("# no quiet rows: the machine was busy throughout; no verdict")


if __name__ == "__main__":
    main()
