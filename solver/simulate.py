"""Independent replay of a schedule: the validator every solver output goes through.

Written from the schedule semantics (docs/solver.md, ``solver.schedule``), not from the MILP: it
keeps the set of values in RAM and on secondary storage, checks every dependency when a node runs,
frees values as a device runtime would, and adds up peak memory, runtime and energy from the
instance's costs. Any violation raises :class:`ScheduleError` with the stage and node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from solver.problem import Instance
from solver.schedule import Schedule


class ScheduleError(Exception):
    """The schedule is invalid for the instance (a solver bug if it came from a solver)."""


@dataclass
class SimResult:
    peak_memory_bytes: int
    runtime_s: float
    energy_j: float
    compute_energy_j: float
    pagein_energy_j: float
    pageout_energy_j: float
    compute_time_s: float
    paging_time_s: float
    recomputes: int
    pageins: int
    pageouts: int
    stage_peaks: list[int] = field(default_factory=list, repr=False)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("stage_peaks")
        return d


def simulate(inst: Instance, sched: Schedule, budget: int | None = None,
             deadline: float | None = None, rel_tol: float = 1e-6) -> SimResult:
    """Replay ``sched`` on ``inst``. Structural errors raise ``ScheduleError``; a peak above
    ``budget`` or a runtime above ``deadline`` is recorded in ``violations``."""
    n = inst.n
    if sched.n != n:
        raise ScheduleError(f"schedule has {sched.n} stages, instance has {n} nodes")
    size = [nd.output_bytes for nd in inst.nodes]
    deps = [set(nd.deps) for nd in inst.nodes]
    compat, overlap = sched.compat, sched.overlap
    ram: set[int] = set()          # values in RAM at the start of the stage
    disk: set[int] = set()         # values on secondary storage
    written: set[int] = set()
    peak = 0
    stage_peaks = []
    e_comp = e_in = e_out = 0.0
    t_comp_total = t_page_total = runtime = 0.0
    recomputes = pageins = pageouts = 0
    for t, st in enumerate(sched.stages):
        where = f"stage {t}"
        comp = list(st.compute)
        if comp != sorted(set(comp)):
            raise ScheduleError(f"{where}: compute list must be strictly ascending, got {comp}")
        if not comp or comp[-1] != t:
            raise ScheduleError(f"{where}: must compute node {t} last, got {comp}")
        if any(i < 0 for i in comp):
            raise ScheduleError(f"{where}: negative node index")
        keep = set(st.keep)
        pagein = set(st.pagein)
        pageout = set(st.pageout)
        if len(pagein) != len(st.pagein) or len(pageout) != len(st.pageout) or len(keep) != len(st.keep):
            raise ScheduleError(f"{where}: duplicate entries")
        if any(not 0 <= i < n for i in keep | pagein | pageout):
            raise ScheduleError(f"{where}: node index out of range")
        # page-ins read values already on storage when the stage starts
        for i in pagein:
            if i not in disk:
                raise ScheduleError(f"{where}: pages in node {i} which is not on secondary storage")
            if i in ram:
                raise ScheduleError(f"{where}: pages in node {i} which is already in RAM")
        for i in pageout:
            if i in written:
                raise ScheduleError(f"{where}: pages out node {i} a second time")
            if compat:
                if i not in ram:
                    raise ScheduleError(f"{where}: pages out node {i} which is not in RAM at the "
                                        "stage start (published semantics)")
            elif i != t:
                raise ScheduleError(f"{where}: pages out node {i}; only the stage's own node {t} "
                                    "may be paged out (right after it is computed)")
        uses: dict[int, int] = {}
        for k in comp:
            for d in deps[k]:
                uses[d] = uses.get(d, 0) + 1
        live = dict.fromkeys(ram)      # insertion-ordered set of resident values
        cur = inst.fixed_bytes + sum(size[i] for i in live)
        if overlap:
            cur += sum(size[i] for i in pagein)   # DMA buffers for the whole stage
        speak = cur
        t_comp = 0.0
        for k in comp:
            node = inst.nodes[k]
            missing = [d for d in sorted(deps[k]) if d not in live]
            if missing:
                raise ScheduleError(f"{where}: computes node {k} ({node.name}) but its inputs "
                                    f"{missing} are not in RAM")
            if k in live:
                raise ScheduleError(f"{where}: computes node {k} which is already in RAM")
            live[k] = None
            cur += size[k]
            speak = max(speak, cur + node.workspace_bytes)
            t_comp += node.runtime_s
            e_comp += node.energy_j
            if k != t:
                recomputes += 1
            for d in deps[k]:
                uses[d] -= 1
                if uses[d] == 0 and d not in keep and not (overlap and d in pageout):
                    del live[d]
                    cur -= size[d]
        # page-outs: values present in the stage (compat: at its start; else node t)
        for i in pageout:
            e_out += inst.pageout_energy(i)
            pageouts += 1
        t_out = sum(inst.pageout_time(i) for i in pageout)
        t_in = sum(inst.pagein_time(i) for i in pagein)
        for i in pagein:
            e_in += inst.pagein_energy(i)
            pageins += 1
        missing = [i for i in keep if i not in live and i not in pagein]
        if missing:
            raise ScheduleError(f"{where}: keeps {missing} in RAM but they are neither resident, "
                                "computed nor paged in")
        disk |= pageout
        written |= pageout
        ram = keep
        boundary = inst.fixed_bytes + sum(size[i] for i in ram)
        speak = max(speak, boundary)
        stage_peaks.append(speak)
        peak = max(peak, speak)
        t_comp_total += t_comp
        t_page_total += t_in + t_out
        if compat:
            runtime += t_comp
        elif overlap:
            runtime += max(t_comp, t_in + t_out)
        else:
            runtime += t_comp + t_in + t_out
    res = SimResult(peak_memory_bytes=int(peak), runtime_s=runtime, energy_j=e_comp + e_in + e_out,
                    compute_energy_j=e_comp, pagein_energy_j=e_in, pageout_energy_j=e_out,
                    compute_time_s=t_comp_total, paging_time_s=t_page_total,
                    recomputes=recomputes, pageins=pageins, pageouts=pageouts, stage_peaks=stage_peaks)
    if budget is not None and peak > budget:
        res.violations.append(f"peak memory {peak} B exceeds the budget {budget} B")
    if deadline is not None and runtime > deadline * (1 + rel_tol) + 1e-12:
        res.violations.append(f"runtime {runtime:.6g} s exceeds the deadline {deadline:.6g} s")
    return res
