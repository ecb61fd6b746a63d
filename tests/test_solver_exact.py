"""Exact memory accounting, the keep-everything fast path, sweeps that survive failing points,
the fast Pareto filter against the O(n^2) oracle, and the whole-call time limit. Real HiGHS,
real CP-SAT, real SQLite."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import costdb
from solver.milp import Formulation, Options, exact_memory_units, run_solver
from solver.pareto import nondominated, pareto_mask_oracle, sweep
from solver.problem import Instance, NodeCost, Paging, random_training_instance
from solver.simulate import simulate
from solver.solve import min_budget_bound, solve
from solver.store import pareto_points

PAGING = Paging(0.01, 40.0, 0.02, 0.01, 30.0, 0.03)


def chain(sizes, deps=None, paging=PAGING, fixed=0):
    nodes = tuple(NodeCost(idx=i, name=f"n{i}", phase="fwd",
                           deps=(deps[i] if deps else ((i - 1,) if i else ())),
                           runtime_s=1.0, energy_j=1.0 + i, output_bytes=s)
                  for i, s in enumerate(sizes))
    return Instance("chain", nodes, paging, fixed_bytes=fixed)


# --- exact memory ---------------------------------------------------------------------------------

def test_three_node_graph_at_its_exact_budget_is_optimal():
    """40 B -> 8,000,000 B -> 40 B at 8,000,080 B: the MILP itself (not only the fast path) must
    find the optimum; the old power-of-two rounding cut it off."""
    inst = chain([40, 8_000_000, 40])
    budget = 8_000_080
    unit, m, _, cap = exact_memory_units(inst, budget, False)
    assert unit == 40 and m == [1, 200_000, 1] and cap == 200_002
    for compat in (False, True):
        form = Formulation(inst, budget, None, Options(compat=compat), slack_presolve=False)
        raw = run_solver(form, "highs", 60, 1e-6)
        assert raw.status == "optimal"
        sim = simulate(inst, form.schedule(), budget)
        assert sim.ok and sim.peak_memory_bytes == budget
    for method in ("milp", "cpsat"):
        r = solve(inst, budget=budget, method=method)
        assert r.status == "optimal" and r.peak_memory_bytes <= budget
        assert r.energy_j == pytest.approx(inst.compute_energy_j)


@pytest.mark.parametrize("method", ["milp", "cpsat"])
def test_sizes_that_are_multiples_of_no_unit_fit_to_the_byte(method):
    """Co-prime sizes (gcd 1): a budget one byte below a schedule's peak must force another
    schedule, and the budget equal to the peak must admit it."""
    sizes = [7, 1_000_003, 11, 999_983, 13, 5]
    deps = [(), (0,), (1,), (2, 0), (3, 1), (4, 2)]
    inst = chain(sizes, deps)
    assert exact_memory_units(inst, 10**7, False)[0] == 1
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    seen = []
    for budget in sorted({lo, lo + 1, (lo + hi) // 2, hi - 1}):
        r = solve(inst, budget=budget, method=method, max_computations=inst.n,
                  explain_infeasible=False)
        assert r.status == "optimal", (budget, r.message)
        assert r.peak_memory_bytes <= budget
        seen.append(r)
        # a schedule whose peak is exactly the budget is admitted: re-solve at its own peak
        r2 = solve(inst, budget=r.peak_memory_bytes, method=method, max_computations=inst.n,
                   explain_infeasible=False)
        assert r2.status == "optimal" and r2.energy_j == pytest.approx(r.energy_j, rel=1e-9)
    energies = [r.energy_j for r in seen]
    assert energies == sorted(energies, reverse=True)      # more memory never costs more


# --- keep-everything fast path ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["milp", "cpsat", "auto"])
def test_keep_everything_is_returned_as_proven_optimal_without_a_model(method):
    inst = random_training_instance(8, 2, fixed_bytes=3)
    hi = inst.no_savings_peak()
    r = solve(inst, budget=hi, deadline=inst.compute_runtime_s * 1.01, method=method)
    assert r.status == "optimal" and r.method == "keep_everything"
    assert r.n_variables == 0 and r.gap == 0.0
    assert r.energy_j == pytest.approx(inst.compute_energy_j)
    assert r.bound_energy_j == pytest.approx(inst.compute_energy_j)
    assert r.sim.recomputes == r.sim.pageins == 0
    # one byte less and keep-everything no longer fits: a real solve, never below the bound
    r2 = solve(inst, budget=hi - 1, method=method, explain_infeasible=False)
    assert r2.method != "keep_everything"
    if r2.feasible:
        assert r2.energy_j >= inst.compute_energy_j * (1 - 1e-12)


# --- sweeps that never crash -----------------------------------------------------------------------

def test_a_failing_point_is_stored_and_the_sweep_goes_on(db_path):
    inst = random_training_instance(5, 4, fixed_bytes=8)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budgets = [0, lo, (lo + hi) // 2, hi]          # 0 B is a user error inside its point
    with costdb.open(db_path, create=True) as db:
        out = sweep(inst, budgets, [None, inst.compute_runtime_s * 1.5], db=db,
                    executor="serial", method="milp")
        pts = pareto_points(db, out.sweep_id)
        status = db.conn.execute("SELECT status FROM sweeps WHERE id = ?",
                                 (out.sweep_id,)).fetchone()[0]
    assert status == "done" and len(pts) == 8
    bad = pts[pts.budget_bytes == 0]
    assert len(bad) == 2 and set(bad.status) == {"error"}
    assert all("memory budget must be positive" in m for m in bad.message)
    good = pts[pts.budget_bytes != 0]
    assert set(good.status) <= {"optimal", "infeasible"} and (good.status == "optimal").any()
    assert not bad.pareto.any()
    # every stored schedule replays in the simulator within its point's limits
    for r in out.results:
        if r.schedule is not None:
            assert simulate(inst, r.schedule, r.budget_bytes, r.deadline_s).ok


def test_sweep_points_are_warm_started_from_their_neighbour():
    inst = random_training_instance(7, 1, fixed_bytes=2)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budgets = [lo + (hi - lo) * k // 5 for k in range(1, 5)]
    out = sweep(inst, budgets, [None], executor="serial", method="milp")
    starts = [r.options.get("warm_start_from") for r in out.results]
    feas = [r for r in out.results if r.feasible]
    assert len(feas) >= 2
    # the larger budgets could start from the previous point's schedule (it fits them too)
    ref = [solve(inst, budget=b, method="milp", explain_infeasible=False) for b in budgets]
    for a, b in zip(out.results, ref):
        assert a.status == b.status
        if a.feasible:
            assert a.energy_j == pytest.approx(b.energy_j, rel=1e-9)
    assert any(s and s.startswith("neighbour") for s in starts) or all(
        r.method == "keep_everything" for r in feas[1:])


def test_cli_pareto_resnet18_on_a_fresh_database(runner, db_path):
    """The sweep that used to end in "initial value 3217 is greater than upBound 3216"."""
    from costdb.cli import cli
    r = runner.invoke(cli, ["pareto", "--db", db_path, "--device", "rpi4b", "--model", "resnet18",
                            "--points", "3", "--executor", "serial", "--time-limit", "5",
                            "--method", "milp"])
    assert r.exit_code == 0, r.output
    assert "3 points" in r.output
    with costdb.open(db_path) as db:
        pts = pareto_points(db)
    assert len(pts) == 3 and set(pts.status) <= {"optimal", "feasible"}
    assert pts.schedule_id.notna().all()


# --- the non-dominated filter ----------------------------------------------------------------------

values = st.one_of(st.integers(0, 4).map(float), st.just(math.nan), st.just(math.inf),
                   st.just(-math.inf))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5).flatmap(
    lambda d: st.lists(st.lists(values, min_size=d, max_size=d), max_size=30)))
def test_both_filters_match_the_oracle(points):
    ref = pareto_mask_oracle(points)
    arr = np.array(points, dtype=float).reshape(len(points), -1) if points else np.zeros((0, 1))
    assert nondominated(arr).tolist() == ref
    assert nondominated(arr, use_moocore=False).tolist() == ref


def test_filter_handles_a_million_points_and_large_fronts():
    rng = np.random.default_rng(1)
    a = rng.random((10**6, 3))
    m1 = nondominated(a)
    m2 = nondominated(a, use_moocore=False)
    assert (m1 == m2).all() and 0 < m1.sum() < 10**4
    # every point of a plane x + y + z = 1 is non-dominated
    p = rng.random((20_000, 3))
    p /= p.sum(axis=1, keepdims=True)
    assert nondominated(p).all() and nondominated(p, use_moocore=False).all()
    # check a sample against the definition
    idx = rng.choice(10**6, 200, replace=False)
    front = a[m1]
    for k in idx:
        dominated = ((front <= a[k]).all(axis=1) & (front < a[k]).any(axis=1)).any()
        assert m1[k] == (not dominated)


# --- the time limit is a promise about wall time ----------------------------------------------------

def test_solve_within_returns_the_child_result_or_the_best_heuristic_when_killed():
    from solver.commands import solve_within
    inst = random_training_instance(6, 3, fixed_bytes=2)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budget = lo + (hi - lo) // 3
    ok = solve_within(inst, 120.0, budget=budget, method="milp", explain_infeasible=False)
    ref = solve(inst, budget=budget, method="milp", explain_infeasible=False)
    assert ok.status == "optimal" and ok.energy_j == pytest.approx(ref.energy_j, rel=1e-9)
    # a limit shorter than starting the child process: it is killed, the heuristic comes back
    big = random_training_instance(60, 1, fixed_bytes=2)
    lo, hi = min_budget_bound(big), big.no_savings_peak()
    r = solve_within(big, 0.3, budget=lo + (hi - lo) // 10, method="milp",
                     explain_infeasible=False)
    assert r.status in ("feasible", "time_limit") and "limit" in r.message
    if r.schedule is not None:
        assert simulate(big, r.schedule, lo + (hi - lo) // 10).ok
        assert r.bound_energy_j <= r.energy_j
