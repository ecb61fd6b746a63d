"""JSON graph format, schedule JSON and compact binary encodings, the analytic cost model."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costdb.errors import CostdbError
from solver.baselines import capuchin_paging, checkpoint_all, chen_sqrt, page_everything
from solver.problem import (instance_from_dict, instance_from_graph, load_graph_json,
                            random_training_instance)
from solver.schedule import Schedule, Stage
from solver.simulate import simulate
from solver.solve import min_budget_bound, solve

GRAPH = {
    "format": "costdb-graph/1", "name": "toy",
    "paging": {"storage": "sd", "page_in": {"latency_s": 1e-4, "bytes_per_s": 4e6, "energy_j_per_byte": 7e-8},
               "page_out": {"latency_s": 1e-4, "bytes_per_s": 3e6, "energy_j_per_byte": 1e-7}},
    "nodes": [
        {"id": "b0", "phase": "bwd", "runtime_s": 0.02, "energy_j": 0.002, "output_bytes": 0},
        {"id": "x", "phase": "fwd", "runtime_s": 0.01, "energy_j": 0.001, "output_bytes": 4096, "param_bytes": 1000},
        {"id": "y", "phase": "fwd", "runtime_s": 0.01, "energy_j": 0.001, "output_bytes": 4096},
        {"id": "loss", "phase": "loss", "runtime_s": 0.001, "energy_j": 0.0001, "output_bytes": 4},
        {"id": "b1", "phase": "bwd", "runtime_s": 0.02, "energy_j": 0.002, "output_bytes": 4096},
    ],
    "edges": [["x", "y"], ["y", "loss"], ["loss", "b1"], ["y", "b1"], ["b1", "b0"], ["x", "b0"]],
}


def test_json_graph_is_sorted_topologically_and_costed(tmp_path):
    p = tmp_path / "g.json"
    p.write_text(json.dumps(GRAPH))
    inst = load_graph_json(p)
    assert [n.name for n in inst.nodes] == ["x", "y", "loss", "b1", "b0"]
    assert inst.nodes[4].deps == (0, 3)
    assert inst.fixed_bytes == 2000                   # parameters + gradients
    assert inst.pagein_energy(0) == pytest.approx(1e-4 * 7e-8 * 4e6 + 4096 * 7e-8)
    assert inst.pageout_time(0) == pytest.approx(1e-4 + 4096 / 3e6)
    # round trip through the instance's own JSON
    again = instance_from_dict(json.loads(inst.to_json()))
    assert again.nodes == inst.nodes and again.paging == inst.paging and again.fixed_bytes == inst.fixed_bytes
    r = solve(inst, budget=inst.no_savings_peak())
    assert r.status == "optimal" and simulate(inst, r.schedule).ok


@pytest.mark.parametrize("mutate, msg", [
    (lambda g: g["edges"].append(["b0", "x"]), "cycle"),
    (lambda g: g["edges"].append(["x", "nope"]), "unknown node"),
    (lambda g: g["nodes"][1].pop("runtime_s"), "missing 'runtime_s'"),
    (lambda g: g["nodes"][1].update(energy_j=-1), ">= 0"),
    (lambda g: g["nodes"][1].update(phase="sideways"), "phase"),
    (lambda g: g["nodes"].append(dict(g["nodes"][0])), "duplicated"),
    (lambda g: g.update(format="other/9"), "not supported"),
])
def test_json_graph_errors_are_clear(mutate, msg):
    g = json.loads(json.dumps(GRAPH))
    mutate(g)
    with pytest.raises(CostdbError, match=msg):
        instance_from_dict(g)


def test_missing_graph_file_is_a_user_error(tmp_path):
    with pytest.raises(CostdbError, match="does not exist"):
        load_graph_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CostdbError, match="not valid JSON"):
        load_graph_json(tmp_path / "bad.json")


def _schedules():
    out = []
    for seed in range(4):
        inst = random_training_instance(5 + seed, seed)
        b = min_budget_bound(inst)
        out += [checkpoint_all(inst), chen_sqrt(inst), page_everything(inst), capuchin_paging(inst, b)]
        r = solve(inst, budget=b + (inst.no_savings_peak() - b) // 3, explain_infeasible=False)
        if r.schedule:
            out.append(r.schedule)
    return out


SCHEDULES = _schedules()


@pytest.mark.parametrize("k", range(len(SCHEDULES)))
def test_schedule_json_and_binary_round_trip(k):
    s = SCHEDULES[k]
    assert Schedule.from_json(s.to_json()).stages == s.stages
    data = s.to_bytes()
    back = Schedule.from_bytes(data)
    assert back.stages == s.stages and back.compat == s.compat and back.overlap == s.overlap
    assert len(data) < 16 + 8 * s.n + 4 * sum(len(x.compute) + len(x.pagein) for x in s.stages)


@st.composite
def schedules(draw):
    n = draw(st.integers(1, 40))
    stages = []
    ram: set[int] = set()
    for t in range(n):
        rec = draw(st.sets(st.integers(0, max(t - 1, 0)), max_size=3)) if t else set()
        rec -= ram
        pagein = draw(st.sets(st.integers(0, max(t - 1, 0)), max_size=2)) if t else set()
        pagein -= ram | rec
        present = ram | rec | {t} | pagein
        keep = draw(st.sets(st.sampled_from(sorted(present)))) if t + 1 < n else set()
        pageout = (t,) if draw(st.booleans()) else ()
        stages.append(Stage(tuple(sorted(rec | {t})), tuple(sorted(keep)), tuple(sorted(pagein)), pageout))
        ram = set(keep)
    return Schedule(tuple(stages), compat=draw(st.booleans()), overlap=draw(st.booleans()))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_binary_encoding_round_trips_any_schedule(s):
    back = Schedule.from_bytes(s.to_bytes())
    assert back.stages == s.stages and (back.compat, back.overlap) == (s.compat, s.overlap)
    assert Schedule.from_json(s.to_json()).stages == s.stages


def test_binary_encoding_detects_corruption():
    s = SCHEDULES[0]
    data = bytearray(s.to_bytes())
    data[len(data) // 2] ^= 0x01
    with pytest.raises(CostdbError, match="CRC"):
        Schedule.from_bytes(bytes(data))
    with pytest.raises(CostdbError, match="magic"):
        Schedule.from_bytes(b"XXXX" + bytes(data[4:]))


def test_analytic_cost_model_fills_unmeasured_nodes():
    from devices.catalog import get_profile
    from profiler.zoo import model_graph
    g = model_graph("tinycnn")
    prof = get_profile("rpi4b")
    inst = instance_from_graph(g, prof)
    assert inst.cost_provenance() == "modeled"
    assert inst.compute_runtime_s == pytest.approx(sum(n.flops for n in g.nodes) / prof.flops_per_s)
    assert inst.compute_energy_j == pytest.approx(inst.compute_runtime_s * prof.net_active_power_w)
    # one forward and one backward node per layer (POET granularity)
    layers = {n.layer for n in g.nodes}
    assert inst.n == len({(n.layer, n.phase in ("fwd", "loss")) for n in g.nodes}) and inst.n <= 2 * len(layers)
    assert inst.fixed_bytes == 2 * g.param_bytes    # plain SGD: parameters + gradients
    # a measured node replaces the model, with its provenance
    first = g.nodes[0].idx
    inst2 = instance_from_graph(g, prof, {first: {"runtime_s": 1.0, "energy_j": 2.0,
                                                  "runtime_provenance": "measured",
                                                  "energy_provenance": "measured"}})
    assert inst2.nodes[0].runtime_s == pytest.approx(1.0) and inst2.nodes[0].runtime_provenance == "measured"
    assert inst2.cost_provenance().startswith("mixed(")
    op = instance_from_graph(g, prof, granularity="op")
    assert op.n == len(g.nodes)
