"""In-context profiling: what each graph node costs inside real training iterations.

The isolated estimate times one op alone in a calibrated loop (what a recompute costs). Inside an
iteration an op runs after other ops evicted its caches, the autograd engine fuses some backward
work (one ``convolution_backward`` computes both input and weight gradients), and Python around
the ops (module calls, the optimizer's per-parameter loop, ``zero_grad``) costs time no single-op
measurement sees. This module runs real iterations of the user's model under ``torch.profiler``
and attributes every microsecond of the main thread to a graph node:

* **forward**: the model's ``torch.fx`` GraphModule (same submodules and parameters as the
  module the user trains) is regenerated with a ``record_function`` range around every fx node,
  labelled with the graph node it belongs to. Pure view nodes, which the graph folds away, are
  labelled with the node that owns their memory (the producer; the first consumer for views of
  the input). A range covers the module call (``__call__``, hooks, ``forward``'s Python) and its
  aten ops, so BatchNorm's ``num_batches_tracked += 1`` is part of the BatchNorm node.
* **loss**: ``costdb:loss`` range -> the ``loss`` node.
* **backward**: each ``autograd::engine::evaluate_function: XBackward0`` event carries the
  sequence number of the autograd node, which the forward op that created it recorded too; the
  last forward event with that number lies in the range of the graph node that created it. Its
  time goes to that node's ``bwd_data``/``bwd_weight``; when a node has both (the fused
  convolution, linear, batch-norm backward) the time is split by the node's **isolated** ratio
  ``bwd_data / (bwd_data + bwd_weight)``. aten ``add`` calls that the engine runs after a
  function, to sum gradients flowing into a tensor used several times, go to that tensor's
  ``grad_accumulate`` nodes; ``AccumulateGrad`` (storing ``.grad``) goes to the ``bwd_weight``
  node of the function that produced the gradient. The seed ``ones_like`` and engine gaps go to
  the next function run.
* **update**: in ``optimizer.step()`` each parameter's aten ops (plus the Python before them) go
  to its ``update`` node; the step's prologue/epilogue (``_init_group``, hooks) and the whole of
  ``zero_grad`` are shared equally by the update nodes (per-tensor Python, independent of size).

Gaps between two units of one phase go to the next unit. What is left, the time between the
phases (and units that map to no node), is returned as ``unattributed``, never hidden.

**Profiler overhead.** Every recorded event costs time (``record_shapes`` included) that an
unprofiled iteration does not spend, and so does every range opened from Python (an unprofiled
iteration opens none; they use ``_RecordFunctionFast``, ~1 us, where ``record_function`` costs
~20 us). Measured on this project's benchmark, the real cost per event inside a model's
iteration is 2-10 us, several times what a model-free calibration on tiny calls finds (~0.45 us:
cache and allocator effects of the profiler's bookkeeping grow with the model), so the model-free
correction left the in-context estimate 9-38 % too high. The default correction is therefore
measured **in situ** (``correction="in_situ"``): plain iterations of the user's own module,
timed per phase with ``perf_counter`` and no profiler, run back to back before the profiled ones;
per phase (fwd / bwd / update) the profiled nodes' excess over the plain phase time, divided by
the phase's recorded events, is the cost per event, and each node's figure is reduced by its
events x that cost. The per-phase sums of node figures then equal the plain phase medians of the
same profile, and the split between nodes follows the profiler's timeline; the figures are
checked against a separate, later timing of a freshly built model (benchmarks/bench_costmodel.py).
``correction="calibrated"`` keeps the model-free ``calibrate_overhead`` correction: (events
inside a node's time) x (cost per event) + (ranges) x (cost per range).

**Samples.** One iteration's figure of a tiny node is one call of a few microseconds, so its
dispersion says little; as pyperf does with inner loops, a stored sample is the mean over
``block`` consecutive iterations (``inner_loops`` = ``block``), and the CV is that of the samples.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.fx
from torch.profiler import ProfilerActivity, profile

try:  # a C++ range opened from Python in ~1 us (torch >= 2.1); record_function costs ~20 us
    from torch._C._profiler import _RecordFunctionFast as _Range
except ImportError:  # pragma: no cover - older torch
    from torch.profiler import record_function as _Range

from costdb.errors import CostdbError
from devices.agent.measure import _quiet_stderr, measure_op
from devices.agent.stats import summarize
from profiler.graph import TrainingGraph
from profiler.iteration import PHASE_GROUPS, Trainer

__all__ = ["InContextResult", "Overhead", "attribute_iteration", "attribution_names",
           "calibrate_overhead", "instrument", "isolated_split", "plan", "profile_in_context"]

PREFIX = "costdb:"
EVAL = "autograd::engine::evaluate_function: "
RANGES = ("zero_grad", "forward", "loss", "backward", "step")


# --- overhead calibration ---------------------------------------------------------------------

@dataclass(frozen=True)
class Overhead:
    """Seconds the profiler adds per recorded aten event and per Python record_function range."""

    per_event_s: float
    per_range_s: float

    def to_dict(self) -> dict[str, float]:
        return {"per_event_s": self.per_event_s, "per_range_s": self.per_range_s}


def calibrate_overhead(calls: int = 100, trials: int = 9) -> Overhead:
    """Profiler cost per event and per range, timed with and without the profiler.

    The event loop calls a mix of tiny ops shaped like a training iteration's (add, relu, a
    linear and a convolution, whose nested aten calls carry many recorded arguments); the cost
    per event is the profiled-minus-plain time over the number of events the profiler recorded.
    The range loop opens and closes empty ranges, which an unprofiled iteration never does: all
    of its profiled time is overhead. Trials alternate; medians are compared. Independent of any
    model, so no figure is fitted to the iteration it is checked against.
    """
    a = torch.zeros(4)
    x, w, bias = torch.zeros(1, 4), torch.zeros(2, 4), torch.zeros(2)
    img, k = torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 1, 1)
    F = torch.nn.functional

    def ops() -> None:
        with torch.no_grad():
            for _ in range(calls):
                torch.add(a, a)
                F.relu(a)
                F.linear(x, w, bias)
                F.conv2d(img, k)

    def ranges() -> None:
        for _ in range(calls):
            _leave(_enter("costdb:calibrate"))

    counted = {}

    def timed(name: str, fn: Callable[[], None], profiled: bool) -> float:
        if not profiled:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        if name not in counted:
            counted[name] = len(prof.events())
        return dt

    fns = {"ops": ops, "ranges": ranges}
    plain: dict[str, list[float]] = {k: [] for k in fns}
    prof: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(trials):
        for name, fn in fns.items():
            plain[name].append(timed(name, fn, False))
            prof[name].append(timed(name, fn, True))
    per_event = max(0.0, (statistics.median(prof["ops"]) - statistics.median(plain["ops"]))
                    / max(1, counted["ops"]))
    per_range = statistics.median(prof["ranges"]) / calls
    return Overhead(per_event, per_range)


# --- instrumentation --------------------------------------------------------------------------

def _enter(label: str) -> Any:
    """Open a profiler range (called from the instrumented fx code)."""
    r = _Range(label)
    r.__enter__()
    return r


def _leave(r: Any) -> None:
    r.__exit__(None, None, None)


def _owners(gm: torch.fx.GraphModule, graph: TrainingGraph) -> dict[str, int | None]:
    """fx node name -> index of the graph node whose time its execution is (views -> owner)."""
    fwd = {n.name[:-len(":fwd")]: n.idx for n in graph.nodes if n.phase == "fwd"}
    owner: dict[str, int | None] = {}
    for node in gm.graph.nodes:
        if node.name in fwd:
            owner[node.name] = fwd[node.name]
            continue
        src = None
        for a in node.all_input_nodes:
            if owner.get(a.name) is not None:
                src = owner[a.name]
                break
        owner[node.name] = src
    # views of the input (no producer): the first consumer that is a graph node
    for node in reversed(list(gm.graph.nodes)):
        if owner.get(node.name) is None and node.op in ("call_module", "call_function", "call_method"):
            for u in node.users:
                if owner.get(u.name) is not None:
                    owner[node.name] = owner[u.name]
                    break
    return owner


def instrument(module: torch.nn.Module, graph: TrainingGraph) -> torch.fx.GraphModule:
    """The module as an fx GraphModule with a ``costdb:n:IDX`` range around every fx call node.

    The GraphModule holds the module's own submodules and parameters, so training it trains
    the module. fx nodes that belong to no graph node get ``costdb:x:NAME`` (reported as
    unattributed).
    """
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # fx raises many types; build_graph already traced it once
        raise CostdbError(f"cannot trace the model with torch.fx for in-context profiling "
                          f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    owner = _owners(gm, graph)
    g = gm.graph
    for node in list(g.nodes):
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        idx = owner.get(node.name)
        label = f"{PREFIX}n:{idx}" if idx is not None else f"{PREFIX}x:{node.name}"
        with g.inserting_before(node):
            handle = g.call_function(_enter, (label,))
        with g.inserting_after(node):
            g.call_function(_leave, (handle,))
    g.lint()
    return torch.fx.GraphModule(gm, g)


# --- attribution of one iteration's events ------------------------------------------------------

@dataclass
class _Unit:
    """A span of the main thread's timeline and who gets it: node index -> share (sums to 1)."""

    start: float
    end: float
    shares: dict[int, float]
    events: int               # profiler events recorded inside the span (incl. itself)
    ranges: int = 0           # record_function ranges opened from Python inside the span
    kind: str = "op"
    label: str = ""           # for unattributed units
    names: tuple[str, ...] = ()  # the top-level calls inside (aten ops, autograd functions)
    carved: float = 0.0       # time inside the span given to nested units
    nested: bool = False      # inside another unit's span (not part of the phase timeline)

    @property
    def duration(self) -> float:
        return self.end - self.start - self.carved


def _count(e: Any) -> int:
    return 1 + sum(_count(c) for c in e.cpu_children)


def _numel(shape: Iterable[int]) -> int:
    return int(math.prod(shape)) if shape else 1


@dataclass
class _Plan:
    """What the attribution needs to know about the graph, computed once."""

    graph: TrainingGraph
    bwd: dict[int, dict[str, int]]            # fwd idx (or loss idx) -> {"bwd_data": i, "bwd_weight": j}
    split: dict[int, float]                   # fwd idx -> bwd_data share of its backward time
    accum: dict[int, list[int]]               # fwd idx of producer -> its grad_accumulate nodes
    consumers_inputs: dict[int, list[int]]    # fwd idx -> producers of its inputs (graph deps)
    out_numel: dict[int, int]                 # fwd idx -> numel of its output
    param_shapes: dict[int, list[tuple]]      # fwd idx -> shapes of its parameters
    updates: list[int]                        # update node per optimizer parameter, in order
    loss_idx: int
    loss_bwd: int


def plan(graph: TrainingGraph, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
         split: dict[int, float]) -> _Plan:
    by_name = {n.name: n for n in graph.nodes}
    bwd: dict[int, dict[str, int]] = defaultdict(dict)
    accum: dict[int, list[int]] = defaultdict(list)
    fwd_by_name = {n.name[:-len(":fwd")]: n.idx for n in graph.nodes if n.phase == "fwd"}
    for n in graph.nodes:
        base, _, kind = n.name.rpartition(":")
        if n.phase in ("bwd_data", "bwd_weight") and base in fwd_by_name:
            if kind in ("bwd_data", "bwd_weight"):
                bwd[fwd_by_name[base]][kind] = n.idx
            elif kind.startswith("grad_accumulate"):
                accum[fwd_by_name[base]].append(n.idx)
    loss_idx = by_name["loss:fwd"].idx
    loss_bwd = by_name["loss:bwd_data"].idx
    bwd[loss_idx] = {"bwd_data": loss_bwd}
    consumers_inputs = {n.idx: [d for d in n.deps if graph.nodes[d].phase == "fwd"]
                        for n in graph.nodes if n.phase == "fwd"}
    out_numel = {n.idx: _numel(n.output_shape) for n in graph.nodes if n.phase == "fwd"}
    param_shapes = {n.idx: [tuple(s) for s in n.params.values()] for n in graph.nodes
                    if n.phase == "fwd" and n.params}
    # optimizer order: param_groups as the optimizer walks them; names from the module
    names = {id(p): name for name, p in module.named_parameters()}
    upd = {}
    for n in graph.nodes:
        if n.phase == "update":
            pname = n.name[:-len(":update")].rsplit(".", 1)[1]
            upd.setdefault(f"{n.layer}.{pname}", n.idx)
    updates = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names.get(id(p))
            if name not in upd:
                raise CostdbError(f"parameter {name!r} of the model has no update node in the "
                                  "graph; in-context profiling needs the graph's parameters")
            updates.append(upd[name])
    return _Plan(graph, dict(bwd), split, dict(accum), consumers_inputs, out_numel, param_shapes,
                 updates, loss_idx, loss_bwd)


def _backward_shares(p: _Plan, owner: int) -> dict[int, float] | None:
    nodes = p.bwd.get(owner, {})
    if "bwd_data" in nodes and "bwd_weight" in nodes:
        f = p.split.get(owner, 0.5)
        return {nodes["bwd_data"]: f, nodes["bwd_weight"]: 1.0 - f}
    if nodes:
        return {next(iter(nodes.values())): 1.0}
    return None


def _weight_node(p: _Plan, owner: int | None) -> int | None:
    if owner is None:
        return None
    return p.bwd.get(owner, {}).get("bwd_weight")


def _span(e: Any) -> tuple[float, float]:
    return e.time_range.start, e.time_range.end


def _unit(e: Any, shares: dict[int, float], kind: str = "op", ranges: int = 0,
          names: tuple[str, ...] | None = None, label: str = "") -> _Unit:
    """A unit covering event ``e`` (and its descendants)."""
    return _Unit(*_span(e), shares, _count(e), ranges, kind, label,
                 names if names is not None else _top_ops(e))


def _top_ops(e: Any) -> tuple[str, ...]:
    """Names of the outermost aten ops / autograd functions under ``e`` (``e`` itself if one)."""
    if not e.name.startswith(PREFIX) and not e.name.startswith(EVAL):
        return (e.name,)
    out: list[str] = []
    for c in sorted(e.cpu_children, key=lambda c: c.time_range.start):
        out.extend(_top_ops(c))
    return tuple(out)


def attribute_iteration(events: list[Any], p: _Plan) -> dict[str, Any]:
    """Partition one iteration's main-thread timeline into units, each given to graph nodes.

    ``events``: top-level FunctionEvents of a profile holding one ``costdb:iteration`` range.
    Returns ``{"units": [_Unit...], "wall_s": ..., "phase_s": {range: seconds}}``; times in the
    units are profiler microseconds, uncorrected.
    """
    its = [e for e in events if e.name == f"{PREFIX}iteration"]
    if len(its) != 1:
        raise CostdbError(f"expected one profiled iteration, found {len(its)}")
    it = its[0]
    kids = {e.name[len(PREFIX):]: e for e in it.cpu_children if e.name.startswith(PREFIX)}
    missing = [r for r in RANGES if r not in kids]
    if missing:
        raise CostdbError(f"profiled iteration lacks ranges {missing}; torch.profiler did not "
                          "record the main thread")
    units: list[_Unit] = []

    # forward: one unit per fx node range; which node each autograd sequence number belongs to
    seq_owner: dict[int, tuple[float, int | None]] = {}

    def note_seqs(e: Any, owner: int | None) -> None:
        stack = [e]
        while stack:
            x = stack.pop()
            if x.sequence_nr is not None and x.sequence_nr >= 0:
                t = x.time_range.start
                # the op that creates autograd node k is the last to record k
                if x.sequence_nr not in seq_owner or seq_owner[x.sequence_nr][0] <= t:
                    seq_owner[x.sequence_nr] = (t, owner)
            stack.extend(x.cpu_children)

    fwd_units = []
    for e in sorted(kids["forward"].cpu_children, key=lambda e: e.time_range.start):
        if e.name.startswith(f"{PREFIX}n:"):
            idx = int(e.name[len(PREFIX) + 2:])
            note_seqs(e, idx)
            fwd_units.append(_unit(e, {idx: 1.0}, ranges=1))
        elif e.name.startswith(f"{PREFIX}x:"):
            note_seqs(e, None)
            fwd_units.append(_unit(e, {}, "unmapped", 1, label=e.name[len(PREFIX) + 2:]))
    units += _fill(fwd_units, kids["forward"])
    loss = kids["loss"]
    note_seqs(loss, p.loss_idx)
    units.append(_unit(loss, {p.loss_idx: 1.0}, ranges=1))

    # backward: each engine function -> the node of the forward op that created it
    bwd_units: list[_Unit] = []
    last_owner: int | None = None
    accum_used: dict[int, int] = defaultdict(int)
    for e in sorted(kids["backward"].cpu_children, key=lambda e: e.time_range.start):
        if not e.name.startswith(EVAL):
            continue  # the seed ones_like etc.: a gap, given to the next function
        fname = e.name[len(EVAL):]
        if fname.endswith("AccumulateGrad"):
            shapes = [tuple(s) for c in e.cpu_children for s in (c.input_shapes or [])[:1]]
            w = _weight_node(p, last_owner)
            if w is not None and (not shapes or shapes[0] in p.param_shapes.get(last_owner, [])):
                bwd_units.append(_unit(e, {w: 1.0}, "accumulate_grad", names=("AccumulateGrad",)))
            else:
                bwd_units.append(_unit(e, {}, "unmapped", names=("AccumulateGrad",),
                                       label=f"AccumulateGrad{shapes[:1]}"))
            continue
        owner = seq_owner.get(e.sequence_nr, (0.0, None))[1]
        shares = _backward_shares(p, owner) if owner is not None else None
        if shares is None:
            bwd_units.append(_unit(e, {}, "unmapped", names=(fname,), label=fname))
            continue
        last_owner = owner
        # engine work after the function: sums of gradients flowing into a tensor used twice
        inner = []
        for c in e.cpu_children:
            if c.name in ("aten::add", "aten::add_") and c.input_shapes:
                n = _numel(c.input_shapes[0])
                prods = [q for q in p.consumers_inputs.get(owner, [])
                         if p.accum.get(q) and p.out_numel[q] == n]
                if prods:
                    q = prods[0]
                    target = p.accum[q][accum_used[q] % len(p.accum[q])]
                    accum_used[q] += 1
                    u = _unit(c, {target: 1.0}, "grad_accumulate")
                    u.nested = True
                    inner.append(u)
        fn = _unit(e, shares, names=(fname,))
        fn.carved = sum(u.duration for u in inner)
        fn.events -= sum(u.events for u in inner)
        bwd_units += [fn] + inner
    units += _fill(bwd_units, kids["backward"])

    # optimizer: per-parameter aten ops in the optimizer's order; zero_grad shared
    units += _step_units(kids["step"], p)
    share = {u: 1.0 / len(p.updates) for u in p.updates}
    units.append(_unit(kids["zero_grad"], share, "zero_grad", 1, names=("zero_grad",)))
    phase_s = {r: kids[r].time_range.elapsed_us() * 1e-6 for r in RANGES}
    return {"units": units, "wall_s": it.time_range.elapsed_us() * 1e-6, "phase_s": phase_s}


def _fill(units: list[_Unit], parent: Any) -> list[_Unit]:
    """Stretch units over the parent range: each gap goes to the unit after it, the tail to the
    last; a parent with no units becomes one unattributed unit."""
    line = sorted((u for u in units if not u.nested), key=lambda u: u.start)
    if not line:
        return [_unit(parent, {}, "unmapped", 1, label=parent.name)]
    prev_end = parent.time_range.start
    for u in line:
        if u.start > prev_end:
            u.start = prev_end
        prev_end = max(prev_end, u.end)
    line[-1].end = max(line[-1].end, parent.time_range.end)
    # the parent range itself and events in the gaps (e.g. backward's seed) go with the first unit
    line[0].events += _count(parent) - sum(u.events for u in units)
    line[0].ranges += 1
    return units


def _step_units(step: Any, p: _Plan) -> list[_Unit]:
    """The step range cut per parameter: each parameter's aten ops and the Python before them;
    the prologue and epilogue (``_init_group``, hooks) shared by all update nodes."""
    n_params = len(p.updates)
    share = {u: 1.0 / n_params for u in p.updates} if n_params else {}
    ops: list[Any] = []

    def collect(e: Any) -> None:
        for c in sorted(e.cpu_children, key=lambda c: c.time_range.start):
            if c.name.startswith("aten::"):
                ops.append(c)
            else:
                collect(c)  # Optimizer.step#SGD.step and similar wrappers
    collect(step)
    t0, t1 = _span(step)
    whole = _unit(step, share, "update_unsplit", 1, names=("step",))
    if not ops or not n_params or len(ops) % n_params:
        return [whole]
    k = len(ops) // n_params
    for j, upd in enumerate(p.updates):
        want = tuple(p.graph.nodes[upd].params["param"])
        got = [tuple(s) for s in (ops[j * k].input_shapes or [])[:1]]
        if got and got[0] != want:  # not k ops per parameter in order: do not guess
            return [whole]
    units = []
    prev = ops[0].time_range.start
    for j, upd in enumerate(p.updates):
        group = ops[j * k:(j + 1) * k]
        end = group[-1].time_range.end
        units.append(_Unit(prev, end, {upd: 1.0}, sum(_count(c) for c in group), 0, "update",
                           names=tuple(c.name for c in group)))
        prev = end
    edge = (ops[0].time_range.start - t0) + (t1 - prev)
    units.append(_Unit(t0, t0 + edge, share, _count(step) - sum(u.events for u in units), 1,
                       "update_shared", names=("step",)))
    return units


def attribution_names(tr: Trainer, isolated: dict[str, float] | None = None) -> dict[str, Any]:
    """One profiled iteration of ``tr``: ``nodes`` (graph node name -> the calls attributed to it,
    in order), ``unattributed`` (labels of what went to no node) and ``units`` (kind, calls,
    node name -> share). What the tests compare to hand-derived lists."""
    gm = instrument(tr.module, tr.graph)
    p = plan(tr.graph, tr.module, tr.optimizer, isolated_split(tr.graph, isolated))
    for _ in range(2):
        tr.step(gm)
    with _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            _iteration_ranges(tr, gm)
    res = attribute_iteration([e for e in prof.events() if e.cpu_parent is None], p)
    names: dict[str, list[str]] = {n.name: [] for n in tr.graph.nodes}
    unattributed: list[str] = []
    units = [(u.kind, u.names, {tr.graph.nodes[i].name: f for i, f in u.shares.items()})
             for u in sorted(res["units"], key=lambda u: u.start)]
    for u in sorted(res["units"], key=lambda u: u.start):
        if not u.shares:
            unattributed.append(u.label or u.kind)
        elif u.kind in ("zero_grad", "update_shared", "update_unsplit"):
            for idx in u.shares:
                names[tr.graph.nodes[idx].name].append(f"{u.names[0]} (shared)")
        else:
            for idx in u.shares:
                names[tr.graph.nodes[idx].name].extend(u.names)
    return {"nodes": names, "unattributed": unattributed, "units": units}


# --- driving real iterations ----------------------------------------------------------------------

@dataclass
class InContextResult:
    """Per-node in-context seconds over profiled iterations, with what stayed unattributed."""

    graph: TrainingGraph
    node_samples: dict[int, list[float]]      # corrected seconds per iteration, per node
    raw_node_samples: dict[int, list[float]]  # before the overhead correction
    events: dict[int, float]                  # profiler events per iteration attributed per node
    wall_samples: list[float]                 # profiled iteration wall time (incl. overhead)
    unattributed_samples: list[float]         # seconds per iteration attributed to no node
    unattributed_detail: dict[str, float]     # label -> mean seconds per iteration
    kinds: dict[str, float]                   # unit kind -> mean seconds per iteration
    overhead: Overhead
    split: dict[int, float]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        return len(self.wall_samples)

    @property
    def block(self) -> int:
        """Iterations averaged into one sample (pyperf's inner loops)."""
        return max(1, min(int(self.settings.get("block", 1)), self.iterations))

    def _blocks(self, values: list[float]) -> list[float]:
        b = self.block
        n = len(values) // b * b
        return [sum(values[j:j + b]) / b for j in range(0, n, b)]

    def node_estimates(self) -> dict[int, float]:
        """Median over samples per node (corrected): robust to a disturbed iteration."""
        return {i: statistics.median(self._blocks(v)) for i, v in self.node_samples.items()}

    def predicted_s(self) -> float:
        return sum(self.node_estimates().values())

    def coverage(self) -> dict[str, float]:
        """Shares of the profiled iteration: attributed, unattributed, profiler overhead removed."""
        wall = statistics.median(self.wall_samples)
        raw = sum(statistics.median(v) for v in self.raw_node_samples.values())
        corrected = self.predicted_s()
        return {"wall_s": wall, "attributed_raw_s": raw, "attributed_s": corrected,
                "unattributed_s": statistics.median(self.unattributed_samples),
                "unattributed_share": statistics.median(self.unattributed_samples) / wall,
                "overhead_removed_s": raw - corrected,
                "overhead_share": (raw - corrected) / wall}

    def signature_figures(self) -> dict[str, dict[str, Any]]:
        """Per op signature: per-iteration samples = mean over the signature's nodes in that
        iteration (so signature figure x occurrences sums to the nodes' total), their summary
        statistics (median = the estimate) and the occurrences."""
        by_sig: dict[str, list[int]] = defaultdict(list)
        for n in self.graph.nodes:
            by_sig[n.signature].append(n.idx)
        out = {}
        for sig, idxs in by_sig.items():
            per_it = self._blocks([sum(self.node_samples[i][j] for i in idxs) / len(idxs)
                                   for j in range(self.iterations)])
            stats = summarize(per_it)
            node_cv = [summarize(self._blocks(self.node_samples[i]))["cv"] for i in idxs]
            out[sig] = {"runtime": stats, "values": per_it, "occurrences": len(idxs),
                        "unstable": stats["cv"] > self.settings.get("cv_threshold", 0.10),
                        "nodes": idxs, "node_cv_max": max(node_cv),
                        "events_per_call": sum(self.events[i] for i in idxs) / len(idxs)}
        return out

    def phases(self) -> dict[str, float]:
        """Predicted seconds per measured phase (fwd / bwd / update) and total."""
        from profiler.iteration import predicted_phases
        return predicted_phases(self.node_estimates(), self.graph)


def isolated_split(graph: TrainingGraph, isolated: dict[str, float] | None = None,
                   settings: dict[str, Any] | None = None) -> dict[int, float]:
    """fwd idx -> share of its fused backward that is ``bwd_data``, from isolated medians.

    ``isolated`` maps signatures to isolated seconds (the profile's measurements); signatures it
    lacks are measured here with the agent's own ``measure_op`` (few samples: only the ratio is
    used).
    """
    isolated = dict(isolated or {})
    s = {"samples": 5, "min_sample_time": 0.005, "measure_memory": False, "warmups": 2,
         "cv_threshold": 10.0}
    s.update(settings or {})
    fwd_by_name = {n.name[:-len(":fwd")]: n.idx for n in graph.nodes if n.phase == "fwd"}
    pairs: dict[int, dict[str, Any]] = defaultdict(dict)
    for n in graph.nodes:
        base, _, kind = n.name.rpartition(":")
        if kind in ("bwd_data", "bwd_weight") and base in fwd_by_name:
            pairs[fwd_by_name[base]][kind] = n
    out = {}
    for idx, both in pairs.items():
        if len(both) < 2:
            continue
        secs = []
        for kind in ("bwd_data", "bwd_weight"):
            n = both[kind]
            if n.signature not in isolated:
                res = measure_op(n.spec(), s)
                isolated[n.signature] = res["runtime"]["median"] if res.get("status") == "ok" else float("nan")
            secs.append(isolated[n.signature])
        d, w = secs
        out[idx] = d / (d + w) if d == d and w == w and d + w > 0 else 0.5
    return out


def _iteration_ranges(tr: Trainer, forward: torch.fx.GraphModule) -> None:
    """One training iteration with the five phase ranges the attribution reads."""
    opt = tr.optimizer
    with _Range(f"{PREFIX}iteration"):
        with _Range(f"{PREFIX}zero_grad"):
            opt.zero_grad(set_to_none=True)
        with _Range(f"{PREFIX}forward"):
            out = forward(tr.x)
        with _Range(f"{PREFIX}loss"):
            loss = tr.loss_fn(out, tr.y)
        del out
        with _Range(f"{PREFIX}backward"):
            loss.backward()
        del loss
        with _Range(f"{PREFIX}step"):
            opt.step()


def _plain_iteration(tr: Trainer) -> dict[str, float]:
    """One iteration of the user's own module, no profiler: seconds per measured phase, split
    exactly as ``profiler.iteration.time_iterations`` splits them."""
    opt, clock = tr.optimizer, time.perf_counter
    t0 = clock()
    opt.zero_grad(set_to_none=True)
    t1 = clock()
    loss = tr.loss_fn(tr.module(tr.x), tr.y)
    t2 = clock()
    loss.backward()
    t3 = clock()
    opt.step()
    t4 = clock()
    return {"fwd": t2 - t1, "bwd": t3 - t2, "update": (t1 - t0) + (t4 - t3)}


def in_situ_costs(graph: TrainingGraph, raw: dict[int, list[float]], events: dict[int, float],
                  plain: dict[str, list[float]]) -> dict[str, float]:
    """Profiler cost per recorded event in each measured phase, measured in this very run.

    ``raw`` node seconds per profiled iteration, ``events`` mean events per iteration per node,
    ``plain`` phase seconds of the unprofiled iterations run beside them. Per phase: (sum of the
    nodes' median raw seconds - median plain phase seconds) / events in the phase.
    """
    group = {ph: g for g, phs in PHASE_GROUPS.items() for ph in phs}
    raw_g: dict[str, float] = defaultdict(float)
    ev_g: dict[str, float] = defaultdict(float)
    for n in graph.nodes:
        g = group[n.phase]
        raw_g[g] += statistics.median(raw[n.idx])
        ev_g[g] += events.get(n.idx, 0.0)
    return {g: ((raw_g[g] - statistics.median(plain[g])) / ev_g[g] if ev_g[g] > 0 else 0.0)
            for g in PHASE_GROUPS}


def profile_in_context(tr: Trainer, iterations: int = 40, warmups: int = 3,
                       isolated: dict[str, float] | None = None,
                       overhead: Overhead | None = None, cv_threshold: float = 0.10,
                       progress: Callable[[int, int], None] | None = None,
                       correction: str = "in_situ", block: int | None = None) -> InContextResult:
    """Run ``warmups`` + ``iterations`` profiled training iterations of ``tr`` and attribute them.

    ``isolated`` (signature -> isolated seconds) sets the fused-backward split. ``correction``
    removes the profiler's own cost: ``in_situ`` (default) from unprofiled iterations
    run back to back before the profiled ones, ``calibrated`` from ``overhead`` (default a fresh
    ``calibrate_overhead()``); see the module docstring. A sample is the mean of ``block``
    iterations (default: up to 5, keeping at least 5 samples). As for isolated ops, when the median CV across signatures exceeds
    ``cv_threshold`` as many iterations again are profiled (``remeasured`` in the settings);
    signatures still above it are reported ``unstable``. ``progress(done, total)`` after each
    iteration.
    """
    if iterations < 1:
        raise CostdbError(f"in-context profiling needs at least one iteration, got {iterations}")
    if correction not in ("in_situ", "calibrated"):
        raise CostdbError(f"unknown profiler-overhead correction {correction!r}; "
                          "use in_situ or calibrated")
    if block is None:
        block = min(5, max(1, iterations // 5))
    graph = tr.graph
    gm = instrument(tr.module, graph)
    split = isolated_split(graph, isolated)
    p = plan(graph, tr.module, tr.optimizer, split)
    overhead = (overhead or calibrate_overhead()) if correction == "calibrated" else None
    for _ in range(max(0, warmups)):
        tr.step(gm)
        tr.step()
    node_raw: dict[int, list[float]] = {n.idx: [] for n in graph.nodes}
    node_cal: dict[int, list[float]] = {n.idx: [] for n in graph.nodes}
    node_ev: dict[int, list[float]] = {n.idx: [] for n in graph.nodes}
    walls: list[float] = []
    unattributed: list[float] = []
    plain: dict[str, list[float]] = {g: [] for g in PHASE_GROUPS}
    detail: dict[str, float] = defaultdict(float)
    kinds: dict[str, float] = defaultdict(float)

    def plain_block(n: int) -> None:
        # back to back, as the user's training runs: interleaved with profiled iterations the
        # plain ones ran 7-15 % slower (the profiler's bookkeeping evicts their caches)
        for _ in range(n):
            for g, t in _plain_iteration(tr).items():
                plain[g].append(t)

    def one() -> None:
        with _quiet_stderr():
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                _iteration_ranges(tr, gm)
        res = attribute_iteration([e for e in prof.events() if e.cpu_parent is None], p)
        acc_raw: dict[int, float] = defaultdict(float)
        acc_cal: dict[int, float] = defaultdict(float)
        acc_ev: dict[int, float] = defaultdict(float)
        lost = 0.0
        for u in res["units"]:
            dur = u.duration * 1e-6
            kinds[u.kind] += dur
            if not u.shares:
                lost += dur
                detail[u.label or u.kind] += dur
                continue
            cost = 0.0
            if overhead is not None:  # the model-free calibration's cost inside this time
                cost = u.events * overhead.per_event_s + u.ranges * (overhead.per_range_s
                                                                     - overhead.per_event_s)
            for idx, f in u.shares.items():
                acc_raw[idx] += f * dur
                acc_cal[idx] += f * max(0.0, dur - cost)
                acc_ev[idx] += f * (u.events + u.ranges)
        between = max(0.0, res["wall_s"] - sum(res["phase_s"].values()))
        detail["between phases"] += between
        lost += between
        for n in graph.nodes:
            node_raw[n.idx].append(acc_raw.get(n.idx, 0.0))
            node_cal[n.idx].append(acc_cal.get(n.idx, 0.0))
            node_ev[n.idx].append(acc_ev.get(n.idx, 0.0))
        walls.append(res["wall_s"])
        unattributed.append(lost)

    def result() -> tuple[InContextResult, dict[str, float]]:
        ev = {i: statistics.fmean(v) for i, v in node_ev.items()}
        costs: dict[str, float] = {}
        if correction == "in_situ":
            costs = in_situ_costs(graph, node_raw, ev, plain)
            group = {ph: g for g, phs in PHASE_GROUPS.items() for ph in phs}
            cor = {n.idx: [max(0.0, r - e * costs[group[n.phase]])
                           for r, e in zip(node_raw[n.idx], node_ev[n.idx])]
                   for n in graph.nodes}
        else:
            cor = node_cal
        res = InContextResult(graph, cor, node_raw, ev, walls, unattributed, dict(detail),
                              dict(kinds), overhead or Overhead(0.0, 0.0), split)
        res.settings = {"block": block}
        return res, costs

    total = iterations
    plain_block(iterations)
    for i in range(iterations):
        one()
        if progress:
            progress(i + 1, total)
    remeasured = False
    res, costs = result()
    if iterations > 1 and _median_cv(res) > cv_threshold:
        remeasured, total = True, 2 * iterations
        plain_block(iterations)
        for i in range(iterations, total):
            one()
            if progress:
                progress(i + 1, total)
        res, costs = result()
    n = len(walls)
    res.unattributed_detail = {k: v / n for k, v in detail.items()}
    res.kinds = {k: v / n for k, v in kinds.items()}
    res.settings = {"iterations": n, "warmups": warmups, "threads": torch.get_num_threads(),
                    "remeasured": remeasured, "cv_threshold": cv_threshold, "block": block,
                    "correction": correction,
                    "overhead": overhead.to_dict() if overhead is not None else None,
                    "in_situ_cost_per_event_s": costs,
                    "plain_phase_s": {g: statistics.median(v) for g, v in plain.items()}}
    return res


def _median_cv(res: InContextResult) -> float:
    return statistics.median(v["runtime"]["cv"] for v in res.signature_figures().values())
