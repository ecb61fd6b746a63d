"""In-context profiling end to end: real profiles on `local` into real SQLite files, read back
through the data layer and the CLI (no timing thresholds: only what is stored and chosen)."""
from __future__ import annotations

import math
from pathlib import Path

import costdb
from costdb.cli import cli
from devices.agent.stats import summarize
from profiler.session import profile
from profiler.zoo import model_graph

MY_MODEL = str(Path(__file__).parent / "models" / "my_model.py") + ":make"
FAST = {"samples": 3, "min_sample_time": 0.001, "in_context_iterations": 3}
CLI_FAST = ["--samples", "3", "--min-sample-time", "0.001", "--iterations", "3", "-q"]


def test_file_model_profiled_end_to_end_with_its_iteration(runner, db_path):
    r = runner.invoke(cli, ["profile", "--model", MY_MODEL, "--input", "3x8x8", "--batch", "2",
                            "--threads", "1", "--db", db_path, *CLI_FAST])
    assert r.exit_code == 0, r.output
    key = "my_model:make[batch=2,input=3x8x8,dtype=float32]"
    with costdb.open(db_path, readonly=True) as db:
        graph = db.graph(key)
        n = len(graph.signatures())
        assert f"in-context costs of {n} ops from" in r.output
        for kind in ("isolated", "in_context"):
            ms = db.measurement_list("local", kind=kind)
            assert sorted(m.signature for m in ms) == sorted(graph.signatures())
            assert all(m.status == "ok" and m.settings_id == 1 for m in ms)
        ic = {m.signature: m for m in db.measurement_list("local", kind="in_context")}
        uses = {s: sum(1 for x in graph.nodes if x.signature == s) for s in graph.signatures()}
        for sig, m in ic.items():  # raw per-iteration samples kept, one per profiled iteration
            assert len(m.values) == m.samples and m.samples in (3, 6)
            assert m.extra["occurrences"] == uses[sig]
            assert m.runtime_s == summarize(m.values)["median"]     # recomputable
            assert m.energy_provenance == "modeled"
        # the default cost table is the in-context one; isolated stays selectable
        df = db.costs("local", key)
        assert df.attrs["kind"] == "in_context" and df["status"].eq("ok").all()
        assert db.costs("local", key, kind="isolated").attrs["kind"] == "isolated"
        # the whole iteration was timed (phases too) and checked against both estimates
        it = db.iterations("local").iloc[-1]
        assert it["model"] == key and it["kind"] == "in_context"
        for col in ("measured_s", "fwd_measured_s", "bwd_measured_s", "update_measured_s",
                    "in_context_predicted_s", "isolated_predicted_s", "fwd_predicted_s"):
            assert it[col] > 0, col
        assert math.isclose(it["predicted_s"], float(df["runtime_s"].sum()), rel_tol=1e-9)
        session = db.session_list("local")[-1]
        summary = session.environment["in_context"]
        assert summary["ops"] == n and set(summary["unattributed"]) == {"between phases"}
    assert "Whole iteration measured" in r.output
    assert "in_context (default) cost model predicts" in r.output
    assert "isolated cost model predicts" in r.output


def test_in_context_step_resumes_per_model_and_reuses_nothing_across_models(db_path):
    a = profile(db_path, model="mlp", batch=2, threads=1, settings=FAST, in_context=True)
    assert a.in_context is not None and a.in_context["ops"] == len(model_graph("mlp", batch=2).signatures())
    again = profile(db_path, model="mlp", batch=2, threads=1, settings=FAST, in_context=True)
    assert again.in_context is None and again.session_id is None   # complete: nothing to do
    # another model sharing most ops: its in-context step runs on all of its own ops
    b = profile(db_path, model="mlp", batch=2, input_shape=(100,), threads=1, settings=FAST,
                in_context=True)
    gb = model_graph("mlp", batch=2, input_shape=(100,))
    assert b.in_context["ops"] == len(gb.signatures())
    with costdb.open(db_path, readonly=True) as db:
        ga = model_graph("mlp", batch=2)
        shared = set(ga.signatures()) & set(gb.signatures())
        assert shared
        # each model's table takes the in-context rows traced in that model
        for key, sess in ((ga.key, a.session_id), (gb.key, b.session_id)):
            df = db.costs("local", key)
            assert set(df.loc[df.signature.isin(shared), "session_id"]) == {sess}


def test_auto_falls_back_to_isolated_and_solver_records_the_estimate(db_path, runner):
    profile(db_path, model="mlp", batch=2, threads=1, settings=FAST)      # isolated only
    with costdb.open(db_path, readonly=True) as db:
        assert db.costs("local", "mlp").attrs["kind"] == "isolated"
        assert db.resolve_kind("local", "mlp") == "isolated"
    r = runner.invoke(cli, ["costs", "--model", "mlp", "--db", db_path, "--kind", "in_context"])
    assert r.exit_code == 0 and "not measured" in r.output    # chosen explicitly: no figures
    profile(db_path, model="mlp", batch=2, threads=1, settings=FAST, in_context=True)
    r = runner.invoke(cli, ["solve", "--device", "local", "--model", "mlp", "--db", db_path])
    assert r.exit_code == 0, r.output
    assert "(settings #1, in_context)" in r.output
    r = runner.invoke(cli, ["solve", "--device", "local", "--model", "mlp", "--db", db_path,
                            "--kind", "isolated"])
    assert r.exit_code == 0, r.output
    assert "(settings #1, isolated)" in r.output
    with costdb.open(db_path, readonly=True) as db:
        assert [s.cost_kind for s in db.schedule_list("local")] == ["in_context", "isolated"]
    r = runner.invoke(cli, ["costs", "--model", "mlp", "--db", db_path, "--kind", "nonsense"])
    assert r.exit_code == 2 and "Invalid value for '--kind'" in r.output


def test_in_context_needs_the_model_on_this_host(db_path):
    warnings = []
    g = model_graph("mlp", batch=2)
    res = profile(db_path, model=g, threads=1, settings=FAST, in_context=True,
                  on_warning=warnings.append)
    assert res.in_context is None
    assert ("in-context profiling needs the model itself (a zoo name or file.py:factory), not "
            "a stored graph; its costs use the isolated estimate") in warnings
