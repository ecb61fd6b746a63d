"""Baseline schedules: checkpoint-all, Chen et al. sqrt(n) checkpointing, a Capuchin-like paging
heuristic, and their combination. All are built from *retention plans* (which values stay in RAM
across each stage boundary, which are paged out / in) by :func:`plan_to_schedule`, which adds the
minimal recomputation the plan needs (Checkmate's "R from S")."""
from __future__ import annotations

import math
from typing import Iterable

from costdb.errors import CostdbError
from solver.problem import FORWARD_PHASES, Instance
from solver.schedule import Schedule, Stage


def plan_to_schedule(inst: Instance, keep: list[set[int]], pageout: Iterable[int] = (),
                     pagein: list[set[int]] | None = None, overlap: bool = False) -> Schedule:
    """Stages from a plan: ``keep[t]`` = values in RAM when stage ``t+1`` starts, ``pageout`` =
    values written to storage right after their first computation, ``pagein[t]`` = values read
    back during stage ``t``. Stage ``t`` computes ``t`` plus, recursively, every missing input and
    every kept value that is neither resident nor paged in."""
    n = inst.n
    pagein = pagein or [set() for _ in range(n)]
    pout = set(pageout)
    deps = [set(nd.deps) for nd in inst.nodes]
    stages = []
    ram: set[int] = set()
    for t in range(n):
        kt = {i for i in keep[t] if i <= t} if t + 1 < n else set()
        need = {t} | {i for i in kt if i not in ram and i not in pagein[t]}
        stack = list(need)
        while stack:
            x = stack.pop()
            for d in deps[x]:
                if d not in ram and d not in need:
                    need.add(d)
                    stack.append(d)
        stages.append(Stage(tuple(sorted(need)), tuple(sorted(kt)),
                            tuple(sorted(i for i in pagein[t] if i not in ram)),
                            (t,) if t in pout else ()))
        ram = kt
    return Schedule(tuple(stages), compat=False, overlap=overlap)


def _keep_until_last_use(inst: Instance) -> list[set[int]]:
    last = inst.last_use()
    return [{i for i in range(t + 1) if last[i] > t} for t in range(inst.n)]


def checkpoint_all(inst: Instance, overlap: bool = False) -> Schedule:
    """No savings: every value stays in RAM until its last consumer has run."""
    return plan_to_schedule(inst, _keep_until_last_use(inst), overlap=overlap)


def _forward(inst: Instance) -> list[int]:
    fw = [nd.idx for nd in inst.nodes if nd.phase in FORWARD_PHASES]
    if len(fw) == inst.n:       # no phases given: treat the first half as the forward pass
        fw = fw[: max(1, inst.n // 2)]
    return fw


def chen_sqrt(inst: Instance, segments: int | None = None, overlap: bool = False) -> Schedule:
    """Chen et al. (2016) sqrt(n) checkpointing: the forward nodes are cut into ~sqrt(n) segments
    (by topological order); segment ends are kept, the rest is dropped after the forward pass and
    recomputed, segment by segment, when the backward pass first needs it."""
    fw = _forward(inst)
    fset = set(fw)
    k = segments or max(1, round(math.sqrt(len(fw))))
    size = max(1, math.ceil(len(fw) / k))
    seg = {i: p // size for p, i in enumerate(fw)}
    ckpt = {fw[p] for p in range(len(fw)) if (p + 1) % size == 0} | {fw[-1]}
    succ = inst.successors()
    last = inst.last_use()
    fwd_last = {i: max([j for j in succ[i] if j in fset], default=i) for i in fw}
    seg_bwd: dict[int, int] = {}
    for i in fw:
        later = [j for j in succ[i] if j not in fset]
        if later:
            seg_bwd[seg[i]] = min(seg_bwd.get(seg[i], inst.n), min(later))
    keep = []
    for t in range(inst.n):
        kt = set()
        for i in range(t + 1):
            if last[i] <= t:
                continue
            if i not in fset or i in ckpt or t < fwd_last[i] or t >= seg_bwd.get(seg[i], inst.n):
                kt.add(i)
        keep.append(kt)
    return plan_to_schedule(inst, keep, overlap=overlap)


def paging_plan(inst: Instance, paged: set[int], base_keep: list[set[int]] | None = None
                ) -> tuple[list[set[int]], set[int], list[set[int]]]:
    """Retention plan that pages out each value of ``paged`` after it is computed, drops it after
    its forward uses and pages it back in just before its first later (backward) use."""
    n = inst.n
    succ = inst.successors()
    keep = [set(s) for s in (base_keep or _keep_until_last_use(inst))]
    pagein = [set() for _ in range(n)]
    last = inst.last_use()
    for i in paged:
        early, late = _split_uses(inst, i, succ)
        t_in = late - 1                       # read back during the stage before its first late use
        for t in range(i, t_in):
            if t >= early:
                keep[t].discard(i)
        pagein[t_in].add(i)
        for t in range(t_in, last[i]):
            keep[t].add(i)
    return keep, set(paged), pagein


def _split_uses(inst: Instance, i: int, succ: list[list[int]]) -> tuple[int, int]:
    """(last use before the biggest gap between consecutive uses, first use after it)."""
    uses = sorted(succ[i])
    pts = [i] + uses
    gaps = [(pts[k + 1] - pts[k], k) for k in range(len(pts) - 1)]
    g, k = max(gaps)
    return pts[k], pts[k + 1]


def paging_candidates(inst: Instance) -> list[int]:
    """Values worth paging: a gap of at least two stages between consecutive uses; largest first
    (Capuchin's order), ties by longer gap."""
    succ = inst.successors()
    cands = []
    for nd in inst.nodes:
        if not succ[nd.idx] or nd.output_bytes == 0:
            continue
        early, late = _split_uses(inst, nd.idx, succ)
        if late - early >= 2:
            cands.append((-nd.output_bytes, -(late - early), nd.idx))
    return [i for *_, i in sorted(cands)]


def capuchin_paging(inst: Instance, budget: int | None, overlap: bool = False,
                    base: str = "none", max_steps: int | None = None) -> Schedule:
    """Page the largest activations (Capuchin-like) until the peak fits ``budget``; with
    ``base="chen"`` the paging is added on top of sqrt(n) checkpointing. Returns the schedule
    reached when it fits or when no candidate is left (the caller checks the budget)."""
    from solver.simulate import simulate
    base_sched = chen_sqrt(inst) if base == "chen" else None
    base_keep = [set(s.keep) for s in base_sched.stages] if base_sched else None
    cands = paging_candidates(inst)
    if base_sched is not None:
        # only values the base plan still keeps across the gap are worth paging
        cands = [i for i in cands if any(i in k for k in base_keep)]
    paged: set[int] = set()
    keep, pout, pin = paging_plan(inst, paged, base_keep)
    sched = plan_to_schedule(inst, keep, pout, pin, overlap)
    for step, i in enumerate(cands):
        if budget is None or simulate(inst, sched).peak_memory_bytes <= budget:
            break
        if max_steps is not None and step >= max_steps:
            break
        paged.add(i)
        keep, pout, pin = paging_plan(inst, paged, base_keep)
        sched = plan_to_schedule(inst, keep, pout, pin, overlap)
    return sched


def page_everything(inst: Instance, overlap: bool = False) -> Schedule:
    """Minimum-memory schedule: RAM holds only the running node's inputs and output. Every value
    used after the next stage is paged out when computed and paged in for each consumer."""
    n = inst.n
    succ = inst.successors()
    deps = [set(nd.deps) for nd in inst.nodes]
    pout = {i for i in range(n) if any(j > i + 1 for j in succ[i]) and inst.nodes[i].output_bytes > 0}
    keep: list[set[int]] = []
    pagein: list[set[int]] = []
    ram: set[int] = set()
    for t in range(n):
        nxt = deps[t + 1] if t + 1 < n else set()
        kt = set()
        pin = set()
        for d in nxt:
            if d == t or d in ram or inst.nodes[d].output_bytes == 0 and d <= t:
                kt.add(d)
            elif d in pout:
                kt.add(d)
                pin.add(d)
            else:
                kt.add(d)   # falls back to recomputation
        keep.append(kt)
        pagein.append(pin)
        ram = kt
    return plan_to_schedule(inst, keep, pout, pagein, overlap)


def to_compat(sched: Schedule) -> Schedule:
    """The same plan under the published (compat) semantics, where a page-out writes a value that
    was resident when its stage started: each page-out of node ``i`` right after its computation
    moves to stage ``i + 1`` and ``i`` is kept across that boundary. Memory can only grow (the
    caller replays it against the budget); paging stays outside the compat deadline."""
    stages = list(sched.stages)
    n = len(stages)
    keep = [set(s.keep) for s in stages]
    pout: list[set[int]] = [set() for _ in range(n)]
    for t, s in enumerate(stages):
        for i in s.pageout:
            if t + 1 < n:
                keep[t].add(i)
                pout[t + 1].add(i)
    out = tuple(Stage(s.compute, tuple(sorted(keep[t])) if t + 1 < n else (), s.pagein,
                      tuple(sorted(pout[t]))) for t, s in enumerate(stages))
    return Schedule(out, compat=True, overlap=False)


BASELINES = ("checkpoint_all", "chen_sqrt", "paging_heuristic")


def baseline(inst: Instance, name: str, budget: int | None = None, overlap: bool = False) -> Schedule:
    if name == "checkpoint_all":
        return checkpoint_all(inst, overlap)
    if name == "chen_sqrt":
        return chen_sqrt(inst, overlap=overlap)
    if name == "paging_heuristic":
        return capuchin_paging(inst, budget, overlap)
    raise CostdbError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")


def heuristic_candidates(inst: Instance, mode: str, budget: int | None, overlap: bool = False
                         ) -> list[tuple[str, Schedule]]:
    """Schedules a mode may use as a warm start / fallback (validated by the caller)."""
    out: list[tuple[str, Schedule]] = [("checkpoint_all", checkpoint_all(inst, overlap))]
    if mode in ("integrated", "remat"):
        fw = len(_forward(inst))
        for k in sorted({max(1, round(math.sqrt(fw))), max(1, round(math.sqrt(fw) / 2)),
                         max(1, round(2 * math.sqrt(fw)))}):
            out.append((f"chen_sqrt[{k}]", chen_sqrt(inst, k, overlap)))
    if mode in ("integrated", "paging"):
        out.append(("paging_heuristic", capuchin_paging(inst, budget, overlap)))
        out.append(("page_everything", page_everything(inst, overlap)))
    if mode == "integrated":
        out.append(("chen+paging", capuchin_paging(inst, budget, overlap, base="chen")))
    return out
