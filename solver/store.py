"""Schedules, sweeps and Pareto points in the cost database (docs/data-model.md).

Every schedule is replayed by the simulator before it is written; a disagreement with the
solver's record raises ``SolverBug`` and nothing is stored. This module turns solver results into
the data layer's records (``costdb.records.ScheduleRecord`` ...) and hands them to
``costdb.Database``; it runs no SQL itself."""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from costdb.database import Database
from costdb.errors import CostdbError
from costdb.records import ParetoPointRecord, ScheduleRecord, SweepRecord
from solver.problem import Instance, compat_instance
from solver.schedule import Schedule
from solver.simulate import ScheduleError, simulate
from solver.solve import SolveResult, SolverBug

if TYPE_CHECKING:
    import pandas as pd


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


def schedule_record(inst: Instance, res: SolveResult, sweep_id: int | None = None) -> ScheduleRecord:
    """The ``schedules`` record of a solve result (replayed figures from its simulation)."""
    names = [n.name for n in inst.nodes]
    sim = res.sim
    return ScheduleRecord(
        device=inst.device or None, model_id=inst.model_id, graph_name=inst.name,
        graph_digest=inst.digest(), granularity=inst.granularity, mode=res.mode,
        method=res.method, compat=bool(res.compat), overlap=bool(res.overlap),
        budget_bytes=res.budget_bytes, deadline_s=res.deadline_s, solver=res.solver,
        status=res.status, objective_energy_j=res.objective_energy_j,
        energy_j=sim.energy_j if sim else None, bound_energy_j=res.bound_energy_j,
        gap=res.gap, runtime_s=sim.runtime_s if sim else None,
        peak_memory_bytes=sim.peak_memory_bytes if sim else None,
        compute_energy_j=sim.compute_energy_j if sim else None,
        paging_energy_j=(sim.pagein_energy_j + sim.pageout_energy_j) if sim else None,
        recomputes=sim.recomputes if sim else None, pageins=sim.pageins if sim else None,
        pageouts=sim.pageouts if sim else None, solve_time_s=res.solve_time_s,
        build_time_s=res.build_time_s, n_variables=res.n_variables,
        n_constraints=res.n_constraints, n_nodes=res.n_nodes,
        cost_provenance=res.cost_provenance, validated=res.schedule is not None,
        record=json.loads(json.dumps(res.record(), default=str)),
        schedule_json=res.schedule.to_json(names) if res.schedule else None,
        schedule_blob=res.schedule.to_bytes() if res.schedule else None,
        sweep_id=sweep_id, message=res.message or None,
        settings_id=inst.meta.get("settings_id"), cost_kind=inst.meta.get("cost_kind"))


def save_schedule(db: Database, inst: Instance, res: SolveResult, sweep_id: int | None = None) -> int:
    """Validate and store a solve result (feasible or not); returns the schedules row id."""
    _validate(inst, res)
    return db.add_schedule(schedule_record(inst, res, sweep_id))


def load_schedule(db: Database, schedule_id: int) -> tuple[Schedule, ScheduleRecord]:
    """(schedule, record) of a stored schedule; the binary blob and the JSON must agree."""
    rec = db.schedule(schedule_id)
    if rec.schedule_json is None:
        raise CostdbError(f"schedule {schedule_id} has no schedule (status {rec.status})")
    sched = Schedule.from_json(rec.schedule_json)
    if rec.schedule_blob is not None and Schedule.from_bytes(rec.schedule_blob).stages != sched.stages:
        raise CostdbError(f"schedule {schedule_id}: stored binary and JSON encodings differ")
    return sched, rec


_FRAME_COLUMNS = ("id", "device", "model_id", "graph_name", "mode", "method", "compat",
                  "budget_bytes", "deadline_s", "solver", "status", "energy_j", "runtime_s",
                  "peak_memory_bytes", "gap", "solve_time_s", "cost_provenance", "created_at")


def schedules(db: Database, device: str | None = None) -> pd.DataFrame:
    """Stored schedules as a DataFrame (one row per solve)."""
    import pandas as pd
    return pd.DataFrame([{c: getattr(r, c) for c in _FRAME_COLUMNS} for r in db.schedule_list(device)],
                        columns=list(_FRAME_COLUMNS))


def create_sweep(db: Database, inst: Instance, mode: str, budgets: list[int],
                 deadlines: list[float | None], options: dict[str, Any], executor: str,
                 objectives: list[str]) -> int:
    return db.add_sweep(SweepRecord(
        device=inst.device or None, model_id=inst.model_id, graph_name=inst.name,
        graph_digest=inst.digest(), mode=mode, budgets=tuple(budgets), deadlines=tuple(deadlines),
        objectives=tuple(objectives), options=json.loads(json.dumps(options, default=str)),
        executor=executor, n_points=len(budgets) * len(deadlines), status="running",
        settings_id=inst.meta.get("settings_id"), cost_kind=inst.meta.get("cost_kind")))


def finish_sweep(db: Database, sweep_id: int, status: str = "done") -> None:
    db.finish_sweep(sweep_id, status)


def save_point(db: Database, sweep_id: int, inst: Instance, res: SolveResult,
               schedule_id: int | None, pareto: bool, baseline: str | None = None) -> int:
    return db.add_pareto_point(ParetoPointRecord(
        sweep_id=sweep_id, device=inst.device or None, model_id=inst.model_id,
        graph_name=inst.name, mode=res.mode, baseline=baseline, budget_bytes=res.budget_bytes,
        deadline_s=res.deadline_s, status=res.status, energy_j=res.energy_j,
        runtime_s=res.runtime_s, peak_memory_bytes=res.peak_memory_bytes,
        schedule_id=schedule_id, pareto=bool(pareto), message=res.message or None))


def pareto_points(db: Database, sweep_id: int | None = None) -> pd.DataFrame:
    """Stored sweep points as a DataFrame."""
    import pandas as pd
    from costdb.records import to_row
    recs = db.pareto_point_list(sweep_id=sweep_id)
    return pd.DataFrame([{"id": r.id, **to_row(r)} for r in recs])
