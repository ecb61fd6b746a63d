"""The retention-interval (CP-SAT) formulation against the MILP, against brute force, on zoo
graphs and with the bound on computations per value. Real OR-Tools CP-SAT and HiGHS; every
schedule is replayed by the simulator."""
from __future__ import annotations

import math

import pytest

from solver.cpsat import CpsatModel
from solver.milp import Options
from solver.problem import compat_instance, random_instance, random_training_instance
from solver.simulate import simulate
from solver.solve import min_budget_bound, solve
from test_solver_core import brute_force

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _budgets(inst, compat=False):
    i2 = compat_instance(inst) if compat else inst
    lo, hi = min_budget_bound(i2, compat), i2.no_savings_peak()
    return sorted({lo, lo + (hi - lo) // 4, lo + (hi - lo) // 2, hi - 1})


def _agree(inst, budget, deadline, **kw):
    a = solve(inst, budget=budget, deadline=deadline, method="milp", explain_infeasible=False,
              gap=1e-6, **kw)
    b = solve(inst, budget=budget, deadline=deadline, method="cpsat", explain_infeasible=False,
              gap=1e-6, max_computations=inst.n, **kw)
    assert a.status == b.status, (budget, deadline, a.message, b.message)
    if a.feasible:
        assert a.status == "optimal"
        assert b.energy_j == pytest.approx(a.energy_j, rel=1e-6)
        i2 = compat_instance(inst) if kw.get("compat") else inst
        assert simulate(i2, b.schedule, budget, deadline).ok
        assert b.bound_energy_j <= b.energy_j * (1 + 1e-9)
    return a, b


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", ["integrated", "remat", "paging"])
def test_cpsat_and_milp_agree_on_random_training_dags(seed, mode):
    inst = random_training_instance(5 + seed % 3, seed, fixed_bytes=seed)
    for budget in _budgets(inst):
        deadline = inst.compute_runtime_s * (1.3 if seed % 2 else 7.6)
        _agree(inst, budget, deadline, mode=mode, allow_bwd_remat=bool(seed % 2))


@pytest.mark.parametrize("seed", range(4))
def test_cpsat_and_milp_agree_on_random_dags_with_many_edges(seed):
    inst = random_instance(9, seed, edge_p=0.4, max_bytes=9)
    for budget in _budgets(inst)[:3]:
        _agree(inst, budget, None)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["integrated", "remat", "paging"])
def test_cpsat_and_milp_agree_in_compat_mode(seed, mode):
    inst = random_training_instance(3, seed, fixed_bytes=50)
    for budget in _budgets(inst, compat=True)[:3]:
        deadline = inst.compute_runtime_s * 1.3 if seed == 2 else None
        _agree(inst, budget, deadline, mode=mode, compat=True)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["integrated", "remat", "paging"])
def test_cpsat_matches_brute_force_on_tiny_graphs(seed, mode):
    inst = random_training_instance(2, seed, fixed_bytes=1)          # 5 nodes
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    for budget in sorted({lo, (lo + hi) // 2}):
        deadline = inst.compute_runtime_s * 1.25 if seed == 1 else None
        bf = brute_force(inst, budget, deadline, mode)
        r = solve(inst, budget=budget, deadline=deadline, mode=mode, method="cpsat",
                  allow_bwd_remat=True, max_computations=inst.n, explain_infeasible=False)
        if math.isinf(bf):
            assert r.status == "infeasible"
        else:
            assert r.status == "optimal" and r.energy_j == pytest.approx(bf, rel=1e-7)


@pytest.mark.parametrize("model", ["tinycnn", "mlp"])
def test_cpsat_and_milp_agree_on_zoo_graphs(model):
    pytest.importorskip("torch")
    from devices.catalog import get_profile
    from profiler.zoo import model_graph
    from solver.problem import instance_from_graph
    inst = instance_from_graph(model_graph(model, batch=2), get_profile("nrf52840"),
                               granularity="op")
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    for frac in (0.0, 0.3):
        budget = int(lo + frac * (hi - lo))
        _agree(inst, budget, inst.compute_runtime_s * 1.5)


def test_the_bound_on_computations_only_cuts_off_schedules_that_need_more():
    """max_computations=1 forbids recomputation: CP-SAT then equals the paging-only optimum; a
    larger bound is never worse and reaches the MILP's optimum."""
    inst = random_training_instance(6, 5, fixed_bytes=2)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budget = lo + (hi - lo) // 4
    milp = solve(inst, budget=budget, method="milp", allow_bwd_remat=True, explain_infeasible=False)
    one = solve(inst, budget=budget, method="cpsat", max_computations=1, allow_bwd_remat=True,
                explain_infeasible=False)
    paging = solve(inst, budget=budget, mode="paging", method="milp", explain_infeasible=False)
    # with one computation and one page-in per value, CP-SAT is at best the paging-only optimum
    if one.method == "cpsat":
        assert one.energy_j >= paging.energy_j * (1 - 1e-9)
        assert one.sim.recomputes == 0
    energies = [solve(inst, budget=budget, method="cpsat", max_computations=k, allow_bwd_remat=True,
                      explain_infeasible=False).energy_j for k in (2, 3, inst.n)]
    assert all(e >= milp.energy_j * (1 - 1e-9) for e in energies)
    assert energies == sorted(energies, reverse=True)
    assert energies[-1] == pytest.approx(milp.energy_j, rel=1e-9)


def test_cpsat_warm_start_hint_and_model_size_is_linear():
    inst = random_training_instance(12, 3, fixed_bytes=2)
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budget = lo + (hi - lo) // 3
    from solver.baselines import page_everything
    m = CpsatModel(inst, budget, None, Options(), 2)
    assert m.add_hint(page_everything(inst)) in (True, False)
    r = m.solve(30, 1e-6, 2)
    assert r.status == "optimal" and simulate(inst, r.schedule, budget).ok
    # O(n) copies per value: at most 2 computations + 2 page-ins each
    assert all(len(c) <= 4 for c in m.copies)


def test_cpsat_refuses_overlap_clearly():
    from costdb.errors import CostdbError
    inst = random_training_instance(4, 1)
    with pytest.raises(CostdbError, match="overlap"):
        solve(inst, budget=min_budget_bound(inst), method="cpsat", overlap=True)
    # auto picks the MILP for overlapped paging
    r = solve(inst, budget=min_budget_bound(inst), method="auto", overlap=True,
              explain_infeasible=False)
    assert r.method.startswith(("milp", "heuristic", "keep_everything"))
