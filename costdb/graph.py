"""Training-graph records: a model's training iteration as a DAG of typed, immutable nodes.

These records are what the database stores (``models`` and ``graph_nodes``) and what the solver
and the reports read back, so they live in the data layer and import no torch. Building a graph
from a ``torch.nn.Module`` is ``profiler.graph.build_graph`` (which re-exports these names).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from costdb.signature import signature

__all__ = ["DTYPE_BYTES", "PHASES", "Node", "Shape", "TrainingGraph"]

PHASES = ("fwd", "loss", "bwd_data", "bwd_weight", "update")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
               "int8": 1}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Node:
    """One node of the training DAG. ``spec()`` is what a device agent needs to measure it."""

    idx: int
    name: str
    layer: str
    op: str
    phase: str
    deps: tuple[int, ...]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    dtype: str
    flops: int
    output_bytes: int
    param_bytes: int
    params: dict[str, Shape] = field(default_factory=dict, hash=False, compare=False)
    attrs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    grad_inputs: tuple[int, ...] = ()
    signature: str = ""

    def spec(self) -> dict[str, Any]:
        spec = {"op": self.op, "phase": self.phase, "dtype": self.dtype,
                "inputs": [list(s) for s in self.input_shapes],
                "params": {k: list(v) for k, v in sorted(self.params.items())},
                "attrs": self.attrs, "grad_inputs": list(self.grad_inputs)}
        spec["signature"] = self.signature or signature(spec)
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {"idx": self.idx, "name": self.name, "layer": self.layer, "op": self.op,
                "phase": self.phase, "deps": list(self.deps),
                "input_shapes": [list(s) for s in self.input_shapes],
                "output_shape": list(self.output_shape), "dtype": self.dtype,
                "flops": self.flops, "output_bytes": self.output_bytes,
                "param_bytes": self.param_bytes,
                "params": {k: list(v) for k, v in self.params.items()},
                "attrs": self.attrs, "grad_inputs": list(self.grad_inputs),
                "signature": self.signature}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Node":
        return cls(idx=d["idx"], name=d["name"], layer=d["layer"], op=d["op"], phase=d["phase"],
                   deps=tuple(d["deps"]), input_shapes=tuple(tuple(s) for s in d["input_shapes"]),
                   output_shape=tuple(d["output_shape"]), dtype=d["dtype"], flops=d["flops"],
                   output_bytes=d["output_bytes"], param_bytes=d["param_bytes"],
                   params={k: tuple(v) for k, v in d.get("params", {}).items()},
                   attrs=d.get("attrs", {}), grad_inputs=tuple(d.get("grad_inputs", ())),
                   signature=d.get("signature", ""))


@dataclass(frozen=True)
class TrainingGraph:
    """A model's training iteration as a topologically ordered list of nodes."""

    model: str
    batch: int
    input_shape: Shape
    dtype: str
    nodes: tuple[Node, ...]

    @property
    def key(self) -> str:
        """Identity of this model variant in the database: name, batch, input, dtype."""
        shape = "x".join(str(d) for d in self.input_shape)
        return f"{self.model}[batch={self.batch},input={shape},dtype={self.dtype}]"

    @property
    def param_bytes(self) -> int:
        return sum(n.param_bytes for n in self.nodes if n.phase == "fwd")

    @property
    def activation_bytes(self) -> int:
        return sum(n.output_bytes for n in self.nodes if n.phase == "fwd")

    def signatures(self) -> list[str]:
        """Distinct op signatures in first-use order."""
        seen: dict[str, None] = {}
        for n in self.nodes:
            seen.setdefault(n.signature, None)
        return list(seen)

    def distinct_specs(self) -> list[dict[str, Any]]:
        seen: dict[str, dict] = {}
        for n in self.nodes:
            seen.setdefault(n.signature, n.spec())
        return list(seen.values())

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "batch": self.batch,
                           "input_shape": list(self.input_shape), "dtype": self.dtype,
                           "nodes": [n.to_dict() for n in self.nodes]})

    @classmethod
    def from_json(cls, text: str) -> "TrainingGraph":
        d = json.loads(text)
        return cls(model=d["model"], batch=d["batch"], input_shape=tuple(d["input_shape"]),
                   dtype=d["dtype"], nodes=tuple(Node.from_dict(n) for n in d["nodes"]))
