"""The schedule executor (devices/agent/execute.py, solver/execute.py): a scheduled iteration with
recomputations and page-outs equals a plain iteration bit for bit, pages through real files,
holds no hidden copies of freed activations, and ``costdb run`` stores predicted vs measured."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import costdb
from costdb.errors import CostdbError
from devices.agent import execute as E
from devices.catalog import get_profile
from devices.inventory import Inventory
from profiler.zoo import instance_graph, instantiate
from solver.baselines import chen_sqrt, checkpoint_all, page_everything
from solver.problem import instance_from_graph
from solver.program import build_plan, build_program
from solver.simulate import simulate

sys.path.insert(0, os.path.dirname(__file__))
from sshd import sshd  # noqa: E402,F401

pytestmark = pytest.mark.timeout(600)

MODELS = {"mlp": None, "tinycnn": None, "bert-tiny": (16,)}


def _setup(model, batch=2, granularity="layer"):
    mi = instantiate(model, MODELS.get(model))
    g = instance_graph(mi, batch)
    prog = build_program(mi.module, g, mi.input_dtype, mi.input_high)
    inst = instance_from_graph(g, get_profile("local"), granularity=granularity)
    return mi, g, prog, inst


def _execute(prog, plan, storage, **kw):
    req = {"program": prog, "plan": plan, "storage_path": str(storage), "iterations": 1,
           "warmups": 0, "audit": True}
    req.update(kw)
    return E.run_request(req)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("kind", ["remat", "paging"])
def test_scheduled_iteration_equals_plain_iteration(model, kind, tmp_path):
    mi, g, prog, inst = _setup(model)
    sched = chen_sqrt(inst) if kind == "remat" else page_everything(inst)
    counts = sched.counts()
    assert counts["recomputes" if kind == "remat" else "pageouts"] > 0
    plan = build_plan(g, sched, "layer", [n.name for n in inst.nodes])
    res = _execute(prog, plan, tmp_path)
    it = res["iterations"][0]
    assert it["check"]["bit_exact"] and it["check"]["max_abs_diff"] == 0.0
    assert it["check"]["tensors"] >= 2 * len(prog["params"])
    assert it["recomputes"] == counts["recomputes"]
    assert it["pageouts"] == counts["pageouts"] and it["pageins"] == counts["pageins"]
    # the executor's activation ledger never exceeds what the simulator predicts, and nothing
    # alive in the process (a tape, a leaf, a view) escapes the ledger
    sim = simulate(inst, sched)
    assert it["activation_peak_bytes"] <= sim.peak_memory_bytes - inst.fixed_bytes
    # stage by stage, the bytes held are the simulator's; exactly, except where autograd passes
    # a gradient through without a copy (an add's two input gradients alias the output
    # gradient: BERT-tiny's residual adds), which the graph counts as new memory
    pred = [p - inst.fixed_bytes for p in sim.stage_peaks]
    if model == "bert-tiny":
        assert all(m <= p for m, p in zip(it["stage_peaks"], pred))
    else:
        assert it["stage_peaks"] == pred
    assert it["audit_excess_bytes"] == 0
    assert res["run_dir_removed"] and os.listdir(tmp_path) == []


def test_paging_writes_and_reads_real_files(tmp_path):
    mi, g, prog, inst = _setup("tinycnn")
    sched = page_everything(inst)
    plan = build_plan(g, sched, "layer", [n.name for n in inst.nodes])
    res = _execute(prog, plan, tmp_path)
    it = res["iterations"][0]
    paged_out = sum(inst.nodes[i].output_bytes for s in sched.stages for i in s.pageout)
    paged_in = sum(inst.nodes[i].output_bytes for s in sched.stages for i in s.pagein)
    assert paged_out > 0 and it["bytes_out"] == paged_out and it["bytes_in"] == paged_in
    assert it["disk_peak_bytes"] == paged_out
    # the kernel's own I/O accounting saw the bytes go through write(2) and read(2)
    assert it["io"]["wchar"] >= paged_out and it["io"]["rchar"] >= paged_in
    assert it["files_written"] == sum(len(plan["groups"][i]["outputs"])
                                      for s in sched.stages for i in s.pageout)


def test_op_granularity_schedule(tmp_path):
    mi, g, prog, inst = _setup("mlp", granularity="op")
    sched = page_everything(inst)
    plan = build_plan(g, sched, "op", [n.name for n in inst.nodes])
    it = _execute(prog, plan, tmp_path)["iterations"][0]
    assert it["check"]["bit_exact"] and it["pageouts"] > 0


def test_audit_detects_activations_kept_alive(tmp_path, monkeypatch):
    """The 'no hidden copies' measurement is real: if freeing kept the memory, it says so."""
    mi, g, prog, inst = _setup("tinycnn")
    sched = chen_sqrt(inst)
    plan = build_plan(g, sched, "layer", [n.name for n in inst.nodes])
    monkeypatch.setattr(E, "_release", lambda t: None)
    it = _execute(prog, plan, tmp_path)["iterations"][0]
    assert it["audit_excess_bytes"] > 0


@pytest.mark.parametrize("model", ["mlp", "tinycnn", "bert-tiny"])
def test_program_plain_iteration_equals_the_torch_module(model):
    """The reference itself is the user's model: the program's plain iteration gives the same
    gradients and parameters as nn.Module + loss.backward() + torch.optim.SGD."""
    from profiler.iteration import trainer
    torch.use_deterministic_algorithms(True)
    try:
        mi, g, prog, inst = _setup(model)
        m = E.Model(prog, seed=3)
        tr = trainer(mi, g)
        with torch.no_grad():
            for name, p in tr.module.named_parameters():
                p.copy_(m.params[name])
            for name, b in tr.module.named_buffers():
                b.copy_(m.buffers[name])
        tr.x, tr.y = m.x, m.y
        torch.manual_seed(5)
        tr.optimizer.zero_grad(set_to_none=True)
        tr.loss_fn(tr.module(tr.x), tr.y).backward()
        ref = {n: p.grad.clone() for n, p in tr.module.named_parameters()}
        tr.optimizer.step()
        torch.manual_seed(5)
        grads = E.plain_iteration(m)
        for name, p in tr.module.named_parameters():
            assert torch.equal(grads[name], ref[name]), name
            assert torch.equal(m.params[name].detach(), p.detach()), name
        for name, b in tr.module.named_buffers():
            assert torch.equal(m.buffers[name], b), name
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_broken_schedule_is_an_error_not_a_result(tmp_path):
    mi, g, prog, inst = _setup("mlp")
    sched = checkpoint_all(inst)
    plan = build_plan(g, sched, "layer", [n.name for n in inst.nodes])
    # drop a value the next stage needs: the executor names it and stops
    st = plan["stages"][1]
    st["keep"] = [k for k in st["keep"] if k != 1]
    with pytest.raises(E.ExecutionError, match="not in RAM"):
        _execute(prog, plan, tmp_path)
    assert os.listdir(tmp_path) == []


# --- costdb run: store, print, refuse --------------------------------------------------------

@pytest.fixture
def solved(tmp_path):
    """A database with one integrated schedule of the MLP under a budget that forces savings."""
    from solver.commands import load_instance, run_solve
    db = tmp_path / "costs.db"
    with costdb.open(db, create=True) as d:
        inst = load_instance(d, "local", "tinycnn", None, batch=2)
    hi = inst.no_savings_peak()
    lo = simulate(inst, page_everything(inst)).peak_memory_bytes
    budget = lo + (hi - lo) // 4
    res, inst, sid = run_solve(str(db), "local", "tinycnn", memory=f"{budget}B", mode="integrated",
                               solver="cbc", batch=2, time_limit=60)
    assert res.feasible
    return db, sid, inst, res


def test_costdb_run_stores_predicted_vs_measured(solved, runner, tmp_path, monkeypatch):
    from costdb.cli import cli
    db, sid, inst, res = solved
    inv = tmp_path / "inventory.toml"
    store = tmp_path / "paging"
    store.mkdir()
    inv.write_text(f'[devices.local]\nstorage_path = "{store}"\n')
    r = runner.invoke(cli, ["run", "--device", "local", "--schedule", str(sid), "--db", str(db),
                            "--iterations", "2", "--inventory", str(inv)])
    assert r.exit_code == 0, r.output
    assert "predicted" in r.output and "measured" in r.output and "bit-exact" in r.output
    assert "stored as run #1" in r.output
    with costdb.open(db) as d:
        df = d.runs("local")
        rec = d.run(1)
    assert len(df) == 1 and bool(df.loc[0, "check_passed"]) and bool(df.loc[0, "bit_exact"])
    assert rec.schedule_id == sid and rec.iterations == 2 and rec.storage_path == str(store)
    assert rec.predicted_peak_bytes == res.peak_memory_bytes
    assert rec.peak_memory_bytes <= rec.budget_bytes
    assert rec.pageout_bytes == rec.predicted_pageout_bytes
    assert rec.recomputes == res.schedule.counts()["recomputes"]
    assert rec.energy_provenance == "modeled" and rec.energy_j > 0
    assert len(rec.samples["runtime_s"]) == 2
    assert os.listdir(store) == []
    from solver.execute import runs
    with costdb.open(db) as d:
        frame = runs(d)
    assert "runtime_error" in frame.columns


@pytest.mark.parametrize("args,fragment", [
    (["--device", "rpi4b"], "was solved for device 'local', not 'rpi4b'"),
    (["--device", "local", "--model", "mlp"], "is for model tinycnn"),
    (["--device", "local", "--batch", "7"], "is for batch 2, not 7"),
])
def test_mismatched_schedule_is_refused_in_one_line(solved, runner, args, fragment):
    from costdb.cli import cli
    db, sid, inst, res = solved
    r = runner.invoke(cli, ["run", "--schedule", str(sid), "--db", str(db)] + args)
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], r.output
    with costdb.open(db) as d:
        assert d.run_list() == []


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return r.returncode == 0


def test_full_storage_stops_cleanly_and_stores_nothing(solved, tmp_path):
    from solver.execute import run_schedule
    from solver.store import save_schedule  # noqa: F401  (the schedule below is validated)
    db, sid, inst, res = solved
    full = tmp_path / "small"
    if not _tmpfs(full, "8k"):
        pytest.skip("mount -t tmpfs is not permitted here (needs CAP_SYS_ADMIN)")
    try:
        from solver.solve import SolveResult
        from solver.store import save_schedule as save
        sched = page_everything(inst)
        sim = simulate(inst, sched)
        assert sum(inst.nodes[i].output_bytes for s in sched.stages for i in s.pageout) > 8192
        r = SolveResult(status="feasible", mode="paging", solver="heuristic", budget_bytes=None,
                        deadline_s=None, schedule=sched, sim=sim, method="page_everything")
        with costdb.open(db) as d:
            psid = save(d, inst, r)
        with pytest.raises(CostdbError, match="StorageError.*No space left"):
            run_schedule(str(db), psid, "local", inventory=Inventory(None, {}), iterations=1,
                         warmups=0, storage_path=str(full))
        assert os.listdir(full) == []
        with costdb.open(db) as d:
            assert d.run_list() == []
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_storage_profile_is_measured_with_real_files(tmp_path):
    from solver.execute import measure_storage
    db = tmp_path / "c.db"
    rec = measure_storage(str(db), "local", Inventory(None, {}), total_bytes=1 << 20,
                          block_bytes=1 << 16, storage_path=str(tmp_path))
    assert rec.id == 1 and rec.write_bytes_per_s > 0 and rec.read_bytes_per_s > 0
    assert rec.write_latency_s > 0 and len(rec.samples["write_s"]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["c.db"]
    with costdb.open(db) as d:
        assert len(d.storage_profiles("local")) == 1


def test_execute_request_over_the_agent_protocol(tmp_path):
    """The JSON-lines agent answers ``execute`` (what the SSH transport sends)."""
    import json
    mi, g, prog, inst = _setup("mlp")
    sched = page_everything(inst)
    plan = build_plan(g, sched, "layer", [n.name for n in inst.nodes])
    req = {"cmd": "execute", "program": prog, "plan": plan, "storage_path": str(tmp_path),
           "iterations": 1, "warmups": 0}
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-m", "devices.agent"], input=json.dumps(req) + "\n",
                       capture_output=True, text=True, cwd=root, timeout=300)
    reply = json.loads(p.stdout.splitlines()[0])
    assert reply["ok"], reply
    assert reply["result"]["iterations"][0]["check"]["bit_exact"]
    assert reply["result"]["iterations"][0]["bytes_out"] > 0


# --- over SSH: the same executor inside the shipped agent --------------------------------------

def test_costdb_run_over_loopback_sshd(sshd, tmp_path, runner):
    """A schedule of a model solved for an SSH device runs in the agent on the device (here a
    real sshd on 127.0.0.1), pages into the inventory's storage_path, and is stored."""
    from costdb.cli import cli
    from solver.commands import load_instance
    from solver.solve import SolveResult
    from solver.store import save_schedule
    store = tmp_path / "device-storage"
    store.mkdir()
    inv = tmp_path / "inventory.toml"
    inv.write_text(sshd.inventory_toml("lab-pi", storage_path=str(store)))
    db = tmp_path / "costs.db"
    from devices.inventory import load
    inventory = load(inv, required=True)
    with costdb.open(db, create=True) as d:
        inst = load_instance(d, "lab-pi", "mlp", None, batch=2, inventory=inventory)
        sched = page_everything(inst)
        sim = simulate(inst, sched)
        res = SolveResult(status="feasible", mode="paging", solver="heuristic", budget_bytes=None,
                          deadline_s=None, schedule=sched, sim=sim, method="page_everything")
        sid = save_schedule(d, inst, res)
    r = runner.invoke(cli, ["run", "--device", "lab-pi", "--schedule", str(sid), "--db", str(db),
                            "--inventory", str(inv), "--iterations", "1", "--warmups", "0"])
    assert r.exit_code == 0, r.output
    with costdb.open(db) as d:
        rec = d.run(1)
    assert rec.device == "lab-pi" and rec.bit_exact and rec.storage_path == str(store)
    assert rec.pageout_bytes == rec.predicted_pageout_bytes > 0
    assert rec.agent_version is not None and rec.extra["run_dir_removed"]
    assert os.listdir(store) == []


def test_report_shows_measured_beside_predicted(profiled_mlp, tmp_path):
    """The HTML report draws every executed schedule's predicted and measured point."""
    import shutil

    from reports.build import render_report
    from solver.commands import run_solve
    from solver.execute import run_schedule
    db = tmp_path / "mlp.db"
    shutil.copy(profiled_mlp, db)
    res, inst, sid = run_solve(str(db), "local", "mlp", batch=4, mode="paging", solver="cbc",
                               time_limit=60)
    rec = run_schedule(str(db), sid, "local", inventory=Inventory(None, {}), iterations=1,
                       warmups=0, storage_path=str(tmp_path))
    html = render_report(db, devices=["local"])
    assert "Executed schedules: predicted vs measured" in html
    assert "Hollow: the solver&#39;s prediction" in html or "Hollow: the solver's prediction" in html
    assert html.count("<svg") >= 2 and f"#{sid}" in html
    assert rec.id == 1


def test_sensor_energy_is_measured_net_of_idle(solved, tmp_path):
    """With an energy sensor (a Jetson TX2 INA3221 tree, constant 4 W), the run's energy comes
    from the sensor (provenance measured), net of the idle power the agent measures."""
    from fake_boards import make_tx2_tree

    from solver.execute import run_schedule
    db, sid, inst, res = solved
    root = tmp_path / "tx2"
    make_tx2_tree(root, {"VDD_IN": 4000.0})
    inv = tmp_path / "inv.toml"
    inv.write_text(f'[devices.local]\nsysfs_root = "{root}"\n')
    from devices.inventory import load
    rec = run_schedule(str(db), sid, "local", inventory=load(inv, required=True), iterations=1,
                       warmups=0, storage_path=str(tmp_path))
    assert rec.energy_provenance == "measured" and rec.energy_sensor
    assert rec.extra["energy_gross_j"] > 0 and rec.extra["idle_power_w"] > 0
    assert rec.energy_j <= rec.extra["energy_gross_j"]


def test_tolerance_comparison():
    a = {"w": torch.ones(3)}
    b = {"w": torch.ones(3) + 1e-7}
    with pytest.raises(E.ExecutionError, match="differ from the plain iteration"):
        E._compare(a, b, "gradients", None)
    worst, exact = E._compare(a, b, "gradients", 1e-5)
    assert not exact and 0 < worst < 1e-6
    assert E._compare(a, {"w": torch.ones(3)}, "gradients", None) == (0.0, True)


def test_momentum_state_carries_over_iterations(tmp_path):
    """SGD with momentum over warm-up + 2 iterations: every iteration bit-exact (the momentum
    buffers of the scheduled and the plain iteration evolve identically)."""
    from profiler.graph import build_graph
    mi = instantiate("mlp")
    g = build_graph(mi.module, mi.input_shape, 2, name="mlp", momentum=0.9)
    prog = build_program(mi.module, g)
    assert prog["sgd"]["momentum"] == 0.9
    inst = instance_from_graph(g, get_profile("local"))
    sched = chen_sqrt(inst)
    plan = build_plan(g, sched, "layer", [n.name for n in inst.nodes])
    res = _execute(prog, plan, tmp_path, iterations=2, warmups=1)
    assert len(res["iterations"]) == 2
    assert all(it["check"]["bit_exact"] and it["recomputes"] > 0 for it in res["iterations"])


def test_costdb_run_a_whole_sweep(tmp_path, runner):
    """`costdb run --sweep` executes every Pareto point's schedule of a `costdb pareto` sweep."""
    from costdb.cli import cli
    db = tmp_path / "s.db"
    r = runner.invoke(cli, ["pareto", "--device", "local", "--model", "tinycnn", "--batch", "2",
                            "--points", "2", "--mode", "paging", "--solver", "cbc", "--executor",
                            "serial", "--db", str(db)])
    assert r.exit_code == 0, r.output
    with costdb.open(db) as d:
        sweep = d.sweep_list()[0]
        n = len({p.schedule_id for p in d.pareto_point_list(sweep_id=sweep.id)
                 if p.pareto and p.schedule_id})
    r = runner.invoke(cli, ["run", "--device", "local", "--sweep", str(sweep.id), "--db", str(db),
                            "--iterations", "1", "--warmups", "0", "--storage-path", str(tmp_path)])
    assert r.exit_code == 0, r.output
    with costdb.open(db) as d:
        assert len(d.run_list()) == n >= 1
    r = runner.invoke(cli, ["run", "--device", "local", "--db", str(db)])
    assert r.exit_code == 2 and "give either --schedule ID or --sweep ID" in r.output


class _DropoutMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(32, 64)
        self.act = torch.nn.ReLU()
        self.drop = torch.nn.Dropout(0.5)
        self.fc2 = torch.nn.Linear(64, 64)
        self.act2 = torch.nn.ReLU()
        self.fc3 = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.drop(self.act(self.fc1(x))))))


def _dropout_case():
    from profiler.graph import build_graph
    m = _DropoutMLP()
    g = build_graph(m, (32,), 4, name="dropmlp")
    prog = build_program(m, g)
    inst = instance_from_graph(g, get_profile("local"))
    # recompute every forward value in the backward: the dropout mask is drawn again
    sched = chen_sqrt(inst, segments=1)
    plan = build_plan(g, sched, "layer", [n.name for n in inst.nodes])
    drop = next(n for n in prog["nodes"] if n["name"] == "drop:fwd")
    recomputed = {i for s in sched.stages for i in s.compute[:-1]}
    assert drop["random"] and any(plan["groups"][i]["name"] == "drop:fwd" for i in recomputed)
    return prog, plan, drop


def test_dropout_recomputation_reuses_the_random_state(tmp_path):
    prog, plan, drop = _dropout_case()
    it = _execute(prog, plan, tmp_path)["iterations"][0]
    assert it["check"]["bit_exact"] and it["recomputes"] > 0


def test_a_result_that_differs_from_the_plain_iteration_is_an_error(tmp_path):
    """Without restoring the random state, the recomputed dropout mask differs: the check must
    catch it (this is what guards every stored run)."""
    prog, plan, drop = _dropout_case()
    drop["random"] = False
    with pytest.raises(E.ExecutionError, match="differ from the plain iteration"):
        _execute(prog, plan, tmp_path)
    assert os.listdir(tmp_path) == []


def test_backward_recomputation_is_refused_before_anything_runs():
    from solver.schedule import Schedule, Stage
    mi, g, prog, inst = _setup("mlp")
    sched = checkpoint_all(inst)
    bwd = next(i for i, n in enumerate(inst.nodes) if n.is_backward)
    st = list(sched.stages)
    last = st[-1]
    st[-1] = Stage(tuple(sorted(set(last.compute) | {bwd})), last.keep, last.pagein, last.pageout)
    with pytest.raises(CostdbError, match=f"recomputes backward node {inst.nodes[bwd].name}"):
        build_plan(g, Schedule(tuple(st)), "layer", [n.name for n in inst.nodes])


def test_a_solved_integrated_schedule_with_savings_runs_bit_exact(tmp_path):
    """The solver's own schedule (not a baseline): BERT-tiny under a budget below its no-savings
    peak, so it must recompute and/or page; executed and checked through the public API."""
    from solver.commands import load_instance, run_solve
    from solver.execute import run_schedule
    from solver.solve import min_feasible_budget
    db = tmp_path / "b.db"
    with costdb.open(db, create=True) as d:
        inst = load_instance(d, "local", "bert-tiny", None, batch=2, input_shape="16")
    hi = inst.no_savings_peak()
    lo, _ = min_feasible_budget(inst, "integrated", solver="cbc", time_limit=20)
    budget = lo + (hi - lo) // 3
    assert budget < hi
    res, inst, sid = run_solve(str(db), "local", "bert-tiny", memory=f"{budget}B", solver="cbc",
                               batch=2, input_shape="16", time_limit=10)
    c = res.schedule.counts()
    assert c["recomputes"] + c["pageouts"] > 0
    rec = run_schedule(str(db), sid, "local", inventory=Inventory(None, {}), iterations=1,
                       warmups=0, storage_path=str(tmp_path))
    assert rec.bit_exact and rec.recomputes == c["recomputes"] and rec.pageouts == c["pageouts"]
    assert rec.pageout_bytes == rec.predicted_pageout_bytes
