"""Overhead of profiling through ssh versus ``local`` for the same op set on this machine.

Starts a real sshd on 127.0.0.1 (tests/sshd.py), then profiles the same model with the same
settings on ``local`` (in-process agent) and on an ssh device whose agent runs on this machine
through the loopback sshd (python = this interpreter). Runs alternate (local, ssh, local, ssh ...)
with ``force`` so every run measures every op; wall time is the whole ``profile()`` call:
connect, agent upload/start (torch import on the "device"), hello, every op, session end.

    python benchmarks/bench_ssh.py [--model resnet18] [--batch 8] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sshd import Sshd  # noqa: E402

from devices.inventory import Inventory  # noqa: E402
from profiler.session import profile  # noqa: E402
from profiler.zoo import model_graph  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--min-sample-time", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cv-threshold", type=float, default=1e9,
                    help="re-measure ops above this CV (default: never, so that both transports "
                         "do the same work whatever the machine's noise)")
    args = ap.parse_args()
    import torch
    threads = args.threads or torch.get_num_threads()
    settings = {"samples": args.samples, "min_sample_time": args.min_sample_time,
                "cv_threshold": args.cv_threshold}
    graph = model_graph(args.model, args.batch, None)
    n_ops = len(graph.distinct_specs())
    tmp = Path(tempfile.mkdtemp(prefix="costdb-bench-ssh-"))
    server = Sshd(tmp / "sshd").start()
    server.trust()
    entry = server.inventory_entry("rpi4b", threads=threads)
    inv = Inventory(None, {"rpi4b": entry})
    times: dict[str, list[float]] = {"local": [], "ssh": []}
    try:
        for r in range(args.repeats):
            for dev in ("local", "ssh"):
                db = str(tmp / f"{dev}-{r}.db")
                t0 = time.perf_counter()
                res = profile(db, device="local" if dev == "local" else "rpi4b", model=graph,
                              force=True, threads=threads, settings=settings, inventory=inv)
                dt = time.perf_counter() - t0
                assert res.status == "complete" and res.measured == n_ops, res
                times[dev].append(dt)
                print(f"run {r + 1} {dev:5s} {dt:7.2f} s", file=sys.stderr)
        # what the ssh run spends before the first op: connect, hash check, agent start
        from devices.ssh import open_ssh_agent
        t0 = time.perf_counter()
        agent = open_ssh_agent(entry, threads=threads)
        start_s = time.perf_counter() - t0
        agent.close()
    finally:
        server.stop()
    loc, ssh = statistics.median(times["local"]), statistics.median(times["ssh"])
    print(f"# bench_ssh: {args.model} batch {args.batch}, {n_ops} distinct ops, samples "
          f"{args.samples}, min_sample_time {args.min_sample_time} s, cv_threshold "
          f"{args.cv_threshold:g}, {threads} threads, {args.repeats} alternating runs each")
    print(f"# load average during the runs: {os.getloadavg()[0]:.1f}")
    print(f"# host: {platform.node()} {platform.machine()} {os.cpu_count()} cores, python "
          f"{platform.python_version()}, torch {torch.__version__}")
    print()
    print("| transport | runs (s) | median (s) |")
    print("|---|---|---|")
    for dev, ts in times.items():
        print(f"| {dev} | {', '.join(f'{t:.2f}' for t in ts)} | {statistics.median(ts):.2f} |")
    print()
    print(f"ssh overhead: {ssh - loc:+.2f} s ({100 * (ssh - loc) / loc:+.1f}%) of which agent "
          f"connect+start (cached bundle) {start_s:.2f} s; per op "
          f"{1000 * (ssh - loc - start_s) / n_ops:+.2f} ms")


if __name__ == "__main__":
    main()
