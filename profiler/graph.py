"""Training graphs: a model's forward ops, loss, backward ops and optimizer updates as one DAG.

``build_graph(module, input_shape, batch)`` traces a ``torch.nn.Module`` with ``torch.fx``,
propagates shapes, and emits per forward op a ``fwd`` node; after the loss, in reverse order, a
``bwd_data`` node (gradient w.r.t. the op's inputs, only where an input needs a gradient) and a
``bwd_weight`` node (gradient w.r.t. its parameters); gradient accumulation where an activation
feeds several ops; and one ``update`` (SGD) node per parameter tensor. Pure view ops (flatten,
view, reshape, permute, transpose, getitem slices...) alias their input, cost nothing and are folded
away: their consumers see the viewed shape and depend on the op that produced the memory.

FLOP conventions (one multiply-add = 2 FLOPs) are in ``flops()`` and docs/data-model.md.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from costdb.errors import CostdbError
from costdb.graph import DTYPE_BYTES, PHASES, Node, Shape, TrainingGraph
from costdb.signature import signature

__all__ = ["DTYPE_BYTES", "DTYPE_NAMES", "PHASES", "Node", "Shape", "TrainingGraph", "build_graph",
           "flops"]

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
               torch.float64: "float64", torch.int64: "int64", torch.int32: "int32",
               torch.int8: "int8"}


# --- op recognition ------------------------------------------------------------------------

MODULE_OPS: dict[type, str] = {
    nn.Conv2d: "conv2d", nn.Linear: "linear", nn.BatchNorm2d: "batch_norm",
    nn.BatchNorm1d: "batch_norm", nn.LayerNorm: "layer_norm", nn.Embedding: "embedding",
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
    nn.Hardswish: "hardswish", nn.SiLU: "silu", nn.Dropout: "dropout",
    nn.MaxPool2d: "max_pool2d", nn.AvgPool2d: "avg_pool2d",
    nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d", nn.Softmax: "softmax",
    nn.LogSoftmax: "log_softmax", nn.Flatten: "view", nn.Identity: "view",
}
FUNCTION_OPS: dict[Any, str] = {
    operator.add: "add", torch.add: "add", operator.iadd: "add", operator.sub: "sub",
    torch.sub: "sub", operator.mul: "mul", torch.mul: "mul", operator.truediv: "div",
    torch.div: "div", torch.matmul: "matmul", operator.matmul: "matmul", torch.bmm: "matmul",
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.gelu: "gelu",
    torch.sigmoid: "sigmoid", torch.tanh: "tanh", F.silu: "silu", F.hardswish: "hardswish",
    F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "log_softmax",
    F.dropout: "dropout", F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d", torch.mean: "mean",
    torch.flatten: "view", torch.reshape: "view", torch.transpose: "view",
    torch.permute: "view", torch.squeeze: "view", torch.unsqueeze: "view",
    operator.getitem: "view",
}
METHOD_OPS = {
    "view": "view", "reshape": "view", "flatten": "view", "permute": "view", "transpose": "view",
    "contiguous": "view", "unsqueeze": "view", "squeeze": "view", "expand": "view",
    "mean": "mean", "relu": "relu", "softmax": "softmax", "add": "add", "mul": "mul",
    "div": "div", "sigmoid": "sigmoid", "tanh": "tanh", "matmul": "matmul",
}
# Which saved tensors a backward-data node reads: "in" = the op's inputs, "out" = its output.
SAVES_FOR_BWD_DATA = {
    "batch_norm": ("in",), "layer_norm": ("in",), "relu": ("out",), "relu6": ("out",),
    "sigmoid": ("out",), "tanh": ("out",), "softmax": ("out",), "log_softmax": ("out",),
    "gelu": ("in",), "silu": ("in",), "hardswish": ("in",), "max_pool2d": ("in", "out"),
    "mul": ("in",), "matmul": ("in",), "div": ("in",), "dropout": ("out",),
}
WEIGHTED_MODULE_PARAMS = {
    "conv2d": ("weight", "bias"), "linear": ("weight", "bias"), "batch_norm": ("weight", "bias"),
    "layer_norm": ("weight", "bias"), "embedding": ("weight",),
}


def _numel(shape: Iterable[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def _nbytes(shape: Shape, dtype: str) -> int:
    return _numel(shape) * DTYPE_BYTES[dtype]


def flops(op: str, phase: str, inputs: tuple[Shape, ...], output: Shape,
          params: dict[str, Shape], attrs: dict[str, Any]) -> int:
    """FLOPs of one node (multiply-add = 2). Convention table in docs/data-model.md."""
    out_n = _numel(output)
    in_n = _numel(inputs[0]) if inputs else 0
    if op == "conv2d":
        w = params["weight"]
        macs = out_n * w[1] * w[2] * w[3]
        bias = out_n if "bias" in params and phase in ("fwd", "bwd_weight") else 0
        return 2 * macs + bias
    if op == "linear":
        w = params["weight"]
        macs = (out_n // w[0]) * w[0] * w[1]
        bias = out_n if "bias" in params and phase in ("fwd", "bwd_weight") else 0
        return 2 * macs + bias
    if op == "matmul":
        a, b = inputs
        k = a[-1]
        macs = out_n * k
        return 2 * macs * (len(attrs.get("_grads", (0, 1))) if phase == "bwd_data" else 1)
    if op in ("batch_norm", "layer_norm"):
        return {"fwd": 5, "bwd_data": 5, "bwd_weight": 2}[phase] * in_n
    if op in ("softmax", "log_softmax"):
        return (5 if phase == "fwd" else 3) * in_n
    if op == "cross_entropy":
        return (5 if phase == "loss" else 2) * in_n
    if op == "mse_loss":
        return 3 * in_n
    if op in ("max_pool2d", "avg_pool2d"):
        k = attrs["kernel_size"]
        kk = _numel(k) if isinstance(k, (list, tuple)) else k * k
        return out_n * kk if phase == "fwd" else max(in_n, out_n)
    if op == "adaptive_avg_pool2d":
        return in_n
    if op == "embedding":
        return 0 if phase == "fwd" else out_n
    if op == "sgd":
        n = _numel(params["param"])
        return n * (2 + (2 if attrs.get("momentum") else 0) + (2 if attrs.get("weight_decay") else 0))
    if op == "grad_accumulate":
        return out_n
    if op == "mean":
        return in_n
    if op in ("gelu", "silu", "hardswish"):
        return 8 * out_n if phase == "fwd" else 10 * in_n
    # elementwise: relu, relu6, sigmoid, tanh, dropout, add, sub, mul, div
    return out_n if phase == "fwd" else max(in_n, out_n)


# --- tracing ---------------------------------------------------------------------------------

@dataclass
class _Value:
    """An fx value during the walk: the fwd node owning its memory (None = data) and its shape."""

    producer: int | None
    shape: Shape
    dtype: str
    requires_grad: bool


@dataclass
class _FwdOp:
    name: str
    op: str
    layer: str
    inputs: list[_Value]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    params: dict[str, Shape]
    attrs: dict[str, Any]


def _module_attrs(op: str, m: nn.Module) -> dict[str, Any]:
    if op == "conv2d":
        assert isinstance(m, nn.Conv2d)
        if isinstance(m.padding, str):
            raise CostdbError(f"conv2d padding={m.padding!r} is not supported yet; use numeric padding")
        return {"stride": list(m.stride), "padding": list(m.padding), "dilation": list(m.dilation),
                "groups": m.groups}
    if op == "batch_norm":
        return {"eps": m.eps, "momentum": m.momentum}
    if op == "layer_norm":
        return {"normalized_shape": list(m.normalized_shape), "eps": m.eps}
    if op in ("max_pool2d", "avg_pool2d"):
        def lst(v):
            return list(v) if isinstance(v, (tuple, list)) else [v, v]
        a = {"kernel_size": lst(m.kernel_size), "stride": lst(m.stride or m.kernel_size),
             "padding": lst(m.padding), "ceil_mode": bool(m.ceil_mode)}
        if op == "max_pool2d":
            a["dilation"] = lst(m.dilation)
        else:
            a["count_include_pad"] = bool(m.count_include_pad)
        return a
    if op == "adaptive_avg_pool2d":
        o = m.output_size
        return {"output_size": list(o) if isinstance(o, (tuple, list)) else [o, o]}
    if op in ("softmax", "log_softmax"):
        return {"dim": m.dim}
    if op == "dropout":
        return {"p": m.p}
    return {}


def _function_attrs(op: str, node: torch.fx.Node, scalars: list[Any]) -> dict[str, Any]:
    kw = dict(node.kwargs)
    if op in ("add", "sub", "mul", "div") and scalars:
        return {"scalar": scalars[0]}
    if op in ("softmax", "log_softmax"):
        dim = kw.get("dim", scalars[0] if scalars else -1)
        return {"dim": dim}
    if op == "dropout":
        return {"p": kw.get("p", scalars[0] if scalars else 0.5)}
    if op == "adaptive_avg_pool2d":
        o = kw.get("output_size", scalars[0] if scalars else 1)
        return {"output_size": list(o) if isinstance(o, (tuple, list)) else [o, o]}
    if op == "mean":
        dim = kw.get("dim", scalars[0] if scalars else None)
        return {"dim": list(dim) if isinstance(dim, (tuple, list)) else dim,
                "keepdim": bool(kw.get("keepdim", scalars[1] if len(scalars) > 1 else False))}
    if op in ("max_pool2d", "avg_pool2d"):
        k = kw.get("kernel_size", scalars[0] if scalars else None)
        s = kw.get("stride", scalars[1] if len(scalars) > 1 else None) or k
        p = kw.get("padding", scalars[2] if len(scalars) > 2 else 0)

        def lst(v):
            return list(v) if isinstance(v, (tuple, list)) else [v, v]
        return {"kernel_size": lst(k), "stride": lst(s), "padding": lst(p)}
    return {}


def _flatten_args(args: Any) -> list[Any]:
    out: list[Any] = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out.extend(_flatten_args(a))
        else:
            out.append(a)
    return out


def _trace_forward(module: nn.Module, example: torch.Tensor, dtype: str) -> tuple[list[_FwdOp], _Value]:
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # fx raises many types for untraceable code
        raise CostdbError(f"cannot trace the model with torch.fx ({type(e).__name__}: "
                          f"{str(e).splitlines()[0]}); avoid data-dependent control flow") from None
    try:
        ShapeProp(gm).propagate(example)
    except Exception as e:
        raise CostdbError(f"the model does not accept an input of shape {tuple(example.shape)} "
                          f"({str(e).splitlines()[0]}); check --input and --batch") from None
    modules = dict(gm.named_modules())
    values: dict[torch.fx.Node, _Value | None] = {}
    ops: list[_FwdOp] = []
    output: _Value | None = None
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if node.op == "placeholder":
            values[node] = _Value(None, tuple(meta.shape), DTYPE_NAMES.get(meta.dtype, dtype), False)
            continue
        if node.op == "output":
            out = node.args[0]
            if isinstance(out, (tuple, list)):
                out = out[0]
            output = values.get(out)
            continue
        if node.op == "get_attr":
            attr = gm
            for part in str(node.target).split("."):
                attr = getattr(attr, part)
            if isinstance(attr, torch.Tensor) and not attr.requires_grad:
                # a buffer (e.g. position ids): constant data, like an input
                values[node] = _Value(None, tuple(attr.shape), DTYPE_NAMES.get(attr.dtype, dtype), False)
                continue
            raise CostdbError(f"model uses parameter {node.target!r} outside a module call; "
                              "wrap it in a torch.nn module so its op can be profiled")
        if node.op == "call_module" and type(modules[node.target]) not in MODULE_OPS:
            m = modules[node.target]
            raise CostdbError(f"module {node.target!r} of type {type(m).__name__} is not "
                              f"supported; supported: {', '.join(sorted(t.__name__ for t in MODULE_OPS))}")
        if meta is None or not hasattr(meta, "shape"):
            values[node] = None  # non-tensor value (sizes, tuples)
            continue
        shape = tuple(int(d) for d in meta.shape)
        args = _flatten_args(list(node.args) + list(node.kwargs.values()))
        tensor_args = [values[a] for a in args if isinstance(a, torch.fx.Node) and values.get(a) is not None]
        scalars = [a for a in node.args if not isinstance(a, torch.fx.Node)]
        params: dict[str, Shape] = {}
        if node.op == "call_module":
            m = modules[node.target]
            op = MODULE_OPS.get(type(m))
            if op is None:
                raise CostdbError(f"module {node.target!r} of type {type(m).__name__} is not "
                                  f"supported; supported: {', '.join(sorted(t.__name__ for t in MODULE_OPS))}")
            attrs = _module_attrs(op, m)
            for pname in WEIGHTED_MODULE_PARAMS.get(op, ()):
                p = getattr(m, pname, None)
                if isinstance(p, torch.Tensor) and p.requires_grad:
                    params[pname] = tuple(p.shape)
            layer = node.target
        elif node.op == "call_function":
            op = FUNCTION_OPS.get(node.target)
            if op is None:
                raise CostdbError(f"function {getattr(node.target, '__name__', node.target)!r} "
                                  "is not supported by the graph builder")
            attrs = _function_attrs(op, node, scalars)
            layer = node.name
        else:  # call_method
            op = METHOD_OPS.get(node.target)
            if op is None:
                raise CostdbError(f"tensor method {node.target!r} is not supported by the graph builder")
            attrs = _function_attrs(op, node, scalars[1:] if scalars else [])
            layer = node.name
        if op == "view":
            if not tensor_args:
                raise CostdbError(f"cannot follow {node.name!r} ({node.target}): it views a value "
                                  "that is not a single tensor")
            src = tensor_args[0]
            values[node] = _Value(src.producer, shape, src.dtype, src.requires_grad)
            continue
        if op == "mul" and len(tensor_args) == 1 and not scalars:
            attrs = {"scalar": node.args[1]}
        req = bool(params) or any(v.requires_grad for v in tensor_args)
        ops.append(_FwdOp(node.name, op, layer, tensor_args, tuple(v.shape for v in tensor_args),
                          shape, params, attrs))
        values[node] = _Value(len(ops) - 1, shape, DTYPE_NAMES.get(meta.dtype, dtype), req)
    if output is None:
        raise CostdbError("model returns no tensor")
    return ops, output


def build_graph(module: nn.Module, input_shape: Shape, batch: int = 8, name: str | None = None,
                dtype: str = "float32", loss: str = "cross_entropy", lr: float = 0.01,
                momentum: float = 0.0, input_dtype: str | None = None,
                input_high: int | None = None) -> TrainingGraph:
    """Training DAG of ``module`` for inputs of ``(batch, *input_shape)``.

    ``input_dtype="int64"`` with ``input_high`` (vocabulary size) makes token-id inputs for
    embedding models. The loss is cross-entropy against class targets (``mse`` for regression).
    """
    if batch < 1:
        raise CostdbError(f"batch must be a positive integer, got {batch}")
    if dtype not in ("float32", "float16", "bfloat16", "float64", "int8"):
        raise CostdbError(f"dtype {dtype!r} is not supported for torch graphs; use float32 "
                          f"(or int8 for the Cortex-M firmware)")
    module = module.train()
    # int8: the quantised training graph the Cortex-M firmware runs (docs/firmware.md): the same
    # ops and shapes, traced in float32, with 1-byte tensors
    tdtype = {v: k for k, v in DTYPE_NAMES.items()}["float32" if dtype == "int8" else dtype]
    module = module.to(tdtype)
    shape = (batch, *input_shape)
    if input_dtype == "int64":
        example = torch.randint(0, input_high or 2, shape)
    else:
        example = torch.randn(shape, dtype=tdtype)
    with torch.no_grad():
        fwd_ops, out = _trace_forward(module, example, "float32" if dtype == "int8" else dtype)

    nodes: list[Node] = []

    def add(name, layer, op, phase, deps, inputs, output, params=None, attrs=None,
            grad_inputs=(), out_bytes=None, fwd_output=None):
        params = params or {}
        attrs = attrs or {}
        pb = sum(_nbytes(s, dtype) for s in params.values()) if phase == "fwd" else 0
        ob = out_bytes if out_bytes is not None else _nbytes(output, dtype)
        flop_attrs = dict(attrs, _grads=grad_inputs)
        n = Node(idx=len(nodes), name=name, layer=layer, op=op, phase=phase,
                 deps=tuple(sorted(set(d for d in deps if d is not None))),
                 input_shapes=tuple(tuple(s) for s in inputs), output_shape=tuple(output),
                 dtype=dtype, flops=int(flops(op, phase, tuple(inputs),
                                 tuple(output if fwd_output is None else fwd_output), params, flop_attrs)),
                 output_bytes=int(ob), param_bytes=int(pb), params=dict(params), attrs=dict(attrs),
                 grad_inputs=tuple(grad_inputs))
        n = Node(**{**n.__dict__, "signature": signature(n.spec())})
        nodes.append(n)
        return n.idx

    fwd_idx: list[int] = []
    for op in fwd_ops:
        deps = [fwd_idx[v.producer] if v.producer is not None else None for v in op.inputs]
        # grad_inputs on a forward node: inputs that carry autograd history in training, so the
        # agent times the forward with graph recording on, as training runs it
        needs = tuple(j for j, v in enumerate(op.inputs) if v.requires_grad)
        fwd_idx.append(add(f"{op.name}:fwd", op.layer, op.op, "fwd", deps, op.input_shapes,
                           op.output_shape, op.params, op.attrs, grad_inputs=needs))

    # loss: forward, then the gradient w.r.t. the logits
    out_dep = fwd_idx[out.producer] if out.producer is not None else None
    if loss == "cross_entropy":
        if len(out.shape) != 2:
            raise CostdbError(f"cross-entropy loss needs (batch, classes) logits, model returns "
                              f"{tuple(out.shape)}")
        loss_inputs = (out.shape, (out.shape[0],))
    elif loss == "mse":
        loss = "mse_loss"
        loss_inputs = (out.shape, out.shape)
    else:
        raise CostdbError(f"unknown loss {loss!r}; use cross_entropy or mse")
    loss_idx = add("loss:fwd", "loss", loss, "loss", [out_dep], loss_inputs, (), grad_inputs=(0,))
    loss_bwd = add("loss:bwd_data", "loss", loss, "bwd_data", [loss_idx, out_dep], loss_inputs,
                   out.shape, grad_inputs=(0,))

    # backward in reverse: gradient contributions per forward op output
    grads: dict[int, list[int]] = {i: [] for i in range(len(fwd_ops))}
    if out.producer is not None:
        grads[out.producer].append(loss_bwd)
    opt = {"lr": lr, "momentum": momentum, "weight_decay": 0.0}
    for i in reversed(range(len(fwd_ops))):
        op = fwd_ops[i]
        contribs = grads[i]
        if not contribs:
            continue  # output does not reach the loss (or needs no grad)
        g = contribs[0]
        for k, c in enumerate(contribs[1:], 1):
            g = add(f"{op.name}:grad_accumulate{k}", op.layer, "grad_accumulate", "bwd_data",
                    [g, c], (op.output_shape, op.output_shape), op.output_shape)
        needs = tuple(j for j, v in enumerate(op.inputs) if v.requires_grad)
        if needs:
            saved = SAVES_FOR_BWD_DATA.get(op.op, ())
            deps = [g]
            if "in" in saved:
                deps += [fwd_idx[v.producer] for v in op.inputs if v.producer is not None]
            if "out" in saved:
                deps.append(fwd_idx[i])
            # the gradient reaching a producer has the producer's shape, whatever view sits in
            # between (a slice's backward writes into zeros of the full tensor); one per producer
            first_input = {}
            for j in needs:
                first_input.setdefault(op.inputs[j].producer, j)
            grad_bytes = sum(_nbytes(op.input_shapes[j] if p is None else fwd_ops[p].output_shape, dtype)
                             for p, j in first_input.items())
            b = add(f"{op.name}:bwd_data", op.layer, op.op, "bwd_data", deps, op.input_shapes,
                    op.input_shapes[needs[0]], op.params, op.attrs, grad_inputs=needs,
                    out_bytes=grad_bytes, fwd_output=op.output_shape)
            for j in needs:
                p = op.inputs[j].producer
                if p is not None:
                    grads[p].append(b)
        if op.params:
            deps = [g] + [fwd_idx[v.producer] for v in op.inputs[:1] if v.producer is not None]
            pbytes = sum(_nbytes(s, dtype) for s in op.params.values())
            w = add(f"{op.name}:bwd_weight", op.layer, op.op, "bwd_weight", deps, op.input_shapes,
                    op.params.get("weight", next(iter(op.params.values()))), op.params, op.attrs,
                    out_bytes=pbytes, fwd_output=op.output_shape)
            for pname, pshape in op.params.items():
                add(f"{op.name}.{pname}:update", op.layer, "sgd", "update", [w], (), (),
                    {"param": pshape}, opt, out_bytes=0)
    return TrainingGraph(model=name or type(module).__name__.lower(), batch=batch,
                         input_shape=tuple(input_shape), dtype=dtype, nodes=tuple(nodes))
