"""Cortex-M firmware benchmark on the emulated qemu-m4f board (QEMU mps2-an386, -icount).

Prints, all labelled *emulated* (QEMU instruction counts at CPI = 1, not real-board cycles):
cycles per MAC of int8 and float32 conv2d and fully-connected kernels; the protocol round trip
(PING) and per-op overhead; the wall time to profile tinycnn's training ops; and the link
statistics (retries, CRC errors, timeouts: all 0 on a healthy link, whatever the host load).

    python benchmarks/bench_mcu.py [--board qemu-m4f] [--pings 200]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

from costdb.errors import CostdbError

from devices.serial.ops import K
from devices.serial.protocol import RunRequest
from devices.serial.qemu import start_qemu_board
from devices.serial.transport import open_serial_agent
from profiler.zoo import model_graph

CASES = [  # (label, kernel, params, MACs)
    ("conv2d 3x3 8->16 @16x16", "conv_fwd", [1, 8, 16, 16, 16, 3, 3, 1, 1, 1, 1, 1],
     16 * 16 * 16 * 8 * 9),
    ("conv2d 1x1 32->32 @16x16", "conv_fwd", [1, 32, 16, 16, 32, 1, 1, 1, 1, 0, 0, 1],
     16 * 16 * 32 * 32),
    ("fully connected 256->64", "linear_fwd", [1, 256, 64], 256 * 64),
    ("fully connected 384->128", "linear_fwd", [1, 384, 128], 384 * 128),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", default="qemu-m4f")
    ap.add_argument("--pings", type=int, default=200)
    args = ap.parse_args()
    try:
        run(args)
    except CostdbError as e:     # a link that fails for good: one line, not a traceback
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> None:
    print(f"# bench_mcu on {args.board} (emulated: QEMU -icount instruction counts, CPI=1)")
    print(f"# host: {platform.node()} {platform.machine()} python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t_all = time.perf_counter()
    with start_qemu_board(args.board) as url:
        agent = open_serial_agent(url, board=args.board, emulated=True)
        facts = agent.hello()["facts"]
        print(f"# firmware {facts['fw']} protocol {facts['proto']} clock {facts['clock_hz']} Hz "
              f"arena {facts['arena_bytes']} B icount shift {agent.icount_shift}")
        print("\n| kernel | dtype | MACs | emulated cycles | cycles/MAC |")
        print("|---|---|---|---|---|")
        for label, kname, p, macs in CASES:
            for dtype in ("int8", "float32"):
                res, _ = agent.run(RunRequest(K[kname], dtype, p, samples=3, warmups=1,
                                              bias=True, qmult=1 << 30, qshift=-8))
                if res["status"] != "ok":
                    print(f"| {label} | {dtype} | {macs} | {res['status']} "
                          f"(needs {res['needed_bytes']} B) | - |")
                    continue
                cyc = agent.ticks_to_cycles(statistics.median(res["ticks"]))
                print(f"| {label} | {dtype} | {macs} | {cyc:.0f} | {cyc / macs:.2f} |")
        pings = sorted(agent.ping() for _ in range(max(10, args.pings)))
        relu = RunRequest(K["relu_fwd"], "int8", [16], samples=1, warmups=0)
        t0 = time.perf_counter()
        for _ in range(100):
            agent.run(relu)
        per_op = (time.perf_counter() - t0) / 100
        print(f"\nround trip (PING, empty payload): median {statistics.median(pings) * 1e3:.3f} ms,"
              f" p90 {pings[int(0.9 * len(pings))] * 1e3:.3f} ms")
        print(f"smallest op request (RUN relu int8 x16, 1 sample): {per_op * 1e3:.3f} ms per op")
        specs = model_graph("tinycnn").distinct_specs()
        t0 = time.perf_counter()
        rows = [agent.measure(s, {"samples": 5, "warmups": 1}) for s in specs]
        wall = time.perf_counter() - t0
        n_ok = sum(r["status"] == "ok" for r in rows)
        print(f"profile tinycnn ({len(specs)} distinct training ops, 5 samples each): "
              f"{wall:.3f} s, {n_ok} ok")
        link = agent.link_stats()
        print("link: " + ", ".join(f"{k} {link[k]}" for k in (
            "requests", "frames", "retries", "timeouts", "crc_errors", "incomplete", "naks",
            "protocol_errors", "pokes", "stale_frames", "rx_overruns")))
        agent.close()
    print(f"total wall time including firmware build check and QEMU start/stop: "
          f"{time.perf_counter() - t_all:.2f} s")


if __name__ == "__main__":
    main()
