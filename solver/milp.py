"""The POET MILP (integrated rematerialization + paging) built with PuLP, with presolve.

Variables, per stage ``t`` and node ``i`` (docs/solver.md has the full formulation):

* ``R[t,i]``  compute ``i`` in stage ``t`` (``R[t,t] = 1`` is a constant; ``i < t`` = recompute)
* ``S[t,i]``  ``i`` is in RAM when stage ``t`` starts
* ``Min[t,i]`` page ``i`` in during stage ``t`` (it is in RAM when stage ``t+1`` starts)
* ``P[i]``    page ``i`` out right after it is first computed (faithful); in the compatibility
  mode ``Mout[t,i]`` pages out a value resident at the start of stage ``t`` (published POET)
* ``F[t,i,k]`` ``i`` is freed right after ``k`` runs in stage ``t``; ``U[t,k]`` RAM in use when
  ``k`` has run (Checkmate's memory recurrence); ``tau[t]`` stage time (overlapped paging)

Presolve (all exact, i.e. optimum-preserving, unless noted): variables exist only where a value
can still be needed (``S[t,i]`` only while a consumer can still run, ``R[t,i]`` only where its
output can be used in the stage or kept), zero-byte values are kept for free, parameter /
gradient / optimizer memory is a constant taken off the budget, at most one page-out per value
(storage is never cleared), and ``S + R + Min <= 1`` (a value reaches RAM one way) removes
symmetric solutions. ``allow_bwd_remat=False`` (default in the faithful modes; a restriction,
measured in docs/benchmarks.md) never recomputes backward nodes. Costs are normalised (energy and
time to ~1e4 per training pass, memory exactly in integral units of ``memory_unit`` = the gcd of
the sizes; see :func:`exact_memory_units`) and results are reported in SI units.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pulp

from costdb.errors import CostdbError
from solver.problem import Instance
from solver.schedule import Schedule, Stage

MODES = ("integrated", "remat", "paging")
SOLVERS = ("highs", "cbc")
SCALE_TARGET = 1e4       # a training pass costs ~SCALE_TARGET energy / time units


def exact_memory_units(inst: Instance, budget: int | None, compat: bool
                       ) -> tuple[int, list[int], list[int], int | None]:
    """(unit, sizes, workspaces, capacity) in integral memory units, exactly.

    The unit is the gcd of every output and workspace size, so each size is an exact multiple and
    ``sum(sizes) <= budget - fixed`` holds iff ``sum(sizes / unit) <= floor((budget - fixed) /
    unit)``: no schedule that fits the real budget is cut off and none that does not is admitted
    (an earlier version rounded sizes up to a power of two, which cut real schedules off)."""
    g = 0
    for nd in inst.nodes:
        g = math.gcd(g, int(nd.output_bytes))
        g = math.gcd(g, int(nd.workspace_bytes))
    unit = max(1, g)
    m = [int(nd.output_bytes) // unit for nd in inst.nodes]
    ws = [int(nd.workspace_bytes) // unit for nd in inst.nodes]
    cap = None
    if budget is not None:
        cap = (int(budget) - (0 if compat else int(inst.fixed_bytes))) // unit
    return unit, m, ws, cap


@dataclass
class Options:
    mode: str = "integrated"
    compat: bool = False
    overlap: bool = False
    allow_bwd_remat: bool | None = None   # None: True in compat mode, False otherwise
    symmetry_cuts: bool = True
    prune: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CostdbError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.compat and self.overlap:
            raise CostdbError("--overlap cannot be combined with the compatibility mode (the "
                              "published formulation keeps paging time out of the deadline)")
        if self.allow_bwd_remat is None:
            self.allow_bwd_remat = self.compat

    @property
    def remat(self) -> bool:
        return self.mode in ("integrated", "remat")

    @property
    def paging(self) -> bool:
        return self.mode in ("integrated", "paging")


class Formulation:
    """Builds the PuLP model for one instance, budget and deadline."""

    def __init__(self, inst: Instance, budget: int | None, deadline: float | None,
                 options: Options, objective: str = "energy", slack_presolve: bool = True,
                 build: bool = True):
        self.inst, self.opt = inst, options
        self.budget, self.deadline = budget, deadline
        self.objective = objective
        self.slack_presolve = slack_presolve
        t0 = time.perf_counter()
        n = inst.n
        self.n = n
        nodes = inst.nodes
        self.deps = [sorted(set(nd.deps)) for nd in nodes]
        self.succ = inst.successors()
        # --- scaling -----------------------------------------------------------------------
        tot_e = max(inst.compute_energy_j, 1e-300)
        tot_t = max(inst.compute_runtime_s, 1e-300)
        self.e_scale = tot_e / SCALE_TARGET
        self.t_scale = tot_t / SCALE_TARGET
        sizes = [nd.output_bytes for nd in nodes]
        unit, self.m, self.ws, self.cap = exact_memory_units(inst, budget, options.compat)
        self.memory_unit = unit
        self.fixed = 0 if options.compat else inst.fixed_bytes
        self._presolve()
        self.presolve_time_s = time.perf_counter() - t0
        if not build:          # the CP-SAT formulation reuses the presolved index sets only
            self.build_time_s = self.presolve_time_s
            return
        with warnings.catch_warnings():
            # PuLP 3.3 deprecates direct LpVariable construction (PuLP 4 API); still supported
            warnings.simplefilter("ignore", DeprecationWarning)
            self._build()
        self.build_time_s = time.perf_counter() - t0

    # --- which variables exist -----------------------------------------------------------
    def _presolve(self) -> None:
        n, opt, inst = self.n, self.opt, self.inst
        rematable = [opt.remat and (opt.allow_bwd_remat or not nd.is_backward) for nd in inst.nodes]
        self.zero = [self.m[i] == 0 for i in range(n)]
        S: dict[int, set[int]] = {i: set() for i in range(n)}     # node -> stages t with S[t,i]
        R: dict[int, set[int]] = {i: set() for i in range(n)}     # node -> stages t (t > i) with R[t,i]
        last_r = [-1] * n
        self.need: dict[int, set[int]] = {}
        for i in reversed(range(n)):
            # i is needed in stage t if a consumer j runs in t: j's own stage or a recompute of j
            need_stages: set[int] = set()
            for j in self.succ[i]:
                need_stages.add(j)
                need_stages |= R[j]
            if not opt.prune:
                need_stages = set(range(i + 1, n)) if self.succ[i] else set()
            last_need = max(need_stages) if need_stages else i
            S[i] = set(range(i + 1, last_need + 1))
            if rematable[i] and not self.zero[i]:
                # recompute in t if consumed in t (by t or a recompute) or kept for later
                r = {t for t in need_stages if t > i}
                r |= {t for t in range(i + 1, n) if t + 1 in S[i]}
                if not opt.prune:
                    r = set(range(i + 1, n))
                R[i] = r
                last_r[i] = max(r) if r else -1
            self.need[i] = need_stages
        self.S_idx, self.R_idx = S, R
        self.K = {t: sorted([t] + [i for i in range(t) if t in R[i]]) for t in range(n)}
        paging = opt.paging
        self.Min_idx: dict[int, set[int]] = {i: set() for i in range(n)}
        self.P_idx: set[int] = set()
        self.Mout_idx: dict[int, set[int]] = {i: set() for i in range(n)}
        if paging:
            for i in range(n):
                if self.zero[i]:
                    continue
                first = i + 2 if opt.compat else i + 1
                # just-in-time page-in: read a value during the stage before one that consumes it
                # (reading earlier only holds RAM longer; same energy and time)
                mins = {t - 1 for t in self.need[i] if t - 1 >= first}
                if not opt.prune:
                    mins = {t - 1 for t in S[i] if t - 1 >= first}
                if not mins:
                    continue
                self.Min_idx[i] = mins
                if opt.compat:
                    self.Mout_idx[i] = {s for s in S[i] if s < max(mins)}
                else:
                    self.P_idx.add(i)
        self._slack_presolve()

    def _slack_presolve(self) -> None:
        """Stages whose worst case (every value that could be in RAM, once) fits the budget need no
        memory accounting; a value whose whole lifetime lies in such stages is simply kept
        (no recomputation, no paging) -- exact, since keeping it can never break the budget."""
        n = self.n
        self.slack = [True] * n
        self.always_kept = set()
        if self.cap is None:
            return
        resident: list[set[int]] = [set() for _ in range(n)]
        for i in range(n):
            for t in self.S_idx[i] | self.R_idx[i]:
                resident[t].add(i)
            if self.opt.overlap:
                for t in self.Min_idx[i]:
                    resident[t].add(i)
        for t in range(n):
            worst = sum(self.m[i] for i in resident[t]) + self.m[t] + max(self.ws[k] for k in self.K[t])
            self.slack[t] = worst <= self.cap
        if not self.opt.prune or not self.slack_presolve:
            self.slack = [False] * n
            return
        for i in range(n):
            if self.zero[i] or not self.S_idx[i]:
                continue
            if all(self.slack[t] for t in self.S_idx[i] | self.R_idx[i] | self.Min_idx[i]):
                self.always_kept.add(i)
        for i in self.always_kept:
            self.zero[i] = True          # kept for free from now on: S constant 1
            self.R_idx[i] = set()
            self.Min_idx[i] = set()
            self.P_idx.discard(i)
            self.Mout_idx[i] = set()
        self.K = {t: sorted([t] + [i for i in range(t) if t in self.R_idx[i]]) for t in range(n)}

    # --- model -------------------------------------------------------------------------------
    def _build(self) -> None:
        n, opt, inst = self.n, self.opt, self.inst
        prob = pulp.LpProblem("poet", pulp.LpMinimize)
        self.prob = prob
        B = pulp.LpBinary
        S = {(t, i): pulp.LpVariable(f"S_{t}_{i}", cat=B) for i in range(n) if not self.zero[i]
             for t in sorted(self.S_idx[i])}
        R = {(t, i): pulp.LpVariable(f"R_{t}_{i}", cat=B) for i in range(n) for t in sorted(self.R_idx[i])}
        Min = {(t, i): pulp.LpVariable(f"Min_{t}_{i}", cat=B) for i in range(n) for t in sorted(self.Min_idx[i])}
        P = {i: pulp.LpVariable(f"P_{i}", cat=B) for i in sorted(self.P_idx)}
        Mout = {(t, i): pulp.LpVariable(f"Mout_{t}_{i}", cat=B) for i in range(n) for t in sorted(self.Mout_idx[i])}
        self.S, self.R, self.Min, self.P, self.Mout = S, R, Min, P, Mout
        cons: list[Any] = []

        def s_term(t: int, i: int) -> tuple[Any, float]:
            """S[t,i] as (var or None, constant)."""
            if self.zero[i]:
                return None, (1.0 if t in self.S_idx[i] else 0.0)
            return S.get((t, i)), 0.0

        def r_term(t: int, i: int) -> tuple[Any, float]:
            if i == t:
                return None, 1.0
            return R.get((t, i)), 0.0

        def expr(terms: list[tuple[Any, float]], const: float = 0.0):
            d: dict[Any, float] = {}
            for v, c in terms:
                if v is not None and c != 0:
                    d[v] = d.get(v, 0.0) + c
            e = pulp.LpAffineExpression(list(d.items()))
            e.constant = const
            return e

        # dependencies: an input is in RAM (kept or computed earlier in the stage) when k runs
        for t in range(n):
            for k in self.K[t]:
                rk, rk_c = r_term(t, k)
                for i in self.deps[k]:
                    sv, sc = s_term(t, i)
                    rv, rc = r_term(t, i)
                    if sc + rc >= 1:
                        continue
                    # rk <= S + R
                    lhs = expr([(rk, 1.0), (sv, -1.0), (rv, -1.0)], rk_c - sc - rc)
                    cons.append(lhs <= 0)
        # keep: S[t+1,i] <= S[t,i] + R[t,i] + Min[t,i]
        for (t1, i), v in S.items():
            t = t1 - 1
            if i == t:
                continue
            sv, _ = s_term(t, i)
            rv, _ = r_term(t, i)
            mv = Min.get((t, i))
            cons.append(expr([(v, 1.0), (sv, -1.0), (rv, -1.0), (mv, -1.0)]) <= 0)
        # one way into RAM (symmetry): S + R + Min <= 1
        if opt.symmetry_cuts:
            for t in range(n):
                for i in range(t):
                    if self.zero[i]:
                        continue
                    terms = [(S.get((t, i)), 1.0), (R.get((t, i)), 1.0), (Min.get((t, i)), 1.0)]
                    if sum(1 for v, _ in terms if v is not None) >= 2:
                        cons.append(expr(terms) <= 1)
        # paging
        for (t, i), v in Min.items():
            cons.append(v - S[(t + 1, i)] <= 0)          # only page in what is then kept
            if opt.compat:
                outs = [(Mout[(s, i)], -1.0) for s in sorted(self.Mout_idx[i]) if s < t]
                cons.append(expr([(v, 1.0)] + outs) <= 0)
            else:
                cons.append(v - P[i] <= 0)
        for (s, i), v in Mout.items():
            cons.append(v - S[(s, i)] <= 0)
        for i in range(n):
            if len(self.Mout_idx[i]) > 1:
                cons.append(expr([(Mout[(s, i)], 1.0) for s in self.Mout_idx[i]]) <= 1)
        # frees and memory
        F: dict[tuple[int, int, int], Any] = {}
        U: dict[tuple[int, int], Any] = {}
        self.F, self.U = F, U
        if self.cap is not None:
            if self.cap < 0:
                self.cap = -1
            cap = max(self.cap, 0)
            for t in range(n):
                if self.slack[t]:
                    continue
                Kt = self.K[t]
                kset = set(Kt)
                for k in Kt:
                    for i in self.deps[k]:
                        if self.m[i] == 0 or (self.zero[i] and t + 1 in self.S_idx[i]):
                            continue             # nothing to free / kept for free
                        later = [j for j in self.succ[i] if j > k and j in kset]
                        if t in later:
                            continue             # t always runs: i survives k
                        f = pulp.LpVariable(f"F_{t}_{i}_{k}", cat=B)
                        F[(t, i, k)] = f
                        if k != t:
                            cons.append(f - R[(t, k)] <= 0)
                        nxt = S.get((t + 1, i))
                        if nxt is not None:
                            cons.append(f + nxt <= 1)
                        for j in later:
                            cons.append(f + R[(t, j)] <= 1)
                prev = None
                for k in Kt:
                    u = pulp.LpVariable(f"U_{t}_{k}", lowBound=0, upBound=cap)
                    U[(t, k)] = u
                    rk, rkc = r_term(t, k)
                    terms = [(u, 1.0), (rk, -float(self.m[k]))]
                    const = -rkc * self.m[k]
                    if prev is None:
                        for i in range(t):
                            if self.m[i] == 0:
                                continue
                            sv, sc = s_term(t, i)
                            terms.append((sv, -float(self.m[i])))
                            const -= sc * self.m[i]
                            if opt.overlap and (t, i) in Min:
                                terms.append((Min[(t, i)], -float(self.m[i])))
                    else:
                        terms.append((U[(t, prev)], -1.0))
                        for i in self.deps[prev]:
                            f = F.get((t, i, prev))
                            if f is not None:
                                terms.append((f, float(self.m[i])))
                    cons.append(expr(terms, const) == 0)
                    if self.ws[k]:
                        cons.append(expr([(u, 1.0), (rk, float(self.ws[k]))], rkc * self.ws[k]) <= cap)
                    prev = k
        # deadline
        rt = [nd.runtime_s / self.t_scale for nd in inst.nodes]
        tin = [inst.pagein_time(i) / self.t_scale for i in range(n)]
        tout = [inst.pageout_time(i) / self.t_scale for i in range(n)]
        self.tau: dict[int, Any] = {}
        time_terms: list[tuple[Any, float]] = []
        time_const = 0.0
        if opt.overlap:
            for t in range(n):
                tau = pulp.LpVariable(f"tau_{t}", lowBound=0)
                self.tau[t] = tau
                comp = [(R[(t, i)], -rt[i]) for i in self.K[t] if i != t]
                cons.append(expr([(tau, 1.0)] + comp, -rt[t]) >= 0)
                page = [(Min[(t, i)], -tin[i]) for i in range(t) if (t, i) in Min]
                if t in P:
                    page.append((P[t], -tout[t]))
                if page:
                    cons.append(expr([(tau, 1.0)] + page) >= 0)
                time_terms.append((tau, 1.0))
        else:
            time_const = sum(rt)
            time_terms += [(v, rt[i]) for (t, i), v in R.items()]
            if not opt.compat:
                time_terms += [(v, tin[i]) for (t, i), v in Min.items()]
                time_terms += [(v, tout[i]) for i, v in P.items()]
        self.time_expr = expr(time_terms, time_const)
        if self.deadline is not None and self.objective != "runtime":
            cons.append(self.time_expr <= self.deadline / self.t_scale)
        # objective
        e = [nd.energy_j / self.e_scale for nd in inst.nodes]
        ein = [inst.pagein_energy(i) / self.e_scale for i in range(n)]
        eout = [inst.pageout_energy(i) / self.e_scale for i in range(n)]
        obj_terms = [(v, e[i]) for (t, i), v in R.items()]
        obj_terms += [(v, ein[i]) for (t, i), v in Min.items()]
        obj_terms += [(v, eout[i]) for i, v in P.items()]
        obj_terms += [(v, eout[i]) for (t, i), v in Mout.items()]
        self.energy_expr = expr(obj_terms, sum(e))
        if self.objective == "energy":
            prob += self.energy_expr
        elif self.objective == "runtime":
            prob += self.time_expr
        else:
            raise ValueError(self.objective)
        for k, c in enumerate(cons):
            prob.addConstraint(c, f"c{k}")
        self.n_memory_stages = sum(1 for t in range(n) if not self.slack[t]) if self.cap is not None else 0
        self.n_variables = len(prob.variables())
        self.n_constraints = len(cons)

    # --- solutions <-> schedules --------------------------------------------------------------
    def schedule(self) -> Schedule:
        """The schedule encoded by the current variable values."""
        n = self.n

        def on(v: Any) -> bool:
            return v is not None and v.varValue is not None and v.varValue > 0.5

        stages = []
        for t in range(n):
            compute = tuple(k for k in self.K[t] if k == t or on(self.R.get((t, k))))
            keep = []
            if t + 1 < n:
                for i in range(t + 1):
                    if self.zero[i]:
                        if t + 1 in self.S_idx[i]:
                            keep.append(i)
                    elif on(self.S.get((t + 1, i))):
                        keep.append(i)
            pagein = tuple(i for i in range(t) if on(self.Min.get((t, i))))
            if self.opt.compat:
                pageout = tuple(i for i in range(t) if on(self.Mout.get((t, i))))
            else:
                pageout = (t,) if on(self.P.get(t)) else ()
            stages.append(Stage(compute, tuple(keep), pagein, pageout))
        return Schedule(tuple(stages), compat=self.opt.compat, overlap=self.opt.overlap)

    def set_start(self, sched: Schedule) -> bool:
        """Load a schedule as the initial solution (warm start). False if it uses decisions the
        presolved model does not have."""
        vals: dict[Any, float] = {v: 0.0 for v in self.prob.variables()}
        ram: set[int] = set()
        for t, st in enumerate(sched.stages):
            for i in ram:
                if self.zero[i]:
                    continue
                v = self.S.get((t, i))
                if v is None:
                    return False
                vals[v] = 1.0
            for k in st.compute:
                if k != t:
                    v = self.R.get((t, k))
                    if v is None:
                        return False
                    vals[v] = 1.0
            for i in st.pagein:
                v = self.Min.get((t, i))
                if v is None:
                    return False
                vals[v] = 1.0
            for i in st.pageout:
                v = self.Mout.get((t, i)) if self.opt.compat else self.P.get(i)
                if v is None:
                    return False
                vals[v] = 1.0
            keep = set(st.keep)
            comp = list(st.compute)
            if self.cap is not None and not self.slack[t]:
                prev = None
                # memory recurrence with maximal frees
                u = sum(self.m[i] for i in ram)
                if self.opt.overlap:
                    u += sum(self.m[i] for i in st.pagein)
                cset = set(comp)
                for k in self.K[t]:
                    if prev is not None:
                        for i in self.deps[prev]:
                            f = self.F.get((t, i, prev))
                            if f is None:
                                continue
                            later = [j for j in self.succ[i] if j > prev and j in cset]
                            if prev in cset and not later and i not in keep:
                                vals[f] = 1.0
                                u -= self.m[i]
                    if k in cset:
                        u += self.m[k]
                    if u > max(self.cap, 0):
                        return False       # cannot happen for a schedule the simulator accepted
                    vals[self.U[(t, k)]] = max(u, 0.0)
                    prev = k
            ram = keep
        if self.tau:
            rt = [nd.runtime_s / self.t_scale for nd in self.inst.nodes]
            for t, st in enumerate(sched.stages):
                c = sum(rt[k] for k in st.compute)
                p = sum(self.inst.pagein_time(i) / self.t_scale for i in st.pagein) + \
                    sum(self.inst.pageout_time(i) / self.t_scale for i in st.pageout)
                vals[self.tau[t]] = max(c, p)
        for v, x in vals.items():
            v.setInitialValue(x)
        return True


# --- solvers -------------------------------------------------------------------------------------

_BANNER_DONE = False


def _quiet_banner() -> None:
    """highspy prints its banner to stdout (C level) when the first Highs object is created;
    create that one with stdout pointed at /dev/null so CLI output stays clean."""
    global _BANNER_DONE
    if _BANNER_DONE:
        return
    import sys
    import highspy
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    _BANNER_DONE = True


class _HiGHS(pulp.HiGHS):
    """PuLP's HiGHS interface with a bulk model build, a warm start and the MIP bound kept."""

    def __init__(self, warm: bool = False, wall_deadline: float | None = None, **kw: Any):
        super().__init__(**kw)
        self.warm = warm
        self.wall_deadline = wall_deadline     # perf_counter() value by which run() must end
        self.info: dict[str, Any] = {}

    def createAndConfigureSolver(self, lp):  # noqa: N802
        _quiet_banner()
        super().createAndConfigureSolver(lp)

    def buildSolverModel(self, lp):  # noqa: N802 (PuLP's name)
        import highspy
        h = lp.solverModel
        inf = highspy.kHighsInf
        variables = lp.variables()
        nv = len(variables)
        cost = np.zeros(nv)
        lb = np.empty(nv)
        ub = np.empty(nv)
        for k, v in enumerate(variables):
            v.index = k
            lb[k] = -inf if v.lowBound is None else v.lowBound
            ub[k] = inf if v.upBound is None else v.upBound
        for v, c in lp.objective.items():
            cost[v.index] = c
        h.addCols(nv, cost, lb, ub, 0, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32),
                  np.zeros(0))
        ints = np.array([v.index for v in variables if v.cat == pulp.LpInteger], dtype=np.int32)
        if len(ints) and self.mip:
            h.changeColsIntegrality(len(ints), ints,
                                    np.array([highspy.HighsVarType.kInteger] * len(ints)))
        if lp.objective.constant:
            h.changeObjectiveOffset(lp.objective.constant)
        cons = list(lp._constraints.values())
        lo = np.empty(len(cons))
        up = np.empty(len(cons))
        starts = np.empty(len(cons), dtype=np.int32)
        idx: list[int] = []
        val: list[float] = []
        for r, c in enumerate(cons):
            c.index = r
            starts[r] = len(idx)
            for v, a in c.items():
                if a != 0:
                    idx.append(v.index)
                    val.append(a)
            l_, u_ = c.getLb(), c.getUb()
            lo[r] = -inf if l_ is None else l_
            up[r] = inf if u_ is None else u_
        if cons:
            h.addRows(len(cons), lo, up, len(idx), starts, np.array(idx, dtype=np.int32),
                      np.array(val, dtype=np.float64))

    def callSolver(self, lp):  # noqa: N802
        import highspy
        h = lp.solverModel
        if self.warm:
            variables = lp.variables()
            sol = highspy.HighsSolution()
            sol.col_value = [float(v.varValue or 0.0) for v in variables]
            sol.value_valid = True
            h.setSolution(sol)
        t0 = time.perf_counter()
        if self.wall_deadline is not None:
            # the limit covers the bulk model pass too (seconds on ResNet-50)
            h.setOptionValue("time_limit", max(0.05, self.wall_deadline - t0))
        h.run()
        self.info = {"solve_time_s": time.perf_counter() - t0,
                     "status": h.modelStatusToString(h.getModelStatus()),
                     "model_status": h.getModelStatus()}
        info = h.getInfo()
        for k in ("mip_dual_bound", "mip_gap", "objective_function_value", "primal_solution_status",
                  "mip_node_count"):
            self.info[k] = getattr(info, k, None)


@dataclass
class RawSolve:
    status: str                 # optimal | feasible | infeasible | time_limit | error
    objective: float | None     # scaled
    bound: float | None         # scaled
    gap: float | None
    solve_time_s: float
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def run_solver(form: Formulation, solver: str = "highs", time_limit: float | None = 60.0,
               gap: float = 1e-4, threads: int | None = None, warm: bool = False,
               msg: bool = False) -> RawSolve:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # PULP_CBC_CMD (PuLP 4 renames it)
        return _run_solver(form, solver, time_limit, gap, threads, warm, msg)


def _run_solver(form: Formulation, solver: str, time_limit: float | None, gap: float,
                threads: int | None, warm: bool, msg: bool) -> RawSolve:
    prob = form.prob
    if not prob.variables():
        # everything was decided by presolve: only constant constraints remain
        ok = all(c.valid(1e-9) for c in prob.constraints.values())
        obj = prob.objective.constant if prob.objective is not None else 0.0
        return RawSolve("optimal" if ok else "infeasible", obj if ok else None, obj if ok else None,
                        0.0 if ok else None, 0.0, "decided by presolve")
    if solver == "highs":
        t0 = time.perf_counter()
        wd = None if time_limit is None else t0 + time_limit
        s = _HiGHS(warm=warm, msg=msg, timeLimit=time_limit, gapRel=gap, threads=threads,
                   wall_deadline=wd)
        prob.solve(s)
        wall = time.perf_counter() - t0
        if warm and s.info.get("primal_solution_status") == 2:
            # HiGHS 1.16 can report the optimum's objective while returning the start's column
            # values (seen when presolve solves the model); then solve again without the start
            reported = s.info.get("objective_function_value")
            got = pulp.value(prob.objective)
            if reported is not None and got is not None and \
                    abs(got - reported) > 1e-7 * max(1.0, abs(reported)):
                s = _HiGHS(warm=False, msg=msg, timeLimit=time_limit, gapRel=gap, threads=threads,
                           wall_deadline=wd)
                prob.solve(s)
                wall = time.perf_counter() - t0
                s.info["status"] = str(s.info.get("status", "")) + " (start discarded: HiGHS " \
                    "returned its values with another solution's objective)"
        import highspy
        ms = s.info.get("model_status")
        st = highspy.HighsModelStatus
        has_sol = s.info.get("primal_solution_status") == 2
        obj = s.info.get("objective_function_value") if has_sol else None
        bound = s.info.get("mip_dual_bound")
        if ms == st.kOptimal:
            status = "optimal"
        elif ms in (st.kInfeasible, st.kUnboundedOrInfeasible):
            status = "infeasible"
        elif ms in (st.kTimeLimit, st.kIterationLimit, st.kInterrupt, st.kSolutionLimit):
            status = "feasible" if has_sol else "time_limit"
        else:
            status = "error"
        if status == "optimal" and obj is not None and (
                bound is None or not math.isfinite(bound)
                or obj - bound > (gap * 1.01 + 1e-9) * max(abs(obj), 1e-12)):
            bound = obj      # trivial models (everything presolved away) report no MIP bound
        g = None
        if obj is not None and bound is not None and math.isfinite(bound):
            g = abs(obj - bound) / max(abs(obj), 1e-12)
        return RawSolve(status, obj, bound if bound is not None and math.isfinite(bound) else None, g,
                        s.info.get("solve_time_s", wall), s.info.get("status", ""),
                        {"nodes": s.info.get("mip_node_count"), "wall_s": wall})
    if solver == "cbc":
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "cbc.log")
            s = pulp.PULP_CBC_CMD(msg=msg, timeLimit=time_limit, gapRel=gap, threads=threads,
                                  warmStart=warm, logPath=log, keepFiles=False)
            t0 = time.perf_counter()
            try:
                prob.solve(s)
            except pulp.PulpSolverError as e:
                return RawSolve("error", None, None, None, time.perf_counter() - t0, str(e))
            wall = time.perf_counter() - t0
            text = open(log).read() if os.path.exists(log) else ""
        ps = prob.status
        sol = prob.sol_status
        result = re.search(r"Result - (.*)", text)
        detail = result.group(1).strip() if result else pulp.LpStatus.get(ps, "")
        obj = pulp.value(prob.objective) if sol in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible) else None
        mb = re.search(r"Lower bound:\s*([-+0-9.eE]+)", text)
        # CBC works without the objective constant (PuLP's MPS file drops it): add it back
        bound = float(mb.group(1)) + prob.objective.constant if mb else None
        if ps == pulp.LpStatusInfeasible or "infeasible" in detail.lower():
            status = "infeasible"
            obj = None
        elif sol == pulp.LpSolutionOptimal and "Optimal" in detail:
            status = "optimal"
            bound = obj if bound is None else bound
        elif obj is not None:
            status = "feasible"
        elif "time" in detail.lower() or "Stopped" in detail:
            status = "time_limit"
        else:
            status = "error"
        g = None
        if obj is not None and bound is not None:
            g = abs(obj - bound) / max(abs(obj), 1e-12)
        mt = re.search(r"Total time \(CPU seconds\):\s*([0-9.]+)\s*\(Wallclock seconds\):\s*([0-9.]+)", text)
        return RawSolve(status, obj, bound, g, float(mt.group(2)) if mt else wall, detail, {"wall_s": wall})
    raise CostdbError(f"unknown solver {solver!r}; use highs or cbc")
