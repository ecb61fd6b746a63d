"""Isolated op timings at 1 and at N torch intra-op threads under the machine's current load:
the measurement behind ``costdb profile``'s default thread count (docs/usage.md, "Threads on a
busy machine"; figures in docs/benchmarks.md).

    python benchmarks/bench_threads.py [--model resnet18] [--batch 8] [--ops 6] [--threads 2]
                                       [--rounds 3] [--samples 7]

Takes the ``--ops`` distinct training ops of the model's graph with the most FLOPs plus the
1x1-convolution backward ops (where the issue saw 101 ms at 2 threads and 0.35 ms at 1), and
measures each with the agent's own code (``devices.agent.measure.measure_op``, warm cache) at 1
thread and at ``--threads``, alternating the two ``--rounds`` times so that load changes hit
both alike. Prints per op the median of the round medians, the worst CV, and the ratio; then the
load average before and after. Run it on a busy machine to see the effect, on a quiet one to see
what one thread costs there.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input", default="3x32x32")
    ap.add_argument("--ops", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=7)
    a = ap.parse_args()

    import torch

    from devices.agent.measure import measure_op
    from profiler.zoo import model_graph
    g = model_graph(a.model, a.batch, tuple(int(x) for x in a.input.split("x")))
    flops = {}
    for n in g.nodes:
        flops[n.signature] = max(flops.get(n.signature, 0), n.flops or 0)
    specs = {s["signature"]: s for s in g.distinct_specs()}
    chosen = sorted(specs, key=lambda s: -flops[s])[:a.ops]
    chosen += [s for s, sp in specs.items() if sp["op"] == "conv2d" and sp["phase"].startswith("bwd")
               and list(sp["params"].get("weight", [0, 0, 0, 0]))[2:] == [1, 1] and s not in chosen][:2]
    settings = {"samples": a.samples, "min_sample_time": 0.01, "warmups": 2, "cv_threshold": 1e9}
    load0 = os.getloadavg()
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    saved = torch.get_num_threads()
    try:
        for _ in range(a.rounds):
            for threads in (1, a.threads):
                torch.set_num_threads(threads)
                for sig in chosen:
                    r = measure_op(specs[sig], settings, "cpu", None)
                    rt = r["runtime"]
                    results.setdefault((sig, threads), []).append((rt["median"], rt["cv"]))
    finally:
        torch.set_num_threads(saved)
    load1 = os.getloadavg()
    print(f"# bench_threads: {a.model} batch {a.batch} input {a.input}, {len(chosen)} ops, "
          f"{a.rounds} alternating rounds x {a.samples} samples; {os.cpu_count()} cores; load "
          f"average {load0[0]:.2f} before, {load1[0]:.2f} after")
    print(f"| op | 1 thread median | worst CV | {a.threads} threads median | worst CV | ratio |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for sig in chosen:
        sp = specs[sig]
        label = f"{sp['op']}:{sp['phase']} {'x'.join(map(str, sp['inputs'][0]))}"
        w = sp["params"].get("weight")
        if w:
            label += " w=" + "x".join(map(str, w))
        one = results[(sig, 1)]
        many = results[(sig, a.threads)]
        m1, mn = statistics.median(x for x, _ in one), statistics.median(x for x, _ in many)
        ratios.append(mn / m1)
        print(f"| {label} | {m1 * 1e3:.3f} ms | {100 * max(c for _, c in one):.0f}% | "
              f"{mn * 1e3:.3f} ms | {100 * max(c for _, c in many):.0f}% | {mn / m1:.2f}x |")
    print(f"\ngeometric mean of the ratios ({a.threads} threads / 1 thread): "
          f"{statistics.geometric_mean(ratios):.2f}x")


if __name__ == "__main__":
    main()
