"""Turn an op spec (a JSON dict from the training graph) into a callable that runs one training op.

A spec names a forward op, its input and parameter shapes, attributes and the *phase* to run:
``fwd`` and ``loss`` run the forward computation; ``bwd_data`` runs only the gradient with respect
to the inputs listed in ``grad_inputs``; ``bwd_weight`` only the gradient with respect to the
parameters; ``update`` runs one SGD step on one parameter tensor. Backward phases go through
``torch.autograd.grad`` on a single-op graph in which only the wanted tensors require grad, so
autograd passes the matching output mask to the backward kernel (e.g. convolution_backward runs with
[True, False, False] for bwd_data). This works unchanged from torch 1.8 to 2.x.
"""
import torch
import torch.nn.functional as F

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


class UnsupportedOp(Exception):
    """The agent has no kernel for this op (reported, never a crash)."""


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


# --- forward kernels: fn(inputs, params, attrs) -> tensor -------------------------------------

def _conv2d(x, p, a):
    return F.conv2d(x[0], p["weight"], p.get("bias"), _pair(a.get("stride", 1)),
                    _pair(a.get("padding", 0)), _pair(a.get("dilation", 1)), a.get("groups", 1))


def _linear(x, p, a):
    return F.linear(x[0], p["weight"], p.get("bias"))


def _batch_norm(x, p, a):
    # running statistics are buffers allocated once in prepare(), updated in place as in training
    return F.batch_norm(x[0], p["_running_mean"], p["_running_var"], p.get("weight"),
                        p.get("bias"), True, a.get("momentum", 0.1), a.get("eps", 1e-5))


def _layer_norm(x, p, a):
    return F.layer_norm(x[0], tuple(a["normalized_shape"]), p.get("weight"), p.get("bias"),
                        a.get("eps", 1e-5))


def _embedding(x, p, a):
    return F.embedding(x[0], p["weight"])


def _max_pool2d(x, p, a):
    stride = a.get("stride") or a["kernel_size"]
    return F.max_pool2d(x[0], _pair(a["kernel_size"]), _pair(stride), _pair(a.get("padding", 0)),
                        _pair(a.get("dilation", 1)), a.get("ceil_mode", False))


def _avg_pool2d(x, p, a):
    stride = a.get("stride") or a["kernel_size"]
    return F.avg_pool2d(x[0], _pair(a["kernel_size"]), _pair(stride), _pair(a.get("padding", 0)),
                        a.get("ceil_mode", False), a.get("count_include_pad", True))


def _adaptive_avg_pool2d(x, p, a):
    return F.adaptive_avg_pool2d(x[0], _pair(a["output_size"]))


def _softmax(x, p, a):
    return F.softmax(x[0], dim=a.get("dim", -1))


def _log_softmax(x, p, a):
    return F.log_softmax(x[0], dim=a.get("dim", -1))


def _dropout(x, p, a):
    return F.dropout(x[0], a.get("p", 0.5), True)


def _binary(fn):
    """Tensor-tensor or tensor-scalar (``attrs["scalar"]``) elementwise op."""
    def run(x, p, a):
        return fn(x[0], x[1] if len(x) > 1 else a["scalar"])
    return run


def _mean(x, p, a):
    dim = a.get("dim")
    if dim is None:
        return x[0].mean()
    return x[0].mean(dim=tuple(dim) if isinstance(dim, list) else dim, keepdim=a.get("keepdim", False))


def _cross_entropy(x, p, a):
    logits, target = x[0], x[1]
    return F.cross_entropy(logits, target)


def _mse_loss(x, p, a):
    return F.mse_loss(x[0], x[1])


FORWARD = {
    "conv2d": _conv2d,
    "linear": _linear,
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "embedding": _embedding,
    "relu": lambda x, p, a: F.relu(x[0]),
    "relu6": lambda x, p, a: F.relu6(x[0]),
    "gelu": lambda x, p, a: F.gelu(x[0]),
    "sigmoid": lambda x, p, a: torch.sigmoid(x[0]),
    "tanh": lambda x, p, a: torch.tanh(x[0]),
    "hardswish": lambda x, p, a: F.hardswish(x[0]),
    "silu": lambda x, p, a: F.silu(x[0]),
    "dropout": _dropout,
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "add": _binary(lambda u, v: u + v),
    "sub": _binary(lambda u, v: u - v),
    "mul": _binary(lambda u, v: u * v),
    "div": _binary(lambda u, v: u / v),
    "matmul": lambda x, p, a: torch.matmul(x[0], x[1]),
    "mean": _mean,
    "cross_entropy": _cross_entropy,
    "mse_loss": _mse_loss,
}

# Ops whose inputs are not differentiable at some positions (indices, class targets).
_INT_INPUTS = {"embedding": (0,), "cross_entropy": (1,)}
LOSSES = ("cross_entropy", "mse_loss")


def supported_ops():
    return sorted(list(FORWARD) + ["grad_accumulate", "sgd"])


def _make_input(op, i, shape, dtype, device, spec):
    if i in _INT_INPUTS.get(op, ()):
        if op == "embedding":
            high = spec["params"]["weight"][0]
        else:  # class targets for cross entropy
            high = spec["inputs"][0][-1]
        return torch.randint(0, int(high), tuple(shape), device=device, dtype=torch.long)
    return torch.randn(tuple(shape), dtype=dtype, device=device)


class Runnable(object):
    """A prepared op: ``call()`` runs the measured work once; tensors stay alive between calls."""

    def __init__(self, call, keep, inputs_bytes):
        self.call = call
        self.keep = keep  # references that must outlive the timing loop (inputs, graph)
        self.inputs_bytes = inputs_bytes


def tensor_bytes(t):
    return t.numel() * t.element_size()


def prepare(spec, device="cpu"):
    """Allocate inputs for ``spec`` and return a Runnable that executes its phase once per call."""
    op = spec["op"]
    phase = spec["phase"]
    dtype = DTYPES.get(spec.get("dtype", "float32"))
    if dtype is None:
        raise UnsupportedOp("dtype %r is not supported by the torch agent" % spec.get("dtype"))
    attrs = spec.get("attrs") or {}

    if op == "sgd":
        shape = tuple(spec["params"]["param"])
        param = torch.randn(shape, dtype=dtype, device=device)
        grad = torch.randn(shape, dtype=dtype, device=device)
        lr = float(attrs.get("lr", 0.01))
        momentum = float(attrs.get("momentum", 0.0))
        wd = float(attrs.get("weight_decay", 0.0))
        buf = torch.zeros_like(param) if momentum else None

        def sgd_step():
            with torch.no_grad():
                g = grad
                if wd:
                    g = g.add(param, alpha=wd)
                if buf is not None:
                    buf.mul_(momentum).add_(g)
                    g = buf
                param.add_(g, alpha=-lr)
            return param
        return Runnable(sgd_step, (param, grad, buf), 2 * tensor_bytes(param))

    if op == "grad_accumulate":
        a = torch.randn(tuple(spec["inputs"][0]), dtype=dtype, device=device)
        b = torch.randn(tuple(spec["inputs"][1]), dtype=dtype, device=device)
        return Runnable(lambda: a + b, (a, b), tensor_bytes(a) + tensor_bytes(b))

    fwd = FORWARD.get(op)
    if fwd is None:
        raise UnsupportedOp("no kernel for op %r (supported: %s)" % (op, ", ".join(supported_ops())))

    grad_inputs = set(spec.get("grad_inputs") or [])
    # A training forward records the autograd graph for inputs with history and for parameters;
    # timing it under no_grad would under-count it. The loss forward likewise.
    training_fwd = phase in ("fwd", "loss")
    inputs = []
    for i, shape in enumerate(spec.get("inputs") or []):
        t = _make_input(op, i, shape, dtype, device, spec)
        if phase in ("bwd_data", "fwd", "loss") and i in grad_inputs and t.is_floating_point():
            t.requires_grad_(True)
        inputs.append(t)
    params = {}
    for name, shape in sorted((spec.get("params") or {}).items()):
        if shape is None:
            continue
        t = torch.randn(tuple(shape), dtype=dtype, device=device)
        if phase == "bwd_weight" or training_fwd:
            t.requires_grad_(True)
        params[name] = t
    in_bytes = sum(tensor_bytes(t) for t in inputs) + sum(tensor_bytes(t) for t in params.values())
    if op == "batch_norm":  # buffers, not parameters: never differentiated
        c = inputs[0].shape[1]
        params["_running_mean"] = torch.zeros(c, dtype=dtype, device=device)
        params["_running_var"] = torch.ones(c, dtype=dtype, device=device)

    if training_fwd:
        def forward():
            return fwd(inputs, params, attrs)
        return Runnable(forward, (inputs, params), in_bytes)

    if phase not in ("bwd_data", "bwd_weight"):
        raise UnsupportedOp("unknown phase %r" % phase)
    if phase == "bwd_data":
        wrt = [t for t in inputs if t.requires_grad]
    else:
        wrt = [params[k] for k in sorted(params) if not k.startswith("_")]
    if not wrt:
        raise UnsupportedOp("%s of %s has nothing to differentiate" % (phase, op))
    out = fwd(inputs, params, attrs)
    grad_out = torch.ones_like(out) if out.dim() == 0 else torch.randn_like(out)

    def backward():
        return torch.autograd.grad(out, wrt, grad_out, retain_graph=True)
    return Runnable(backward, (inputs, params, out, grad_out), in_bytes + tensor_bytes(out))
