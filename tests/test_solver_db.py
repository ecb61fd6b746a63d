"""Schedules and Pareto sweeps in real SQLite files, the CLI commands, the Pareto filter (against
an O(n^2) oracle with hypothesis) and the process / Dask executors."""
from __future__ import annotations

import json
import math
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import costdb
from costdb.cli import cli
from costdb.records import Measurement
from solver.pareto import (ProcessExecutor, SerialExecutor, pareto_mask, pareto_mask_oracle,
                           sweep)
from solver.problem import instance_from_db, random_training_instance
from solver.schedule import Schedule
from solver.simulate import simulate
from solver.solve import SolverBug, min_budget_bound, solve
from solver.store import load_schedule, save_schedule


# --- a fresh database: modelled costs, then measured ones ----------------------------------------

def test_fresh_database_gets_modeled_schedules_then_measured_costs_replace_them(db_path):
    with costdb.open(db_path, create=True) as db:
        inst = instance_from_db(db, "rpi4b", "tinycnn")
        assert inst.cost_provenance() == "modeled" and inst.model_id is not None
        r = solve(inst, budget=inst.no_savings_peak())
        sid = save_schedule(db, inst, r)
        sched, row = load_schedule(db, sid)
        assert sched.stages == r.schedule.stages
        assert row.cost_provenance == "modeled" and row.status == "optimal"
        assert row.energy_j == pytest.approx(r.energy_j) and row.n_nodes == inst.n
        assert Schedule.from_bytes(row.schedule_blob).stages == sched.stages
        assert row.record["breakdown"]["energy_j"] == pytest.approx(r.energy_j)
        # measure one op on rpi4b: it replaces the model for every node with that signature
        g = db.graph("tinycnn")
        from devices.catalog import get_profile
        db.upsert_device(get_profile("rpi4b"))
        session = db.start_session("rpi4b", {}, {}, inst.model_id, 1)
        sig = g.nodes[0].signature
        db.add_measurement(Measurement(device="rpi4b", signature=sig, session_id=session, status="ok",
                                       runtime_s=0.5, samples=3, energy_j=1.5,
                                       energy_provenance="measured", runtime_provenance="measured"))
        inst2 = instance_from_db(db, "rpi4b", "tinycnn")
        assert inst2.cost_provenance().startswith("mixed(")
        assert inst2.nodes[0].runtime_s == pytest.approx(0.5) and inst2.nodes[0].runtime_provenance == "measured"
        assert inst2.nodes[0].energy_j == pytest.approx(1.5)


def test_invalid_schedules_are_never_stored(db_path):
    inst = random_training_instance(5, 1)
    r = solve(inst, budget=inst.no_savings_peak())
    stages = list(r.schedule.stages)
    stages[2] = stages[2].__class__(stages[2].compute, (), (), ())   # drop what stage 3 needs
    r.schedule = Schedule(tuple(stages))
    with costdb.open(db_path, create=True) as db:
        with pytest.raises(SolverBug):
            save_schedule(db, inst, r)
        assert db.conn.execute("SELECT count(*) FROM schedules").fetchone()[0] == 0


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_solve_on_a_fresh_database(runner, db_path, tmp_path):
    out_json, out_bin = tmp_path / "s.json", tmp_path / "s.bin"
    res = runner.invoke(cli, ["solve", "--db", db_path, "--device", "rpi4b", "--model", "tinycnn",
                              "--memory", "200KiB", "--deadline", "2s", "-o", str(out_json),
                              "--binary", str(out_bin)])
    assert res.exit_code == 0, res.output
    assert "status optimal" in res.output and "costs modeled" in res.output
    assert "stored as schedule #1" in res.output
    sched = Schedule.from_json(out_json.read_text())
    assert Schedule.from_bytes(out_bin.read_bytes()).stages == sched.stages
    with costdb.open(db_path) as db:
        row = db.conn.execute("SELECT device, mode, status, budget_bytes, deadline_s FROM schedules").fetchone()
    assert row == ("rpi4b", "integrated", "optimal", 200 * 1024, 2.0)


def test_cli_solve_infeasible_prints_minimum_budget(runner, db_path):
    res = runner.invoke(cli, ["solve", "--db", db_path, "--device", "rpi4b", "--model", "tinycnn",
                              "--memory", "1KiB"])
    assert res.exit_code == 2
    assert "minimum feasible memory budget is" in res.output and "raise --memory" in res.output
    res = runner.invoke(cli, ["solve", "--db", db_path, "--device", "rpi4b", "--model", "tinycnn",
                              "--memory", "lots"])
    assert res.exit_code == 2 and "bad size" in res.output


def test_cli_solve_graph_json_with_each_mode_and_solver(runner, db_path, tmp_path):
    inst = random_training_instance(5, 2, fixed_bytes=10)
    g = tmp_path / "g.json"
    g.write_text(inst.to_json())
    budget = min_budget_bound(inst) + 4
    for mode, solver in (("integrated", "cbc"), ("remat", "highs"), ("paging", "highs")):
        res = runner.invoke(cli, ["solve", "--db", db_path, "--graph", str(g), "--memory", f"{budget}B",
                                  "--mode", mode, "--solver", solver, "--compat" if mode == "remat" else "--gap",
                                  *([] if mode == "remat" else ["0"])])
        assert res.exit_code in (0, 2), res.output
        if res.exit_code == 2:
            assert "minimum feasible memory budget" in res.output
        else:
            assert f"{mode}" in res.output and "status optimal" in res.output


def test_cli_pareto_sweep_stores_points(runner, db_path, tmp_path):
    inst = random_training_instance(5, 3, fixed_bytes=10)
    g = tmp_path / "g.json"
    g.write_text(inst.to_json())
    dl = inst.compute_runtime_s * 1.3
    res = runner.invoke(cli, ["pareto", "--db", db_path, "--graph", str(g), "--device", "mydev",
                              "--points", "3", "--deadlines", f"none,{dl}s", "--executor", "serial"])
    assert res.exit_code == 0, res.output
    assert "6 points" in res.output
    with costdb.open(db_path) as db:
        pts = db.conn.execute("SELECT energy_j, runtime_s, peak_memory_bytes, pareto, schedule_id, sweep_id "
                              "FROM pareto_points ORDER BY id").fetchall()
        assert len(pts) == 6 and all(p[5] == 1 for p in pts)
        vecs = [[math.nan if v is None else v for v in p[:3]] for p in pts]
        assert [bool(p[3]) for p in pts] == pareto_mask_oracle(vecs)
        n_sched = db.conn.execute("SELECT count(*) FROM schedules WHERE sweep_id = 1").fetchone()[0]
        assert n_sched == sum(1 for p in pts if p[4] is not None)
        assert db.conn.execute("SELECT status FROM sweeps").fetchone()[0] == "done"


# --- Pareto filter ---------------------------------------------------------------------------------

values = st.one_of(st.integers(0, 4).map(float), st.just(math.nan), st.just(math.inf))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(values, min_size=3, max_size=3), max_size=25))
def test_pareto_filter_matches_oracle(points):
    assert pareto_mask(points) == pareto_mask_oracle(points)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10)), max_size=30))
def test_pareto_filter_2d_and_duplicates(points):
    pts = points + points[:3]          # duplicates are all kept or all dropped
    mask = pareto_mask(pts)
    assert mask == pareto_mask_oracle(pts)
    for k, p in enumerate(pts):
        same = [mask[j] for j, q in enumerate(pts) if q == p]
        assert all(x == mask[k] for x in same)


def test_pareto_filter_documented_cases():
    nan = math.nan
    assert pareto_mask([]) == []
    assert pareto_mask([(1, 2), (1, 2), (2, 1), (2, 2), (nan, 0)]) == [True, True, True, False, False]
    assert pareto_mask([(nan, nan)]) == [False]
    assert pareto_mask([(math.inf, 0), (0, math.inf), (math.inf, math.inf)]) == [True, True, False]


# --- executors -----------------------------------------------------------------------------------

def _sweep_instance():
    return random_training_instance(5, 4, fixed_bytes=8)


def test_process_executor_sweep_matches_serial(db_path):
    inst = _sweep_instance()
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budgets = [lo - 1, lo, (lo + hi) // 2, hi]
    deadlines = [None, inst.compute_runtime_s * 1.2]
    serial = sweep(inst, budgets, deadlines, executor=SerialExecutor())
    with costdb.open(db_path, create=True) as db:
        with ProcessExecutor(2) as ex:
            par = sweep(inst, budgets, deadlines, db=db, executor=ex)
        rows = db.conn.execute("SELECT budget_bytes, deadline_s, status, energy_j, pareto "
                               "FROM pareto_points WHERE sweep_id = ? ORDER BY id", (par.sweep_id,)).fetchall()
    assert [r.status for r in par.results] == [r.status for r in serial.results]
    assert par.pareto == serial.pareto
    for a, b in zip(par.results, serial.results):
        assert (a.energy_j is None and b.energy_j is None) or a.energy_j == pytest.approx(b.energy_j)
    assert rows[0][2] == "infeasible" and not rows[0][4]
    assert len(rows) == 8
    for r in par.results:
        if r.feasible:
            assert simulate(inst, r.schedule, r.budget_bytes, r.deadline_s).ok


def test_dask_local_cluster_sweep():
    distributed = pytest.importorskip("distributed")
    from solver.pareto import DaskExecutor
    inst = _sweep_instance()
    lo, hi = min_budget_bound(inst), inst.no_savings_peak()
    budgets = [lo, hi]
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    try:
        with DaskExecutor(cluster.scheduler_address) as ex:
            out = sweep(inst, budgets, [None], executor=ex)
    finally:
        cluster.close()
    ref = sweep(inst, budgets, [None], executor=SerialExecutor())
    assert [r.energy_j for r in out.results] == pytest.approx([r.energy_j for r in ref.results])
    assert out.pareto == ref.pareto
