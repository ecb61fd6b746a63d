"""Schedules, sweeps and Pareto points in the cost database (tables of schema v3,
docs/data-model.md). Every schedule is replayed by the simulator before it is written; a
disagreement with the solver's record raises ``SolverBug`` and nothing is stored."""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from costdb.errors import CostdbError
from costdb.records import now_iso
from solver.problem import Instance, compat_instance
from solver.schedule import Schedule
from solver.simulate import ScheduleError, simulate
from solver.solve import SolveResult, SolverBug


def _validate(inst: Instance, res: SolveResult) -> None:
    if res.schedule is None:
        return
    sim_inst = compat_instance(inst) if res.schedule.compat else inst
    try:
        sim = simulate(sim_inst, res.schedule, res.budget_bytes, res.deadline_s)
    except ScheduleError as e:
        raise SolverBug(f"refusing to store an invalid schedule: {e}") from None
    if not sim.ok:
        raise SolverBug("refusing to store a schedule that breaks its limits: " + "; ".join(sim.violations))
    if res.sim is not None:
        for a, b, what in ((sim.energy_j, res.sim.energy_j, "energy"),
                           (sim.runtime_s, res.sim.runtime_s, "runtime"),
                           (sim.peak_memory_bytes, res.sim.peak_memory_bytes, "peak memory")):
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15):
                raise SolverBug(f"refusing to store: replayed {what} {a} differs from the record {b}")


def save_schedule(db: Any, inst: Instance, res: SolveResult, sweep_id: int | None = None) -> int:
    """Validate and store a solve result (feasible or not); returns the schedules row id."""
    _validate(inst, res)
    names = [n.name for n in inst.nodes]
    sim = res.sim
    row = {
        "device": inst.device or None, "model_id": inst.model_id, "graph_name": inst.name,
        "graph_digest": inst.digest(), "granularity": inst.granularity, "mode": res.mode,
        "method": res.method, "compat": int(res.compat), "overlap": int(res.overlap),
        "budget_bytes": res.budget_bytes, "deadline_s": res.deadline_s, "solver": res.solver,
        "status": res.status, "objective_energy_j": res.objective_energy_j,
        "energy_j": sim.energy_j if sim else None, "bound_energy_j": res.bound_energy_j,
        "gap": res.gap, "runtime_s": sim.runtime_s if sim else None,
        "peak_memory_bytes": sim.peak_memory_bytes if sim else None,
        "compute_energy_j": sim.compute_energy_j if sim else None,
        "paging_energy_j": (sim.pagein_energy_j + sim.pageout_energy_j) if sim else None,
        "recomputes": sim.recomputes if sim else None, "pageins": sim.pageins if sim else None,
        "pageouts": sim.pageouts if sim else None, "solve_time_s": res.solve_time_s,
        "build_time_s": res.build_time_s, "n_variables": res.n_variables,
        "n_constraints": res.n_constraints, "n_nodes": res.n_nodes,
        "cost_provenance": res.cost_provenance, "validated": int(res.schedule is not None),
        "record_json": json.dumps(res.record(), default=str),
        "schedule_json": res.schedule.to_json(names) if res.schedule else None,
        "schedule_blob": res.schedule.to_bytes() if res.schedule else None,
        "sweep_id": sweep_id, "created_at": now_iso(),
    }
    with db.conn:
        cur = db.conn.execute(f"INSERT INTO schedules ({', '.join(row)}) VALUES "
                              f"({', '.join('?' for _ in row)})", tuple(row.values()))
    return int(cur.lastrowid)


def load_schedule(db: Any, schedule_id: int) -> tuple[Schedule, dict[str, Any]]:
    """(schedule, row) of a stored schedule; the binary blob and the JSON must agree."""
    cur = db.conn.execute("SELECT * FROM schedules WHERE id = ?", (schedule_id,))
    r = cur.fetchone()
    if r is None:
        raise CostdbError(f"schedule {schedule_id} is not in {db.path}; list them with "
                          "'costdb query \"SELECT id, device, mode FROM schedules\"'")
    row = dict(zip([d[0] for d in cur.description], r))
    if row["schedule_json"] is None:
        raise CostdbError(f"schedule {schedule_id} has no schedule (status {row['status']})")
    sched = Schedule.from_json(row["schedule_json"])
    if row["schedule_blob"] is not None and Schedule.from_bytes(row["schedule_blob"]).stages != sched.stages:
        raise CostdbError(f"schedule {schedule_id}: stored binary and JSON encodings differ")
    return sched, row


def schedules(db: Any, device: str | None = None) -> pd.DataFrame:
    sql = ("SELECT id, device, model_id, graph_name, mode, method, compat, budget_bytes, deadline_s,"
           " solver, status, energy_j, runtime_s, peak_memory_bytes, gap, solve_time_s,"
           " cost_provenance, created_at FROM schedules")
    args: tuple = ()
    if device:
        sql += " WHERE device = ?"
        args = (device,)
    return pd.read_sql_query(sql + " ORDER BY id", db.conn, params=args)


def create_sweep(db: Any, inst: Instance, mode: str, budgets: list[int], deadlines: list[float | None],
                 options: dict[str, Any], executor: str, objectives: list[str]) -> int:
    row = {"device": inst.device or None, "model_id": inst.model_id, "graph_name": inst.name,
           "graph_digest": inst.digest(), "mode": mode, "budgets_json": json.dumps(budgets),
           "deadlines_json": json.dumps(deadlines), "objectives_json": json.dumps(objectives),
           "options_json": json.dumps(options, default=str), "executor": executor,
           "n_points": len(budgets) * len(deadlines), "status": "running", "started_at": now_iso()}
    with db.conn:
        cur = db.conn.execute(f"INSERT INTO sweeps ({', '.join(row)}) VALUES "
                              f"({', '.join('?' for _ in row)})", tuple(row.values()))
    return int(cur.lastrowid)


def finish_sweep(db: Any, sweep_id: int, status: str = "done") -> None:
    with db.conn:
        db.conn.execute("UPDATE sweeps SET status = ?, ended_at = ? WHERE id = ?",
                        (status, now_iso(), sweep_id))


def save_point(db: Any, sweep_id: int, inst: Instance, res: SolveResult, schedule_id: int | None,
               pareto: bool, baseline: str | None = None) -> int:
    row = {"sweep_id": sweep_id, "device": inst.device or None, "model_id": inst.model_id,
           "graph_name": inst.name, "mode": res.mode, "baseline": baseline,
           "budget_bytes": res.budget_bytes, "deadline_s": res.deadline_s, "status": res.status,
           "energy_j": res.energy_j, "runtime_s": res.runtime_s,
           "peak_memory_bytes": res.peak_memory_bytes, "schedule_id": schedule_id,
           "pareto": int(pareto), "created_at": now_iso()}
    with db.conn:
        cur = db.conn.execute(f"INSERT INTO pareto_points ({', '.join(row)}) VALUES "
                              f"({', '.join('?' for _ in row)})", tuple(row.values()))
    return int(cur.lastrowid)


def pareto_points(db: Any, sweep_id: int | None = None) -> pd.DataFrame:
    sql = "SELECT * FROM pareto_points"
    args: tuple = ()
    if sweep_id is not None:
        sql += " WHERE sweep_id = ?"
        args = (sweep_id,)
    return pd.read_sql_query(sql + " ORDER BY id", db.conn, params=args)
