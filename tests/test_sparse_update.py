"""Sparse-update planner (solver/sparse_update.py, `costdb plan-update`) on real database rows:
tinycnn profiled on the emulated Cortex-M0 (real firmware on QEMU, real SQLite)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import costdb
from costdb.errors import CostdbError
from solver.sparse_update import (LayerChoice, SparseUpdateProblem, default_contributions,
                                  plan_sparse_update)

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
                                reason="needs qemu-system-arm and gcc-arm-none-eabi")
BOARD = "qemu-m0"


@pytest.fixture(scope="module")
def m0_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("sparse") / "m0.db")
    costdb.profile(path, device=BOARD, model="tinycnn", settings={"samples": 3, "warmups": 1})
    return path


def _problem(db_path: str) -> SparseUpdateProblem:
    with costdb.open(db_path, readonly=True) as db:
        return SparseUpdateProblem(db.graph("tinycnn"), db.costs(BOARD, "tinycnn"))


def test_full_update_costs_the_whole_measured_iteration(m0_db):
    prob = _problem(m0_db)
    assert prob.layer_names == ["conv1", "conv2", "fc"]
    with costdb.open(m0_db, readonly=True) as db:
        df = db.costs(BOARD, "tinycnn")
    full = prob.evaluate({n: LayerChoice(1.0, True) for n in prob.layer_names},
                         default_contributions(prob.layer_names), 10**9)
    assert full.runtime_s == pytest.approx(df["runtime_s"].sum(), rel=1e-12)
    assert full.energy_j == pytest.approx(df["energy_j"].sum(), rel=1e-12)
    assert full.trainable_bytes == df["param_bytes"].sum()
    # a frozen network runs the forward pass only
    none = prob.evaluate({}, {}, 10**9)
    fwd = df[df.phase.isin(["fwd", "loss"])]
    assert none.runtime_s == pytest.approx(fwd["runtime_s"].sum(), rel=1e-12)
    assert none.kept_activation_bytes == 0 and none.contribution == 0


def test_plan_fits_and_beats_every_fitting_baseline(m0_db):
    for budget in (16 * 1024, 24 * 1024, 40 * 1024):
        res = plan_sparse_update(m0_db, BOARD, "tinycnn", budget)
        assert res.plan.fits and res.plan.peak_memory_bytes <= budget
        names = {b.name for b in res.baselines}
        assert {"full update", "bias only", "last 1", "last 2", "last 3"} <= names
        for b in res.baselines:
            assert b.fits == (b.peak_memory_bytes <= budget)
            if b.fits:
                assert res.plan.contribution >= b.contribution - 1e-12
        assert res.contribution_source == "default heuristic"
    small = plan_sparse_update(m0_db, BOARD, "tinycnn", 16 * 1024)
    big = plan_sparse_update(m0_db, BOARD, "tinycnn", 40 * 1024)
    assert big.plan.contribution > small.plan.contribution
    # a sparse plan trains within less memory than updating the last layers completely
    last1 = next(b for b in small.baselines if b.name == "last 1")
    assert small.plan.fits and not last1.fits


def test_channel_fraction_scales_the_weight_gradient_cost(m0_db):
    prob = _problem(m0_db)
    half = prob.evaluate({"conv2": LayerChoice(0.5)}, {}, 10**9)
    full = prob.evaluate({"conv2": LayerChoice(1.0)}, {}, 10**9)
    with costdb.open(m0_db, readonly=True) as db:
        df = db.costs(BOARD, "tinycnn").set_index("name")
    dw = df.loc["conv2:bwd_weight", "runtime_s"] + df.loc["conv2.weight:update", "runtime_s"]
    assert full.runtime_s - half.runtime_s == pytest.approx(dw / 2, rel=1e-9)
    bias = prob.evaluate({"conv2": LayerChoice(0.0, True)}, {}, 10**9)
    assert "conv2 bias gradient" in bias.estimated
    assert bias.kept_activation_bytes < full.kept_activation_bytes   # no input to keep


def test_contribution_table_decides(m0_db, tmp_path):
    table = tmp_path / "contrib.json"
    table.write_text(json.dumps({"conv1": {"weight": {"0.25": 0.9, "1": 1.0}}}))
    res = plan_sparse_update(m0_db, BOARD, "tinycnn", 40 * 1024, str(table))
    assert res.plan.choices["conv1"].weight > 0
    assert not res.plan.choices["fc"].any and not res.plan.choices["conv2"].any
    assert res.contribution_source == str(table)
    table.write_text(json.dumps({"conv9": {"weight": 1}}))
    with pytest.raises(CostdbError, match="conv9"):
        plan_sparse_update(m0_db, BOARD, "tinycnn", 40 * 1024, str(table))
    with pytest.raises(CostdbError, match="larger --memory"):
        plan_sparse_update(m0_db, BOARD, "tinycnn", 4096)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "costdb.cli", "plan-update", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_prints_plan_and_baselines(m0_db):
    r = _cli("--db", m0_db, "--device", BOARD, "--model", "tinycnn", "--memory", "24KiB")
    assert r.returncode == 0, r.stderr
    for word in ("sparse update", "full update", "bias only", "last 2", "conv2", "fits"):
        assert word in r.stdout
    r = _cli("--db", m0_db, "--device", BOARD, "--model", "tinycnn", "--memory", "24KiB",
             "--json")
    out = json.loads(r.stdout)
    assert out["plan"]["peak_memory_bytes"] <= 24 * 1024 and len(out["baselines"]) == 5
    for bad in (["--memory", "lots"], ["--memory", "1KiB"]):
        r = _cli("--db", m0_db, "--device", BOARD, "--model", "tinycnn", *bad)
        assert r.returncode == 2 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("table,match", [
    ({"fc": {"weight": "x"}}, "finite number"),
    ({"fc": {"weight": {"abc": 1}}}, "channel fraction"),
    ({"fc": {"weight": {"1.5": 1}}}, "channel fraction"),
    ({"fc": {"bias": float("nan")}}, "finite number"),
    ({"fc": {}}, "'weight' and/or 'bias'"),
    ({"fc": {"weights": 1}}, "'weight' and/or 'bias'"),
    ([1], "JSON object"),
])
def test_bad_contribution_tables_are_one_line_errors(table, match):
    from solver.sparse_update import check_contributions
    with pytest.raises(CostdbError, match=match) as e:
        check_contributions(table, ["conv1", "fc"], "t.json")
    assert "\n" not in str(e.value)
    ok = check_contributions({"fc": {"weight": {"0.5": 0.4, "1": 1}, "bias": 0}}, ["fc"], "t")
    assert ok["fc"]["weight"] == {"0.5": 0.4, "1.0": 1.0}


def test_contribution_table_that_is_a_fifo_is_refused(m0_db, tmp_path):
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = _cli("--db", m0_db, "--device", BOARD, "--model", "tinycnn", "--memory", "24KiB",
             "--contributions", str(fifo))
    assert r.returncode == 2 and "not a regular file" in r.stderr


def test_greedy_search_fits_and_is_no_better_than_exhaustive(m0_db, monkeypatch):
    import solver.sparse_update as su
    exact = plan_sparse_update(m0_db, BOARD, "tinycnn", 24 * 1024).plan
    monkeypatch.setattr(su, "EXHAUSTIVE_LAYERS", 0)          # the path of deeper models
    greedy = plan_sparse_update(m0_db, BOARD, "tinycnn", 24 * 1024).plan
    assert greedy.fits and greedy.peak_memory_bytes <= 24 * 1024
    assert 0 < greedy.contribution <= exact.contribution + 1e-12
