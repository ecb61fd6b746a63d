"""Typed records round-trip through the real database; settings fingerprints are content hashes;
isolated and in-context measurements of one op live side by side and are never mixed."""
from __future__ import annotations

import pytest

import costdb
from costdb.records import (IterationRecord, Measurement, ParetoPointRecord, ScheduleRecord,
                            SweepRecord, from_row, to_row)
from costdb.settings import SettingsRecord, cpu_list, settings_from_facts
from devices.catalog import get_profile
from profiler.zoo import model_graph


def test_cpu_lists_and_fingerprints():
    assert cpu_list([3, 0, 1, 2, 5]) == "0-3,5" and cpu_list("[0, 1]") == "0-1" and cpu_list(None) is None
    a = SettingsRecord(threads=2, affinity=[0, 1], cache="warm", compute_unit="cpu")
    assert a.affinity == "0-1" and len(a.fingerprint) == 16
    assert a.fingerprint == SettingsRecord(threads=2, affinity="0-1", cache="warm", compute_unit="cpu").fingerprint
    assert a.fingerprint != SettingsRecord(threads=1, affinity="0-1", cache="warm", compute_unit="cpu").fingerprint
    with pytest.raises(ValueError, match="does not match"):
        SettingsRecord(threads=2, fingerprint="0" * 16)
    facts = {"threads": 2, "affinity": [0, 1], "torch": "2.13.0", "onednn": "3.12.0", "mkl": "2024.2",
             "cpu_capability": "AVX2", "blas": "mkl"}
    s = settings_from_facts(facts, transport="local", dtype="float32", compute_unit="cpu", agent_version="1")
    assert (s.threads, s.affinity, s.cache, s.onednn_version, s.extra) == \
        (2, "0-1", "warm", "3.12.0", {"cpu_capability": "AVX2", "blas": "mkl"})
    fw = settings_from_facts({"fw": "0.2", "firmware_version": "0.2", "board": "qemu-m4f",
                              "clock_hz": 25000000, "kernel_variant": "simd"},
                             transport="serial", dtype="float32", agent_version="0.2")
    assert (fw.compute_unit, fw.agent_version, fw.kernel_variant, fw.threads, fw.cache) == \
        ("firmware", "0.2", "simd", None, None)
    gpu = settings_from_facts({**facts, "cuda_version": "10.2", "cudnn_version": 8201},
                              transport="ssh", dtype="float32", compute_unit="cuda:0")
    assert gpu.compute_unit == "cuda" and gpu.extra == {"cuda_version": "10.2", "cudnn_version": 8201}


def test_every_record_round_trips(db_path):
    with costdb.open(db_path, create=True) as db:
        db.upsert_device(get_profile("local"))
        g = model_graph("mlp", batch=2)
        mid = db.save_graph(g)
        st = db.add_settings(SettingsRecord(threads=1, affinity="0", cache="cold", dtype="float32",
                                            compute_unit="cpu", torch_version="x", extra={"k": 1}))
        assert db.add_settings(SettingsRecord(threads=1, affinity="0", cache="cold", dtype="float32",
                                              compute_unit="cpu", torch_version="x", extra={"k": 1})) == st
        sid = db.start_session("local", {"facts": {"threads": 1}}, {"samples": 3}, mid, 2,
                               warnings=["w"], settings_id=st)
        s = db.session(sid)
        assert (s.facts, s.settings, s.warnings, s.settings_id) == ({"threads": 1}, {"samples": 3}, ("w",), st)
        assert db.get_settings(st).extra == {"k": 1} and db.get_settings(db.get_settings(st).fingerprint[:5]).id == st
        m = Measurement(device="local", signature=g.nodes[0].signature, session_id=sid, status="ok",
                        runtime_s=2e-3, samples=3, settings_id=st, raw={"values": [1e-3, 2e-3, 3e-3],
                                                                         "inner_loops": 4},
                        extra={"input_bytes": 10})
        assert db.add_measurement(m)
        (back,) = db.measurement_list(session_id=sid)
        assert back == m and back.values == (1e-3, 2e-3, 3e-3) and back.extra == {"input_bytes": 10}
        it = IterationRecord(device="local", model_id=mid, runtime_s=0.1, session_id=sid, settings_id=st,
                             fwd_runtime_s=0.03, bwd_runtime_s=0.06, update_runtime_s=0.01)
        assert from_row(IterationRecord, to_row(it)) == it
        db.add_iteration("local", mid, sid, {"median": 0.1, "fwd_s": 0.03, "bwd_s": 0.06,
                                             "update_s": 0.01}, settings_id=st)
        assert db.iteration_list()[0].fwd_runtime_s == 0.03
        sw = db.add_sweep(SweepRecord(device="local", model_id=mid, graph_name="g", graph_digest="d",
                                      mode="remat", budgets=(1, 2), deadlines=(None, 1.5),
                                      objectives=("energy_j",), options={"gap": 0.1}))
        rec = ScheduleRecord(device="local", model_id=mid, graph_name="g", graph_digest="d",
                             granularity="layer", mode="remat", method="milp", compat=True,
                             status="infeasible", record={"message": "no"}, sweep_id=sw,
                             message="budget 1 B is below the lower bound 5 B", settings_id=st,
                             cost_kind="isolated", schedule_blob=b"CDBS\x01")
        sched = db.add_schedule(rec)
        assert db.schedule(sched) == rec and db.schedule_list(sweep_id=sw)[0].id == sched
        pt = ParetoPointRecord(sweep_id=sw, device="local", model_id=mid, graph_name="g",
                               mode="remat", status="infeasible", message="too small")
        db.add_pareto_point(pt)
        db.finish_sweep(sw, "done")
        assert db.pareto_point_list(sweep_id=sw) == [pt]
        back_sw = db.sweep(sw)
        assert back_sw.deadlines == (None, 1.5) and back_sw.status == "done" and back_sw.ended_at


def test_in_context_and_isolated_measurements_live_side_by_side(db_path):
    with costdb.open(db_path, create=True) as db:
        db.upsert_device(get_profile("local"))
        g = model_graph("mlp", batch=2)
        db.save_graph(g)
        st = db.add_settings(SettingsRecord(threads=1, compute_unit="cpu"))
        sid = db.start_session("local", {}, {}, None, 1, settings_id=st)
        sig = g.nodes[0].signature
        iso = Measurement(device="local", signature=sig, session_id=sid, status="ok", runtime_s=1e-3,
                          samples=3, settings_id=st)
        ctx = Measurement(device="local", signature=sig, session_id=sid, status="ok", runtime_s=1.4e-3,
                          samples=5, settings_id=st, kind="in_context",
                          extra={"nodes": {"0": 1.4e-3}})
        assert db.add_measurement(iso) and db.add_measurement(ctx) and not db.add_measurement(ctx)
        assert db.costs("local", "mlp", kind="isolated").loc[0, "runtime_s"] == 1e-3
        # the default estimate (auto) is the in-context one once the model has such rows
        assert db.costs("local", "mlp").attrs["kind"] == "in_context"
        c = db.costs("local", "mlp", kind="in_context")
        assert c.loc[0, "runtime_s"] == 1.4e-3 and c.loc[0, "kind"] == "in_context"
        assert c["status"].isna().sum() == len(g.nodes) - 1
        assert db.done_signatures("local", st) == {sig} == db.done_signatures("local", st, "in_context")
        with pytest.raises(ValueError, match="kind"):
            Measurement(device="local", signature=sig, session_id=sid, status="ok", runtime_s=1.0,
                        samples=1, kind="guessed")
