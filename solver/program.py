"""Build what the device executor runs: a model's *program* and a schedule's *plan*.

The program (format ``costdb-program/1``, docs/execute.md) is the model's forward as torch.fx
instructions (module calls become the agent's kernels with the graph node's attributes; function
and method calls keep their qualified names; non-tensor values such as ``x.shape`` are folded to
constants), the parameters and buffers to create, the loss, the SGD settings and one entry per
training-graph node saying what it computes (forward, loss, input gradient, weight gradient,
gradient accumulation, update) from which nodes. It is plain JSON, so the same executor runs it
in-process (``local``) and in the Python 3.6 agent over SSH.

The plan maps the solver's nodes (groups of graph nodes at the schedule's granularity) to their
members, the members consumed outside the group (the group's value) and the group dependencies,
plus the stages of the schedule.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx
import torch.nn as nn

from costdb.errors import CostdbError
from costdb.graph import TrainingGraph
from profiler.graph import FUNCTION_OPS, METHOD_OPS, MODULE_OPS, WEIGHTED_MODULE_PARAMS
from solver.schedule import Schedule

PROGRAM_FORMAT = "costdb-program/1"
_FUNCTION_MODULES = (("operator", operator), ("torch.nn.functional", torch.nn.functional),
                     ("torch", torch))
RANDOM_OPS = ("dropout",)
NORM_OPS = ("batch_norm", "layer_norm")


def _function_name(fn: Any) -> str:
    import builtins
    for mod_name, mod in _FUNCTION_MODULES + (("builtins", builtins),):
        name = getattr(fn, "__name__", None)
        if name and getattr(mod, name, None) is fn:
            return f"{mod_name}.{name}"
    raise CostdbError(f"the executor cannot call {fn!r}: it is not in operator, torch, "
                      "torch.nn.functional or builtins")


def _enc(v: Any) -> Any:
    if isinstance(v, torch.fx.Node):
        return {"ref": v.name}
    if isinstance(v, torch.Size):
        return {"tuple": [int(x) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [_enc(x) for x in v]}
    if isinstance(v, list):
        return [_enc(x) for x in v]
    if isinstance(v, dict):
        return {"dict": {str(k): _enc(x) for k, x in v.items()}}
    if isinstance(v, slice):
        return {"slice": [_enc(v.start), _enc(v.stop), _enc(v.step)]}
    if v is Ellipsis:
        return {"ellipsis": 1}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).replace("torch.", "")}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise CostdbError(f"the executor cannot encode the argument {v!r} ({type(v).__name__})")


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__(gm)
        self.results: dict[str, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        self.results[n.name] = out
        return out


def build_program(module: nn.Module, graph: TrainingGraph, input_dtype: str | None = None,
                  input_high: int | None = None) -> dict[str, Any]:
    """The program of ``module`` whose training graph is ``graph`` (built by
    ``profiler.graph.build_graph`` from the same module)."""
    gm = torch.fx.symbolic_trace(module)
    modules = dict(gm.named_modules())
    by_name = {n.name: n for n in graph.nodes}
    tdtype = getattr(torch, graph.dtype)
    shape = (graph.batch, *graph.input_shape)
    example = torch.randint(0, input_high or 2, shape) if input_dtype == "int64" else \
        torch.zeros(shape, dtype=tdtype)
    was_training = gm.training
    gm.eval()                       # shapes only: no running-statistics update, no dropout RNG
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(example)
    gm.train(was_training)
    fx: list[dict[str, Any]] = []
    node_of_fx: dict[str, int] = {}
    output = None
    for n in gm.graph.nodes:
        val = rec.results.get(n.name)
        ins: dict[str, Any] = {"name": n.name}
        if n.op == "placeholder":
            ins["kind"] = "input"
        elif n.op == "get_attr":
            ins.update(kind="buffer", target=str(n.target))
        elif n.op == "output":
            out = n.args[0]
            output = _enc(out[0] if isinstance(out, (tuple, list)) else out)
            continue
        elif not torch.is_tensor(val):
            ins.update(kind="meta", value=_enc(val))
        elif n.op == "call_module":
            m = modules[n.target]
            op = MODULE_OPS.get(type(m))
            if op is None:
                raise CostdbError(f"module {n.target!r} ({type(m).__name__}) is not supported")
            if op == "view":
                if isinstance(m, nn.Flatten):
                    ins.update(kind="view", call="function", target="torch.flatten",
                               args=[_enc(n.args[0]), m.start_dim, m.end_dim])
                else:
                    ins.update(kind="view", call="identity", args=[_enc(n.args[0])])
            else:
                gn = by_name.get(f"{n.name}:fwd")
                if gn is None:
                    raise CostdbError(f"fx node {n.name} has no graph node; the model does not "
                                      "match its training graph")
                params = {}
                for pname in WEIGHTED_MODULE_PARAMS.get(op, ()):
                    p = getattr(m, pname, None)
                    if isinstance(p, torch.Tensor):
                        if not p.requires_grad:
                            raise CostdbError(f"{n.target}.{pname} is frozen; the executor trains "
                                              "every parameter")
                        params[pname] = f"{n.target}.{pname}"
                bufs = {}
                if op == "batch_norm":
                    if m.running_mean is None or m.momentum is None:
                        raise CostdbError(f"{n.target}: batch norm without running statistics or "
                                          "with momentum=None is not supported by the executor")
                    bufs = {b: f"{n.target}.{b}" for b in ("running_mean", "running_var",
                                                          "num_batches_tracked")}
                ins.update(kind="compute", call="module", op=op, target=str(n.target),
                           args=_enc(list(n.args)), kwargs=_enc(dict(n.kwargs)),
                           attrs=gn.attrs, params=params, buffers=bufs, node=gn.idx)
                node_of_fx[n.name] = gn.idx
        else:
            table = FUNCTION_OPS if n.op == "call_function" else METHOD_OPS
            op = table.get(n.target)
            if op is None:
                raise CostdbError(f"{n.op} {n.target!r} is not supported by the executor")
            call = "function" if n.op == "call_function" else "method"
            target = _function_name(n.target) if call == "function" else str(n.target)
            ins.update(call=call, target=target, args=_enc(list(n.args)), kwargs=_enc(dict(n.kwargs)))
            if op == "view":
                ins["kind"] = "view"
            else:
                gn = by_name.get(f"{n.name}:fwd")
                if gn is None:
                    raise CostdbError(f"fx node {n.name} has no graph node; the model does not "
                                      "match its training graph")
                ins.update(kind="compute", op=op, node=gn.idx)
                node_of_fx[n.name] = gn.idx
        fx.append(ins)
    if output is None:
        raise CostdbError("the model returns no tensor")
    params_list = _params(gm, modules)
    buffers = []
    for name, b in gm.named_buffers():
        if b.numel() > 1 << 20:
            raise CostdbError(f"buffer {name} has {b.numel()} elements; the executor ships buffers "
                              "by value and refuses ones above 2^20")
        buffers.append({"name": name, "shape": list(b.shape), "dtype": str(b.dtype).replace("torch.", ""),
                        "values": b.detach().reshape(-1).tolist()})
    nodes = _nodes(graph, node_of_fx, fx)
    loss = next(n for n in graph.nodes if n.phase == "loss")
    upd = next((n for n in graph.nodes if n.phase == "update"), None)
    sgd = dict(upd.attrs) if upd is not None else {}
    return {"format": PROGRAM_FORMAT, "model": graph.key, "batch": graph.batch,
            "input_shape": list(graph.input_shape), "dtype": graph.dtype,
            "input_dtype": input_dtype or graph.dtype, "input_high": input_high,
            "loss": loss.op, "logits_shape": list(loss.input_shapes[0]),
            "sgd": {"lr": sgd.get("lr", 0.01), "momentum": sgd.get("momentum", 0.0),
                    "weight_decay": sgd.get("weight_decay", 0.0)},
            "params": params_list, "buffers": buffers, "fx": fx, "output": output, "nodes": nodes}


def _params(gm: torch.fx.GraphModule, modules: dict[str, nn.Module]) -> list[dict[str, Any]]:
    out = []
    for name, p in gm.named_parameters():
        mod_name, _, pname = name.rpartition(".")
        m = modules.get(mod_name)
        op = MODULE_OPS.get(type(m)) if m is not None else None
        if op in NORM_OPS:
            init = "ones" if pname == "weight" else "zeros"
            fan = 1
        else:
            w = getattr(m, "weight", None) if m is not None else None
            fan = int(w[0].numel()) if isinstance(w, torch.Tensor) and w.dim() > 1 else 1
            init = "uniform"
        out.append({"name": name, "shape": list(p.shape), "init": init, "fan_in": fan})
    return out


def _nodes(graph: TrainingGraph, node_of_fx: dict[str, int], fx: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each training-graph node computes, from which nodes."""
    gn = graph.nodes
    fwd_by_prefix = {}
    for n in gn:
        if n.phase == "fwd":
            fwd_by_prefix[n.name.rsplit(":", 1)[0]] = n.idx
    loss = next(n for n in gn if n.phase == "loss")
    consumers: dict[int, list[int]] = {n.idx: [] for n in gn}
    for n in gn:
        for d in n.deps:
            consumers[d].append(n.idx)
    fx_params = {ins["node"]: sorted(ins.get("params", {}).values()) for ins in fx
                 if ins.get("kind") == "compute"}
    fx_name = {v: k for k, v in node_of_fx.items()}
    req: dict[int, bool] = {}
    out = []

    def fwd_of(n) -> int:
        if n.layer == "loss":
            return loss.idx
        prefix = n.name.rsplit(":", 1)[0]
        if n.phase == "update":
            prefix = prefix.rsplit(".", 1)[0]
        if prefix not in fwd_by_prefix:
            raise CostdbError(f"graph node {n.name} belongs to no forward node")
        return fwd_by_prefix[prefix]

    def grad_dep(n) -> int:
        g = [d for d in n.deps if gn[d].phase == "bwd_data"]
        if len(g) != 1:
            raise CostdbError(f"graph node {n.name} has {len(g)} incoming gradients; expected one")
        return g[0]
    for n in gn:
        e: dict[str, Any] = {"idx": n.idx, "name": n.name, "phase": n.phase, "deps": list(n.deps),
                             "bytes": n.output_bytes}
        if n.phase == "fwd":
            if n.idx not in fx_name:
                raise CostdbError(f"graph node {n.name} has no fx instruction")
            params = fx_params.get(n.idx, [])
            req[n.idx] = bool(params) or any(req.get(d, False) for d in n.deps)
            e.update(kind="fwd", fx=fx_name[n.idx], params=params, requires_grad=req[n.idx],
                     random=n.op in RANDOM_OPS)
        elif n.phase == "loss":
            e.update(kind="loss", requires_grad=True)
        elif n.phase == "bwd_data" and n.op == "grad_accumulate":
            if len(n.deps) != 2:
                raise CostdbError(f"{n.name} adds a gradient to itself (a value used twice by one "
                                  "op); the executor does not support that yet")
            e.update(kind="acc", fwd=fwd_of(n), grad=list(n.deps))
        elif n.phase == "bwd_data" and n.layer == "loss":
            e.update(kind="loss_bwd", fwd=loss.idx,
                     wrt=sorted(d for d in n.deps if gn[d].phase == "fwd"))
        elif n.phase == "bwd_data":
            wrt = sorted({fwd_of(gn[c]) for c in consumers[n.idx]})
            e.update(kind="bwd_data", fwd=fwd_of(n), grad=grad_dep(n), wrt=wrt)
        elif n.phase == "bwd_weight":
            f = fwd_of(n)
            e.update(kind="bwd_weight", fwd=f, grad=grad_dep(n), params=fx_params.get(f, []))
        elif n.phase == "update":
            f = fwd_of(n)
            layer_params = fx_params.get(f, [])
            pname = n.name.rsplit(":", 1)[0].rsplit(".", 1)[1]
            q = next((p for p in layer_params if p.rsplit(".", 1)[1] == pname), None)
            if q is None:
                raise CostdbError(f"{n.name}: no parameter {pname} on its layer")
            e.update(kind="update", param=q)
        else:
            raise CostdbError(f"graph node {n.name}: unknown phase {n.phase}")
        out.append(e)
    return out


def build_plan(graph: TrainingGraph, sched: Schedule, granularity: str,
               node_names: list[str] | None = None) -> dict[str, Any]:
    """The groups (solver nodes) of ``graph`` at ``granularity`` and the schedule's stages;
    refuses a schedule whose nodes are not the graph's."""
    from solver.problem import coarsen
    groups = coarsen(graph, None, granularity)
    if len(groups) != sched.n:
        raise CostdbError(f"the schedule has {sched.n} stages but {graph.key} has {len(groups)} "
                          f"solver nodes at granularity {granularity}; it was solved for another graph")
    if node_names is not None and [g["name"] for g in groups] != list(node_names):
        bad = next(i for i, (g, nm) in enumerate(zip(groups, node_names)) if g["name"] != nm)
        raise CostdbError(f"the schedule's node {bad} is {node_names[bad]!r} but {graph.key} has "
                          f"{groups[bad]['name']!r} there; it was solved for another graph")
    consumers: dict[int, set[int]] = {n.idx: set() for n in graph.nodes}
    for n in graph.nodes:
        for d in n.deps:
            consumers[d].add(n.idx)
    plan_groups = []
    for g in groups:
        members = list(g["members"])
        ms = set(members)
        outputs = [m for m in members if consumers[m] - ms
                   and graph.nodes[m].phase not in ("bwd_weight", "update")]
        phases = {graph.nodes[m].phase for m in members}
        plan_groups.append({"name": g["name"], "members": members, "outputs": outputs,
                            "deps": list(g["deps"]), "side_effects": "update" in phases,
                            "backward": bool(phases & {"bwd_data", "bwd_weight", "update"})})
    for t, st in enumerate(sched.stages):
        for k in st.compute:
            if k != t and plan_groups[k]["backward"]:
                raise CostdbError(f"the schedule recomputes backward node {plan_groups[k]['name']} "
                                  f"in stage {t}; the executor runs every backward node once "
                                  "(updates are not repeatable): solve without --compat, whose "
                                  "published formulation allows it")
    return {"groups": plan_groups, "stages": [s.to_dict() for s in sched.stages],
            "compat": sched.compat, "overlap": sched.overlap, "granularity": granularity}
