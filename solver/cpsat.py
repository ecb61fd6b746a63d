"""Retention-interval formulation (Moccasin-style) with paging, solved by OR-Tools CP-SAT.

The same problem as :mod:`solver.milp` (integrated rematerialisation + paging, energy objective,
RAM budget with fixed memory and workspace, deadline with paging time, compatibility mode), but
with O(n) variables per value instead of O(n^2) stage x node binaries (Bartan et al., "Moccasin",
ICML 2023), extended with paging. docs/solver.md has the full model; in short:

* Time is a fixed sequence of *positions*: for each stage ``t`` the compute slots ``(t, k)`` of
  the nodes the presolve allows in it (ascending, ``t`` last), then the stage boundary ``b_t``.
* Each value ``i`` has *copies* (residencies): copy 0 is its first computation at ``(i, i)``; up
  to ``K - 1`` optional recomputations (start ``(t, i)`` for a stage ``t`` the MILP presolve
  allows) and up to ``K`` optional page-ins (start ``b_t``: read during stage ``t``, resident
  from the boundary on; with ``overlap`` the buffer is held for the whole stage). ``K`` is
  ``max_computations``. A copy is an interval ``[start, end]`` of positions (the value is in RAM
  there); every copy of a value is a CP-SAT optional interval, the copies of one value do not
  overlap (a page-in also blocks the whole stage before it: a value is never paged in while
  resident), and the memory intervals of all copies (plus one-slot workspace intervals) go into
  one ``AddCumulative`` with the budget minus fixed memory as capacity.
* Dependencies: every computation of ``k`` at position ``p`` needs, for each input ``i``, a copy
  of ``i`` with ``start < p <= end`` (a boolean per pair of copies).
* Paging: ``P_i`` (page ``i`` out once, right after its first computation; in the compatibility
  mode in a stage ``po_i`` at whose start some copy of ``i`` is resident, before every page-in).
* Deadline and objective are linear in the copies' activity literals; costs are scaled to integers
  (energy and time: 1e10 units per training pass, rounded to nearest; the error is below 1e-7 of
  the total for graphs of up to ~2000 copies; memory is exact in units of the sizes' gcd).

Extraction: active copies give the stage compute / page-in lists, copies covering ``b_t`` give
``keep``; recomputations nobody uses are dropped and keeps are trimmed, which can only lower
energy and memory, and the schedule is then replayed by the simulator (the caller checks it).

Cut-off: with ``K`` computations (and ``K`` page-ins) per value, a schedule that needs more is not
representable, so the CP-SAT optimum can be above the MILP's (never below). ``K = n`` is exact.
Overlapped paging (``overlap``) is not modelled here (use the MILP).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from costdb.errors import CostdbError
from solver.milp import Formulation, Options
from solver.problem import Instance
from solver.schedule import Schedule, Stage

COST_UNITS = 1e10          # a training pass costs this many integer energy / time units
DEFAULT_MAX_COMPUTATIONS = 2


@dataclass
class CpsatSolve:
    status: str                       # optimal | feasible | infeasible | time_limit | error
    schedule: Schedule | None
    objective_j: float | None
    bound_j: float | None
    solve_time_s: float
    build_time_s: float
    n_variables: int
    n_constraints: int
    memory_unit: int
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _add_if(md: Any, ct: Any, lit: Any) -> None:
    """``ct`` enforced if ``lit``; ``ct`` may be a Python bool when both sides are constants."""
    if isinstance(ct, bool):
        if not ct:
            md.AddBoolOr([lit.Not()])
        return
    md.Add(ct).OnlyEnforceIf(lit)


class _Copy:
    __slots__ = ("node", "kind", "active", "start", "end", "stage", "occ_start", "fixed")

    def __init__(self, node: int, kind: str):
        self.node, self.kind = node, kind
        self.active: Any = True
        self.start: Any = None
        self.end: Any = None
        self.stage: Any = None
        self.occ_start: Any = None
        self.fixed = False


class CpsatModel:
    """Builds the interval model for one instance, budget and deadline."""

    def __init__(self, inst: Instance, budget: int | None, deadline: float | None,
                 options: Options, max_computations: int = DEFAULT_MAX_COMPUTATIONS):
        from ortools.sat.python import cp_model
        if options.overlap:
            raise CostdbError("the CP-SAT formulation does not model overlapped paging (--overlap); "
                              "use --method milp")
        if max_computations < 1:
            raise CostdbError(f"--max-computations must be >= 1, got {max_computations}")
        t0 = time.perf_counter()
        self.inst, self.opt, self.K = inst, options, int(max_computations)
        self.budget, self.deadline = budget, deadline
        # the MILP's presolve (exact): which stages may recompute / page in which value
        pre = Formulation(inst, budget, deadline, options, build=False)
        self.pre = pre
        n = inst.n
        self.n = n
        self.memory_unit = pre.memory_unit
        m, ws, cap = pre.m, pre.ws, pre.cap
        deps = pre.deps
        K = pre.K            # stage -> nodes computable in it (ascending, t last)
        # positions
        pos: dict[tuple[int, int], int] = {}
        bpos = [0] * n
        first_slot = [0] * n
        p = 0
        for t in range(n):
            first_slot[t] = p
            for k in K[t]:
                pos[(t, k)] = p
                p += 1
            bpos[t] = p
            p += 1
        self.pos, self.bpos, self.horizon = pos, bpos, p
        md = cp_model.CpModel()
        self.model = md
        et = max(inst.compute_energy_j, 1e-300)
        tt = max(inst.compute_runtime_s, 1e-300)
        self.e_scale = et / COST_UNITS        # joules per unit
        self.t_scale = tt / COST_UNITS

        def eu(j: float) -> int:
            return int(round(j / self.e_scale))

        def tu(s: float) -> int:
            return int(round(s / self.t_scale))

        last_need = [max(pre.need[i]) if pre.need[i] else i for i in range(n)]
        self.copies: list[list[_Copy]] = [[] for _ in range(n)]
        obj_terms: list[tuple[Any, int]] = []
        time_terms: list[tuple[Any, int]] = []
        mem_iv: list[Any] = []
        mem_dem: list[int] = []
        self.P: dict[int, Any] = {}
        self.po: dict[int, Any] = {}
        pos_tt = [pos[(t, t)] for t in range(n)]
        bprev = [bpos[t - 1] if t > 0 else 0 for t in range(n)]
        n_cons = 0
        for i in range(n):
            hi = pos_tt[last_need[i]] if pre.need[i] else pos_tt[i]
            c0 = _Copy(i, "compute")
            c0.fixed = True
            c0.start = pos_tt[i]
            c0.stage = i
            if pre.zero[i]:
                # zero-byte or always-kept value (slack presolve): resident until its last need
                c0.end = hi
                self.copies[i].append(c0)
                if m[i]:
                    mem_iv.append(md.NewIntervalVar(c0.start, hi - c0.start + 1, hi + 1, f"m{i}"))
                    mem_dem.append(m[i])
                continue
            c0.end = md.NewIntVar(c0.start, hi, f"e{i}_0")
            c0.occ_start = c0.start
            self.copies[i].append(c0)
            rst = sorted(pre.R_idx[i])
            for c in range(min(self.K - 1, len(rst))):
                cp = _Copy(i, "compute")
                cp.active = md.NewBoolVar(f"a{i}_r{c}")
                cp.stage = md.NewIntVarFromDomain(cp_model.Domain.FromValues(rst), f"st{i}_r{c}")
                lo_p = pos[(rst[0], i)]
                cp.start = md.NewIntVarFromDomain(cp_model.Domain.FromValues([pos[(t, i)] for t in rst]),
                                                  f"s{i}_r{c}")
                md.AddElement(cp.stage, [pos.get((t, i), 0) for t in range(n)], cp.start)
                cp.end = md.NewIntVar(lo_p, hi, f"e{i}_r{c}")
                cp.occ_start = cp.start
                n_cons += 1
                self.copies[i].append(cp)
                obj_terms.append((cp.active, eu(inst.nodes[i].energy_j)))
                time_terms.append((cp.active, tu(inst.nodes[i].runtime_s)))
            mst = sorted(pre.Min_idx[i])
            if mst:
                Pi = md.NewBoolVar(f"P{i}")
                self.P[i] = Pi
                obj_terms.append((Pi, eu(inst.pageout_energy(i))))
                if not options.compat:
                    time_terms.append((Pi, tu(inst.pageout_time(i))))
                else:
                    self.po[i] = md.NewIntVar(i + 1, max(i + 1, n - 1), f"po{i}")
            for c in range(min(self.K, len(mst))):
                cp = _Copy(i, "pagein")
                cp.active = md.NewBoolVar(f"a{i}_p{c}")
                cp.stage = md.NewIntVarFromDomain(cp_model.Domain.FromValues(mst), f"st{i}_p{c}")
                cp.start = md.NewIntVarFromDomain(cp_model.Domain.FromValues([bpos[t] for t in mst]),
                                                  f"s{i}_p{c}")
                md.AddElement(cp.stage, bpos, cp.start)
                cp.occ_start = md.NewIntVarFromDomain(
                    cp_model.Domain.FromValues(sorted({bprev[t] for t in mst})), f"o{i}_p{c}")
                md.AddElement(cp.stage, bprev, cp.occ_start)
                cp.end = md.NewIntVar(bpos[mst[0]], max(hi, bpos[mst[0]]), f"e{i}_p{c}")
                n_cons += 2
                md.AddImplication(cp.active, self.P[i])
                if options.compat:
                    md.Add(cp.stage > self.po[i]).OnlyEnforceIf(cp.active)
                self.copies[i].append(cp)
                obj_terms.append((cp.active, eu(inst.pagein_energy(i))))
                if not options.compat:
                    time_terms.append((cp.active, tu(inst.pagein_time(i))))
            # intervals
            occ = []
            for c, cp in enumerate(self.copies[i]):
                lit = cp.active
                if cp.fixed:
                    size = md.NewIntVar(1, hi - cp.start + 1, f"z{i}_{c}")
                    iv = md.NewIntervalVar(cp.start, size, cp.end + 1, f"iv{i}_{c}")
                    occ.append(iv)
                else:
                    size = md.NewIntVar(1, self.horizon, f"z{i}_{c}")
                    iv = md.NewOptionalIntervalVar(cp.start, size, cp.end + 1, lit, f"iv{i}_{c}")
                    if cp.kind == "pagein":
                        osz = md.NewIntVar(1, self.horizon, f"oz{i}_{c}")
                        occ.append(md.NewOptionalIntervalVar(cp.occ_start, osz, cp.end + 1, lit,
                                                             f"oc{i}_{c}"))
                    else:
                        occ.append(iv)
                n_cons += 1
                mem_iv.append(iv)
                mem_dem.append(m[i])
            if len(occ) > 1:
                md.AddNoOverlap(occ)
                n_cons += 1
            # symmetry: optional copies of one kind are used in order, earliest first
            for kind in ("compute", "pagein"):
                opt_c = [cp for cp in self.copies[i] if cp.kind == kind and not cp.fixed]
                for a, b in zip(opt_c, opt_c[1:]):
                    md.AddImplication(b.active, a.active)
                    md.Add(b.stage > a.stage).OnlyEnforceIf(b.active)
                    n_cons += 2
            if options.compat and i in self.P:
                # page out in stage po_i from a copy resident when po_i starts (and until it ends)
                srcs = []
                q_start = md.NewIntVar(0, self.horizon, f"qs{i}")
                md.AddElement(self.po[i], bprev, q_start)
                q_end = md.NewIntVar(0, self.horizon, f"qe{i}")
                md.AddElement(self.po[i], pos_tt, q_end)
                for c, cp in enumerate(self.copies[i]):
                    if cp.kind != "compute":
                        continue
                    b = md.NewBoolVar(f"src{i}_{c}")
                    if not cp.fixed:
                        md.AddImplication(b, cp.active)
                    _add_if(md, cp.start <= q_start, b)
                    _add_if(md, cp.end >= q_end, b)
                    srcs.append(b)
                    n_cons += 3
                md.Add(sum(srcs) == self.P[i])
                n_cons += 1
        # dependencies: each computation of k is covered by a copy of each input
        for k in range(n):
            for d in self.copies[k]:
                if d.kind != "compute":
                    continue
                for i in deps[k]:
                    if pre.zero[i]:
                        continue          # resident over every stage k can run in
                    lits = []
                    for c, cp in enumerate(self.copies[i]):
                        if isinstance(cp.start, int) and isinstance(d.start, int) and cp.start >= d.start:
                            continue
                        b = md.NewBoolVar(f"cov{i}_{c}_{k}")
                        if not cp.fixed:
                            md.AddImplication(b, cp.active)
                        _add_if(md, cp.start < d.start, b)
                        _add_if(md, cp.end >= d.start, b)
                        lits.append(b)
                        n_cons += 3
                    if not lits and d.fixed:
                        md.AddBoolOr([])     # cannot happen: the presolve keeps a way
                    elif d.fixed:
                        md.AddBoolOr(lits)
                    else:
                        md.AddBoolOr(lits).OnlyEnforceIf(d.active)
                    n_cons += 1
        # memory
        self.cap = cap
        if cap is not None:
            for k in range(n):
                if not ws[k]:
                    continue
                for d in self.copies[k]:
                    if d.kind != "compute":
                        continue
                    if d.fixed:
                        mem_iv.append(md.NewIntervalVar(d.start, 1, d.start + 1, f"w{k}"))
                    else:
                        mem_iv.append(md.NewOptionalIntervalVar(d.start, 1, d.start + 1, d.active,
                                                                f"w{k}_{id(d)}"))
                    mem_dem.append(ws[k])
            md.AddCumulative(mem_iv, mem_dem, max(cap, 0))
            n_cons += 1
            if cap < 0:
                md.AddBoolOr([])             # infeasible: fixed memory alone exceeds the budget
        # deadline
        if deadline is not None:
            base = sum(tu(nd.runtime_s) for nd in inst.nodes)
            lim = int(math.floor(deadline / self.t_scale))
            tt_terms = [(v, c) for v, c in time_terms if c]
            if tt_terms:
                md.Add(sum(c * v for v, c in tt_terms) <= lim - base)
            elif lim < base:
                md.AddBoolOr([])             # even the plain computation misses the deadline
        self.obj_const_j = inst.compute_energy_j
        terms = [(v, c) for v, c in obj_terms if c]
        if terms:
            md.Minimize(sum(c * v for v, c in terms))
        self.n_variables = len(md.Proto().variables)
        self.n_constraints = len(md.Proto().constraints)
        self.build_time_s = time.perf_counter() - t0

    # --- warm start ------------------------------------------------------------------------
    def add_hint(self, sched: Schedule) -> bool:
        """Hint the copies of a schedule (a CP-SAT solution hint; it may be partial or repaired
        by the solver). False if the schedule needs more copies than the model has."""
        n, deps = self.n, self.pre.deps
        acq: list[list[list[Any]]] = [[] for _ in range(n)]     # per value: [kind, stage, start, end]
        cur: dict[int, list[Any]] = {}
        for t, st in enumerate(sched.stages):
            for k in st.compute:
                p = self.pos.get((t, k))
                if p is None:
                    return False
                for i in deps[k]:
                    if i in cur:
                        cur[i][3] = max(cur[i][3], p)
                a = ["compute", t, p, p]
                acq[k].append(a)
                cur[k] = a
            keep = set(st.keep)
            for i in st.pagein:
                if t not in self.pre.Min_idx[i]:
                    return False
                a = ["pagein", t, self.bpos[t], self.bpos[t]]
                acq[i].append(a)
                cur[i] = a
            for i in list(cur):
                if i in keep:
                    cur[i][3] = max(cur[i][3], self.bpos[t])
                else:
                    del cur[i]
        md = self.model
        hints: list[tuple[Any, int]] = []
        for i in range(n):
            comps = [a for a in acq[i] if a[0] == "compute"]
            pins = [a for a in acq[i] if a[0] == "pagein"]
            cc = [c for c in self.copies[i] if c.kind == "compute"]
            pc = [c for c in self.copies[i] if c.kind == "pagein"]
            if len(comps) > len(cc) or len(pins) > len(pc):
                return False
            if self.pre.zero[i]:
                continue
            for cps, got in ((cc, comps), (pc, pins)):
                for j, cp in enumerate(cps):
                    if j < len(got):
                        a = got[j]
                        if not cp.fixed:
                            hints += [(cp.active, 1), (cp.stage, a[1]), (cp.start, a[2])]
                        hints.append((cp.end, max(a[3], a[2])))
                    elif not cp.fixed:
                        hints.append((cp.active, 0))
            if i in self.P:
                hints.append((self.P[i], 1 if pins else 0))
        hints = [(v, x) for v, x in hints if not isinstance(v, (int, bool))]
        full = self._complete(hints)
        if full is None:
            for v, x in hints:
                md.AddHint(v, x)
        else:
            md.ClearHints()
            for k, x in enumerate(full):
                md.AddHint(md.GetIntVarFromProtoIndex(k), x)
        return True

    def _complete(self, hints: list[tuple[Any, int]], time_limit: float = 5.0) -> list[int] | None:
        """All variables' values of the hinted schedule: CP-SAT rarely completes a partial hint
        of this model by itself (ResNet-18: no solution in 15 s from a feasible start), but with
        the hinted decisions fixed the rest (coverage literals, sizes) is found in ~0.1 s."""
        from ortools.sat.python import cp_model
        m2 = self.model.clone()
        m2.ClearHints()
        for v, x in hints:
            m2.Add(m2.GetIntVarFromProtoIndex(v.Index()) == x)
        m2.ClearObjective()
        s = cp_model.CpSolver()
        s.parameters.max_time_in_seconds = time_limit
        s.parameters.num_workers = 2
        st = s.Solve(m2)
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        return [int(s.Value(m2.GetIntVarFromProtoIndex(k))) for k in range(len(m2.Proto().variables))]

    # --- solve -----------------------------------------------------------------------------
    def solve(self, time_limit: float | None, gap: float, threads: int | None,
              msg: bool = False) -> CpsatSolve:
        from ortools.sat.python import cp_model
        s = cp_model.CpSolver()
        if time_limit is not None:
            s.parameters.max_time_in_seconds = max(0.05, float(time_limit))
        s.parameters.relative_gap_limit = float(gap)
        s.parameters.num_workers = int(threads) if threads else 8
        s.parameters.log_search_progress = bool(msg)
        t0 = time.perf_counter()
        st = s.Solve(self.model)
        wall = time.perf_counter() - t0
        name = s.StatusName(st)
        has = st in (cp_model.OPTIMAL, cp_model.FEASIBLE)
        status = {cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible",
                  cp_model.INFEASIBLE: "infeasible", cp_model.UNKNOWN: "time_limit"}.get(st, "error")
        sched = self._extract(s) if has else None
        obj = bound = None
        if has:
            obj = self.obj_const_j + s.ObjectiveValue() * self.e_scale
            bound = self.obj_const_j + s.BestObjectiveBound() * self.e_scale
        return CpsatSolve(status, sched, obj, bound, wall, self.build_time_s, self.n_variables,
                          self.n_constraints, self.memory_unit, name,
                          {"branches": s.NumBranches(), "conflicts": s.NumConflicts(),
                           "workers": s.parameters.num_workers})

    def _extract(self, s: Any) -> Schedule:
        from solver.solve import trim_keeps
        n = self.n

        def val(v: Any) -> int:
            return int(v) if isinstance(v, (int, bool)) else int(s.Value(v))

        compute = [{t} for t in range(n)]
        pagein: list[set[int]] = [set() for _ in range(n)]
        keep: list[set[int]] = [set() for _ in range(n)]
        pageout: list[set[int]] = [set() for _ in range(n)]
        for i in range(n):
            for cp in self.copies[i]:
                if not val(cp.active):
                    continue
                t = val(cp.stage)
                a, b = val(cp.start), val(cp.end)
                if cp.kind == "compute":
                    compute[t].add(i)
                else:
                    pagein[t].add(i)
                for u in range(t, n):
                    if a <= self.bpos[u] <= b:
                        keep[u].add(i)
                    elif self.bpos[u] > b:
                        break
            if i in self.P and val(self.P[i]):
                pageout[val(self.po[i]) if self.opt.compat else i].add(i)
        deps = self.pre.deps
        # drop recomputations nobody uses (possible in a non-optimal incumbent)
        changed = True
        while changed:
            changed = False
            for t in range(n):
                for i in sorted(compute[t] - {t}, reverse=True):
                    used = any(i in deps[k] for k in compute[t] if k > i)
                    if not used and i not in keep[t]:
                        compute[t].discard(i)
                        changed = True
        stages = tuple(Stage(tuple(sorted(compute[t])), tuple(sorted(keep[t])) if t + 1 < n else (),
                             tuple(sorted(pagein[t])), tuple(sorted(pageout[t]))) for t in range(n))
        # a page-in nobody uses later (only possible in a non-optimal incumbent) is kept as is:
        # the simulator accounts for it
        return trim_keeps(self.inst, Schedule(stages, compat=self.opt.compat, overlap=False))
