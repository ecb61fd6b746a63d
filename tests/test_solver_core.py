"""Solver core: simulator semantics, MILP vs simulator, brute-force optimality, baselines, compat
mode against the textbook POET formulation, infeasibility messages. Real HiGHS and CBC."""
from __future__ import annotations

import itertools
import math

import pulp
import pytest

from solver.baselines import (capuchin_paging, checkpoint_all, chen_sqrt, page_everything,
                              plan_to_schedule)
from solver.milp import Formulation, Options
from solver.problem import (Instance, NodeCost, Paging, compat_instance, random_instance,
                            random_training_instance)
from solver.schedule import Schedule, Stage
from solver.simulate import ScheduleError, simulate
from solver.solve import InfeasibleError, min_budget_bound, min_feasible_budget, solve

PAGING = Paging(0.01, 40.0, 0.02, 0.01, 30.0, 0.03)
# PuLP 3.3 deprecates constructing LpVariable directly (the textbook model below does)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def chain(sizes, rt=1.0):
    nodes = tuple(NodeCost(idx=i, name=f"n{i}", phase="fwd", deps=(i - 1,) if i else (),
                           runtime_s=rt, energy_j=2 * rt, output_bytes=s) for i, s in enumerate(sizes))
    return Instance("chain", nodes, PAGING, fixed_bytes=100)


# --- simulator ----------------------------------------------------------------------------------

def test_simulator_counts_memory_time_and_energy_by_hand():
    inst = chain([10, 20, 30])
    sched = Schedule((Stage((0,), keep=(0,)), Stage((1,), keep=(1,)), Stage((2,))))
    sim = simulate(inst, sched)
    # stage 1: 0 resident (10) + 1 computed (20); stage 2: 1 resident (20) + 2 computed (30)
    assert sim.peak_memory_bytes == 100 + 50
    assert sim.runtime_s == pytest.approx(3.0) and sim.energy_j == pytest.approx(6.0)
    # paging: page 0 out at stage 0, drop it, page it in at stage 1 for stage 2 (which does not need it)
    inst2 = Instance("c", tuple(NodeCost(idx=i, name=f"n{i}", phase="fwd",
                                         deps=((0,) if i == 2 else ()),
                                         runtime_s=1.0, energy_j=2.0, output_bytes=8)
                                for i in range(3)), PAGING)
    s2 = Schedule((Stage((0,), keep=(), pageout=(0,)), Stage((1,), keep=(0,), pagein=(0,)), Stage((2,))))
    sim2 = simulate(inst2, s2)
    assert sim2.pageins == 1 and sim2.pageouts == 1
    assert sim2.energy_j == pytest.approx(6.0 + PAGING.pagein_energy(8) + PAGING.pageout_energy(8))
    assert sim2.runtime_s == pytest.approx(3.0 + PAGING.pagein_time(8) + PAGING.pageout_time(8))
    # overlapped paging: a stage lasts max(compute, paging)
    s3 = Schedule(s2.stages, overlap=True)
    assert simulate(inst2, s3).runtime_s == pytest.approx(3.0)


@pytest.mark.parametrize("bad, msg", [
    (Schedule((Stage((0,)), Stage((1,)), Stage((2,)))), "not in RAM"),               # 0 dropped
    (Schedule((Stage((0,), keep=(0,)), Stage((1,), keep=(0,), pagein=(0,)), Stage((2,)))), "not on secondary"),
    (Schedule((Stage((0,), keep=(0,)), Stage((1,), keep=(1,), pageout=(0,)), Stage((2,)))), "only the stage's own"),
    (Schedule((Stage((0,), keep=(0,)), Stage((0, 1), keep=(1,)), Stage((2,)))), "already in RAM"),
    (Schedule((Stage((0,), keep=(0,)), Stage((1,), keep=(1, 0)), Stage((1, 2),))), "already in RAM"),
    (Schedule((Stage((0,), keep=(0,)), Stage((1,), keep=(5,)), Stage((2,)))), "out of range"),
    (Schedule((Stage((0,), keep=(0,)), Stage((1,)))), "stages"),
])
def test_simulator_rejects_invalid_schedules(bad, msg):
    inst = Instance("c", tuple(NodeCost(idx=i, name=f"n{i}", phase="fwd",
                                        deps=((0, 1) if i == 2 else ((i - 1,) if i else ())),
                                        runtime_s=1.0, energy_j=1.0, output_bytes=4) for i in range(3)),
                    PAGING)
    with pytest.raises(ScheduleError, match=msg):
        simulate(inst, bad)


def test_simulator_flags_budget_and_deadline():
    inst = chain([10, 20, 30])
    sim = simulate(inst, checkpoint_all(inst), budget=120, deadline=1.0)
    assert not sim.ok and len(sim.violations) == 2


# --- MILP vs simulator on random DAGs -----------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["integrated", "remat", "paging"])
def test_milp_schedules_replay_exactly(seed, mode):
    inst = random_training_instance(5 + seed % 2, seed, fixed_bytes=7)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budget = lo + (hi - lo) // 3
    deadline = inst.compute_runtime_s * 1.4 if seed % 2 else None
    solver = "highs" if seed < 2 else "cbc"
    r = solve(inst, budget=budget, deadline=deadline, mode=mode, solver=solver, explain_infeasible=False)
    if r.status == "infeasible":
        assert mode != "integrated" or min_feasible_budget(inst)[0] > budget
        return
    assert r.status == "optimal"
    sim = simulate(inst, r.schedule, budget, deadline)
    assert sim.ok and sim.peak_memory_bytes <= budget
    assert sim.energy_j == pytest.approx(r.objective_energy_j, rel=1e-9)
    assert r.bound_energy_j <= r.energy_j * (1 + 1e-9)
    if mode == "remat":
        assert sim.pageins == sim.pageouts == 0
    if mode == "paging":
        assert sim.recomputes == 0


def test_highs_and_cbc_agree_and_integrated_is_best():
    inst = random_training_instance(6, 11, fixed_bytes=3)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budget = lo + (hi - lo) // 4
    found = {}
    for mode in ("integrated", "remat", "paging"):
        for s in ("highs", "cbc"):
            r = solve(inst, budget=budget, mode=mode, solver=s, explain_infeasible=False)
            found[mode, s] = r.energy_j if r.feasible else math.inf
        assert found[mode, "highs"] == pytest.approx(found[mode, "cbc"], rel=1e-6)
    assert found["integrated", "highs"] <= min(found["remat", "highs"], found["paging", "highs"]) + 1e-9


def test_overlap_mode_replays_and_is_no_slower():
    inst = random_training_instance(6, 3)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budget = lo + (hi - lo) // 3
    serial = solve(inst, budget=budget, deadline=inst.compute_runtime_s * 1.2, explain_infeasible=False)
    ov = solve(inst, budget=budget, deadline=inst.compute_runtime_s * 1.2, overlap=True,
               explain_infeasible=False)
    assert ov.schedule.overlap and ov.status == "optimal"
    assert simulate(inst, ov.schedule, budget, inst.compute_runtime_s * 1.2).ok
    if serial.feasible:
        assert ov.sim.runtime_s <= serial.sim.runtime_s + 1e-9


# --- brute force --------------------------------------------------------------------------------

def brute_force(inst: Instance, budget: int, deadline: float | None, mode: str) -> float:
    """Minimum energy over every retention plan (keep sets), page-out set and page-in choice,
    with the minimal recomputation each needs; replayed by the simulator. Independent of the MILP."""
    n = inst.n
    best = math.inf
    slots = [list(range(t + 1)) for t in range(n - 1)]
    keep_choices = [list(itertools.chain.from_iterable(itertools.combinations(s, r)
                                                       for r in range(len(s) + 1))) for s in slots]
    succ = inst.successors()
    # only a value with a consumer after the next stage can ever be paged back in usefully
    pageable = [i for i in range(n) if any(j > i + 1 for j in succ[i])]
    pout_sets = [()] if mode == "remat" else list(itertools.chain.from_iterable(
        itertools.combinations(pageable, r) for r in range(len(pageable) + 1)))
    for keeps in itertools.product(*keep_choices):
        keep = [set(k) for k in keeps] + [set()]
        for pout in pout_sets:
            pout = set(pout)
            # acquisitions: (t, i) kept at the end of t, not resident at its start, i < t
            acq = [(t, i) for t in range(1, n - 1) for i in keep[t] if i < t and i not in keep[t - 1]]
            options = [[False, True] if i in pout else [False] for (t, i) in acq]
            for choice in itertools.product(*options):
                pagein = [set() for _ in range(n)]
                for (t, i), c in zip(acq, choice):
                    if c:
                        pagein[t].add(i)
                sched = plan_to_schedule(inst, keep, pout, pagein)
                if mode == "paging" and any(len(s.compute) > 1 for s in sched.stages):
                    continue
                try:
                    sim = simulate(inst, sched, budget, deadline)
                except ScheduleError:
                    continue
                if sim.ok:
                    best = min(best, sim.energy_j)
    return best


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["integrated", "remat", "paging"])
def test_milp_matches_brute_force_on_tiny_graphs(seed, mode):
    inst = random_training_instance(2, seed, fixed_bytes=1)          # 5 nodes
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    for budget in sorted({lo, (lo + hi) // 2}):
        deadline = inst.compute_runtime_s * 1.25 if seed == 1 else None
        bf = brute_force(inst, budget, deadline, mode)
        r = solve(inst, budget=budget, deadline=deadline, mode=mode, allow_bwd_remat=True,
                  explain_infeasible=False)
        if math.isinf(bf):
            assert r.status == "infeasible"
        else:
            assert r.status == "optimal" and r.energy_j == pytest.approx(bf, rel=1e-9)


# --- baselines never beat the optimum ------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_baselines_never_beat_the_milp(seed):
    inst = random_training_instance(7, seed, fixed_bytes=4)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    for budget in (lo + (hi - lo) // 3, hi):
        r = solve(inst, budget=budget, mode="integrated", explain_infeasible=False)
        assert r.status == "optimal"
        for sched in (checkpoint_all(inst), chen_sqrt(inst), capuchin_paging(inst, budget),
                      page_everything(inst), capuchin_paging(inst, budget, base="chen")):
            sim = simulate(inst, sched, budget)
            if sim.ok:
                assert sim.energy_j >= r.energy_j - 1e-9
        remat = solve(inst, budget=budget, mode="remat", explain_infeasible=False)
        if remat.feasible:
            assert remat.energy_j >= r.energy_j - 1e-9
    # checkpoint-all is the no-savings peak and needs no recomputation
    sim = simulate(inst, checkpoint_all(inst))
    assert sim.recomputes == 0 and sim.peak_memory_bytes == hi


def test_baselines_are_valid_schedules():
    inst = random_training_instance(9, 5)
    for sched in (checkpoint_all(inst), chen_sqrt(inst), chen_sqrt(inst, 2), page_everything(inst),
                  capuchin_paging(inst, min_budget_bound(inst))):
        simulate(inst, sched)           # raises on an invalid schedule
    assert simulate(inst, page_everything(inst)).peak_memory_bytes == min_budget_bound(inst)


# --- presolve / options preserve the optimum ----------------------------------------------------

def test_presolve_warm_start_and_lp_rounding_are_consistent():
    inst = random_training_instance(6, 7, fixed_bytes=2)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budget = lo + (hi - lo) // 3
    ref = solve(inst, budget=budget, allow_bwd_remat=True, explain_infeasible=False)
    plain = solve(inst, budget=budget, allow_bwd_remat=True, prune=False, symmetry_cuts=False,
                  warm_start=False, explain_infeasible=False)
    assert ref.n_variables < plain.n_variables
    assert ref.energy_j == pytest.approx(plain.energy_j, rel=1e-9)
    restricted = solve(inst, budget=budget, explain_infeasible=False)      # no backward remat
    assert restricted.energy_j >= ref.energy_j - 1e-9
    approx = solve(inst, budget=budget, method="lp_round", explain_infeasible=False)
    assert approx.feasible and simulate(inst, approx.schedule, budget).ok
    assert approx.energy_j >= restricted.energy_j - 1e-9
    assert approx.bound_energy_j <= restricted.energy_j + 1e-9


def test_coefficient_scaling_keeps_tiny_joule_costs_exact():
    """Costs in nano-joules (as on microcontrollers) give the same schedule as costs in joules."""
    from dataclasses import replace
    inst = random_training_instance(6, 2, fixed_bytes=2)
    tiny = replace(inst, nodes=tuple(replace(nd, energy_j=nd.energy_j * 1e-9, runtime_s=nd.runtime_s * 1e-6)
                                     for nd in inst.nodes),
                   paging=Paging(1e-8, 4e7, 2e-11, 1e-8, 3e7, 3e-11))
    big = replace(tiny, nodes=tuple(replace(nd, energy_j=nd.energy_j * 1e9, runtime_s=nd.runtime_s * 1e6)
                                    for nd in tiny.nodes),
                  paging=Paging(1e-2, 40.0, 2e-2, 1e-2, 30.0, 3e-2))
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    b = lo + (hi - lo) // 3
    for s in ("highs", "cbc"):
        a = solve(tiny, budget=b, solver=s, explain_infeasible=False)
        c = solve(big, budget=b, solver=s, explain_infeasible=False)
        assert a.energy_j == pytest.approx(c.energy_j * 1e-9, rel=1e-9)


# --- compatibility mode vs the textbook POET formulation ----------------------------------------

def textbook_poet(inst: Instance, budget: int, deadline: float | None, paging: bool, remat: bool) -> float:
    """The published POET MILP (Patil et al. 2022, eqs. for R, S_RAM, S_SD, M_in, M_out, U,
    Free_E), T x T variables, no presolve; activations only, paging outside the deadline."""
    T = inst.n
    m = [nd.output_bytes for nd in inst.nodes]
    E = inst.edges()
    succ = inst.successors()
    p = pulp.LpProblem("textbook", pulp.LpMinimize)
    B = pulp.LpBinary
    R = [[pulp.LpVariable(f"R{t}_{i}", cat=B) for i in range(T)] for t in range(T)]
    S = [[pulp.LpVariable(f"S{t}_{i}", cat=B) for i in range(T)] for t in range(T)]
    D = [[pulp.LpVariable(f"D{t}_{i}", cat=B) for i in range(T)] for t in range(T)]
    Mi = [[pulp.LpVariable(f"Mi{t}_{i}", cat=B) for i in range(T)] for t in range(T)]
    Mo = [[pulp.LpVariable(f"Mo{t}_{i}", cat=B) for i in range(T)] for t in range(T)]
    U = [[pulp.LpVariable(f"U{t}_{i}", 0, budget) for i in range(T)] for t in range(T)]
    F = [[pulp.LpVariable(f"F{t}_{e}", cat=B) for e in range(len(E))] for t in range(T)]
    scale = inst.compute_energy_j
    p += pulp.lpSum(R[t][i] * inst.nodes[i].energy_j / scale + Mi[t][i] * inst.pagein_energy(i) / scale
                    + Mo[t][i] * inst.pageout_energy(i) / scale for t in range(T) for i in range(T))
    for t in range(T):
        p += R[t][t] == 1
        for i in range(T):
            if i > t:
                p += R[t][i] == 0
                p += Mi[t][i] == 0
                p += Mo[t][i] == 0
            if i >= t:
                p += S[t][i] == 0
                p += D[t][i] == 0
            p += Mi[t][i] <= D[t][i]
            p += Mo[t][i] <= S[t][i]
            if t + 1 < T:
                p += S[t + 1][i] <= S[t][i] + R[t][i] + Mi[t][i]
                p += D[t + 1][i] <= D[t][i] + Mo[t][i]
            if not paging:
                p += Mi[t][i] == 0
                p += Mo[t][i] == 0
            if not remat and i != t:
                p += R[t][i] == 0
        for (u, v) in E:
            p += R[t][v] <= R[t][u] + S[t][u]
        for e, (i, k) in enumerate(E):
            later = [R[t][j] for j in succ[i] if j > k]
            haz = 1 - R[t][k] + (S[t + 1][i] if t + 1 < T else 0) + pulp.lpSum(later)
            maxh = (2 if t + 1 < T else 1) + len(later)
            p += 1 - F[t][e] <= haz
            p += maxh * (1 - F[t][e]) >= haz
        p += U[t][0] == R[t][0] * m[0] + pulp.lpSum(S[t][i] * m[i] for i in range(T))
        for k in range(T - 1):
            freed = pulp.lpSum(m[i] * F[t][e] for e, (i, kk) in enumerate(E) if kk == k)
            p += U[t][k + 1] == U[t][k] + R[t][k + 1] * m[k + 1] - freed
    if deadline is not None:
        p += pulp.lpSum(R[t][i] * inst.nodes[i].runtime_s for t in range(T) for i in range(T)) <= deadline
    p.solve(pulp.HiGHS(msg=False))
    if p.status != pulp.LpStatusOptimal:
        return math.inf
    return pulp.value(p.objective) * scale


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["integrated", "remat", "paging"])
def test_compat_mode_reproduces_the_published_formulation(seed, mode):
    inst = random_training_instance(3, seed, fixed_bytes=50)          # 7 nodes
    ci = compat_instance(inst)
    lo, hi = min_budget_bound(ci, True), ci.no_savings_peak()
    budget = lo + (hi - lo) // 3
    deadline = inst.compute_runtime_s * 1.3 if seed == 2 else None
    ref = textbook_poet(ci, budget, deadline, mode != "remat", mode != "paging")
    r = solve(inst, budget=budget, deadline=deadline, mode=mode, compat=True, explain_infeasible=False)
    if math.isinf(ref):
        assert r.status == "infeasible"
    else:
        assert r.status == "optimal" and r.energy_j == pytest.approx(ref, rel=1e-6)
        assert r.schedule.compat and simulate(ci, r.schedule, budget, deadline).ok


# --- infeasibility ----------------------------------------------------------------------------

def test_infeasible_budget_reports_minimum_budget_which_is_feasible():
    inst = random_training_instance(6, 4, fixed_bytes=10)
    lo = min_budget_bound(inst)
    r = solve(inst, budget=lo - 1, mode="integrated")
    assert r.status == "infeasible"
    assert "minimum feasible memory budget" in r.message and f"({lo} B)" in r.message
    assert solve(inst, budget=lo, mode="integrated").feasible
    # remat-only: the minimum comes from a MILP and is feasible, one byte less is not
    mb, exact = min_feasible_budget(inst, "remat")
    assert exact
    assert solve(inst, budget=mb, mode="remat", allow_bwd_remat=False).feasible
    assert solve(inst, budget=mb - 1, mode="remat", explain_infeasible=False).status == "infeasible"


def test_infeasible_deadline_reports_fastest_runtime():
    inst = random_training_instance(6, 4, fixed_bytes=10)
    lo = min_budget_bound(inst)
    r = solve(inst, budget=lo, deadline=inst.compute_runtime_s * 0.5)
    assert r.status == "infeasible" and "fastest feasible runtime" in r.message
    fast = float(r.message.split("fastest feasible runtime is ")[1].split(" s")[0])
    assert solve(inst, budget=lo, deadline=fast * 1.0001, explain_infeasible=False).feasible
    with pytest.raises(InfeasibleError):
        raise InfeasibleError(r.message)


def test_invalid_arguments_are_user_errors():
    from costdb.errors import CostdbError
    inst = random_instance(4, 1)
    with pytest.raises(CostdbError):
        solve(inst, budget=10, mode="bogus")
    with pytest.raises(CostdbError):
        solve(inst, budget=10, solver="gurobi")
    with pytest.raises(CostdbError):
        solve(inst, budget=-1)
    with pytest.raises(CostdbError):
        solve(inst, compat=True, overlap=True)


def test_lp_round_warm_start_keeps_the_optimum(monkeypatch):
    import solver.solve as S
    inst = random_training_instance(6, 9, fixed_bytes=2)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budget = lo + (hi - lo) // 3
    ref = solve(inst, budget=budget, explain_infeasible=False)
    monkeypatch.setattr(S, "LP_ROUND_WARM_MIN_NODES", 0)
    r = solve(inst, budget=budget, explain_infeasible=False)
    assert r.status == "optimal" and r.energy_j == pytest.approx(ref.energy_j, rel=1e-9)
    assert "lp_round_s" in r.options
