"""Solve an instance: heuristics, presolved MILP, validation by the simulator, solver record.

``solve(inst, budget=..., deadline=..., mode="integrated")`` returns a :class:`SolveResult` whose
schedule has been replayed by :func:`solver.simulate.simulate`; a disagreement between the MILP
and the replay raises :class:`SolverBug` (never silently stored).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from costdb.errors import CostdbError
from solver.baselines import heuristic_candidates, page_everything
from solver.milp import SOLVERS, Formulation, Options, run_solver
from solver.problem import Instance, compat_instance
from solver.schedule import Schedule
from solver.simulate import ScheduleError, SimResult, simulate

STATUSES = ("optimal", "feasible", "infeasible", "time_limit", "error")
#: graphs at least this large also get an LP-relaxation-and-rounding warm start
LP_ROUND_WARM_MIN_NODES = 40


class SolverBug(RuntimeError):
    """The solver's answer disagrees with the independent simulator."""


class InfeasibleError(CostdbError):
    """No schedule meets the budget and deadline; the message gives the limits that would."""


@dataclass
class SolveResult:
    status: str
    mode: str
    solver: str
    budget_bytes: int | None
    deadline_s: float | None
    schedule: Schedule | None = None
    sim: SimResult | None = None
    objective_energy_j: float | None = None
    bound_energy_j: float | None = None
    gap: float | None = None
    solve_time_s: float = 0.0
    build_time_s: float = 0.0
    n_variables: int = 0
    n_constraints: int = 0
    n_nodes: int = 0
    compat: bool = False
    overlap: bool = False
    method: str = "milp"
    heuristic: str | None = None
    heuristic_energy_j: float | None = None
    warm_start: bool = False
    message: str = ""
    cost_provenance: str = ""
    memory_unit_bytes: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.schedule is not None and self.status in ("optimal", "feasible")

    @property
    def energy_j(self) -> float | None:
        return self.sim.energy_j if self.sim else None

    @property
    def runtime_s(self) -> float | None:
        return self.sim.runtime_s if self.sim else None

    @property
    def peak_memory_bytes(self) -> int | None:
        return self.sim.peak_memory_bytes if self.sim else None

    def record(self) -> dict[str, Any]:
        """Flat solver record (what the schedules table stores, minus the schedule)."""
        return {"status": self.status, "mode": self.mode, "solver": self.solver,
                "method": self.method, "compat": self.compat, "overlap": self.overlap,
                "budget_bytes": self.budget_bytes, "deadline_s": self.deadline_s,
                "objective_energy_j": self.objective_energy_j, "bound_energy_j": self.bound_energy_j,
                "gap": self.gap, "solve_time_s": self.solve_time_s, "build_time_s": self.build_time_s,
                "n_variables": self.n_variables, "n_constraints": self.n_constraints,
                "n_nodes": self.n_nodes, "energy_j": self.energy_j, "runtime_s": self.runtime_s,
                "peak_memory_bytes": self.peak_memory_bytes, "heuristic": self.heuristic,
                "heuristic_energy_j": self.heuristic_energy_j, "warm_start": self.warm_start,
                "cost_provenance": self.cost_provenance, "message": self.message,
                "memory_unit_bytes": self.memory_unit_bytes,
                **({"counts": self.schedule.counts()} if self.schedule else {}),
                **({"breakdown": self.sim.to_dict()} if self.sim else {})}


def min_budget_bound(inst: Instance, compat: bool = False) -> int:
    """A lower bound on any schedule's peak: the fixed memory plus, for some node, its inputs,
    its output and its workspace, which must be in RAM together while it runs."""
    fixed = 0 if compat else inst.fixed_bytes
    best = 0
    for nd in inst.nodes:
        need = sum(inst.nodes[d].output_bytes for d in set(nd.deps)) + nd.output_bytes
        need += 0 if compat else nd.workspace_bytes
        best = max(best, need)
    return fixed + best


def best_heuristic(inst: Instance, mode: str, budget: int | None, deadline: float | None,
                   overlap: bool = False, compat: bool = False
                   ) -> tuple[str, Schedule, SimResult] | None:
    """The lowest-energy heuristic schedule that meets the budget and deadline, if any. In the
    compatibility mode the heuristics' page-outs are moved to the next stage's start
    (:func:`solver.baselines.to_compat`), which the published semantics require."""
    best = None
    from solver.baselines import to_compat
    for name, sched in heuristic_candidates(inst, mode, budget, overlap):
        if compat:
            # page-outs move to the next stage start (published semantics); replayed below
            sched = to_compat(sched)
        try:
            sim = simulate(inst, sched, budget, deadline)
        except ScheduleError as e:
            if compat:
                # moving a page-out to the next stage's start can put it after a page-in of the
                # same value in that stage: that candidate has no compat form; the others do
                continue
            raise SolverBug(f"heuristic {name} produced an invalid schedule: {e}") from None
        if sim.ok and (best is None or sim.energy_j < best[2].energy_j):
            best = (name, sched, sim)
    return best


def _fmt_bytes(b: float) -> str:
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(b) >= f:
            return f"{b / f:.4g} {unit}"
    return f"{int(b)} B"


METHODS = ("auto", "milp", "cpsat", "lp_round")
#: ``method="auto"`` uses CP-SAT from this many nodes on (measured: docs/benchmarks.md)
AUTO_CPSAT_MIN_NODES = 200


def choose_method(inst: Instance, opts: Options) -> str:
    """The formulation ``method="auto"`` uses: the MILP for overlapped paging (CP-SAT does not
    model it) and small graphs, CP-SAT from ``AUTO_CPSAT_MIN_NODES`` nodes on."""
    if opts.overlap:
        return "milp"
    return "cpsat" if inst.n >= AUTO_CPSAT_MIN_NODES else "milp"


def keep_everything(inst: Instance, budget: int | None, deadline: float | None,
                    overlap: bool = False, compat: bool = False) -> tuple[Schedule, SimResult] | None:
    """Checkpoint-all (no recomputation, no paging) if it meets the budget and deadline.

    Its energy is the sum of the compute energies, a lower bound on every schedule (each node runs
    at least once, paging costs are >= 0), so when it fits it is optimal and no model is built."""
    from solver.baselines import checkpoint_all
    sched = checkpoint_all(inst, overlap)
    if compat:
        sched = Schedule(sched.stages, compat=True, overlap=False)
    sim = simulate(inst, sched, budget, deadline)
    if not sim.ok or sim.energy_j > inst.compute_energy_j * (1 + 1e-12):
        return None
    return sched, sim


def solve(inst: Instance, budget: int | None = None, deadline: float | None = None,
          mode: str = "integrated", solver: str = "highs", time_limit: float | None = 60.0,
          gap: float = 1e-4, threads: int | None = None, compat: bool = False,
          overlap: bool = False, warm_start: bool = True, allow_bwd_remat: bool | None = None,
          method: str = "auto", msg: bool = False, explain_infeasible: bool = True,
          symmetry_cuts: bool = True, prune: bool = True, knapsack_rows: bool = True,
          max_computations: int | None = None,
          starts: list[Schedule] | None = None,
          on_incumbent: Any = None) -> SolveResult:
    """Energy-optimal schedule of ``inst`` within ``budget`` bytes and ``deadline`` seconds.

    ``method``: ``"milp"`` (exact, warm-started from the best heuristic), ``"cpsat"`` (the
    retention-interval model, exact up to ``max_computations`` computations per value),
    ``"lp_round"`` (Checkmate's LP relaxation + rounding, fast and approximate) or ``"auto"``
    (:func:`choose_method`). ``compat=True`` solves the published POET formulation (activations
    only in the budget, paging time outside the deadline). ``time_limit`` bounds the whole call
    (heuristics, sub-solves and model building included). ``starts``: extra warm-start schedules
    (e.g. a neighbouring sweep point's), used when they meet this budget and deadline.
    ``on_incumbent(name, schedule, sim)`` is called with the best validated start before the
    exact solve begins (the CLI's wall-time guard keeps it in case it has to stop the solve).
    """
    t_start = time.perf_counter()

    def remaining(frac: float = 1.0) -> float | None:
        if time_limit is None:
            return None
        return max(0.05, (time_limit - (time.perf_counter() - t_start)) * frac)

    if solver not in SOLVERS:
        raise CostdbError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if method not in METHODS:
        raise CostdbError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    opts = Options(mode=mode, compat=compat, overlap=overlap, allow_bwd_remat=allow_bwd_remat,
                   symmetry_cuts=symmetry_cuts, prune=prune, knapsack_rows=knapsack_rows)
    if budget is not None and budget <= 0:
        raise CostdbError(f"memory budget must be positive, got {budget} bytes")
    if deadline is not None and not deadline > 0:
        raise CostdbError(f"deadline must be positive, got {deadline} s")
    if max_computations is not None and max_computations < 1:
        raise CostdbError(f"max_computations must be >= 1, got {max_computations}")
    requested = method
    if method == "auto":
        method = choose_method(inst, opts)
    if method == "cpsat" and overlap:
        raise CostdbError("--method cpsat does not model overlapped paging; use --method milp or auto")
    res = SolveResult(status="error", mode=mode, solver="cpsat" if method == "cpsat" else solver,
                      budget_bytes=budget,
                      deadline_s=deadline, compat=compat, overlap=overlap, n_nodes=inst.n,
                      method=method, cost_provenance=inst.cost_provenance(),
                      options={"time_limit": time_limit, "gap": gap, "threads": threads,
                               "allow_bwd_remat": opts.allow_bwd_remat, "warm_start": warm_start,
                               "symmetry_cuts": symmetry_cuts, "prune": prune,
                               "method_requested": requested,
                               **({"max_computations": max_computations or 2}
                                  if method == "cpsat" else {})})
    if compat:
        inst = compat_instance(inst)
    lower = min_budget_bound(inst, compat)
    if budget is not None and budget < lower:
        res.status = "infeasible"
        res.message = (f"budget {_fmt_bytes(budget)} is below the lower bound {_fmt_bytes(lower)} "
                       "(fixed memory plus the largest node's inputs and output)")
        if explain_infeasible:
            res.message = explain(inst, res, opts, solver, remaining())
        return res
    # keep-everything fast path: proven optimal by the trivial lower bound, no model needed
    fast = keep_everything(inst, budget, deadline, overlap, compat)
    if fast is not None:
        res.status, res.schedule, res.sim = "optimal", fast[0], fast[1]
        res.objective_energy_j = res.bound_energy_j = fast[1].energy_j
        res.gap = 0.0
        res.method = "keep_everything"
        res.solve_time_s = time.perf_counter() - t_start
        res.message = ("keep-everything fits the budget and deadline; its energy is the lower bound "
                       "(sum of compute energies)")
        return res
    heur = best_heuristic(inst, mode, budget, deadline, overlap, compat)
    cands = [heur] if heur else []       # warm-start candidates, tried best first
    for k, sch in enumerate(starts or ()):
        if sch is None or sch.n != inst.n or sch.compat != compat or sch.overlap != overlap:
            continue
        try:
            sim = simulate(inst, sch, budget, deadline)
        except ScheduleError:
            continue
        if sim.ok:
            cands.append((f"neighbour[{k}]", sch, sim))
    if mode == "integrated" and method in ("milp", "cpsat") and warm_start and not compat:
        # the paging-only MILP is small and fast; its optimum is a feasible integrated schedule
        sub = Formulation(inst, budget, deadline, Options(mode="paging", overlap=overlap))
        raw = run_solver(sub, solver, remaining(1 / 6), gap, threads, False)
        if raw.status in ("optimal", "feasible"):
            sched = sub.schedule()
            sim = simulate(inst, sched, budget, deadline)
            if sim.ok:
                cands.append(("paging_milp", sched, sim))
        res.options["paging_milp_s"] = raw.solve_time_s
    if method in ("milp", "cpsat") and warm_start and mode != "paging" and \
            inst.n >= LP_ROUND_WARM_MIN_NODES:
        # Checkmate's LP relaxation + rounding is cheap and often beats the heuristics by far
        from solver.approx import lp_round
        scratch = SolveResult(status="error", mode=mode, solver=solver, budget_bytes=budget,
                              deadline_s=deadline, compat=compat, overlap=overlap)
        t0 = time.perf_counter()
        lp = lp_round(inst, scratch, opts, None, solver="highs", time_limit=remaining(1 / 4),
                      threads=threads)
        res.options["lp_round_s"] = time.perf_counter() - t0
        if scratch.options.get("lp_bound_j") is not None:
            # the MILP's LP relaxation bounds the whole problem (CP-SAT's own bound is weaker
            # where the deadline binds: nrf52840 5 %/1.5x, docs/benchmarks.md)
            res.options["lp_bound_j"] = scratch.options["lp_bound_j"]
        if lp.schedule is not None and lp.sim.ok:
            cands.append(("lp_round", lp.schedule, lp.sim))
    cands.sort(key=lambda c: c[2].energy_j)
    heur = cands[0] if cands else None
    if heur:
        res.heuristic, res.heuristic_energy_j = heur[0], heur[2].energy_j
        if on_incumbent is not None:
            on_incumbent(*heur)
    if method == "lp_round":
        from solver.approx import lp_round
        return lp_round(inst, res, opts, heur, solver=solver, time_limit=remaining(), threads=threads)
    if method == "cpsat":
        return _solve_cpsat(inst, res, opts, cands, heur, budget, deadline, remaining, gap, threads,
                            warm_start, max_computations or 2, msg, explain_infeasible, solver)
    form = Formulation(inst, budget, deadline, opts)
    res.build_time_s = form.build_time_s
    res.n_variables, res.n_constraints = form.n_variables, form.n_constraints
    res.memory_unit_bytes = form.memory_unit
    warm = False
    if warm_start:
        for cand in cands:
            if form.set_start(cand[1]):      # False if it uses decisions the model pruned
                warm = True
                res.options["warm_start_from"] = cand[0]
                break
    res.warm_start = warm
    raw = run_solver(form, solver, remaining(), gap, threads, warm, msg)
    res.solve_time_s = raw.solve_time_s
    res.gap = raw.gap
    res.options["solver_detail"] = raw.detail
    res.options.update({k: v for k, v in raw.extra.items() if v is not None})
    if raw.bound is not None:
        res.bound_energy_j = raw.bound * form.e_scale
    if raw.status in ("optimal", "feasible") and raw.objective is not None:
        sched = trim_keeps(inst, form.schedule())
        try:
            sim = simulate(inst, sched, budget, deadline)
        except ScheduleError as e:
            raise SolverBug(f"{solver} returned a schedule the simulator rejects: {e}") from None
        obj = raw.objective * form.e_scale
        check_consistency(sim, obj, budget, deadline, solver)
        res.status, res.schedule, res.sim = raw.status, sched, sim
        res.objective_energy_j = sim.energy_j
        _prefer_start(res, heur)
        return _finish_bound(res, inst)
    if raw.status == "infeasible":
        if heur is not None:
            raise SolverBug(f"{solver} reports infeasible but heuristic {heur[0]} meets the budget "
                            "and deadline")
        res.status = "infeasible"
        res.message = "no schedule meets the budget and deadline"
        if explain_infeasible:
            res.message = explain(inst, res, opts, solver, remaining())
        return res
    res.status = raw.status
    return _fallback(res, heur, solver, time_limit, inst)


def _prefer_start(res: SolveResult, heur: Any) -> None:
    """If the solver stopped with a worse incumbent than a start it could not load, return the
    start (status stays ``feasible``)."""
    if heur is not None and heur[2].energy_j < res.sim.energy_j * (1 - 1e-9) and res.status != "optimal":
        res.schedule, res.sim = heur[1], heur[2]
        res.objective_energy_j = heur[2].energy_j
        res.method = f"{res.method}(start:{heur[0]})"


def _finish_bound(res: SolveResult, inst: Instance) -> SolveResult:
    """Bound = max(solver bound, trivial bound, the MILP's LP relaxation if solved), capped by
    the schedule's energy; gap from it."""
    lb = max(inst.compute_energy_j, res.options.get("lp_bound_j") or 0.0)
    b = res.bound_energy_j
    b = lb if b is None or not math.isfinite(b) else max(b, lb)
    if res.sim is not None:
        b = min(b, res.sim.energy_j)
        res.gap = (res.sim.energy_j - b) / max(res.sim.energy_j, 1e-300)
    res.bound_energy_j = b
    return res


def _fallback(res: SolveResult, heur: Any, solver: str, time_limit: float | None,
              inst: Instance) -> SolveResult:
    """Time limit without an incumbent: the best warm-start candidate, if any."""
    if heur is not None:
        res.status, res.schedule, res.sim = "feasible", heur[1], heur[2]
        res.method = f"heuristic:{heur[0]}"
        res.objective_energy_j = heur[2].energy_j
        res.message = f"{solver} found no solution within the time limit; returned heuristic {heur[0]}"
        return _finish_bound(res, inst)
    res.message = (f"{solver} found no solution within the time limit"
                   + (f" ({time_limit:g} s)" if time_limit else ""))
    return res


def _solve_cpsat(inst: Instance, res: SolveResult, opts: Options, cands: list, heur: Any,
                 budget: int | None, deadline: float | None, remaining: Any, gap: float,
                 threads: int | None, warm_start: bool, kmax: int, msg: bool,
                 explain_infeasible: bool, solver: str) -> SolveResult:
    from solver.cpsat import CpsatModel
    model = CpsatModel(inst, budget, deadline, opts, kmax)
    res.build_time_s = model.build_time_s
    res.n_variables, res.n_constraints = model.n_variables, model.n_constraints
    res.memory_unit_bytes = model.memory_unit
    if warm_start:
        for cand in cands:
            if model.add_hint(cand[1]):
                res.warm_start = True
                res.options["warm_start_from"] = cand[0]
                break
    raw = model.solve(remaining(), gap, threads, msg)
    res.solve_time_s = raw.solve_time_s
    res.options["solver_detail"] = raw.detail
    res.options.update(raw.extra)
    res.bound_energy_j = raw.bound_j
    if raw.schedule is not None:
        try:
            sim = simulate(inst, raw.schedule, budget, deadline)
        except ScheduleError as e:
            raise SolverBug(f"cpsat returned a schedule the simulator rejects: {e}") from None
        if not sim.ok:
            raise SolverBug("cpsat: schedule violates its constraints in the simulator: "
                            + "; ".join(sim.violations))
        # dropping unused recomputations can only lower the energy; rounding is ~1e-10
        if sim.energy_j > raw.objective_j * (1 + 1e-7) + 1e-12:
            raise SolverBug(f"cpsat: objective {raw.objective_j!r} J but the simulator measures "
                            f"{sim.energy_j!r} J")
        res.status, res.schedule, res.sim = raw.status, raw.schedule, sim
        res.objective_energy_j = sim.energy_j
        res.options["bound_scope"] = (f"schedules with at most {kmax} computations and {kmax} "
                                      "page-ins per value")
        if raw.status == "optimal" and kmax < inst.n:
            res.message = (f"optimal among schedules with at most {kmax} computations and {kmax} "
                           "page-ins per value (--max-computations)")
        _prefer_start(res, heur)
        return _finish_bound(res, inst)
    if raw.status == "infeasible":
        res.status = "infeasible"
        res.message = (f"no schedule meets the budget and deadline with at most {kmax} computations "
                       f"and {kmax} page-ins per value")
        if heur is not None:
            # the bound on computations cut the feasible region: return the candidate
            res.status, res.schedule, res.sim = "feasible", heur[1], heur[2]
            res.objective_energy_j = heur[2].energy_j
            res.method = f"heuristic:{heur[0]}"
            res.message += f"; returned {heur[0]} (raise --max-computations or use --method milp)"
            res.bound_energy_j = None
            return _finish_bound(res, inst)
        if explain_infeasible:
            res.message = explain(inst, res, opts, "highs", remaining())
        return res
    res.status = raw.status
    return _fallback(res, heur, "cpsat", res.options.get("time_limit"), inst)


def trim_keeps(inst: Instance, sched: Schedule) -> Schedule:
    """Drop values a schedule keeps in RAM across a stage boundary without using them before
    they are dropped anyway (the MILP may keep them when memory is slack: it costs no energy).
    Compute lists, paging, energy and runtime are unchanged; peak memory can only fall."""
    from solver.schedule import Stage
    deps = [set(nd.deps) for nd in inst.nodes]
    stages = list(sched.stages)
    n = len(stages)
    needed_next: set[int] = set()       # values needed in RAM when stage t+1 starts
    new_keep: list[tuple[int, ...]] = [()] * n
    for t in reversed(range(n)):
        st = stages[t]
        keep = set(st.keep)
        if t + 1 < n:
            keep = {i for i in keep if i in needed_next or i in st.pagein}
        new_keep[t] = tuple(sorted(keep))
        # what stage t needs at its start: inputs of its computes not computed earlier in it,
        # values it keeps but does not compute, and (compat) values it pages out
        comp = set(st.compute)
        need = set()
        for k in st.compute:
            need |= {d for d in deps[k] if d not in comp}
        need |= {i for i in keep if i not in comp and i not in st.pagein}
        if sched.compat:
            need |= set(st.pageout)
        needed_next = need
    out = tuple(Stage(st.compute, new_keep[t], st.pagein, st.pageout) for t, st in enumerate(stages))
    return Schedule(out, compat=sched.compat, overlap=sched.overlap, meta=sched.meta)


def check_consistency(sim: SimResult, objective_j: float, budget: int | None,
                      deadline: float | None, who: str) -> None:
    if not sim.ok:
        raise SolverBug(f"{who}: schedule violates its constraints in the simulator: "
                        + "; ".join(sim.violations))
    if not math.isclose(sim.energy_j, objective_j, rel_tol=1e-6, abs_tol=1e-12 + 1e-9 * abs(objective_j)):
        raise SolverBug(f"{who}: objective {objective_j!r} J but the simulator measures "
                        f"{sim.energy_j!r} J")


def min_feasible_budget(inst: Instance, mode: str = "integrated", compat: bool = False,
                        overlap: bool = False, solver: str = "highs",
                        time_limit: float | None = 60.0) -> tuple[int, bool]:
    """(smallest RAM budget with any schedule, exact?) ignoring the deadline.

    Serial paging modes: the lower bound is met by :func:`page_everything` (exact). Otherwise a
    MILP minimises the peak (``exact`` False if it stopped at the time limit; the value returned is
    then the best schedule found, an upper bound)."""
    lower = min_budget_bound(inst, compat)
    if mode in ("integrated", "paging") and not compat:
        sim = simulate(inst, page_everything(inst, overlap))
        if sim.peak_memory_bytes <= lower:
            return lower, True
    opts = Options(mode=mode, compat=compat, overlap=overlap)
    return _min_peak_milp(inst, opts, solver, time_limit)


def _min_peak_milp(inst: Instance, opts: Options, solver: str, time_limit: float | None
                   ) -> tuple[int, bool]:
    import pulp
    ref = max(inst.no_savings_peak(), 1)
    import warnings
    form = Formulation(inst, ref, None, opts, slack_presolve=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        peak = pulp.LpVariable("peak", lowBound=0)
    for (t, k), u in form.U.items():
        form.prob += u - peak <= 0
        if form.ws[k]:
            rk = 1 if k == t else form.R.get((t, k))
            form.prob += u + form.ws[k] * rk - peak <= 0
    form.prob.setObjective(peak + 1e-6 * form.energy_expr)
    raw = run_solver(form, solver, time_limit, 1e-6, None, False)
    if raw.status not in ("optimal", "feasible"):
        return ref, False
    sched = form.schedule()
    sim = simulate(inst, sched)
    return sim.peak_memory_bytes, raw.status == "optimal"


def fastest_runtime(inst: Instance, budget: int | None, opts: Options, solver: str = "highs",
                    time_limit: float | None = 60.0) -> tuple[float | None, bool]:
    """(minimum runtime of a schedule within ``budget``, exact?)."""
    form = Formulation(inst, budget, None, opts, objective="runtime")
    raw = run_solver(form, solver, time_limit, 1e-6, None, False)
    if raw.status not in ("optimal", "feasible"):
        return None, False
    sim = simulate(inst, form.schedule(), budget)
    return sim.runtime_s, raw.status == "optimal"


def explain(inst: Instance, res: SolveResult, opts: Options, solver: str,
            time_limit: float | None) -> str:
    """One-line infeasibility message with the minimum budget and the fastest runtime."""
    lim = min(time_limit or 20.0, 20.0)
    min_b, exact_b = min_feasible_budget(inst, opts.mode, opts.compat, opts.overlap, solver, lim)
    what = f"{inst.name} on {inst.device or 'this device'} ({opts.mode}{', compat' if opts.compat else ''})"
    parts = []
    if res.budget_bytes is not None and res.budget_bytes < min_b:
        parts.append(f"no schedule fits {_fmt_bytes(res.budget_bytes)}: the minimum feasible memory "
                     f"budget is {'' if exact_b else 'at most '}{_fmt_bytes(min_b)} ({min_b} B)")
        fast, _ = fastest_runtime(inst, min_b, opts, solver, lim)
        if fast is not None:
            parts.append(f"at that budget the fastest runtime is {fast:.4g} s")
    else:
        fast, exact_t = fastest_runtime(inst, res.budget_bytes, opts, solver, lim)
        budget_txt = _fmt_bytes(res.budget_bytes) if res.budget_bytes else "no memory limit"
        if fast is None:
            parts.append(f"no schedule found within {budget_txt}")
        else:
            parts.append(f"no schedule meets the deadline {res.deadline_s:.4g} s within {budget_txt}: "
                         f"the fastest feasible runtime is {'' if exact_t else 'at most '}{fast:.4g} s")
        parts.append(f"minimum feasible memory budget is {_fmt_bytes(min_b)} ({min_b} B)")
    return f"{what}: " + "; ".join(parts) + "; raise --memory or --deadline"
