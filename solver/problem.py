"""Solver instances: a training DAG with per-node costs and a device's paging figures.

An :class:`Instance` is what every part of the solver works on (MILP, baselines, simulator):

* nodes in a topological order ``0..n-1`` (``deps`` only point backwards), each with compute
  ``runtime_s`` / ``energy_j`` (with provenance), ``output_bytes`` (the value it leaves in RAM),
  ``param_bytes`` and ``workspace_bytes`` (transient memory while it runs);
* ``paging``: page-in (secondary storage -> RAM, a read) and page-out (RAM -> storage, a write)
  latency, throughput and energy per byte;
* ``fixed_bytes``: memory resident for the whole iteration (parameters, gradients, optimizer state)
  that the faithful formulation counts in the RAM budget.

Instances come from the cost database (:func:`instance_from_db`), from a ``TrainingGraph`` plus a
device profile (:func:`instance_from_graph`, costs modelled analytically where nothing is
measured), or from the documented JSON graph format (:func:`load_graph_json`, docs/solver.md).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from costdb.errors import CostdbError

FORWARD_PHASES = ("fwd", "loss")
BACKWARD_PHASES = ("bwd", "bwd_data", "bwd_weight", "update")
PHASES = FORWARD_PHASES + BACKWARD_PHASES
GRAPH_FORMAT = "costdb-graph/1"


@dataclass(frozen=True)
class NodeCost:
    idx: int
    name: str
    phase: str
    deps: tuple[int, ...]
    runtime_s: float
    energy_j: float
    output_bytes: int
    param_bytes: int = 0
    workspace_bytes: int = 0
    flops: int = 0
    runtime_provenance: str = "modeled"
    energy_provenance: str = "modeled"

    @property
    def is_backward(self) -> bool:
        return self.phase in BACKWARD_PHASES


@dataclass(frozen=True)
class Paging:
    """Secondary-storage paging figures. Cost of moving ``b`` bytes: ``latency + b / rate`` seconds
    and ``latency * power + b * energy_per_byte`` joules, with ``power = energy_per_byte * rate``
    (POET's ``(LATENCY + bytes / THROUGHPUT) * MEMORY_POWER``)."""

    pagein_latency_s: float = 0.0
    pagein_bytes_per_s: float = math.inf
    pagein_j_per_byte: float = 0.0
    pageout_latency_s: float = 0.0
    pageout_bytes_per_s: float = math.inf
    pageout_j_per_byte: float = 0.0
    storage: str = "storage"

    def pagein_time(self, b: int) -> float:
        return self.pagein_latency_s + (b / self.pagein_bytes_per_s if self.pagein_bytes_per_s else math.inf)

    def pageout_time(self, b: int) -> float:
        return self.pageout_latency_s + (b / self.pageout_bytes_per_s if self.pageout_bytes_per_s else math.inf)

    def pagein_energy(self, b: int) -> float:
        power = self.pagein_j_per_byte * (self.pagein_bytes_per_s if math.isfinite(self.pagein_bytes_per_s) else 0.0)
        return self.pagein_latency_s * power + b * self.pagein_j_per_byte

    def pageout_energy(self, b: int) -> float:
        power = self.pageout_j_per_byte * (self.pageout_bytes_per_s if math.isfinite(self.pageout_bytes_per_s) else 0.0)
        return self.pageout_latency_s * power + b * self.pageout_j_per_byte

    @classmethod
    def from_profile(cls, profile: Any) -> "Paging":
        s = profile.storage
        return cls(s.read_latency_s, s.read_bytes_per_s, s.read_energy_j_per_byte,
                   s.write_latency_s, s.write_bytes_per_s, s.write_energy_j_per_byte, s.kind)


@dataclass(frozen=True)
class Instance:
    """A solvable problem: nodes (topologically ordered), paging figures, fixed memory."""

    name: str
    nodes: tuple[NodeCost, ...]
    paging: Paging = field(default_factory=Paging)
    fixed_bytes: int = 0
    device: str = ""
    model_id: int | None = None
    granularity: str = "layer"
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        for k, n in enumerate(self.nodes):
            if n.idx != k:
                raise CostdbError(f"instance {self.name}: node {n.name} has index {n.idx}, expected {k}")
            for d in n.deps:
                if not 0 <= d < k:
                    raise CostdbError(f"instance {self.name}: node {n.name} depends on {d}, which is "
                                      "not an earlier node; nodes must be topologically ordered")
            for v, what in ((n.runtime_s, "runtime_s"), (n.energy_j, "energy_j")):
                if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                    raise CostdbError(f"instance {self.name}: node {n.name} has invalid {what}={v!r}; "
                                      "costs must be finite and non-negative")
            if n.output_bytes < 0 or n.param_bytes < 0 or n.workspace_bytes < 0:
                raise CostdbError(f"instance {self.name}: node {n.name} has negative bytes")

    # --- structure -------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.nodes)

    def successors(self) -> list[list[int]]:
        succ: list[list[int]] = [[] for _ in self.nodes]
        for n in self.nodes:
            for d in sorted(set(n.deps)):
                succ[d].append(n.idx)
        return succ

    def last_use(self) -> list[int]:
        """Index of the last direct consumer of each node (the node itself when it has none)."""
        return [max(s) if s else i for i, s in enumerate(self.successors())]

    def edges(self) -> list[tuple[int, int]]:
        return [(d, n.idx) for n in self.nodes for d in sorted(set(n.deps))]

    # --- costs -----------------------------------------------------------------------------
    @property
    def compute_runtime_s(self) -> float:
        return sum(n.runtime_s for n in self.nodes)

    @property
    def compute_energy_j(self) -> float:
        return sum(n.energy_j for n in self.nodes)

    def pagein_time(self, i: int) -> float:
        return self.paging.pagein_time(self.nodes[i].output_bytes)

    def pageout_time(self, i: int) -> float:
        return self.paging.pageout_time(self.nodes[i].output_bytes)

    def pagein_energy(self, i: int) -> float:
        return self.paging.pagein_energy(self.nodes[i].output_bytes)

    def pageout_energy(self, i: int) -> float:
        return self.paging.pageout_energy(self.nodes[i].output_bytes)

    def cost_provenance(self) -> str:
        """``measured``/``modeled`` when uniform, else e.g. ``mixed(measured=40,modeled=98)``."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            p = n.energy_provenance if n.energy_provenance == n.runtime_provenance else \
                f"{n.runtime_provenance}+{n.energy_provenance}"
            counts[p] = counts.get(p, 0) + 1
        if len(counts) == 1:
            return next(iter(counts))
        return "mixed(" + ",".join(f"{k}={v}" for k, v in sorted(counts.items())) + ")"

    def no_savings_peak(self) -> int:
        """Peak memory of checkpoint-all (every value kept until its last use), in bytes."""
        from solver.baselines import checkpoint_all
        from solver.simulate import simulate
        return simulate(self, checkpoint_all(self)).peak_memory_bytes

    def digest(self) -> str:
        return hashlib.sha256(self.to_json(indent=None).encode()).hexdigest()[:16]

    # --- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        p = self.paging
        return {
            "format": GRAPH_FORMAT, "name": self.name, "device": self.device,
            "granularity": self.granularity, "fixed_bytes": self.fixed_bytes,
            "paging": {"storage": p.storage,
                       "page_in": {"latency_s": p.pagein_latency_s, "bytes_per_s": _num(p.pagein_bytes_per_s),
                                   "energy_j_per_byte": p.pagein_j_per_byte},
                       "page_out": {"latency_s": p.pageout_latency_s, "bytes_per_s": _num(p.pageout_bytes_per_s),
                                    "energy_j_per_byte": p.pageout_j_per_byte}},
            "nodes": [{"id": n.idx, "name": n.name, "phase": n.phase, "runtime_s": n.runtime_s,
                       "energy_j": n.energy_j, "output_bytes": n.output_bytes,
                       "param_bytes": n.param_bytes, "workspace_bytes": n.workspace_bytes,
                       "flops": n.flops, "runtime_provenance": n.runtime_provenance,
                       "energy_provenance": n.energy_provenance} for n in self.nodes],
            "edges": [[u, v] for u, v in self.edges()],
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def with_fixed_bytes(self, fixed: int) -> "Instance":
        return replace(self, fixed_bytes=int(fixed))


def _num(v: float) -> float | None:
    return None if not math.isfinite(v) else v


# --- JSON graph format -------------------------------------------------------------------------

def _req(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise CostdbError(f"graph JSON: {where} is missing {key!r}; see docs/solver.md (JSON graph format)")
    return d[key]


def _nonneg(v: Any, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise CostdbError(f"graph JSON: {what} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0:
        raise CostdbError(f"graph JSON: {what} must be finite and >= 0, got {v!r}")
    return f


def instance_from_dict(d: dict[str, Any], optimizer_state_factor: float = 0.0,
                       count_gradients: bool = True) -> Instance:
    """Build an instance from the JSON graph format (docs/solver.md).

    ``nodes`` may be listed in any order; they are sorted topologically (stable: the listed order
    breaks ties). Dependencies come from ``edges`` (``[src, dst]`` pairs of node ids) and/or each
    node's ``deps``. Unless ``fixed_bytes`` is given, fixed memory is ``param_bytes * (1 +
    gradients + optimizer_state_factor)``.
    """
    if not isinstance(d, dict):
        raise CostdbError("graph JSON must be an object with 'nodes' (see docs/solver.md)")
    fmt = d.get("format", GRAPH_FORMAT)
    if fmt != GRAPH_FORMAT:
        raise CostdbError(f"graph JSON format {fmt!r} is not supported; expected {GRAPH_FORMAT!r}")
    raw_nodes = _req(d, "nodes", "the graph")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise CostdbError("graph JSON: 'nodes' must be a non-empty list")
    ids: dict[Any, int] = {}
    for k, rn in enumerate(raw_nodes):
        if not isinstance(rn, dict):
            raise CostdbError(f"graph JSON: node #{k} must be an object")
        nid = rn.get("id", k)
        if isinstance(nid, list) or nid in ids:
            raise CostdbError(f"graph JSON: node id {nid!r} is duplicated or invalid")
        ids[nid] = k
    deps: list[set[int]] = [set() for _ in raw_nodes]
    for k, rn in enumerate(raw_nodes):
        for dep in rn.get("deps", []) or []:
            if dep not in ids:
                raise CostdbError(f"graph JSON: node {rn.get('id', k)!r} depends on unknown node {dep!r}")
            deps[k].add(ids[dep])
    for e in d.get("edges", []) or []:
        if not isinstance(e, (list, tuple)) or len(e) != 2:
            raise CostdbError(f"graph JSON: edge {e!r} must be a [source, target] pair")
        u, v = e
        if u not in ids or v not in ids:
            raise CostdbError(f"graph JSON: edge {e!r} names an unknown node")
        deps[ids[v]].add(ids[u])
    # stable Kahn topological sort
    indeg = [len(s) for s in deps]
    users: list[list[int]] = [[] for _ in raw_nodes]
    for v, s in enumerate(deps):
        if v in s:
            raise CostdbError(f"graph JSON: node {raw_nodes[v].get('id', v)!r} depends on itself")
        for u in s:
            users[u].append(v)
    import heapq
    ready = [k for k in range(len(raw_nodes)) if indeg[k] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for v in users[k]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(ready, v)
    if len(order) != len(raw_nodes):
        raise CostdbError("graph JSON: the edges contain a cycle; a training graph must be a DAG")
    pos = {k: p for p, k in enumerate(order)}
    nodes = []
    for p, k in enumerate(order):
        rn = raw_nodes[k]
        where = f"node {rn.get('id', k)!r}"
        phase = rn.get("phase", "fwd")
        if phase not in PHASES:
            raise CostdbError(f"graph JSON: {where} has phase {phase!r}; use one of {', '.join(PHASES)}")
        nodes.append(NodeCost(
            idx=p, name=str(rn.get("name", rn.get("id", k))), phase=phase,
            deps=tuple(sorted(pos[u] for u in deps[k])),
            runtime_s=_nonneg(_req(rn, "runtime_s", where), f"{where} runtime_s"),
            energy_j=_nonneg(_req(rn, "energy_j", where), f"{where} energy_j"),
            output_bytes=int(_nonneg(_req(rn, "output_bytes", where), f"{where} output_bytes")),
            param_bytes=int(_nonneg(rn.get("param_bytes", 0), f"{where} param_bytes")),
            workspace_bytes=int(_nonneg(rn.get("workspace_bytes", 0), f"{where} workspace_bytes")),
            flops=int(_nonneg(rn.get("flops", 0), f"{where} flops")),
            runtime_provenance=str(rn.get("runtime_provenance", "measured")),
            energy_provenance=str(rn.get("energy_provenance", "measured"))))
    paging = _paging_from_dict(d.get("paging") or d.get("device") or {})
    if "fixed_bytes" in d and d["fixed_bytes"] is not None:
        fixed = int(_nonneg(d["fixed_bytes"], "fixed_bytes"))
    else:
        params = sum(n.param_bytes for n in nodes)
        fixed = int(params * (1 + (1 if count_gradients else 0) + optimizer_state_factor))
    dev = d.get("device")
    return Instance(name=str(d.get("name", "graph")), nodes=tuple(nodes), paging=paging,
                    fixed_bytes=fixed, device=dev if isinstance(dev, str) else str((dev or {}).get("name", "")),
                    granularity=str(d.get("granularity", "custom")), meta={"source": "json"})


def _paging_from_dict(p: dict[str, Any]) -> Paging:
    if not isinstance(p, dict):
        raise CostdbError("graph JSON: 'paging' must be an object with page_in / page_out")

    def side(key: str) -> tuple[float, float, float]:
        s = p.get(key) or {}
        rate = s.get("bytes_per_s")
        rate = math.inf if rate is None else _nonneg(rate, f"paging.{key}.bytes_per_s")
        if rate == 0:
            raise CostdbError(f"graph JSON: paging.{key}.bytes_per_s must be > 0")
        return (_nonneg(s.get("latency_s", 0.0), f"paging.{key}.latency_s"), rate,
                _nonneg(s.get("energy_j_per_byte", 0.0), f"paging.{key}.energy_j_per_byte"))

    li, ri, ei = side("page_in")
    lo, ro, eo = side("page_out")
    return Paging(li, ri, ei, lo, ro, eo, str(p.get("storage", "storage")))


def load_graph_json(path: str | Path, **kw: Any) -> Instance:
    from costdb.validate import check_graph, read_json
    path = Path(path)
    d = read_json(path, "graph file")   # regular UTF-8 JSON file, bounded size and depth
    check_graph(d)                      # types and ranges before the solver sees it
    inst = instance_from_dict(d, **kw)
    return replace(inst, meta={**inst.meta, "path": str(path)})


# --- from training graphs (coarsening + analytic cost model) ----------------------------------

def _direction(phase: str) -> str:
    return "fwd" if phase in FORWARD_PHASES else "bwd"


def coarsen(graph: Any, costs: dict[int, dict[str, Any]] | None = None, granularity: str = "layer"
            ) -> list[dict[str, Any]]:
    """Group a ``TrainingGraph``'s nodes into solver nodes.

    ``granularity="layer"`` (POET's): one forward node and one backward node per layer (the
    backward node sums the layer's bwd_data, bwd_weight, gradient accumulation and update
    costs). ``"op"`` keeps every graph node. Returns dicts with summed costs; a group's output is
    what leaves the group (members consumed outside it); members consumed only inside it become
    workspace. Weight gradients (bwd_weight outputs) live in the persistent gradient buffers
    counted in fixed memory, so they are not values here.
    """
    costs = costs or {}
    nodes = graph.nodes
    if granularity == "op":
        key_of = {n.idx: (n.idx,) for n in nodes}
    elif granularity == "layer":
        key_of = {n.idx: (n.layer, _direction(n.phase)) for n in nodes}
    else:
        raise CostdbError(f"unknown granularity {granularity!r}; use layer or op")
    groups: dict[Any, list[int]] = {}
    for n in nodes:
        groups.setdefault(key_of[n.idx], []).append(n.idx)
    order = sorted(groups, key=lambda k: groups[k][0])
    gid = {k: p for p, k in enumerate(order)}
    consumers: dict[int, set[int]] = {n.idx: set() for n in nodes}
    for n in nodes:
        for d in n.deps:
            consumers[d].add(n.idx)
    out = []
    for p, k in enumerate(order):
        members = groups[k]
        mset = set(members)
        deps = sorted({gid[key_of[d]] for m in members for d in nodes[m].deps} - {p})
        if any(d >= p for d in deps):
            raise CostdbError(f"graph {graph.key}: layer group {k} is not topologically ordered; "
                              "solve at granularity 'op'")
        out_b = ws = 0
        for m in members:
            nm = nodes[m]
            b = 0 if nm.phase in ("bwd_weight", "update") else nm.output_bytes
            if consumers[m] - mset:
                out_b += b
            else:
                ws += b if consumers[m] else 0
        first = nodes[members[0]]
        phases = {nodes[m].phase for m in members}
        phase = first.phase if len(members) == 1 else ("fwd" if _direction(first.phase) == "fwd" else "bwd")
        if "loss" in phases and _direction(first.phase) == "fwd":
            phase = "loss"
        rt = [costs.get(m, {}).get("runtime_s") for m in members]
        en = [costs.get(m, {}).get("energy_j") for m in members]
        out.append({"idx": p, "name": (first.layer + (":fwd" if _direction(first.phase) == "fwd" else ":bwd"))
                    if granularity == "layer" else first.name,
                    "phase": phase, "deps": tuple(deps), "members": members,
                    "output_bytes": out_b, "workspace_bytes": ws,
                    "param_bytes": sum(nodes[m].param_bytes for m in members if nodes[m].phase == "fwd"),
                    "flops": sum(nodes[m].flops for m in members),
                    "member_costs": list(zip(members, rt, en))})
    return out


def modeled_cost(flops: int, profile: Any) -> tuple[float, float]:
    """POET's analytic model: runtime = FLOPs / rate; energy = runtime x (active - idle) power."""
    rate = float(profile.flops_per_s)
    if rate <= 0:
        raise CostdbError(f"device {profile.name} has no compute rate (flops_per_s); set one in the "
                          "inventory or profile the device")
    rt = flops / rate
    return rt, rt * profile.net_active_power_w


def instance_from_graph(graph: Any, profile: Any, costs: dict[int, dict[str, Any]] | None = None,
                        granularity: str = "layer", optimizer_state_factor: float | None = None,
                        model_id: int | None = None) -> Instance:
    """Instance for ``graph`` on ``profile``. ``costs`` maps graph node idx to measured
    ``runtime_s`` / ``energy_j`` (+ provenances); nodes without a measurement are filled by the
    analytic model with provenance ``modeled``. Energy without runtime (or the reverse) is
    completed from the other with the device's net active power."""
    costs = costs or {}
    groups = coarsen(graph, costs, granularity)
    nodes = []
    for g in groups:
        rt_sum = en_sum = 0.0
        rprov: set[str] = set()
        eprov: set[str] = set()
        for m, rt, en in g["member_costs"]:
            c = costs.get(m, {})
            mflops = graph.nodes[m].flops
            if rt is None or not _finite(rt):
                rt, modeled_en = modeled_cost(mflops, profile)
                rprov.add("modeled")
                if en is None or not _finite(en):
                    en = modeled_en
                    eprov.add("modeled")
                else:
                    eprov.add(c.get("energy_provenance") or "measured")
            else:
                rprov.add(c.get("runtime_provenance") or "measured")
                if en is None or not _finite(en):
                    en = rt * profile.net_active_power_w
                    eprov.add("modeled")
                else:
                    eprov.add(c.get("energy_provenance") or "measured")
            rt_sum += float(rt)
            en_sum += float(en)
        nodes.append(NodeCost(idx=g["idx"], name=g["name"], phase=g["phase"], deps=g["deps"],
                              runtime_s=rt_sum, energy_j=en_sum, output_bytes=int(g["output_bytes"]),
                              param_bytes=int(g["param_bytes"]), workspace_bytes=int(g["workspace_bytes"]),
                              flops=int(g["flops"]), runtime_provenance=_prov(rprov),
                              energy_provenance=_prov(eprov)))
    if optimizer_state_factor is None:
        optimizer_state_factor = _optimizer_factor(graph)
    params = graph.param_bytes
    fixed = int(params * (2 + optimizer_state_factor))
    return Instance(name=graph.key, nodes=tuple(nodes), paging=Paging.from_profile(profile),
                    fixed_bytes=fixed, device=profile.name, model_id=model_id, granularity=granularity,
                    meta={"model": graph.model, "batch": graph.batch, "param_bytes": params,
                          "optimizer_state_factor": optimizer_state_factor,
                          "graph_nodes": len(graph.nodes)})


def _optimizer_factor(graph: Any) -> float:
    """Optimizer state per parameter byte: SGD 0, SGD with momentum 1 (a momentum buffer)."""
    for n in graph.nodes:
        if n.phase == "update":
            return 1.0 if n.attrs.get("momentum") else 0.0
    return 0.0


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _prov(s: set[str]) -> str:
    if not s:
        return "modeled"
    if len(s) == 1:
        return next(iter(s))
    return "mixed"


def instance_from_db(db: Any, device: str, model: str, batch: int | None = None,
                     input_shape: Any = None, granularity: str = "layer", inventory: Any = None,
                     optimizer_state_factor: float | None = None, settings: Any = None,
                     kind: str = "auto") -> Instance:
    """Instance for ``model`` on ``device`` from the cost database (a ``costdb.Database``).

    The measured costs are those of one settings fingerprint and kind (``settings``: None, when
    the measurements agree, ``"latest"`` or an id; ``kind``: ``auto`` = in-context where the
    model has such costs, else isolated; see ``costdb.Database.costs``); the instance's ``meta``
    records ``settings_id`` and the resolved ``cost_kind`` and the stored schedules carry them.

    Measured costs (status ``ok``) are used where present; the rest is modelled from the device
    profile (provenance ``modeled``). A model not yet stored is built from the zoo and saved, so a
    fresh database works (that alone needs torch). Energy uses the measurement's net energy
    (active minus idle, POET's convention) when recorded, else its gross energy.
    """
    from devices.catalog import get_profile
    profile = get_profile(device, inventory)
    try:
        mid = db.resolve_model(model, batch, input_shape)
    except CostdbError:
        if db.readonly:
            raise
        from profiler.zoo import model_graph
        shape = tuple(input_shape) if input_shape is not None and not isinstance(input_shape, str) else \
            (tuple(int(x) for x in input_shape.split("x")) if isinstance(input_shape, str) else None)
        g = model_graph(model, batch=batch, input_shape=shape)
        mid = db.model_id(g.key) or db.save_graph(g)
    graph = db.graph(mid)
    costs: dict[int, dict[str, Any]] = {}
    settings_id = None
    if db.device(device) is not None:
        df = db.costs(device, mid, settings=settings, kind=kind)
        settings_id = df.attrs.get("settings_id")
        kind = df.attrs.get("kind", kind)
        for r in df.itertuples(index=False):
            if r.status != "ok":
                continue
            en = getattr(r, "energy_net_j", None)
            if en is None or not _finite(en):
                en = r.energy_j
            costs[int(r.idx)] = {"runtime_s": r.runtime_s if _finite(r.runtime_s) else None,
                                 "energy_j": en if _finite(en) else None,
                                 "runtime_provenance": r.runtime_provenance,
                                 "energy_provenance": r.energy_provenance}
    inst = instance_from_graph(graph, profile, costs, granularity, optimizer_state_factor, model_id=mid)
    return replace(inst, meta={**inst.meta, "measured_nodes": len(costs),
                               "settings_id": settings_id if costs else None,
                               "cost_kind": kind if costs else None})


def mid_key(db: Any, mid: int) -> str:
    """The key of stored model ``mid``."""
    return db.model(mid).key


def compat_instance(inst: Instance) -> Instance:
    """The published formulation's view: activations only (no fixed memory, no workspace)."""
    return replace(inst, fixed_bytes=0,
                   nodes=tuple(replace(n, workspace_bytes=0) for n in inst.nodes))


def random_instance(n: int, seed: int = 0, edge_p: float = 0.35, max_bytes: int = 8,
                    paging: Paging | None = None, phases: bool = False) -> Instance:
    """A random DAG for tests: each node depends on its predecessor (a chain) plus random edges."""
    import random
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        deps = set()
        if i > 0:
            deps.add(i - 1)
            for j in range(i - 1):
                if rng.random() < edge_p:
                    deps.add(j)
        phase = "fwd" if not phases or i < n // 2 else "bwd"
        rt = rng.randint(1, 10) / 10
        nodes.append(NodeCost(idx=i, name=f"n{i}", phase=phase, deps=tuple(sorted(deps)),
                              runtime_s=rt, energy_j=rt * rng.choice([1.0, 2.0, 3.0]),
                              output_bytes=rng.randint(1, max_bytes)))
    if paging is None:
        paging = Paging(0.0, 10.0, 0.1, 0.0, 10.0, 0.15)
    return Instance(name=f"random-{n}-{seed}", nodes=tuple(nodes), paging=paging, granularity="custom")


def random_training_instance(layers: int, seed: int = 0, skip_p: float = 0.3,
                             paging: Paging | None = None, fixed_bytes: int = 0) -> Instance:
    """A random training-shaped DAG for tests: a forward chain with random skip connections, a
    loss, and one backward node per layer that reads the next backward node and the layer's
    forward input and output (as POET's graphs do)."""
    import random
    rng = random.Random(seed)
    nodes: list[NodeCost] = []

    def add(name, phase, deps, rt, size):
        nodes.append(NodeCost(idx=len(nodes), name=name, phase=phase, deps=tuple(sorted(set(deps))),
                              runtime_s=rt, energy_j=rt * rng.choice([1.0, 1.5, 2.0]),
                              output_bytes=size))
        return len(nodes) - 1

    fwd = []
    for k in range(layers):
        deps = [fwd[-1]] if fwd else []
        if k >= 2 and rng.random() < skip_p:
            deps.append(fwd[rng.randrange(0, k - 1)])
        fwd.append(add(f"f{k}", "fwd", deps, rng.randint(1, 6) / 10, rng.randint(2, 9)))
    loss = add("loss", "loss", [fwd[-1]], 0.1, 1)
    grad = loss
    for k in reversed(range(layers)):
        deps = [grad, fwd[k]] + ([fwd[k - 1]] if k > 0 else [])
        grad = add(f"b{k}", "bwd", deps, rng.randint(2, 12) / 10, rng.randint(2, 9) if k > 0 else 0)
    if paging is None:
        paging = Paging(0.01, 40.0, 0.02, 0.01, 30.0, 0.03)
    return Instance(name=f"train-{layers}-{seed}", nodes=tuple(nodes), paging=paging,
                    fixed_bytes=fixed_bytes, granularity="custom")
