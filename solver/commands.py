"""What ``costdb solve`` and ``costdb pareto`` do, as plain functions (the CLI is a thin layer).

Both read the instance from the database (measured costs, the rest modelled) or from a JSON graph
file, solve / sweep, validate every schedule with the simulator, store it and return a summary.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from costdb.errors import CostdbError
from costdb.files import write_output
from costdb.units import fmt_bytes, fmt_joules, fmt_seconds, parse_duration, parse_shape, parse_size
from solver.problem import Instance, instance_from_db, load_graph_json
from solver.solve import InfeasibleError, SolveResult, solve


def load_instance(db: Any, device: str | None, model: str | None, graph: str | None,
                  batch: int | None = None, input_shape: str | None = None,
                  granularity: str = "layer", inventory: Any = None,
                  settings: Any = None, kind: str = "auto") -> Instance:
    if graph:
        if model:
            raise CostdbError("give either --model or --graph, not both")
        inst = load_graph_json(graph)
        if device:
            from dataclasses import replace
            inst = replace(inst, device=device)
        return inst
    if not model or not device:
        raise CostdbError("give --device and --model (or --graph file.json)")
    shape = parse_shape(input_shape) if input_shape else None
    return instance_from_db(db, device, model, batch, shape, granularity, inventory,
                            settings=settings, kind=kind)


def _parse_budget(memory: str | None) -> int | None:
    return parse_size(memory) if memory else None


def _parse_deadline(deadline: str | None) -> float | None:
    return parse_duration(deadline) if deadline else None


#: seconds of the wall-time limit kept back for collecting, validating and storing the result
WALL_MARGIN_S = 1.0


def _child_solve(conn: Any, inst: Instance, kwargs: dict[str, Any]) -> None:
    def incumbent(name: str, sched: Any, sim: Any) -> None:
        conn.send(("incumbent", (name, sched, sim)))
    try:
        res = solve(inst, on_incumbent=incumbent, **kwargs)
        conn.send(("ok", res))
    except BaseException as e:       # noqa: BLE001 - re-raised in the parent
        conn.send(("error", e))
    finally:
        conn.close()


def solve_within(inst: Instance, wall_limit: float | None, **kwargs: Any) -> SolveResult:
    """``solve`` in a child process that is killed at ``wall_limit`` seconds (a promise about wall
    time, model building included). The solver inside gets the limit minus a margin and normally
    returns in time with its best schedule, bound and gap; if the child has to be killed, the best
    heuristic schedule that meets the limits is returned (status ``feasible``) or status
    ``time_limit``. ``wall_limit=None`` solves in this process."""
    if wall_limit is None:
        return solve(inst, time_limit=None, **kwargs)
    import multiprocessing
    t0 = time.perf_counter()
    inner = max(0.1, wall_limit - WALL_MARGIN_S - min(0.15 * wall_limit, 15.0))
    ctx = multiprocessing.get_context("forkserver")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_solve, args=(child, inst, {**kwargs, "time_limit": inner}),
                       daemon=True)
    proc.start()
    child.close()
    best = None                   # the child's best validated start, sent before the exact solve
    try:
        while True:
            left = wall_limit - (time.perf_counter() - t0) - 0.25
            if left <= 0 or not parent.poll(left):
                break
            kind, val = parent.recv()
            if kind == "incumbent":
                best = val
                continue
            if kind == "error":
                raise val
            return val
    except EOFError:
        pass                      # the child died without an answer
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    return _killed_result(inst, wall_limit, proc.exitcode, kwargs, best)


def _killed_result(inst: Instance, wall_limit: float, exitcode: int | None,
                   kw: dict[str, Any], best: Any = None) -> SolveResult:
    from solver.problem import compat_instance
    from solver.solve import _finish_bound, best_heuristic
    compat = bool(kw.get("compat", False))
    i2 = compat_instance(inst) if compat else inst
    res = SolveResult(status="time_limit", mode=kw.get("mode", "integrated"),
                      solver=kw.get("solver", "highs"), budget_bytes=kw.get("budget"),
                      deadline_s=kw.get("deadline"), compat=compat,
                      overlap=bool(kw.get("overlap", False)), n_nodes=inst.n,
                      method=str(kw.get("method", "auto")), cost_provenance=inst.cost_provenance())
    why = ("stopped at the wall-time limit" if exitcode in (None, -9) else
           f"the solver process ended with exit code {exitcode}")
    heur = best or best_heuristic(i2, res.mode, res.budget_bytes, res.deadline_s, res.overlap, compat)
    if heur is None:
        res.message = f"{why} ({wall_limit:g} s) before any schedule was found; raise --time-limit"
        return res
    res.status, res.schedule, res.sim = "feasible", heur[1], heur[2]
    res.objective_energy_j = heur[2].energy_j
    res.method = f"heuristic:{heur[0]}"
    res.message = f"{why} ({wall_limit:g} s); returned the best start found, {heur[0]}"
    return _finish_bound(res, i2)


def run_solve(db_path: str, device: str | None = None, model: str | None = None,
              graph: str | None = None, memory: str | None = None, deadline: str | None = None,
              mode: str = "integrated", solver: str = "highs", time_limit: float | None = 60.0,
              gap: float = 1e-4, threads: int | None = None, compat: bool = False,
              overlap: bool = False, method: str = "auto", batch: int | None = None,
              input_shape: str | None = None, granularity: str = "layer",
              output: str | None = None, binary_output: str | None = None,
              store: bool = True, inventory: Any = None,
              settings: Any = None, kind: str = "auto",
              max_computations: int | None = None) -> tuple[SolveResult, Instance, int | None]:
    """Solve one instance within ``time_limit`` seconds of wall time for the whole call (instance
    loading and model building included); store it (validated) and write the schedule files.
    Raises ``InfeasibleError`` (a CostdbError) with the minimum budget / fastest runtime when
    infeasible."""
    import costdb
    t0 = time.perf_counter()
    budget = _parse_budget(memory)
    dl = _parse_deadline(deadline)
    with costdb.open(db_path, create=True) as db:
        inst = load_instance(db, device, model, graph, batch, input_shape, granularity, inventory,
                             settings=settings, kind=kind)
        left = None if time_limit is None else max(0.5, time_limit - (time.perf_counter() - t0))
        res = solve_within(inst, left, budget=budget, deadline=dl, mode=mode, solver=solver,
                           gap=gap, threads=threads, compat=compat,
                           overlap=overlap, method=method, max_computations=max_computations)
        sid = None
        if store:
            from solver.store import save_schedule
            sid = save_schedule(db, inst, res)
    if res.status == "infeasible":
        raise InfeasibleError(res.message)
    if res.schedule is None:
        raise CostdbError(f"no schedule: {res.message or res.status}; raise --time-limit or use "
                          "--method lp_round")
    names = [n.name for n in inst.nodes]
    if output:
        write_output(output, res.schedule.to_json(names, indent=1).encode())
    if binary_output:
        write_output(binary_output, res.schedule.to_bytes())
    return res, inst, sid


def summary_lines(res: SolveResult, inst: Instance, sid: int | None) -> list[str]:
    sim = res.sim
    c = res.schedule.counts() if res.schedule else {}
    lines = [
        f"{inst.name} on {inst.device or '-'}: {res.mode}{' (compat)' if res.compat else ''}"
        f"{' overlap' if res.overlap else ''}, {res.n_nodes} nodes, costs {res.cost_provenance}"
        + (f" (settings #{inst.meta['settings_id']}, {inst.meta.get('cost_kind')})"
           if inst.meta.get("settings_id") else ""),
        f"status {res.status} ({res.method}, {res.solver}); solve {res.solve_time_s:.2f} s, "
        f"{res.n_variables} variables, {res.n_constraints} constraints"
        + (f", gap {res.gap:.3%}" if res.gap is not None else ""),
        f"budget {fmt_bytes(res.budget_bytes) if res.budget_bytes else 'none'}, "
        f"deadline {fmt_seconds(res.deadline_s) if res.deadline_s else 'none'}",
    ]
    if sim:
        lines += [
            f"energy {fmt_joules(sim.energy_j)} net of idle power (compute "
            f"{fmt_joules(sim.compute_energy_j)}, page-in "
            f"{fmt_joules(sim.pagein_energy_j)}, page-out {fmt_joules(sim.pageout_energy_j)})"
            + (f", bound {fmt_joules(res.bound_energy_j)}" if res.bound_energy_j is not None else ""),
            f"runtime {fmt_seconds(sim.runtime_s)}, peak memory {fmt_bytes(sim.peak_memory_bytes)} "
            f"({sim.peak_memory_bytes} B)",
            f"{c.get('recomputes', 0)} recomputations, {c.get('pageins', 0)} page-ins, "
            f"{c.get('pageouts', 0)} page-outs; encoded schedule {len(res.schedule.to_bytes())} B",
        ]
        if res.heuristic_energy_j is not None:
            lines.append(f"best heuristic ({res.heuristic}): {fmt_joules(res.heuristic_energy_j)}")
    if sid is not None:
        lines.append(f"stored as schedule #{sid}")
    if res.message:
        lines.append(res.message)
    return lines


def run_pareto(db_path: str, device: str | None = None, model: str | None = None,
               graph: str | None = None, budgets: str | None = None, deadlines: str | None = None,
               n_budgets: int = 5, mode: str = "integrated", solver: str = "highs",
               time_limit: float = 60.0, gap: float = 1e-4, compat: bool = False,
               overlap: bool = False, method: str = "auto", executor: str = "process",
               workers: int | None = None, scheduler: str | None = None, batch: int | None = None,
               input_shape: str | None = None, granularity: str = "layer",
               progress: Callable[[int, int], None] | None = None, inventory: Any = None,
               settings: Any = None, kind: str = "auto", max_computations: int | None = None):
    """Sweep budgets x deadlines and store the points (with the non-dominated set marked);
    ``time_limit`` is per point. A failing point is stored with status ``error``."""
    import costdb
    from solver.pareto import default_budgets, sweep
    if executor == "dask" and not scheduler:
        scheduler = None   # a LocalCluster on this machine
    with costdb.open(db_path, create=True) as db:
        inst = load_instance(db, device, model, graph, batch, input_shape, granularity, inventory,
                             settings=settings, kind=kind)
        b = [parse_size(x) for x in _split(budgets)] if budgets else \
            default_budgets(inst, n_budgets, mode, compat)
        d = [None if x.lower() in ("none", "-") else parse_duration(x) for x in _split(deadlines)] \
            if deadlines else [None]
        out = sweep(inst, b, d, db=db, executor=executor, workers=workers, scheduler=scheduler,
                    progress=progress, mode=mode, solver=solver, time_limit=time_limit, gap=gap,
                    compat=compat, overlap=overlap, method=method, threads=1,
                    max_computations=max_computations)
    return out, inst


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]
