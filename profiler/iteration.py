"""Measure whole training iterations of any model the profiler accepts (zoo or ``file.py:factory``).

This is the ground truth the per-node cost model is checked against. The iteration is what a user
runs: ``zero_grad(set_to_none=True)``, forward of the user's own ``nn.Module``, the graph's loss,
``backward()``, ``torch.optim.SGD.step()`` with the graph's learning rate and momentum, per tensor
(``foreach=False``, because the graph models one update node per parameter tensor).

Each timed iteration also yields its phases, split by ``perf_counter`` reads between them:
``fwd`` (forward + loss), ``bwd`` (``backward()``) and ``update`` (``zero_grad`` + ``step``), so
per-phase prediction errors can be shown against the graph's phases (``PHASE_GROUPS``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from costdb.errors import CostdbError
from devices.agent.stats import summarize
from profiler.graph import DTYPE_NAMES, TrainingGraph
from profiler.zoo import ModelInstance, instance_graph, instantiate

#: Graph phases summed into each measured phase of an iteration.
PHASE_GROUPS = {"fwd": ("fwd", "loss"), "bwd": ("bwd_data", "bwd_weight"), "update": ("update",)}
OPTIMIZER = "sgd(foreach=False)"


@dataclass
class Trainer:
    """One model set up to train as the user would: module, a fixed batch, loss and optimizer."""

    module: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    graph: TrainingGraph

    def step(self, forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """One untimed iteration (``forward`` replaces the module's, e.g. an instrumented copy)."""
        fwd = forward or self.module
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(fwd(self.x), self.y)
        loss.backward()
        self.optimizer.step()


def _sgd_options(graph: TrainingGraph) -> dict[str, float]:
    upd = next((n for n in graph.nodes if n.phase == "update"), None)
    a = upd.attrs if upd is not None else {}
    return {"lr": float(a.get("lr", 0.01)), "momentum": float(a.get("momentum", 0.0)),
            "weight_decay": float(a.get("weight_decay", 0.0))}


def trainer(inst: ModelInstance, graph: TrainingGraph) -> Trainer:
    """A Trainer for ``inst`` matching ``graph`` (batch, dtype, loss, SGD settings)."""
    loss_node = next(n for n in graph.nodes if n.phase == "loss")
    logits = loss_node.input_shapes[0]
    tdtype = {v: k for k, v in DTYPE_NAMES.items()}[graph.dtype]
    net = inst.module.to(tdtype).train()
    torch.manual_seed(0)
    shape = (graph.batch, *graph.input_shape)
    if inst.input_dtype == "int64":
        x = torch.randint(0, inst.input_high or 2, shape)
    else:
        x = torch.randn(shape, dtype=tdtype)
    if loss_node.op == "cross_entropy":
        y = torch.randint(0, int(logits[-1]), (graph.batch,))
        loss_fn = F.cross_entropy
    else:
        y = torch.randn(tuple(logits), dtype=tdtype)
        loss_fn = F.mse_loss
    # frozen parameters get no gradient and no update node: the optimizer holds the others
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise CostdbError(f"{graph.key} has no trainable parameters; nothing to train")
    opt = torch.optim.SGD(params, foreach=False, **_sgd_options(graph))
    return Trainer(net, x, y, loss_fn, opt, graph)


def model_trainer(model: str, batch: int | None = None, input_shape: tuple[int, ...] | None = None,
                  dtype: str = "float32", num_classes: int = 10) -> Trainer:
    """Instantiate ``model`` (zoo name or ``file.py:factory``), build its graph, set it up to train."""
    inst = instantiate(model, input_shape, num_classes)
    graph = instance_graph(inst, batch, dtype)
    return trainer(inst, graph)


def time_iterations(tr: Trainer, warmups: int = 3, samples: int = 15) -> dict[str, Any]:
    """Median (and dispersion) of ``samples`` whole iterations and of their phases, in seconds."""
    opt, net, x, y, loss_fn = tr.optimizer, tr.module, tr.x, tr.y, tr.loss_fn
    clock = time.perf_counter
    totals: list[float] = []
    phases: dict[str, list[float]] = {"fwd": [], "bwd": [], "update": []}
    try:
        for i in range(warmups + samples):
            t0 = clock()
            opt.zero_grad(set_to_none=True)
            t1 = clock()
            loss = loss_fn(net(x), y)
            t2 = clock()
            loss.backward()
            t3 = clock()
            opt.step()
            t4 = clock()
            del loss
            if i >= warmups:
                totals.append(t4 - t0)
                phases["fwd"].append(t2 - t1)
                phases["bwd"].append(t3 - t2)
                phases["update"].append((t1 - t0) + (t4 - t3))
    except RuntimeError as e:
        raise CostdbError(f"a training iteration of {tr.graph.key} failed: "
                          f"{str(e).splitlines()[0]}") from None
    stats = summarize(totals)
    stats.update(threads=torch.get_num_threads(), optimizer=OPTIMIZER, provenance="measured",
                 values=totals,
                 phases={k: dict(summarize(v), values=v) for k, v in phases.items()})
    for k in phases:  # the phase medians under the names the database stores
        stats[f"{k}_s"] = stats["phases"][k]["median"]
    return stats


def measure_iteration(model: str | Trainer, batch: int | None = None,
                      input_shape: tuple[int, ...] | None = None, dtype: str = "float32",
                      warmups: int = 3, samples: int = 15, num_classes: int = 10) -> dict[str, Any]:
    """Time whole training iterations of a zoo model, a ``file.py:factory`` model or a Trainer.

    Returns the summary statistics of the per-iteration times (``median`` is the estimate),
    ``values`` (raw seconds), ``phases`` (fwd / bwd / update, each with its statistics) and
    the phase medians as ``fwd_s``, ``bwd_s``, ``update_s``.
    """
    tr = model if isinstance(model, Trainer) else model_trainer(model, batch, input_shape, dtype,
                                                                num_classes)
    return time_iterations(tr, warmups, samples)


def predicted_phases(costs: dict[int, float], graph: TrainingGraph) -> dict[str, float]:
    """Sum of per-node costs (node idx -> seconds) per measured phase, plus ``total``."""
    out = {k: 0.0 for k in PHASE_GROUPS}
    group = {p: k for k, ps in PHASE_GROUPS.items() for p in ps}
    for n in graph.nodes:
        out[group[n.phase]] += costs[n.idx]
    out["total"] = sum(out[k] for k in PHASE_GROUPS)
    return out
