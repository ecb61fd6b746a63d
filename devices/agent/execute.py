"""Run a solved rematerialization + paging schedule on this device, and check it.

The host (``solver.execute``) sends a *program* -- the model's forward as a list of torch.fx-style
instructions plus the training graph's nodes (loss, backward-data, backward-weight, gradient
accumulation, per-tensor SGD updates) -- and a *schedule* over the solver's nodes (groups of graph
nodes, one group per solver node). This module, the same code in-process for ``local`` and inside
the agent shipped over SSH (Python 3.6, torch >= 1.10), executes it:

* **compute**: a forward node runs its op on its inputs' current values; its autograd graph is a
  *local* one (inputs are detached leaves), so each backward node is its own
  ``torch.autograd.grad`` call on the local graph of its forward op, with only the wanted tensors
  requested (input gradients for ``bwd_data``, parameter gradients for ``bwd_weight``).
* **no hidden copies**: every tensor autograd saves goes through ``saved_tensors_hooks``; a saved
  value of the schedule is stored as a *key* (node, size, stride, offset), resolved against the
  executor's value store when the backward runs. A freed value's storage is released
  (``resize_(0)``), so nothing -- tape, leaves, views -- keeps it alive. Tensors autograd saves
  that are not schedule values (batch-norm statistics, max-pool indices, copies made inside an
  op) stay with the local graph; they are reported as ``saved_state`` bytes, not hidden.
* **recompute**: the forward op runs again from kept inputs (the random state of dropout and the
  batch-norm running statistics are restored, so the value is bit-identical).
* **page out / page in**: the value's storage bytes are written to a file in a per-run directory
  under the device's storage path, flushed and ``fsync``-ed, and read back into fresh memory.
  The directory is removed at the end; any write or read error (a full disk) stops the run.
* **update**: ``torch.optim.SGD(foreach=False)`` on one parameter, as the graph's update node.

Every scheduled iteration is checked against a plain iteration (``loss.backward()``, one SGD step)
of the same program from the same state: gradients, updated parameters and buffers must be
bit-identical (``torch.use_deterministic_algorithms`` on CPU), or equal within ``tolerance``
where the host asks for one. A mismatch raises :class:`ExecutionError`.
"""
import ctypes
import gc
import importlib
import operator
import os
import shutil
import sys
import time
import uuid

import torch
import torch.nn.functional as F

from . import kernels

PROGRAM_FORMAT = "costdb-program/1"
RANDOM_OPS = ("dropout",)
_FUNCTION_MODULES = ("operator", "builtins", "torch", "torch.nn.functional")


class ExecutionError(Exception):
    """The schedule could not be executed as written, or its result differs from the plain
    iteration. Never stored as a success."""


class StorageError(ExecutionError):
    """Writing or reading the paging files failed (a full disk, a read-only path)."""


# --- small compatibility helpers (torch 1.10 .. 2.x) ------------------------------------------

def _storage(t):
    return t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()


def _ptr(t):
    return _storage(t).data_ptr()


def _storage_nbytes(t):
    s = _storage(t)
    return s.nbytes() if hasattr(s, "nbytes") else s.size() * t.element_size()


def _release(t):
    """Free the memory behind ``t`` and every alias of it (the tensors stay as empty shells)."""
    s = _storage(t)
    s.resize_(0)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _hooks_available():
    return hasattr(torch.autograd, "graph") and hasattr(torch.autograd.graph, "saved_tensors_hooks")


def _resolve_function(name):
    mod, _, attr = name.rpartition(".")
    if mod not in _FUNCTION_MODULES:
        raise ExecutionError("program calls %r, which is outside %s" % (name, ", ".join(_FUNCTION_MODULES)))
    return getattr(importlib.import_module(mod), attr)


def _decode(a, ev):
    """A program argument back to a Python value; ``ev`` resolves {"ref": name}."""
    if isinstance(a, dict):
        if "ref" in a:
            return ev(a["ref"])
        if "tuple" in a:
            return tuple(_decode(x, ev) for x in a["tuple"])
        if "slice" in a:
            return slice(*[_decode(x, ev) for x in a["slice"]])
        if "ellipsis" in a:
            return Ellipsis
        if "dtype" in a:
            return getattr(torch, a["dtype"])
        if "dict" in a:
            return dict((k, _decode(v, ev)) for k, v in a["dict"].items())
        raise ExecutionError("unknown program argument %r" % (a,))
    if isinstance(a, list):
        return [_decode(x, ev) for x in a]
    return a


# --- process memory ---------------------------------------------------------------------------

def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (IOError, OSError, ValueError):
        pass
    return None


def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except (IOError, OSError):
        return False


def _trim_heap():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _io_counters():
    out = {}
    try:
        with open("/proc/self/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = int(v)
    except (IOError, OSError, ValueError):
        pass
    return out


# --- the model state --------------------------------------------------------------------------

class Model(object):
    """Parameters, buffers and the batch of a program, initialised from a seed (the same state
    for the scheduled and the plain iteration)."""

    def __init__(self, program, device="cpu", seed=0):
        if program.get("format") != PROGRAM_FORMAT:
            raise ExecutionError("not a costdb program (format %r)" % program.get("format"))
        self.program = program
        self.device = device
        self.dtype = kernels.DTYPES[program.get("dtype", "float32")]
        gen = torch.Generator().manual_seed(int(seed))
        self.params = {}
        for p in program["params"]:
            shape = tuple(p["shape"])
            init = p.get("init", "uniform")
            if init == "ones":
                t = torch.ones(shape, dtype=self.dtype)
            elif init == "zeros":
                t = torch.zeros(shape, dtype=self.dtype)
            else:
                bound = 1.0 / max(1.0, float(p.get("fan_in", 1))) ** 0.5
                t = (torch.rand(shape, generator=gen, dtype=self.dtype) * 2 - 1) * bound
            self.params[p["name"]] = torch.nn.Parameter(t.to(device))
        self.buffers = {}
        for b in program.get("buffers", []):
            dt = getattr(torch, b["dtype"])
            self.buffers[b["name"]] = torch.tensor(b["values"], dtype=dt).reshape(tuple(b["shape"])).to(device)
        shape = (program["batch"],) + tuple(program["input_shape"])
        if program.get("input_dtype") == "int64":
            self.x = torch.randint(0, int(program.get("input_high") or 2), shape, generator=gen).to(device)
        else:
            self.x = torch.randn(shape, generator=gen, dtype=self.dtype).to(device)
        logits = tuple(program["logits_shape"])
        if program["loss"] == "cross_entropy":
            self.y = torch.randint(0, int(logits[-1]), (program["batch"],), generator=gen).to(device)
        else:
            self.y = torch.randn(logits, generator=gen, dtype=self.dtype).to(device)
        sgd = program.get("sgd") or {}
        self.sgd = {"lr": float(sgd.get("lr", 0.01)), "momentum": float(sgd.get("momentum", 0.0)),
                    "weight_decay": float(sgd.get("weight_decay", 0.0))}
        self.optimizers = dict((q, _sgd(p, self.sgd)) for q, p in self.params.items())

    def snapshot(self):
        return ({q: p.detach().clone() for q, p in self.params.items()},
                {q: b.clone() for q, b in self.buffers.items()},
                {q: _opt_state(o) for q, o in self.optimizers.items()})

    def restore(self, snap):
        params, buffers, states = snap
        with torch.no_grad():
            for q, p in self.params.items():
                p.copy_(params[q])
                p.grad = None
            for q, b in self.buffers.items():
                b.copy_(buffers[q])
        for q, o in self.optimizers.items():
            _set_opt_state(o, self.params[q], states[q])

    def param_bytes(self):
        return sum(p.numel() * p.element_size() for p in self.params.values())


def _sgd(p, options):
    """SGD on one tensor, the per-tensor loop (``foreach`` exists from torch 1.12 on)."""
    try:
        return torch.optim.SGD([p], foreach=False, **options)
    except TypeError:
        return torch.optim.SGD([p], **options)


def _opt_state(opt):
    st = {}
    for p, s in opt.state.items():
        st = dict((k, v.clone() if torch.is_tensor(v) else v) for k, v in s.items())
    return st


def _set_opt_state(opt, p, st):
    opt.state.clear()
    if st:
        opt.state[p] = dict((k, v.clone() if torch.is_tensor(v) else v) for k, v in st.items())


def _sgd_step(model, q, grad):
    p = model.params[q]
    p.grad = grad
    model.optimizers[q].step()
    p.grad = None


# --- forward op dispatch ----------------------------------------------------------------------

def _call(model, ins, ev, running_stats=None):
    """Run one program instruction with ``ev`` resolving its arguments."""
    kind = ins["call"]
    args = _decode(ins.get("args", []), ev)
    kw = ins.get("kwargs")
    kwargs = _decode(kw, ev) if kw else {}
    if kind == "module":
        op = ins["op"]
        params = dict((pn, model.params[q]) for pn, q in ins.get("params", {}).items())
        if op == "batch_norm":
            rm, rv = running_stats or (model.buffers[ins["buffers"]["running_mean"]],
                                       model.buffers[ins["buffers"]["running_var"]])
            params["_running_mean"], params["_running_var"] = rm, rv
        fn = kernels.FORWARD.get(op)
        if fn is None:
            raise ExecutionError("no kernel for module op %r" % op)
        tensors = [a for a in args if torch.is_tensor(a)]
        return fn(tensors, params, ins.get("attrs") or {})
    if kind == "function":
        return _resolve_function(ins["target"])(*args, **kwargs)
    if kind == "method":
        return getattr(args[0], ins["target"])(*args[1:], **kwargs)
    if kind == "identity":
        return args[0]
    raise ExecutionError("unknown instruction kind %r" % kind)


def _loss(model, logits):
    if model.program["loss"] == "cross_entropy":
        return F.cross_entropy(logits, model.y)
    return F.mse_loss(logits, model.y)


def _bump_batches(model, ins):
    nbt = (ins.get("buffers") or {}).get("num_batches_tracked")
    if nbt is not None:
        with torch.no_grad():
            model.buffers[nbt].add_(1)


# --- the plain iteration (the reference) -------------------------------------------------------

def plain_iteration(model):
    """``zero_grad``, forward, loss, ``loss.backward()``, SGD step: the reference. Returns the
    parameter gradients (the updated parameters are in ``model.params``)."""
    prog = model.program
    env = {}

    def ev(name):
        return env[name]
    for ins in prog["fx"]:
        k = ins["kind"]
        if k == "input":
            env[ins["name"]] = model.x
        elif k == "buffer":
            env[ins["name"]] = model.buffers[ins["target"]]
        elif k == "meta":
            env[ins["name"]] = _decode(ins["value"], ev)
        elif k in ("compute", "view"):
            env[ins["name"]] = _call(model, ins, ev)
            if k == "compute" and ins.get("op") == "batch_norm":
                _bump_batches(model, ins)
    logits = _decode(prog["output"], ev)
    loss = _loss(model, logits)
    for p in model.params.values():
        p.grad = None
    loss.backward()
    grads = {}
    for q, p in model.params.items():
        grads[q] = p.grad
        if p.grad is not None:
            model.optimizers[q].step()
    for p in model.params.values():
        p.grad = None
    del env, logits, loss
    return grads


# --- the scheduled iteration ------------------------------------------------------------------

class _Saved(object):
    """What a saved-tensor pack hook returns: a schedule value's key, or the tensor itself."""

    __slots__ = ("key", "tensor", "nbytes")

    def __init__(self, tensor):
        self.key = None
        self.tensor = tensor
        self.nbytes = 0


class _LocalGraph(object):
    __slots__ = ("out", "leaves", "held", "held_bytes", "input_ptrs")

    def __init__(self):
        self.out = None
        self.leaves = {}
        self.held = []
        self.held_bytes = 0


class Ledger(object):
    """Bytes the executor holds, sampled after every node and every paging operation."""

    def __init__(self):
        self.values = 0          # schedule values (activations, gradients flowing backward)
        self.saved_state = 0     # autograd-saved tensors that are not schedule values
        self.placeholders = 0    # transient shape-only inputs (see Executor._unpack)
        self.peak_values = 0
        self.peak_total = 0
        self.peak_saved_state = 0
        self.stage_peaks = []
        self._stage_peak = 0

    def sample(self, extra=0):
        v = self.values + extra
        tot = v + self.saved_state
        if v > self.peak_values:
            self.peak_values = v
        if tot > self.peak_total:
            self.peak_total = tot
        if self.saved_state > self.peak_saved_state:
            self.peak_saved_state = self.saved_state
        if v > self._stage_peak:
            self._stage_peak = v

    def end_stage(self):
        self.sample()
        self.stage_peaks.append(self._stage_peak)
        self._stage_peak = self.values


class Executor(object):
    """One scheduled training iteration of ``model`` (see the module docstring)."""

    def __init__(self, model, plan, run_dir, device="cpu", audit=False):
        self.m = model
        self.audit = audit
        self.audit_excess = 0     # max bytes of live tensors the ledger did not account for
        self._baseline = None
        self.prog = model.program
        self.plan = plan
        self.device = device
        self.run_dir = run_dir
        self.fx = dict((ins["name"], ins) for ins in self.prog["fx"])
        self.gnodes = dict((n["idx"], n) for n in self.prog["nodes"])
        self.group_of = {}
        for g, grp in enumerate(plan["groups"]):
            for mbr in grp["members"]:
                self.group_of[mbr] = g
        self.values = {}          # graph node idx -> tensor | {producer idx: tensor}
        self.holders = {}         # storage ptr -> set of node idx holding it
        self.graphs = {}          # fwd node idx -> _LocalGraph of its latest computation
        self.bwd_left = {}
        for n in self.prog["nodes"]:
            if n["kind"] in ("bwd_data", "bwd_weight", "loss_bwd"):
                self.bwd_left[n["fwd"]] = self.bwd_left.get(n["fwd"], 0) + 1
        self.rng = {}             # fwd node idx -> RNG state before its first computation
        self.grads = {}           # param -> gradient (persistent, as .grad would be)
        self.updated = set()
        self.computed = set()
        self.disk = {}            # group -> list of files
        self.ledger = Ledger()
        self.current = None       # graph node running (for the unpack dependency check)
        self.times = {"compute_s": 0.0, "pagein_s": 0.0, "pageout_s": 0.0}
        self.bytes_out = self.bytes_in = 0
        self.files_written = 0
        self.disk_bytes = self.disk_peak_bytes = 0
        self.computes = self.recomputes = self.pageins = self.pageouts = 0

    # -- values and their memory ---------------------------------------------------------
    def _tensors(self, v):
        if torch.is_tensor(v):
            return [v]
        return list(v.values())

    def _set(self, idx, v):
        self.values[idx] = v
        for t in self._tensors(v):
            p = _ptr(t)
            hs = self.holders.setdefault(p, set())
            if not hs:
                self.ledger.values += _storage_nbytes(t)
            hs.add(idx)
        self.ledger.sample()

    def _free(self, idx):
        v = self.values.pop(idx, None)
        if v is None:
            return
        for t in self._tensors(v):
            p = _ptr(t)
            hs = self.holders.get(p)
            if hs is None:
                continue
            hs.discard(idx)
            if not hs:
                del self.holders[p]
                self.ledger.values -= _storage_nbytes(t)
                _release(t)

    def _get(self, idx, for_fwd=None):
        if idx not in self.values:
            g = self.plan["groups"][self.group_of[idx]]["name"]
            raise ExecutionError("node %s needs %s (solver node %s), which the schedule does not "
                                 "hold in RAM at that point" % (self._name(self.current), self._name(idx), g))
        v = self.values[idx]
        if for_fwd is not None and not torch.is_tensor(v):
            if for_fwd not in v:
                raise ExecutionError("%s carries no gradient for %s" % (self._name(idx), self._name(for_fwd)))
            return v[for_fwd]
        return v

    def _name(self, idx):
        return self.gnodes[idx]["name"] if idx in self.gnodes else str(idx)

    # -- saved-tensor hooks -------------------------------------------------------------
    def _pack(self, t):
        s = _Saved(t)
        p = _ptr(t)
        hs = self.holders.get(p)
        if hs:
            s.key = (min(hs), tuple(t.size()), tuple(t.stride()), t.storage_offset(), t.dtype)
            s.tensor = None
        else:
            s.tensor = t.detach()
        self._packed.append(s)
        return s

    def _unpack(self, s):
        if s.key is None:
            return s.tensor
        idx, size, stride, offset, dtype = s.key
        v = self.values.get(idx)
        if v is None:
            deps = self.gnodes[self.current]["deps"] if self.current in self.gnodes else []
            if idx in deps:
                raise ExecutionError("%s needs %s, which the schedule does not hold in RAM"
                                     % (self._name(self.current), self._name(idx)))
            # the graph says this node does not read the value (e.g. a convolution's input for
            # its input gradient): autograd unpacks it anyway, so hand it memory of the right
            # layout; a wrong graph shows up as a mismatch against the plain iteration
            n = offset if 0 in size else offset + 1 + sum((sz - 1) * st for sz, st in zip(size, stride))
            ph = torch.empty(n, dtype=dtype, device=self.device)
            self.ledger.sample(extra=n * ph.element_size())
            return torch.as_strided(ph, size, stride, offset)
        base = v if torch.is_tensor(v) else None
        if base is None:
            raise ExecutionError("saved value %s is not a tensor" % self._name(idx))
        return torch.as_strided(base, size, stride, offset)

    # -- running graph nodes ---------------------------------------------------------------
    def _leaf(self, graph, p):
        if p not in graph.leaves:
            v = self._get(p)
            leaf = v.detach()
            if leaf.is_floating_point() and self.gnodes[p].get("requires_grad", True):
                leaf.requires_grad_(True)
            graph.leaves[p] = leaf
        return graph.leaves[p]

    def _eval_arg(self, graph, name):
        ins = self.fx[name]
        k = ins["kind"]
        if k == "compute":
            return self._leaf(graph, ins["node"])
        if k == "view":
            return _call(self.m, ins, lambda a: self._eval_arg(graph, a))
        if k == "input":
            return self.m.x
        if k == "buffer":
            return self.m.buffers[ins["target"]]
        if k == "meta":
            return _decode(ins["value"], None)
        raise ExecutionError("cannot evaluate program value %r" % name)

    def _forward(self, n, recompute):
        """Forward (or loss) node ``n``: a local autograd graph, its output a schedule value."""
        idx = n["idx"]
        graph = _LocalGraph()
        self._packed = []
        needs_graph = self.bwd_left.get(idx, 0) > 0
        rng_saved = None
        if n.get("random"):
            if recompute:
                rng_saved = torch.get_rng_state()
                torch.set_rng_state(self.rng[idx])
            else:
                self.rng[idx] = torch.get_rng_state()
        stats = None
        if n["kind"] == "fwd":
            ins = self.fx[n["fx"]]
            if ins.get("op") == "batch_norm" and recompute:
                stats = (self.m.buffers[ins["buffers"]["running_mean"]].clone(),
                         self.m.buffers[ins["buffers"]["running_var"]].clone())
        try:
            with torch.enable_grad() if needs_graph else torch.no_grad():
                with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                    if n["kind"] == "loss":
                        logits = _decode(self.prog["output"], lambda a: self._eval_arg(graph, a))
                        out = _loss(self.m, logits)
                    else:
                        out = _call(self.m, ins, lambda a: self._eval_arg(graph, a), stats)
        finally:
            if rng_saved is not None:
                torch.set_rng_state(rng_saved)
        if n["kind"] == "fwd" and ins.get("op") == "batch_norm" and not recompute:
            _bump_batches(self.m, ins)
        optr = _ptr(out)
        if optr in self.holders:
            raise ExecutionError("%s returns memory of another value (an in-place or aliasing op); "
                                 "the executor needs ops that write fresh outputs" % n["name"])
        for s in self._packed:
            if s.tensor is not None and _ptr(s.tensor) == optr:
                s.key = (idx, tuple(s.tensor.size()), tuple(s.tensor.stride()),
                         s.tensor.storage_offset(), s.tensor.dtype)
                s.tensor = None
            elif s.tensor is not None and not isinstance(s.tensor, torch.nn.Parameter) \
                    and _ptr(s.tensor) not in self._param_ptrs:
                graph.held.append(s)
                graph.held_bytes += _storage_nbytes(s.tensor)
        self._packed = []
        old = self.graphs.pop(idx, None)
        if old is not None:
            self.ledger.saved_state -= old.held_bytes
        if needs_graph:
            graph.out = out
            self.graphs[idx] = graph
            self.ledger.saved_state += graph.held_bytes
        self._set(idx, out.detach())

    def _backward(self, n):
        kind = n["kind"]
        fwd = n["fwd"]
        graph = self.graphs.get(fwd)
        if graph is None:
            raise ExecutionError("%s runs before %s was computed (or after its graph was released)"
                                 % (n["name"], self._name(fwd)))
        if kind == "loss_bwd":
            g = torch.ones_like(graph.out)
        else:
            g = self._get(n["grad"], for_fwd=fwd)
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            if kind == "bwd_weight":
                ps = [self.m.params[q] for q in n["params"]]
                gs = torch.autograd.grad(graph.out, ps, g, retain_graph=True)
                for q, gr in zip(n["params"], gs):
                    self.grads[q] = gr
                out = None
            else:
                wrt = [p for p in n["wrt"]]
                missing = [p for p in wrt if p not in graph.leaves]
                if missing:
                    raise ExecutionError("%s: no input leaf for %s" % (n["name"], self._name(missing[0])))
                gs = torch.autograd.grad(graph.out, [graph.leaves[p] for p in wrt], g, retain_graph=True)
                out = dict(zip(wrt, gs))
        self.bwd_left[fwd] -= 1
        if self.bwd_left[fwd] == 0:
            old = self.graphs.pop(fwd)
            self.ledger.saved_state -= old.held_bytes
        if out is not None:
            self._set(n["idx"], out)
        else:
            self.ledger.sample()

    def _run_node(self, idx, recompute):
        n = self.gnodes[idx]
        self.current = idx
        kind = n["kind"]
        if kind in ("fwd", "loss"):
            if recompute:
                for q in n.get("params", ()):
                    if q in self.updated:
                        raise ExecutionError("the schedule recomputes %s after %s was updated; its "
                                             "output would differ" % (n["name"], q))
            self._forward(n, recompute)
        elif kind in ("bwd_data", "bwd_weight", "loss_bwd"):
            self._backward(n)
        elif kind == "acc":
            a, b = n["grad"]
            p = n["fwd"]
            self._set(idx, {p: self._get(a, for_fwd=p) + self._get(b, for_fwd=p)})
        elif kind == "update":
            q = n["param"]
            if q in self.updated:
                raise ExecutionError("the schedule updates %s twice" % q)
            with torch.no_grad():
                _sgd_step(self.m, q, self.grads[q])
            self.updated.add(q)
        else:
            raise ExecutionError("unknown node kind %r" % kind)
        self.current = None

    def _run_group(self, g, recompute):
        grp = self.plan["groups"][g]
        if recompute and grp.get("side_effects"):
            raise ExecutionError("the schedule recomputes %s, which applies optimizer updates; "
                                 "the executor runs it once" % grp["name"])
        if recompute and grp.get("backward"):
            raise ExecutionError("the schedule recomputes backward node %s; the executor runs "
                                 "backward nodes once" % grp["name"])
        t0 = time.perf_counter()
        for m in grp["members"]:
            self._run_node(m, recompute)
        outs = set(grp["outputs"])
        for m in grp["members"]:
            if m not in outs:
                self._free(m)      # workspace: consumed inside the group only
        _sync(self.device)
        self.times["compute_s"] += time.perf_counter() - t0
        self.computes += 1
        if recompute:
            self.recomputes += 1
        self.ledger.sample()

    def _free_group(self, g):
        for m in self.plan["groups"][g]["outputs"]:
            self._free(m)
        self.ledger.sample()

    # -- paging ------------------------------------------------------------------------------
    def _page_out(self, g):
        grp = self.plan["groups"][g]
        if g in self.disk:
            raise ExecutionError("the schedule pages out %s twice" % grp["name"])
        t0 = time.perf_counter()
        files = []
        try:
            for m in grp["outputs"]:
                v = self._get(m)
                items = [(None, v)] if torch.is_tensor(v) else sorted(v.items())
                for key, t in items:
                    path = os.path.join(self.run_dir, "n%d%s.bin" % (m, "" if key is None else "-%d" % key))
                    nbytes = _storage_nbytes(t)
                    flat = torch.as_strided(t, (nbytes // t.element_size(),), (1,), 0)
                    if flat.device.type != "cpu":
                        flat = flat.cpu()
                    buf = (ctypes.c_char * nbytes).from_address(flat.data_ptr()) if nbytes else b""
                    with open(path, "wb") as f:
                        f.write(buf)
                        f.flush()
                        os.fsync(f.fileno())
                    files.append((m, key, path, nbytes, t.dtype, tuple(t.size()), tuple(t.stride()),
                                  t.storage_offset()))
                    self.bytes_out += nbytes
                    self.disk_bytes += nbytes
                    self.files_written += 1
        except (IOError, OSError) as e:
            raise StorageError("page-out of %s to %s failed: %s" % (grp["name"], self.run_dir, e))
        self.disk[g] = files
        self.disk_peak_bytes = max(self.disk_peak_bytes, self.disk_bytes)
        self.pageouts += 1
        self.times["pageout_s"] += time.perf_counter() - t0

    def _page_in(self, g):
        grp = self.plan["groups"][g]
        files = self.disk.get(g)
        if files is None:
            raise ExecutionError("the schedule pages in %s, which is not on storage" % grp["name"])
        t0 = time.perf_counter()
        vals = {}
        try:
            for m, key, path, nbytes, dtype, size, stride, offset in files:
                raw = torch.empty(nbytes, dtype=torch.uint8)
                if nbytes:
                    buf = (ctypes.c_char * nbytes).from_address(raw.data_ptr())
                    with open(path, "rb") as f:
                        got = f.readinto(buf)
                    if got != nbytes:
                        raise StorageError("page-in of %s read %d of %d bytes from %s"
                                           % (grp["name"], got, nbytes, path))
                if self.device != "cpu":
                    raw = raw.to(self.device)
                t = torch.as_strided(raw.view(dtype), size, stride, offset)
                self.bytes_in += nbytes
                if key is None:
                    vals[m] = t
                else:
                    vals.setdefault(m, {})[key] = t
        except (IOError, OSError) as e:
            raise StorageError("page-in of %s from %s failed: %s" % (grp["name"], self.run_dir, e))
        for m, v in vals.items():
            if m in self.values:
                raise ExecutionError("the schedule pages in %s, which is already in RAM" % grp["name"])
            self._set(m, v)
        _sync(self.device)
        self.pageins += 1
        self.times["pagein_s"] += time.perf_counter() - t0

    # -- the schedule ------------------------------------------------------------------------
    def run(self):
        if not _hooks_available():
            raise ExecutionError("the executor needs torch >= 1.10 (saved_tensors_hooks); this "
                                 "device has torch %s" % torch.__version__)
        # persistent tensors (parameters, the batch, buffers) saved by autograd are not held state
        self._param_ptrs = set(_ptr(p) for p in self.m.params.values())
        self._param_ptrs |= set(_ptr(b) for b in self.m.buffers.values())
        self._param_ptrs |= set([_ptr(self.m.x), _ptr(self.m.y)])
        if self.audit:
            self._baseline = set(self._live_tensor_bytes())
        plan = self.plan
        groups = plan["groups"]
        compat, overlap = bool(plan.get("compat")), bool(plan.get("overlap"))
        ram = set()
        for t, st in enumerate(plan["stages"]):
            keep = set(st["keep"])
            pageout = list(st.get("pageout", ()))
            if compat:
                for g in pageout:
                    self._page_out(g)
            uses = {}
            for k in st["compute"]:
                for d in groups[k]["deps"]:
                    uses[d] = uses.get(d, 0) + 1
            live = set(ram)
            for k in st["compute"]:
                missing = [d for d in groups[k]["deps"] if d not in live]
                if missing:
                    raise ExecutionError("stage %d: %s needs %s, which is not in RAM"
                                         % (t, groups[k]["name"], groups[missing[0]]["name"]))
                if k in live:
                    raise ExecutionError("stage %d: computes %s, which is already in RAM" % (t, groups[k]["name"]))
                self._run_group(k, recompute=(k != t))
                live.add(k)
                for d in groups[k]["deps"]:
                    uses[d] -= 1
                    if uses[d] == 0 and d not in keep and not (overlap and d in pageout):
                        self._free_group(d)
                        live.discard(d)
            if not compat:
                for g in pageout:
                    self._page_out(g)
            for g in sorted(live - keep):
                self._free_group(g)
            for g in st.get("pagein", ()):
                self._page_in(g)
                live.add(g)
            if not keep <= live:
                raise ExecutionError("stage %d keeps %s, which is not in RAM" % (t, sorted(keep - live)))
            ram = keep
            self.ledger.end_stage()
            if self.audit:
                self._audit()
        for g in sorted(ram):
            self._free_group(g)
        missing = sorted(set(self.m.params) - self.updated)
        if missing:
            raise ExecutionError("the schedule never updates %s" % missing[0])
        leftover = sorted(self.values)
        if leftover:
            raise ExecutionError("values still held after the last stage: %s" % self._name(leftover[0]))
        self.graphs.clear()
        return self.grads

    def _live_tensor_bytes(self):
        """Bytes of every tensor storage reachable from Python, by unique storage."""
        import warnings
        seen = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # isinstance on deprecated torch attributes
            objs = [o for o in gc.get_objects() if torch.is_tensor(o)]
        for o in objs:
            try:
                p, n = _ptr(o), _storage_nbytes(o)
            except RuntimeError:
                continue
            if n and p:
                seen[p] = n
        return seen

    def _audit(self):
        """Compare what is really alive with the ledger: any tensor memory that is neither a
        schedule value nor held saved state (nor persistent) is a hidden copy."""
        live = self._live_tensor_bytes()
        skip = self._baseline or set()
        grads = set(_ptr(g) for g in self.grads.values())
        extra = sum(n for p, n in live.items() if p not in skip and p not in grads)
        self.audit_excess = max(self.audit_excess,
                                extra - self.ledger.values - self.ledger.saved_state)

    def stats(self):
        """What was measured: times, counts, bytes paged, the memory ledger."""
        led = self.ledger
        return {"compute_s": self.times["compute_s"], "pagein_s": self.times["pagein_s"],
                "pageout_s": self.times["pageout_s"], "computes": self.computes,
                "recomputes": self.recomputes, "pageins": self.pageins, "pageouts": self.pageouts,
                "bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
                "files_written": self.files_written, "disk_peak_bytes": self.disk_peak_bytes,
                "activation_peak_bytes": led.peak_values,
                "saved_state_peak_bytes": led.peak_saved_state,
                "ledger_peak_bytes": led.peak_total, "stage_peaks": list(led.stage_peaks),
                "param_bytes": self.m.param_bytes(),
                "audit_excess_bytes": self.audit_excess if self.audit else None}


# --- comparison ---------------------------------------------------------------------------------

def _compare(ref, got, what, tolerance):
    """(max abs difference, bit-identical?) over dicts of tensors; raises on a mismatch."""
    worst, exact = 0.0, True
    for q in sorted(ref):
        a, b = ref[q], got.get(q)
        if a is None and b is None:
            continue
        if a is None or b is None:
            raise ExecutionError("%s of %s: present in one iteration only" % (what, q))
        if a.shape != b.shape:
            raise ExecutionError("%s of %s: shape %s vs %s" % (what, q, tuple(a.shape), tuple(b.shape)))
        if torch.equal(a, b):
            continue
        exact = False
        d = (a.double() - b.double()).abs().max().item() if a.is_floating_point() else \
            float((a != b).sum().item())
        worst = max(worst, d)
        scale = max(a.double().abs().max().item(), 1e-30) if a.is_floating_point() else 1.0
        if tolerance is None or d > tolerance * scale:
            raise ExecutionError("%s of %s differ from the plain iteration (max |diff| %.3g, relative "
                                 "%.3g%s)" % (what, q, d, d / scale,
                                              "" if tolerance is None else ", tolerance %g" % tolerance))
    return worst, exact


# --- the request ---------------------------------------------------------------------------------

def run_request(req, meter=None):
    """Run the ``execute`` request: ``iterations`` scheduled iterations (after ``warmups``), each
    checked against a plain iteration from the same state. Returns the measured figures; raises
    ExecutionError / StorageError (the run directory is removed in every case)."""
    device = req.get("device", "cpu")
    program, plan = req["program"], req["plan"]
    storage = os.path.expanduser(req["storage_path"])
    tolerance = req.get("tolerance")
    iterations, warmups = int(req.get("iterations", 1)), int(req.get("warmups", 1))
    deterministic = bool(req.get("deterministic", True))
    if req.get("create_storage") and not os.path.isdir(storage):
        try:
            os.makedirs(storage)
        except OSError as e:
            raise StorageError("cannot create the storage path %s: %s" % (storage, e))
    if not os.path.isdir(storage):
        raise StorageError("storage path %s does not exist on the device; create it or set "
                           "storage_path in the inventory" % storage)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExecutionError("compute unit %s is not available on this device" % device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    run_dir = os.path.join(storage, "costdb-run-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8]))
    try:
        os.mkdir(run_dir)
    except OSError as e:
        raise StorageError("cannot create the run directory in %s: %s" % (storage, e))
    results = []
    try:
        torch.manual_seed(int(req.get("seed", 0)) + 1)
        model = Model(program, device, int(req.get("seed", 0)))
        for it in range(warmups + iterations):
            results.append(_one_iteration(model, plan, run_dir, device, tolerance, meter,
                                          warmup=it < warmups, audit=bool(req.get("audit"))))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        torch.use_deterministic_algorithms(prev_det)
    left = os.path.exists(run_dir)
    measured = [r for r in results if not r["warmup"]]
    out = {"iterations": measured, "warmups": warmups, "device": device,
           "torch_version": torch.__version__, "threads": torch.get_num_threads(),
           "deterministic": deterministic, "run_dir": run_dir, "run_dir_removed": not left,
           "python": sys.version.split()[0]}
    return out


def _one_iteration(model, plan, run_dir, device, tolerance, meter, warmup, audit=False):
    snap = model.snapshot()
    rng = torch.get_rng_state()
    gc.collect()
    _trim_heap()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _status_kib("VmRSS")
        rss_reset = _reset_peak_rss()
    io0 = _io_counters()
    ex = Executor(model, plan, run_dir, device, audit=audit)
    if meter is not None:
        meter.start()
    t0 = time.perf_counter()
    grads = ex.run()
    _sync(device)
    wall = time.perf_counter() - t0
    energy = meter.stop() if meter is not None else None
    io1 = _io_counters()
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
        peak_kind = "cuda_max_memory_allocated"
    else:
        peak = _status_kib("VmHWM") if rss_reset else None
        peak_kind = "rss_hwm" if rss_reset else None
    stats = ex.stats()
    got_params = dict((q, p.detach().clone()) for q, p in model.params.items())
    got_buffers = dict((q, b.clone()) for q, b in model.buffers.items())
    got_grads = dict(grads)
    del ex, grads
    # the reference: the same state, the same random state, a plain iteration
    model.restore(snap)
    torch.set_rng_state(rng)
    _sync(device)
    t0 = time.perf_counter()
    ref_grads = plain_iteration(model)
    _sync(device)
    plain_s = time.perf_counter() - t0
    ref_params = dict((q, p.detach()) for q, p in model.params.items())
    d_g, e_g = _compare(ref_grads, got_grads, "gradients", tolerance)
    d_p, e_p = _compare(ref_params, got_params, "updated parameters", tolerance)
    d_b, e_b = _compare(dict(model.buffers), got_buffers, "buffers", tolerance)
    # continue from the scheduled iteration's state (equal to the reference's)
    with torch.no_grad():
        for q, p in model.params.items():
            p.copy_(got_params[q])
        for q, b in model.buffers.items():
            b.copy_(got_buffers[q])
    stats.update({
        "warmup": warmup, "runtime_s": wall, "plain_runtime_s": plain_s, "energy_j": energy,
        "energy_sensor": getattr(meter, "name", None) if meter is not None else None,
        "check": {"bit_exact": bool(e_g and e_p and e_b), "max_abs_diff": max(d_g, d_p, d_b),
                  "tolerance": tolerance,
                  "tensors": len(ref_grads) + len(ref_params) + len(got_buffers)},
        "process_peak_bytes": peak, "process_base_bytes": base, "process_peak_kind": peak_kind,
        "io": dict((k, io1.get(k, 0) - io0.get(k, 0)) for k in io1)})
    return stats


# --- the storage request: paging speed of the storage path ---------------------------------------

def measure_storage(req):
    """Write ``total_bytes`` in ``block_bytes`` writes to a file under the storage path (flushed
    and fsync-ed), drop it from the page cache (``posix_fadvise DONTNEED``), read it back; and
    time small (4 KiB) fsync-ed writes and reads for the latency. The file is removed."""
    storage = os.path.expanduser(req["storage_path"])
    if req.get("create_storage") and not os.path.isdir(storage):
        os.makedirs(storage)
    if not os.path.isdir(storage):
        raise StorageError("storage path %s does not exist on the device" % storage)
    total, block = int(req.get("total_bytes", 16 << 20)), int(req.get("block_bytes", 1 << 20))
    small, reps = 4096, int(req.get("latency_samples", 20))
    path = os.path.join(storage, "costdb-storage-%d-%s.bin" % (os.getpid(), uuid.uuid4().hex[:8]))
    data = os.urandom(block)
    samples = {"write_s": [], "read_s": [], "small_write_s": [], "small_read_s": []}
    try:
        for _ in range(int(req.get("repeats", 3))):
            t0 = time.perf_counter()
            with open(path, "wb") as f:
                left = total
                while left > 0:
                    n = min(block, left)
                    f.write(data[:n])
                    left -= n
                f.flush()
                os.fsync(f.fileno())
            samples["write_s"].append(time.perf_counter() - t0)
            _drop_cache(path)
            buf = bytearray(block)
            t0 = time.perf_counter()
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
            samples["read_s"].append(time.perf_counter() - t0)
        chunk = data[:small]
        for _ in range(reps):
            t0 = time.perf_counter()
            with open(path, "wb") as f:
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            samples["small_write_s"].append(time.perf_counter() - t0)
            _drop_cache(path)
            t0 = time.perf_counter()
            with open(path, "rb", buffering=0) as f:
                f.read(small)
            samples["small_read_s"].append(time.perf_counter() - t0)
    except (IOError, OSError) as e:
        raise StorageError("measuring storage at %s failed: %s" % (storage, e))
    finally:
        try:
            os.remove(path)
        except OSError:
            pass

    def med(v):
        v = sorted(v)
        return v[len(v) // 2]
    w_lat, r_lat = med(samples["small_write_s"]), med(samples["small_read_s"])
    w, r = med(samples["write_s"]), med(samples["read_s"])
    return {"total_bytes": total, "block_bytes": block, "path": storage,
            "write_bytes_per_s": total / max(w - w_lat, 1e-9), "read_bytes_per_s": total / max(r - r_lat, 1e-9),
            "write_latency_s": w_lat, "read_latency_s": r_lat, "samples": samples,
            "page_cache_dropped": hasattr(os, "posix_fadvise")}


def _drop_cache(path):
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
