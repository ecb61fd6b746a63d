"""Execute a stored schedule on a device and store predicted vs measured (``costdb run``).

``run_schedule(db_path, schedule_id, device)`` checks that the schedule was solved for this device
and model, builds the model's program and the schedule's plan (``solver.program``), sends them to
the device's agent (in-process for ``local``, the SSH agent otherwise: the same executor,
``devices.agent.execute``), and stores the measured run beside the simulator's prediction in the
``runs`` table. The device checks every scheduled iteration against a plain iteration of the same
model from the same state; a mismatch, a failed write or a full storage path raise and nothing is
stored.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Any

from costdb.errors import CostdbError
from costdb.records import RunRecord, StorageProfileRecord, now_iso
from costdb.units import fmt_bytes, fmt_joules, fmt_seconds
from solver.schedule import Schedule

#: where paging files go when the inventory sets no ``storage_path`` (created if missing)
DEFAULT_STORAGE_PATH = "~/.cache/costdb/paging"


@dataclass
class Prepared:
    """Everything a run needs, checked: the request for the agent and the prediction."""

    request: dict[str, Any]
    schedule: Schedule
    record: Any
    instance: Any
    prediction: Any
    graph: Any
    costs_changed: bool


def _model_instance(graph: Any) -> Any:
    from profiler.zoo import MODELS, instantiate
    if graph.model not in MODELS:
        raise CostdbError(f"model {graph.model!r} is not in the zoo; the executor rebuilds zoo "
                          "models only (user models: pass model=ModelInstance to run_schedule)")
    loss = next(n for n in graph.nodes if n.phase == "loss")
    classes = int(loss.input_shapes[0][-1])
    return instantiate(graph.model, tuple(graph.input_shape), num_classes=classes)


def prepare(db: Any, schedule_id: int, device: str, model: str | None = None,
            batch: int | None = None, inventory: Any = None, model_instance: Any = None,
            storage_path: str | None = None, iterations: int = 3, warmups: int = 1,
            tolerance: float | None = None, seed: int = 0, compute_unit: str = "cpu") -> Prepared:
    """Check the schedule against the target (device, model, batch) and build the request."""
    from profiler.zoo import instance_graph
    from solver.problem import compat_instance, instance_from_db
    from solver.program import build_plan, build_program
    from solver.simulate import simulate
    from solver.store import load_schedule
    sched, rec = load_schedule(db, schedule_id)
    if rec.device != device:
        raise CostdbError(f"schedule #{schedule_id} was solved for device {rec.device or '(none)'!r}, "
                          f"not {device!r}; solve one for it: costdb solve --device {device} ...")
    if rec.model_id is None:
        raise CostdbError(f"schedule #{schedule_id} was solved from a graph file, not a stored "
                          "model; the executor needs the model: solve with --model")
    graph = db.graph(rec.model_id)
    if model is not None and model not in (graph.model, graph.key):
        raise CostdbError(f"schedule #{schedule_id} is for model {graph.key}, not {model!r}; "
                          "pick a schedule of that model (costdb query \"SELECT id, graph_name "
                          "FROM schedules\")")
    if batch is not None and batch != graph.batch:
        raise CostdbError(f"schedule #{schedule_id} is for batch {graph.batch}, not {batch}; "
                          "solve one for that batch: costdb solve --batch ...")
    if iterations < 1 or warmups < 0:
        raise CostdbError("iterations must be >= 1 and warmups >= 0")
    mi = model_instance or _model_instance(graph)
    rebuilt = instance_graph(mi, graph.batch, graph.dtype)
    if rebuilt.key != graph.key or [n.to_dict() for n in rebuilt.nodes] != [n.to_dict() for n in graph.nodes]:
        raise CostdbError(f"the model rebuilt from the zoo does not match the stored graph of "
                          f"{graph.key} (the zoo changed since it was stored); solve again")
    names = None
    if rec.schedule_json:
        import json
        names = json.loads(rec.schedule_json).get("node_names")
    plan = build_plan(graph, sched, rec.granularity or "layer", names)
    program = build_program(mi.module, graph, mi.input_dtype, mi.input_high)
    inst = instance_from_db(db, device, rec.model_id, granularity=rec.granularity or "layer",
                            inventory=inventory, settings=rec.settings_id,
                            kind=rec.cost_kind or "auto")
    sim_inst = compat_instance(inst) if sched.compat else inst
    pred = simulate(sim_inst, sched)
    request = {"program": program, "plan": plan, "iterations": int(iterations),
               "warmups": int(warmups), "tolerance": tolerance, "seed": int(seed),
               "device": compute_unit, "deterministic": compute_unit == "cpu",
               "storage_path": storage_path or DEFAULT_STORAGE_PATH,
               "create_storage": storage_path is None}
    return Prepared(request, sched, rec, sim_inst, pred, graph,
                    costs_changed=inst.digest() != rec.graph_digest)


def _paged_bytes(inst: Any, sched: Schedule) -> tuple[int, int]:
    out = sum(inst.nodes[i].output_bytes for s in sched.stages for i in s.pageout)
    inn = sum(inst.nodes[i].output_bytes for s in sched.stages for i in s.pagein)
    return out, inn


def modeled_energy(profile: Any, compute_s: float, pageouts: int, bytes_out: int, pageins: int,
                   bytes_in: int) -> float:
    """POET's model on measured figures: compute time x net active power, plus per paging
    operation latency x storage power and per byte the storage's energy per byte."""
    from solver.problem import Paging
    pg = Paging.from_profile(profile)
    e = compute_s * profile.net_active_power_w
    e += pageouts * (pg.pageout_energy(0)) + bytes_out * pg.pageout_j_per_byte
    e += pageins * (pg.pagein_energy(0)) + bytes_in * pg.pagein_j_per_byte
    return e


def run_record(prep: Prepared, result: dict[str, Any], profile: Any, agent_version: str | None,
               storage_path: str, idle_power_w: float | None = None) -> RunRecord:
    """The ``runs`` record of an agent's execute result (medians over the measured iterations).

    Sensor energy is stored net of idle (gross minus ``idle_power_w`` x runtime, POET's and the
    cost table's convention), the gross figure in ``extra``."""
    its = result["iterations"]
    if not its:
        raise CostdbError("the device returned no measured iteration")
    for it in its:
        if not it["check"]["bit_exact"] and it["check"]["tolerance"] is None:
            raise CostdbError("the device reported a non bit-exact iteration without a tolerance")
    rt = [it["runtime_s"] for it in its]
    med = statistics.median

    def m(key: str) -> float:
        return float(med([it[key] for it in its]))
    last = its[-1]
    inst, pred, rec = prep.instance, prep.prediction, prep.record
    p_out, p_in = _paged_bytes(inst, prep.schedule)
    sensor = [it.get("energy_j") for it in its]
    gross = None
    if all(e is not None for e in sensor):
        gross = float(med(sensor))
        idle = idle_power_w or 0.0
        energy = max(0.0, float(med([e - idle * it["runtime_s"] for e, it in zip(sensor, its)])))
        eprov, esensor = "measured", last.get("energy_sensor")
    else:
        energy = modeled_energy(profile, m("compute_s"), last["pageouts"], last["bytes_out"],
                                last["pageins"], last["bytes_in"])
        eprov, esensor = "modeled", None
    act = max(it["activation_peak_bytes"] for it in its)
    fixed = inst.fixed_bytes
    proc = [it.get("process_peak_bytes") for it in its]
    return RunRecord(
        schedule_id=rec.id, device=rec.device, model_id=rec.model_id, mode=rec.mode, status="ok",
        compute_unit=result.get("device"), storage_path=storage_path, iterations=len(its),
        warmups=result.get("warmups"), predicted_runtime_s=rec.runtime_s,
        runtime_s=float(med(rt)), runtime_min_s=min(rt), runtime_max_s=max(rt),
        compute_s=m("compute_s"), pagein_s=m("pagein_s"), pageout_s=m("pageout_s"),
        plain_runtime_s=m("plain_runtime_s"),
        predicted_peak_bytes=rec.peak_memory_bytes, peak_memory_bytes=fixed + act,
        fixed_bytes=fixed, predicted_activation_peak_bytes=pred.peak_memory_bytes - fixed,
        activation_peak_bytes=act,
        saved_state_peak_bytes=max(it["saved_state_peak_bytes"] for it in its),
        process_peak_bytes=max(proc) if all(p is not None for p in proc) else None,
        process_base_bytes=last.get("process_base_bytes"),
        process_peak_kind=last.get("process_peak_kind"), budget_bytes=rec.budget_bytes,
        predicted_pageout_bytes=p_out, pageout_bytes=last["bytes_out"],
        predicted_pagein_bytes=p_in, pagein_bytes=last["bytes_in"],
        files_written=last["files_written"], recomputes=last["recomputes"],
        pageins=last["pageins"], pageouts=last["pageouts"], predicted_energy_j=rec.energy_j,
        energy_j=energy, energy_provenance=eprov, energy_sensor=esensor, check_passed=True,
        bit_exact=all(it["check"]["bit_exact"] for it in its),
        max_abs_diff=max(it["check"]["max_abs_diff"] for it in its),
        tolerance=last["check"]["tolerance"], deterministic=result.get("deterministic"),
        torch_version=result.get("torch_version"), agent_version=agent_version,
        threads=result.get("threads"), costs_changed=prep.costs_changed,
        cost_provenance=rec.cost_provenance,
        samples={"runtime_s": rt, "compute_s": [it["compute_s"] for it in its],
                 "stage_peaks": last.get("stage_peaks"),
                 "predicted_stage_peaks": [p - fixed for p in pred.stage_peaks]},
        extra={"io": last.get("io"), "disk_peak_bytes": last.get("disk_peak_bytes"),
               "run_dir_removed": result.get("run_dir_removed"), "python": result.get("python"),
               "predicted_runtime_now_s": pred.runtime_s, "predicted_energy_now_j": pred.energy_j,
               "energy_gross_j": gross, "idle_power_w": idle_power_w if gross is not None else None,
               "energy_note": "sensor energy minus idle power x runtime" if eprov == "measured" else
               "modeled: measured compute time x the profile's net active power + paging model"},
        started_at=result.get("started_at"))


def run_schedule(db_path: str, schedule_id: int, device: str, model: str | None = None,
                 batch: int | None = None, inventory: Any = None, iterations: int = 3,
                 warmups: int = 1, tolerance: float | None = None, store: bool = True,
                 agent: Any = None, model_instance: Any = None, seed: int = 0,
                 storage_path: str | None = None) -> RunRecord:
    """Execute schedule ``schedule_id`` on ``device`` and store the run (see the module doc).

    ``agent`` is an open AgentConnection to reuse (tests); by default one is opened from the
    inventory. Returns the stored record (``id`` set) or, with ``store=False``, the record."""
    import costdb
    from devices.connect import connect, entry_for
    from devices.inventory import load as load_inventory
    inv = inventory if inventory is not None else load_inventory(None)
    with costdb.open(db_path, create=False) as db:
        prep = prepare(db, schedule_id, device, model, batch, inv, model_instance, storage_path,
                       iterations, warmups, tolerance, seed)
    entry = entry_for(device, inv)        # after the checks: a mismatch is named first
    if entry.transport == "serial":
        raise CostdbError(f"device {device!r} is a Cortex-M board (firmware over serial): its "
                          "firmware has no schedule executor yet (no paging file system, no "
                          "per-node backward kernels); see docs/execute.md")
    path = storage_path or entry.settings.get("storage_path")
    unit = entry.settings.get("compute_unit", "cpu")
    prep.request.update(storage_path=path or DEFAULT_STORAGE_PATH, create_storage=path is None,
                        device=unit, deterministic=unit == "cpu")
    started = now_iso()
    def go(ag: Any) -> tuple[dict[str, Any], str | None, float | None]:
        res = ag.run_schedule(prep.request)
        idle = None
        if any(it.get("energy_j") is not None for it in res["iterations"]):
            idle = ag.idle_power_w(1.0)     # for net energy, as the cost table stores it
        return res, _agent_version(ag), idle
    if agent is not None:
        result, version, idle = go(agent)
    else:
        with connect(entry) as ag:
            result, version, idle = go(ag)
    result = dict(result, started_at=started)
    rec = run_record(prep, result, entry.profile, version, prep.request["storage_path"], idle)
    if not store:
        return rec
    with costdb.open(db_path, create=False) as db:
        rid = db.add_run(rec)
    return replace(rec, id=rid)


def sweep_schedules(db_path: str, sweep_id: int, pareto_only: bool = True) -> list[int]:
    """Schedule ids of a stored sweep's points (its non-dominated ones by default)."""
    import costdb
    with costdb.open(db_path) as db:
        db.sweep(sweep_id)
        ids = [p.schedule_id for p in db.pareto_point_list(sweep_id=sweep_id)
               if p.schedule_id is not None and (p.pareto or not pareto_only)]
    if not ids:
        raise CostdbError(f"sweep {sweep_id} has no {'Pareto ' if pareto_only else ''}point with "
                          "a schedule; run costdb pareto first")
    return list(dict.fromkeys(ids))


def _agent_version(agent: Any) -> str | None:
    try:
        return agent.hello().get("agent_version")
    except Exception:     # the version is a label; a failure to read it must not lose a run
        return None


def summary_lines(rec: RunRecord) -> list[str]:
    """Predicted vs measured, one figure per line (what ``costdb run`` prints)."""
    def pct(meas: float | None, pred: float | None) -> str:
        if meas is None or pred is None or pred == 0 or not math.isfinite(pred):
            return ""
        return f"  ({(meas - pred) / pred:+.1%})"
    check = ("bit-exact" if rec.bit_exact else f"within tolerance {rec.tolerance:g} (max |diff| "
             f"{rec.max_abs_diff:.3g})")
    lines = [
        f"schedule #{rec.schedule_id} on {rec.device} ({rec.mode}, budget "
        f"{fmt_bytes(rec.budget_bytes) if rec.budget_bytes else 'none'}): {rec.iterations} "
        f"iteration(s) after {rec.warmups} warm-up(s); gradients and updated parameters {check} "
        "against a plain iteration",
        f"{'':22}{'predicted':>12}  {'measured':>12}",
        f"{'runtime':22}{fmt_seconds(rec.predicted_runtime_s):>12}  {fmt_seconds(rec.runtime_s):>12}"
        f"{pct(rec.runtime_s, rec.predicted_runtime_s)}",
        f"{'  compute / paging':22}{'':>12}  {fmt_seconds(rec.compute_s)} / "
        f"{fmt_seconds((rec.pagein_s or 0) + (rec.pageout_s or 0))}; a plain iteration (no "
        f"schedule) took {fmt_seconds(rec.plain_runtime_s)}",
        f"{'activation peak':22}{fmt_bytes(rec.predicted_activation_peak_bytes):>12}  "
        f"{fmt_bytes(rec.activation_peak_bytes):>12}"
        f"{pct(rec.activation_peak_bytes, rec.predicted_activation_peak_bytes)}",
        f"{'peak (+ fixed)':22}{fmt_bytes(rec.predicted_peak_bytes):>12}  "
        f"{fmt_bytes(rec.peak_memory_bytes):>12}  (fixed {fmt_bytes(rec.fixed_bytes)}: params, grads, "
        "optimizer state)",
        f"{'paged out / in':22}{fmt_bytes(rec.predicted_pageout_bytes):>6} / "
        f"{fmt_bytes(rec.predicted_pagein_bytes):<6}  {fmt_bytes(rec.pageout_bytes)} / "
        f"{fmt_bytes(rec.pagein_bytes)} ({rec.files_written} files, fsync)",
        f"{'energy':22}{fmt_joules(rec.predicted_energy_j):>12}  {fmt_joules(rec.energy_j):>12}"
        f"{pct(rec.energy_j, rec.predicted_energy_j)}  [{rec.energy_provenance}]",
        f"autograd saved state outside the schedule: {fmt_bytes(rec.saved_state_peak_bytes)}; "
        f"{rec.recomputes} recomputations, {rec.pageouts} page-outs, {rec.pageins} page-ins",
    ]
    if rec.process_peak_bytes is not None and rec.process_base_bytes is not None:
        lines.append(f"process peak RSS {fmt_bytes(rec.process_peak_bytes)} "
                     f"(+{fmt_bytes(rec.process_peak_bytes - rec.process_base_bytes)} over the "
                     "iteration's start, includes allocator slack)")
    if rec.costs_changed:
        lines.append("note: the device's costs changed since the schedule was solved; the "
                     "prediction is the solver's at solve time")
    if rec.id is not None:
        lines.append(f"stored as run #{rec.id}")
    return lines


def runs(db: Any, device: str | None = None) -> Any:
    """Runs as a DataFrame with the relative errors of runtime, peak and energy added."""
    df = db.runs(device)
    if len(df):
        df["runtime_error"] = df["runtime_s"] / df["predicted_runtime_s"] - 1
        df["activation_peak_error"] = (df["activation_peak_bytes"]
                                       / df["predicted_activation_peak_bytes"] - 1)
        df["energy_error"] = df["energy_j"] / df["predicted_energy_j"] - 1
    return df


def measure_storage(db_path: str, device: str, inventory: Any = None, agent: Any = None,
                    total_bytes: int = 16 << 20, block_bytes: int = 1 << 20,
                    storage_path: str | None = None, store: bool = True) -> StorageProfileRecord:
    """Measure the device's paging speed on its storage path (agent ``storage`` request) and store
    it in ``storage_profiles``."""
    import costdb
    from devices.connect import connect, entry_for
    from devices.inventory import load as load_inventory
    inv = inventory if inventory is not None else load_inventory(None)
    entry = entry_for(device, inv)
    path = storage_path or entry.settings.get("storage_path")
    req = {"storage_path": path or DEFAULT_STORAGE_PATH, "create_storage": path is None,
           "total_bytes": int(total_bytes), "block_bytes": int(block_bytes)}
    if agent is not None:
        res = agent.storage(req)
    else:
        with connect(entry) as ag:
            res = ag.storage(req)
    rec = StorageProfileRecord(device=device, path=req["storage_path"],
                               block_bytes=res["block_bytes"], total_bytes=res["total_bytes"],
                               write_bytes_per_s=res["write_bytes_per_s"],
                               read_bytes_per_s=res["read_bytes_per_s"],
                               write_latency_s=res["write_latency_s"],
                               read_latency_s=res["read_latency_s"], provenance="measured",
                               samples=res.get("samples", {}))
    if not store:
        return rec
    with costdb.open(db_path, create=True) as db:
        rid = db.add_storage_profile(rec)
    return replace(rec, id=rid)
