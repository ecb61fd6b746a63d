"""Sparse-update planner: which layers' weights (and what fraction of their output channels)
and which biases to update in on-device training under a memory budget, in the spirit of the
sparse update of MIT's tiny-training work (Lin et al. 2022, "On-Device Training Under 256KB
Memory": updating a searched subset of layers and channels saves 4.5-7.5x memory over updating
the last layers, at equal or better accuracy).

What is measured and what is not. Runtime and energy of every op come from the cost database
(``Database.costs``: the device's measurements of the model's training graph), so a plan's
runtime and energy per iteration are sums of measured (or emulated) op costs:
  - the forward pass and the loss always run;
  - a backward-data node runs when some layer before it in the forward order is updated (the
    gradient has to flow through it);
  - the weight-gradient node of a layer whose weights are updated for a fraction r of its output
    channels runs for r of its cost, the weight SGD update for r of its cost (both scale with
    the output channels they touch); a bias-only update costs the bias SGD update plus the bias
    gradient, estimated as the weight-gradient node scaled by (output elements / MACs): one add
    per output gradient element instead of one MAC per weight per element (estimated, not
    measured: the firmware computes the bias gradient inside the weight-gradient kernel).
Peak memory is a model built from the graph and the measured working sets:
  activations kept from the forward pass for the backward nodes that run (a weight gradient
  needs its layer's input, ReLU/pool backward their saved tensors; a bias gradient needs none),
  plus the trainable bytes in RAM (updated weights r x weight bytes, updated biases; frozen
  weights stay in flash), plus the largest measured op working set (``peak_memory_bytes``) of
  the ops that run.
What is not known: how much updating a layer helps accuracy. That is an input, a per-layer
contribution table (``contributions``; the paper measures it by fine-tuning one layer or
channel fraction at a time). Without one the default heuristic is used and the plan is only as
good as that guess: a layer's full weight update contributes in proportion to its depth
(i / L for the i-th of L trainable layers: later layers adapt more for transfer learning),
a channel fraction r gets sqrt(r) of it (diminishing returns, as the paper's channel-ratio
curves), a layer's bias a quarter of it.

The search maximises total contribution within the budget (ties: lower energy, then runtime):
exhaustive over the per-layer choices (bias on/off x weight fraction in RATIOS) for up to 4
layers, greedy by contribution per byte beyond that (each step raises one layer by one level:
its bias on, or its weight fraction to the next ratio). Baselines beside it: full update, bias
only, last-k layers (weights and biases) for every k.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from costdb.errors import CostdbError

__all__ = ["RATIOS", "LayerChoice", "UpdatePlan", "SparseUpdateProblem", "default_contributions",
           "check_contributions", "load_contributions", "plan_update", "plan_sparse_update"]

RATIOS = (0.0, 0.125, 0.25, 0.5, 1.0)
EXHAUSTIVE_LAYERS = 4
_ELEM = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "float64": 8}


@dataclass(frozen=True)
class LayerChoice:
    """What one layer updates: ``weight`` fraction of its output channels (0 = frozen) and
    whether its bias."""

    weight: float = 0.0
    bias: bool = False

    @property
    def any(self) -> bool:
        return self.weight > 0 or self.bias

    def label(self) -> str:
        parts = ([f"weight {self.weight:g}" if self.weight < 1 else "weight"]
                 if self.weight else []) + (["bias"] if self.bias else [])
        return "+".join(parts) or "-"


@dataclass
class _Layer:
    name: str
    pos: int                         # idx of its first forward node
    weight_bytes: int = 0
    bias_bytes: int = 0
    has_bias: bool = False
    bwd_weight: Any = None           # cost rows (dicts) of its nodes
    bwd_weight_deps: tuple = ()
    upd_weight: Any = None
    upd_bias: Any = None
    bias_grad_fraction: float = 0.0  # bias gradient / weight-gradient work (estimate)
    needs_input: bool = False        # the weight gradient reads the model input
    bw_idx: int = -1                 # node indices: weight gradient, weight / bias update
    uw_idx: int = -1
    ub_idx: int | None = None


@dataclass
class UpdatePlan:
    """One update scheme and what it costs per training iteration."""

    name: str
    choices: dict[str, LayerChoice]
    contribution: float
    peak_memory_bytes: int
    runtime_s: float
    energy_j: float
    fits: bool
    kept_activation_bytes: int = 0
    trainable_bytes: int = 0
    working_set_bytes: int = 0
    estimated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "contribution": self.contribution,
                "peak_memory_bytes": self.peak_memory_bytes, "runtime_s": self.runtime_s,
                "energy_j": self.energy_j, "fits": self.fits,
                "kept_activation_bytes": self.kept_activation_bytes,
                "trainable_bytes": self.trainable_bytes,
                "working_set_bytes": self.working_set_bytes,
                "layers": {k: {"weight": c.weight, "bias": c.bias}
                           for k, c in self.choices.items()},
                "estimated": self.estimated}


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(f) else f


class SparseUpdateProblem:
    """The trainable layers of a training graph with the device's op costs.

    ``graph``: a ``costdb.graph.TrainingGraph``; ``costs``: the ``Database.costs`` frame of
    that graph on the device (one row per node, by ``idx``)."""

    def __init__(self, graph: Any, costs: Any) -> None:
        self.graph = graph
        rows = {int(r["idx"]): r for r in costs.to_dict("records")}
        missing = [n.name for n in graph.nodes if rows.get(n.idx, {}).get("status") != "ok"]
        if missing:
            raise CostdbError(f"{len(missing)} ops of {graph.model} have no ok measurement on this "
                              f"device (e.g. {', '.join(missing[:3])}): profile them first "
                              f"(costdb profile --device ... --model {graph.model})")
        self.rows = rows
        self.nodes = {n.idx: n for n in graph.nodes}
        self.elem = _ELEM.get(graph.dtype, 4)
        first_fwd: dict[str, int] = {}
        for n in graph.nodes:
            if n.phase in ("fwd", "loss"):
                first_fwd.setdefault(n.layer, n.idx)
        self.first_fwd = first_fwd
        layers: dict[str, _Layer] = {}
        for n in graph.nodes:
            if n.phase != "update":
                continue
            lay = layers.setdefault(n.layer, _Layer(n.layer, first_fwd.get(n.layer, n.idx)))
            pbytes = int(math.prod(n.params.get("param", (0,)))) * self.elem
            if n.name.endswith(".bias:update"):
                lay.has_bias, lay.bias_bytes, lay.upd_bias = True, pbytes, rows[n.idx]
                lay.ub_idx = n.idx
            else:
                lay.weight_bytes, lay.upd_weight, lay.uw_idx = pbytes, rows[n.idx], n.idx
        for n in graph.nodes:
            if n.phase == "bwd_weight" and n.layer in layers:
                lay = layers[n.layer]
                lay.bwd_weight, lay.bwd_weight_deps, lay.bw_idx = rows[n.idx], n.deps, n.idx
                fwd = self.nodes[first_fwd[n.layer]]
                lay.needs_input = not fwd.deps
                macs = max(1.0, _num(n.flops) / 2)
                out_elems = max(1, fwd.output_bytes // self.elem)
                lay.bias_grad_fraction = min(1.0, out_elems / macs)
        self.layers = sorted((la for la in layers.values()
                              if la.upd_weight is not None and la.bw_idx >= 0),
                             key=lambda la: la.pos)
        if not self.layers:
            raise CostdbError(f"{graph.model} has no trainable layers in its training graph")
        self.input_bytes = int(graph.batch * math.prod(graph.input_shape or (0,)) * self.elem)

    @property
    def layer_names(self) -> list[str]:
        return [la.name for la in self.layers]

    # --- evaluation --------------------------------------------------------------------
    def evaluate(self, choices: Mapping[str, LayerChoice], contributions: Mapping[str, Any],
                 budget: int, name: str = "plan") -> UpdatePlan:
        """Runtime, energy and peak memory per iteration of one update scheme."""
        chosen = {la.name: choices.get(la.name, LayerChoice()) for la in self.layers}
        updated_pos = [la.pos for la in self.layers if chosen[la.name].any]
        earliest = min(updated_pos) if updated_pos else None
        runtime = energy = 0.0
        run: list[int] = []
        frac: dict[int, float] = {}
        for n in self.graph.nodes:
            if n.phase in ("fwd", "loss"):
                frac[n.idx] = 1.0
            elif n.phase == "bwd_data" and earliest is not None:
                # the gradient flows through this node when an updated layer precedes it
                pos = self.first_fwd.get(n.layer, n.idx)
                if n.op == "cross_entropy" or pos > earliest:
                    frac[n.idx] = 1.0
        estimated: list[str] = []
        keep: set[int] = set()
        trainable = 0
        for la in self.layers:
            c = chosen[la.name]
            bw, uw, ub = la.bw_idx, la.uw_idx, la.ub_idx
            if c.weight > 0:
                frac[bw] = c.weight
                frac[uw] = c.weight
                keep.update(d for d in la.bwd_weight_deps
                            if self.nodes[d].phase in ("fwd", "loss"))
                trainable += int(round(c.weight * la.weight_bytes))
                if la.needs_input:
                    keep.add(-1)
            if c.bias and la.has_bias:
                if c.weight == 0:
                    frac[bw] = la.bias_grad_fraction
                    estimated.append(f"{la.name} bias gradient")
                if ub is not None:
                    frac[ub] = 1.0
                trainable += la.bias_bytes
        for idx, f in frac.items():
            n = self.nodes[idx]
            if n.phase == "bwd_data":       # its saved tensors
                keep.update(d for d in n.deps if self.nodes[d].phase in ("fwd", "loss"))
            row = self.rows[idx]
            runtime += f * _num(row.get("runtime_s"))
            energy += f * _num(row.get("energy_j"))
            run.append(idx)
        kept = sum(self.nodes[d].output_bytes for d in keep if d >= 0) + \
            (self.input_bytes if -1 in keep else 0)
        working = max((int(_num(self.rows[i].get("peak_memory_bytes"))) for i in run), default=0)
        peak = kept + trainable + working
        contrib = sum(_contribution(contributions.get(la.name), chosen[la.name])
                      for la in self.layers)
        return UpdatePlan(name, chosen, contrib, peak, runtime, energy, peak <= budget, kept,
                          trainable, working, estimated)

    # --- schemes -------------------------------------------------------------------------
    def _options(self, la: _Layer) -> list[LayerChoice]:
        return [LayerChoice(r, b) for r in RATIOS for b in ((False, True) if la.has_bias else (False,))]

    def search(self, contributions: Mapping[str, Any], budget: int) -> UpdatePlan:
        def better(a: UpdatePlan, b: UpdatePlan | None) -> bool:
            return b is None or (a.contribution, -a.energy_j, -a.runtime_s) > \
                (b.contribution, -b.energy_j, -b.runtime_s)
        best: UpdatePlan | None = None
        names = self.layer_names
        if len(self.layers) <= EXHAUSTIVE_LAYERS:
            for combo in itertools.product(*(self._options(la) for la in self.layers)):
                p = self.evaluate(dict(zip(names, combo)), contributions, budget, "sparse update")
                if p.fits and better(p, best):
                    best = p
        else:   # greedy: add the option with the best contribution gain per byte that fits
            cur = {n: LayerChoice() for n in names}
            best = self.evaluate(cur, contributions, budget, "sparse update")
            while True:
                step = None
                for la in self.layers:
                    c = cur[la.name]
                    up = [RATIOS[i + 1] for i, r in enumerate(RATIOS[:-1]) if r == c.weight]
                    nxt = ([LayerChoice(c.weight, True)] if la.has_bias and not c.bias else []) + \
                        [LayerChoice(r, c.bias) for r in up]
                    for opt in nxt:
                        trial = self.evaluate(dict(cur, **{la.name: opt}), contributions, budget,
                                              "sparse update")
                        gain = trial.contribution - best.contribution
                        if not trial.fits or gain <= 0:
                            continue
                        score = gain / max(1, trial.peak_memory_bytes - best.peak_memory_bytes)
                        if step is None or score > step[0]:
                            step = (score, la.name, opt, trial)
                if step is None:
                    break
                cur[step[1]] = step[2]
                best = step[3]
        if best is None or not any(c.any for c in best.choices.values()):
            cheapest = min((self.evaluate({la.name: LayerChoice(0.0, True) if la.has_bias
                                           else LayerChoice(RATIOS[1])}, contributions, budget)
                            for la in self.layers), key=lambda p: p.peak_memory_bytes)
            raise CostdbError(f"no layer of {self.graph.model} can be updated within {budget} "
                              f"bytes: the cheapest single update needs "
                              f"{cheapest.peak_memory_bytes} bytes; give a larger --memory")
        return best

    def baselines(self, contributions: Mapping[str, Any], budget: int) -> list[UpdatePlan]:
        names = self.layer_names
        out = [self.evaluate({n: LayerChoice(1.0, True) for n in names}, contributions, budget,
                             "full update"),
               self.evaluate({n: LayerChoice(0.0, True) for n in names}, contributions, budget,
                             "bias only")]
        for k in range(1, len(names) + 1):
            out.append(self.evaluate({n: LayerChoice(1.0, True) for n in names[-k:]},
                                     contributions, budget, f"last {k}"))
        return out


def _contribution(entry: Any, c: LayerChoice) -> float:
    if entry is None:
        return 0.0
    total = 0.0
    if c.bias:
        total += float(entry.get("bias", 0.0))
    if c.weight > 0:
        w = entry.get("weight", 0.0)
        if isinstance(w, Mapping):
            table = {float(k): float(v) for k, v in w.items()}
            if c.weight in table:
                total += table[c.weight]
            else:   # interpolate linearly between the given ratios (0 -> 0)
                pts = sorted(table.items()) if 0.0 in table else [(0.0, 0.0)] + sorted(table.items())
                lo = max((p for p in pts if p[0] <= c.weight), key=lambda p: p[0])
                hi = min((p for p in pts if p[0] >= c.weight), key=lambda p: p[0], default=lo)
                total += lo[1] if hi[0] == lo[0] else \
                    lo[1] + (hi[1] - lo[1]) * (c.weight - lo[0]) / (hi[0] - lo[0])
        else:
            total += float(w) * math.sqrt(c.weight)
    return total


def default_contributions(layer_names: Iterable[str]) -> dict[str, dict[str, float]]:
    """The documented default heuristic (module docstring): depth-proportional weight
    contribution, sqrt of the channel fraction, bias a quarter of its layer's weight."""
    names = list(layer_names)
    n = len(names)
    return {name: {"weight": (i + 1) / n, "bias": 0.25 * (i + 1) / n}
            for i, name in enumerate(names)}


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise CostdbError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def check_contributions(data: Any, layer_names: Iterable[str], where: str) -> dict[str, Any]:
    """A validated contribution table (one-line ``CostdbError`` naming the problem)."""
    names = set(layer_names)
    if not isinstance(data, dict):
        raise CostdbError(f"contribution table {where} must be a JSON object: "
                          '{"layer": {"weight": 0.3, "bias": 0.05}, ...}')
    unknown = sorted(str(k) for k in set(data) - names)
    if unknown:
        raise CostdbError(f"contribution table {where} names layers the model does not train: "
                          f"{', '.join(unknown)} (trainable: {', '.join(sorted(names))})")
    out: dict[str, Any] = {}
    for k, v in data.items():
        if not isinstance(v, dict) or not v or not set(v) <= {"weight", "bias"}:
            raise CostdbError(f"contribution of layer {k} in {where} must be an object with "
                              f"'weight' and/or 'bias'")
        entry: dict[str, Any] = {}
        if "bias" in v:
            entry["bias"] = _number(v["bias"], f"bias contribution of {k} in {where}")
        if "weight" in v:
            w = v["weight"]
            if isinstance(w, dict):
                table = {}
                for r, c in w.items():
                    try:
                        ratio = float(r)
                    except (TypeError, ValueError):
                        ratio = float("nan")
                    if not 0 < ratio <= 1:
                        raise CostdbError(f"weight contribution of {k} in {where}: channel "
                                          f"fraction {r!r} must be a number in (0, 1]")
                    table[str(ratio)] = _number(c, f"weight contribution of {k} at {r}")
                if not table:
                    raise CostdbError(f"weight contribution of {k} in {where} is empty")
                entry["weight"] = table
            else:
                entry["weight"] = _number(w, f"weight contribution of {k} in {where}")
        out[k] = entry
    return out


def load_contributions(path: str | Path, layer_names: Iterable[str]) -> dict[str, Any]:
    """A contribution table from JSON: ``{"layer": {"weight": 0.3, "bias": 0.05}}``, where
    ``weight`` may also be ``{"0.25": 0.2, "1": 0.3}`` (contribution per channel fraction).
    Layers left out contribute nothing."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise CostdbError(f"contribution table {path} is not a regular file")
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise CostdbError(f"cannot read the contribution table {path}: {e.strerror}") from None
    except ValueError as e:
        raise CostdbError(f"contribution table {path} is not valid JSON ({e})") from None
    return check_contributions(data, layer_names, str(path))


@dataclass
class PlanResult:
    plan: UpdatePlan
    baselines: list[UpdatePlan]
    budget_bytes: int
    contributions: dict[str, Any]
    contribution_source: str
    device: str
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "model": self.model, "budget_bytes": self.budget_bytes,
                "contribution_source": self.contribution_source,
                "contributions": self.contributions, "plan": self.plan.to_dict(),
                "baselines": [b.to_dict() for b in self.baselines]}


def plan_update(db: Any, device: str, model: str | int, memory: int,
                contributions: Mapping[str, Any] | str | Path | None = None,
                settings: int | str | None = None, kind: str = "auto",
                batch: int | None = None) -> PlanResult:
    """Plan a sparse update of ``model`` on ``device`` within ``memory`` bytes from the costs
    in ``db`` (an open ``costdb.Database``). ``contributions``: a table (dict) or a JSON file;
    None uses the default heuristic (see the module docstring)."""
    if memory <= 0:
        raise CostdbError(f"memory budget must be positive, got {memory}")
    graph = db.graph(model, batch)
    costs = db.costs(device, model, batch, settings=settings, kind=kind)
    problem = SparseUpdateProblem(graph, costs)
    if contributions is None:
        table, source = default_contributions(problem.layer_names), "default heuristic"
    elif isinstance(contributions, (str, Path)):
        table, source = load_contributions(contributions, problem.layer_names), str(contributions)
    else:
        table, source = check_contributions(contributions, problem.layer_names, "given"), "given"
    best = problem.search(table, memory)
    return PlanResult(best, problem.baselines(table, memory), memory, table, source, device,
                      graph.model)


def plan_sparse_update(db_path: str, device: str, model: str, memory: int,
                       contributions: Mapping[str, Any] | str | Path | None = None,
                       **kw: Any) -> PlanResult:
    """``plan_update`` on a database file (opened read-only)."""
    import costdb
    with costdb.open(db_path, readonly=True) as db:
        return plan_update(db, device, model, memory, contributions, **kw)
