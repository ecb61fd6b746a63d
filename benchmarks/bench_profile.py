"""Benchmark: profiling ResNet-18 training ops on the local device.

Prints (a) wall time to profile every distinct op into a fresh database, (b) the median
coefficient of variation across ops, and (c) the cost model's prediction error: the sum of
per-node medians against a measured whole training iteration (median of repeated iterations,
same threads). Targets from issue 3: (a) <= 60 s, (b) <= 5 %, (c) within +-10 %.

    python benchmarks/bench_profile.py [--model resnet18 --batch 8 --input 3x32x32 --threads N --rounds 3]
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

import torch

import costdb
from costdb.units import parse_shape
from profiler.iteration import measure_iteration
from profiler.session import profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input", default="3x32x32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="fresh-database profiles to run")
    ap.add_argument("--cache", choices=["warm", "cold"], default="warm")
    args = ap.parse_args()
    shape = parse_shape(args.input)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# bench_profile {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {platform.machine()} {os.cpu_count()} cores, {platform.processor() or '?'}, "
          f"load {os.getloadavg()[0]:.2f}; python {platform.python_version()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, cache {args.cache}")
    walls, cvs, errors, preds, meas = [], [], [], [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bench.db")
            t0 = time.perf_counter()
            res = profile(path, device="local", model=args.model, batch=args.batch, input_shape=shape,
                          threads=args.threads, settings={"cache": args.cache})
            wall = time.perf_counter() - t0
            with costdb.open(path) as db:
                ops = db.ops("local")
                costs = db.costs("local", args.model)
            predicted = float(costs["runtime_s"].sum())
            it = measure_iteration(args.model, args.batch, shape, samples=30)
            err = (predicted - it["median"]) / it["median"]
            walls.append(wall)
            cvs.append(float(ops["runtime_cv"].median()))
            errors.append(err)
            preds.append(predicted)
            meas.append(it["median"])
            print(f"round {r + 1}: {res.measured} distinct ops ({len(costs)} nodes) in {wall:.1f} s; "
                  f"median CV {100 * cvs[-1]:.2f}% (max {100 * ops['runtime_cv'].max():.1f}%, unstable "
                  f"{int(ops['unstable'].sum())}); predicted {1e3 * predicted:.2f} ms vs measured "
                  f"iteration {1e3 * it['median']:.2f} ms (CV {100 * it['cv']:.1f}%) -> {100 * err:+.1f}%")
            by_phase = costs.groupby("phase")["runtime_s"].sum()
            print("   per phase (ms): " + ", ".join(f"{k} {1e3 * v:.2f}" for k, v in by_phase.items()))
    print(f"(a) wall time to profile: median {statistics.median(walls):.1f} s (target <= 60 s)")
    print(f"(b) median CV across ops: median {100 * statistics.median(cvs):.2f}% (target <= 5%)")
    print(f"(c) prediction error: median {100 * statistics.median(errors):+.1f}% "
          f"(rounds: {', '.join(f'{100 * e:+.1f}%' for e in errors)}; target within +-10%)")


if __name__ == "__main__":
    main()
