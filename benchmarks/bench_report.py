"""Report generation time for a large database: 10,000 distinct ops and 1,000 Pareto points.

    python benchmarks/bench_report.py [--ops 10000] [--points 1000] [--repeat 3] [--keep DIR]

Builds the database through the real schema (``costdb.open`` creates and migrates it) with plain
inserts into the real tables: one device, one session, a model whose graph has one node per
distinct op, one measurement per op, a whole-iteration measurement, and 1,000 Pareto points plus
a stored schedule (tables ``sweeps``, ``schedules``, ``pareto_points``), all measurements under one
settings fingerprint (schema v4).
Prints the build time, the report generation time (median of --repeat runs, in a fresh process
state after the first) and the size of the HTML.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import costdb  # noqa: E402

PHASES = ("fwd", "bwd_data", "bwd_weight", "update")
OPS = ("conv2d", "linear", "relu", "batch_norm", "max_pool2d", "add", "sgd")
def _insert_many(con, table: str, rows: list[dict]) -> None:
    cols = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
    keys = [k for k in rows[0] if k in cols]
    con.executemany(f"INSERT INTO {table} ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                    [tuple(r[k] for k in keys) for r in rows])


def build(path: str, n_ops: int, n_points: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    now = "2026-01-01T00:00:00.000+00:00"
    db = costdb.open(path, create=True)
    from costdb.settings import SettingsRecord
    settings_id = db.add_settings(SettingsRecord(threads=4, affinity="0-3", cache="warm",
                                                 dtype="float32", compute_unit="cpu",
                                                 torch_version="2.3.0", agent_version="1"))
    con = db.conn
    profile = {"name": "bench", "board": "Raspberry Pi 4 Model B", "cpu": "4x Cortex-A72", "cores": 4,
               "clock_hz": 1.5e9, "ram_bytes": 4 << 30, "active_power_w": 3.0, "idle_power_w": 2.7,
               "flops_per_s": 2e9, "energy_sensors": [], "compute_units": ["cpu"],
               "storage": {"kind": "microSD", "read_bytes_per_s": 45.5e6, "write_bytes_per_s": 24.5e6,
                           "read_latency_s": 5.1e-6, "write_latency_s": 18.5e-6},
               "sources": {"power": "POET chipsets.py"}}
    with con:
        con.execute("INSERT INTO devices (name, board, cpu, arch, transport, profile_json, first_seen,"
                    " last_seen) VALUES ('bench', ?, ?, 'aarch64', 'ssh', ?, ?, ?)",
                    (profile["board"], profile["cpu"], json.dumps(profile), now, now))
        env = {"facts": {"cpu_model": "Cortex-A72", "cores": 4, "kernel": "6.6.31", "python": "3.11.2",
                         "torch": "2.3.0", "governors": ["performance"] * 4,
                         "temperatures_c": {"cpu": 52.1}}}
        sid = con.execute("INSERT INTO sessions (device, status, started_at, ended_at, host, costdb_version,"
                          " agent_version, planned, measured, environment_json, settings_json,"
                          " warnings_json) VALUES ('bench', 'complete', ?, ?, 'bench', '0.1.0', '1', ?, ?,"
                          " ?, '{}', '[]')", (now, now, n_ops, n_ops, json.dumps(env))).lastrowid
        ops, nodes, meas = [], [], []
        for i in range(n_ops):
            sig = f"{i:020x}"
            op, phase = OPS[i % len(OPS)], PHASES[i % len(PHASES)]
            shape = [rnd.choice((1, 4, 8)), rnd.choice((16, 32, 64)), rnd.choice((8, 16, 32)), 32]
            ops.append({"signature": sig, "op": op, "phase": phase, "dtype": "float32",
                        "inputs_json": json.dumps([shape]), "params_json": "{}", "attrs_json": "{}",
                        "grad_inputs_json": "[]", "spec_json": "{}"})
            nodes.append({"model_id": 1, "idx": i, "name": f"layer{i // 4}:{phase}", "layer": f"layer{i // 4}",
                          "op": op, "phase": phase, "signature": sig,
                          "deps_json": json.dumps([i - 1] if i else []),
                          "input_shapes_json": json.dumps([shape]), "output_shape_json": json.dumps(shape),
                          "flops": rnd.randrange(10**4, 10**8), "output_bytes": rnd.randrange(1 << 10, 1 << 22),
                          "param_bytes": 0})
            rt = rnd.lognormvariate(-8, 1.5)
            cv = rnd.uniform(0.005, 0.15)
            meas.append({"device": "bench", "signature": sig, "session_id": sid, "status": "ok",
                         "settings_id": settings_id, "kind": "isolated",
                         "runtime_s": rt, "runtime_mean_s": rt, "runtime_stdev_s": rt * cv,
                         "runtime_iqr_s": rt * cv * 1.3, "runtime_min_s": rt * 0.9, "runtime_max_s": rt * 1.2,
                         "runtime_cv": cv, "samples": 15, "inner_loops": 8, "unstable": int(cv > 0.1),
                         "remeasured": 0, "runtime_provenance": "measured",
                         "peak_memory_bytes": rnd.randrange(1 << 10, 1 << 24), "output_bytes": 4096,
                         "energy_j": rt * 0.3, "energy_net_j": rt * 0.3, "energy_provenance": "modeled",
                         "measured_at": now})
        con.execute("INSERT INTO models (id, key, name, batch, input_shape, dtype, n_nodes, n_signatures,"
                    " param_bytes, activation_bytes, created_at) VALUES (1, 'big[batch=8,input=3x32x32,"
                    "dtype=float32]', 'big', 8, '3x32x32', 'float32', ?, ?, 0, 0, ?)", (n_ops, n_ops, now))
        _insert_many(con, "ops", ops)
        _insert_many(con, "graph_nodes", nodes)
        _insert_many(con, "measurements", meas)
        total = sum(m["runtime_s"] for m in meas)
        con.execute("INSERT INTO iterations (device, model_id, session_id, runtime_s, runtime_cv, samples,"
                    " threads, optimizer, runtime_provenance, measured_at, settings_id) VALUES ('bench',"
                    " 1, ?, ?, 0.02, 15, 4, 'sgd', 'measured', ?, ?)", (sid, total * 1.07, now, settings_id))
        sweep_id = con.execute("INSERT INTO sweeps (device, model_id, mode, n_points, status, started_at)"
                               " VALUES ('bench', 1, 'integrated', ?, 'done', ?)",
                               (n_points, now)).lastrowid
        n_sched = 64
        stages = [{"compute": [t] + ([t - 3] if t % 7 == 0 and t > 3 else []), "keep": [t],
                   "pagein": [t - 5] if t % 11 == 0 and t > 5 else [],
                   "pageout": [t - 1] if t % 11 == 6 else []} for t in range(n_sched)]
        sched = {"format": "costdb-schedule/1", "n": n_sched, "stages": stages}
        sched_id = con.execute(
            "INSERT INTO schedules (device, model_id, mode, budget_bytes, deadline_s, solver, status,"
            " energy_j, runtime_s, peak_memory_bytes, solve_time_s, schedule_json, created_at)"
            " VALUES ('bench', 1, 'integrated', ?, 2.0, 'highs', 'optimal', ?, ?, ?, 12.5, ?, ?)",
            (256 << 20, total * 0.3 * 1.1, total * 1.2, 250 << 20, json.dumps(sched), now)).lastrowid
        points = []
        modes = ("integrated", "remat", "paging", "checkpoint_all")
        for k in range(n_points):
            mode = modes[k % len(modes)]
            budget = rnd.randrange(32 << 20, 1 << 30)
            e = total * 0.3 * (1 + (1 << 30) / budget / 20) * (1 + 0.1 * (k % len(modes)))
            points.append({"sweep_id": sweep_id, "device": "bench", "model_id": 1, "mode": mode,
                           "budget_bytes": budget, "deadline_s": 2.0, "energy_j": e * rnd.uniform(1, 1.05),
                           "runtime_s": total * rnd.uniform(1, 1.6), "peak_memory_bytes": budget,
                           "schedule_id": sched_id if k == 0 else None, "pareto": 0, "status": "optimal",
                           "created_at": now})
        _insert_many(con, "pareto_points", points)
    db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", default=None, help="Directory to keep the database and report in.")
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_report."))
    tmp.mkdir(parents=True, exist_ok=True)
    db_path = str(tmp / "bench.db")
    Path(db_path).unlink(missing_ok=True)
    t0 = time.perf_counter()
    build(db_path, args.ops, args.points)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    from reports.build import write_report  # imports matplotlib, jinja2 (counted separately)
    t_import = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = write_report(db_path, tmp / "bench.html", devices=["bench"])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    size = out.stat().st_size
    print(f"database: {args.ops} distinct ops / graph nodes, {args.points} Pareto points "
          f"(built in {t_build:.2f} s)")
    print(f"import reports.build (matplotlib, jinja2): {t_import:.2f} s")
    print(f"report generation: first {times[0]:.2f} s, median {statistics.median(times):.2f} s "
          f"over {len(times)} runs (import + first run: {t_import + times[0]:.2f} s); CPU time "
          f"median {statistics.median(cpu):.2f} s")
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.2f} on {os.cpu_count()} CPUs"
          + (" (machine busy: wall times inflated)" if load > (os.cpu_count() or 1) else ""))
    print(f"HTML: {size / 2**20:.1f} MiB -> {out}")


if __name__ == "__main__":
    main()
