"""Cortex-M firmware benchmark on the emulated boards (QEMU, -icount).

Prints, all labelled *emulated* (QEMU instruction counts at CPI = 1, not real-board cycles;
instruction counts do not depend on the host's load):
  1. instructions per MAC of the training kernels on qemu-m4f, forward, backward-data and
     backward-weight listed separately: int8 with the SIMD kernels (SXTB16/SMLAD), int8 with the
     portable C kernels (a KERNELS=portable build of the same firmware) and float32, against the
     targets of issue 14 (int8 SIMD: conv 3x3 <= 4, conv 1x1 <= 3, depthwise <= 6, fully
     connected <= 2.5, backward <= 8);
  2. per board (qemu-m4f, qemu-m0): the protocol round trip (PING), the smallest op request,
     and the wall time to profile every distinct training op of tinycnn (float32 and int8,
     with how many ran tiled to fit the arena), and the link statistics.
Wall times depend on the host (load average printed at start and end).

    python benchmarks/bench_mcu.py [--boards qemu-m4f,qemu-m0] [--pings 200] [--quick]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

from costdb.errors import CostdbError

from devices.serial.build import build_firmware
from devices.serial.ops import K, quantize_multiplier
from devices.serial.protocol import RunRequest
from devices.serial.qemu import QemuBoard
from devices.serial.transport import SerialAgent, open_serial_agent
from profiler.zoo import model_graph

CONV = [  # label, params (N C H W OC KH KW SH SW PH PW G), int8 SIMD target fwd
    ("conv 3x3 8->16 @16x16", [1, 8, 16, 16, 16, 3, 3, 1, 1, 1, 1, 1], 4.0),
    ("conv 1x1 32->32 @16x16", [1, 32, 16, 16, 32, 1, 1, 1, 1, 0, 0, 1], 3.0),
    ("depthwise 3x3 32 @16x16", [1, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 32], 6.0),
    ("depthwise 3x3 64 @24x24", [1, 64, 24, 24, 64, 3, 3, 1, 1, 1, 1, 64], 6.0),
]
FC = [  # label, (N IN OUT), target fwd
    ("fully connected 256->64, batch 1", [1, 256, 64], 2.5),
    ("fully connected 384->128, batch 1", [1, 384, 128], 2.5),
    ("fully connected 256->64, batch 16", [16, 256, 64], 2.5),
]
BWD_TARGET = 8.0


def conv_macs(p: list[int]) -> int:
    n, c, h, w, oc, kh, kw, sh, sw, ph, pw, g = p
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return n * oc * oh * ow * (c // g) * kh * kw


def per_mac(agent: SerialAgent, kname: str, dtype: str, p: list[int], macs: int) -> str:
    qm, qs = quantize_multiplier(0.003)
    res, _ = agent.run(RunRequest(K[kname], dtype, p, samples=3, warmups=1, bias=True,
                                  qmult=qm, qshift=qs))
    if res["status"] != "ok":
        return f"{res['status']}"
    return f"{agent.ticks_to_cycles(statistics.median(res['ticks'])) / macs:.2f}"


def kernel_table(simd: SerialAgent, portable: SerialAgent, quick: bool) -> None:
    print("\n## instructions per MAC on qemu-m4f (emulated, QEMU -icount, CPI = 1)")
    print("| kernel | phase | int8 SIMD | target | int8 portable | float32 |")
    print("|---|---|---|---|---|---|")
    cases = [(lbl, "conv", p, conv_macs(p), t) for lbl, p, t in CONV] + \
            [(lbl, "linear", p, p[0] * p[1] * p[2], t) for lbl, p, t in FC]
    if quick:
        cases = cases[:1] + cases[2:3] + cases[4:5]
    for label, kind, p, macs, target in cases:
        for phase in ("fwd", "bwd_data", "bwd_weight"):
            kname = f"{kind}_{phase}"
            s8 = per_mac(simd, kname, "int8", p, macs)
            tgt = target if phase == "fwd" else BWD_TARGET
            ok = "" if not s8[0].isdigit() else (" (met)" if float(s8) <= tgt else " (NOT met)")
            print(f"| {label} | {phase} | {s8} | <= {tgt:g}{ok} | "
                  f"{per_mac(portable, kname, 'int8', p, macs)} | "
                  f"{per_mac(simd, kname, 'float32', p, macs)} |")


def board_figures(agent: SerialAgent, pings: int) -> None:
    facts = agent.facts
    rtt = sorted(agent.ping() for _ in range(max(10, pings)))
    relu = RunRequest(K["relu_fwd"], "int8", [16], samples=1, warmups=0)
    t0 = time.perf_counter()
    for _ in range(100):
        agent.run(relu)
    per_op = (time.perf_counter() - t0) / 100
    print(f"round trip (PING, empty payload): median {statistics.median(rtt) * 1e3:.3f} ms, "
          f"p90 {rtt[int(0.9 * len(rtt))] * 1e3:.3f} ms")
    print(f"smallest op request (RUN relu int8 x16, 1 sample): {per_op * 1e3:.3f} ms per op")
    for dtype in ("float32", "int8"):
        specs = [dict(s, dtype=dtype) for s in model_graph("tinycnn").distinct_specs()]
        t0 = time.perf_counter()
        rows = [agent.measure(s, {"samples": 5, "warmups": 1}) for s in specs]
        wall = time.perf_counter() - t0
        n_ok = sum(r["status"] == "ok" for r in rows)
        tiled = [r for r in rows if "tiling" in r and r["status"] == "ok"]
        total = sum(r["runtime"]["median"] for r in rows if r["status"] == "ok")
        print(f"profile tinycnn {dtype} ({len(specs)} distinct training ops, 5 samples each): "
              f"{wall:.3f} s wall, {n_ok}/{len(specs)} ok ({len(tiled)} tiled to fit the "
              f"{facts['arena_bytes']} B arena); sum of op medians {total * 1e3:.1f} ms emulated")
    link = agent.link_stats()
    print("link: " + ", ".join(f"{k} {link[k]}" for k in (
        "requests", "frames", "retries", "timeouts", "crc_errors", "incomplete", "naks",
        "protocol_errors", "pokes", "stale_frames", "rx_overruns")))


def run(args: argparse.Namespace) -> None:
    print("# bench_mcu (emulated: QEMU -icount instruction counts, CPI=1; not real-board cycles)")
    print(f"# host: {platform.node()} {platform.machine()} python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t_all = time.perf_counter()
    boards = [b.strip() for b in args.boards.split(",") if b.strip()]
    if "qemu-m4f" in boards:
        portable_elf = build_firmware("qemu-m4f", options={"KERNELS": "portable"})
        with QemuBoard("qemu-m4f") as q, QemuBoard("qemu-m4f", elf=portable_elf) as qp:
            simd = open_serial_agent(q.url, board="qemu-m4f", emulated=True)
            portable = open_serial_agent(qp.url, board="qemu-m4f", emulated=True)
            f = simd.hello()["facts"]
            portable.hello()
            print(f"# qemu-m4f: firmware {f['fw']} protocol {f['proto']} kernels "
                  f"{f['kernels']} / {portable.facts['kernels']}, clock {f['clock_hz']} Hz, "
                  f"arena {f['arena_bytes']} B, icount shift {simd.icount_shift}")
            kernel_table(simd, portable, args.quick)
            portable.close()
            print("\n## qemu-m4f")
            board_figures(simd, args.pings)
            simd.close()
    for board in boards:
        if board == "qemu-m4f":
            continue
        with QemuBoard(board) as q:
            agent = open_serial_agent(q.url, board=board, emulated=True)
            f = agent.hello()["facts"]
            print(f"\n## {board}: firmware {f['fw']} kernels {f['kernels']}, clock "
                  f"{f['clock_hz']} Hz, arena {f['arena_bytes']} B, RAM {f['ram_bytes']} B")
            board_figures(agent, args.pings)
            agent.close()
    print(f"\ntotal wall time including firmware build check and QEMU start/stop: "
          f"{time.perf_counter() - t_all:.2f} s; load average at the end "
          f"{os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boards", default="qemu-m4f,qemu-m0")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="fewer kernel cases (a smoke run)")
    args = ap.parse_args()
    try:
        run(args)
    except CostdbError as e:     # a link that fails for good: one line, not a traceback
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
