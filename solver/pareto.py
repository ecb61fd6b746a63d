"""Pareto fronts: the non-dominated filter, budget x deadline sweeps, and sweep executors.

Filter semantics (all objectives minimised; docs/solver.md):

* ``a`` dominates ``b`` when ``a <= b`` in every objective and ``a < b`` in at least one;
* a point is Pareto when no point dominates it;
* duplicates (identical objective vectors) do not dominate each other: all copies are Pareto
  (or all are dominated);
* a point with NaN in any objective (e.g. an infeasible sweep point) is never Pareto and never
  dominates another point; ``+inf`` / ``-inf`` are ordinary values.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from costdb.errors import CostdbError

OBJECTIVES = ("energy_j", "runtime_s", "peak_memory_bytes")


def pareto_mask(points: Sequence[Sequence[float]]) -> list[bool]:
    """Non-dominated flags for ``points`` (rows of objective values, all minimised).

    Sort-and-sweep: after a lexicographic sort, a point can only be dominated by an earlier one,
    so it is compared with the front found so far (O(n log n + n * front))."""
    pts = [tuple(float(v) for v in p) for p in points]
    n = len(pts)
    mask = [False] * n
    valid = [k for k in range(n) if not any(math.isnan(v) for v in pts[k])]
    order = sorted(valid, key=lambda k: pts[k])
    front: list[tuple[float, ...]] = []
    for k in order:
        p = pts[k]
        dominated = False
        for q in front:
            if q != p and all(a <= b for a, b in zip(q, p)):
                dominated = True
                break
        if not dominated:
            mask[k] = True
            if not front or front[-1] != p:
                front.append(p)
    return mask


def pareto_mask_oracle(points: Sequence[Sequence[float]]) -> list[bool]:
    """O(n^2) reference implementation of the same semantics (for tests)."""
    def dom(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
    out = []
    for p in points:
        if any(math.isnan(v) for v in p):
            out.append(False)
            continue
        out.append(not any(dom(q, p) for q in points if not any(math.isnan(v) for v in q)))
    return out


# --- executors ----------------------------------------------------------------------------------

class Executor:
    """Runs ``fn(item)`` for each item, yielding results in item order."""

    name = "executor"

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SerialExecutor(Executor):
    name = "serial"

    def map(self, fn, items):
        for it in items:
            yield fn(it)


class ProcessExecutor(Executor):
    """Worker processes on this machine (default: one per core)."""

    name = "process"

    def __init__(self, workers: int | None = None):
        import multiprocessing
        self.workers = workers or os.cpu_count() or 1
        # not fork: HiGHS keeps a thread pool, and a forked child of a process that has solved
        # once inherits it without its threads and spins forever
        self.pool = ProcessPoolExecutor(max_workers=self.workers,
                                        mp_context=multiprocessing.get_context("forkserver"))

    def map(self, fn, items):
        return self.pool.map(fn, items)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """A Dask ``distributed`` cluster: ``scheduler`` is a ``tcp://host:port`` address, a
    ``distributed.Client`` or a ``LocalCluster``; each sweep point is one task."""

    name = "dask"

    def __init__(self, scheduler: Any = None, workers: int | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise CostdbError("the dask executor needs dask[distributed]; pip install "
                              "'dask[distributed]' or use --executor process") from None
        self._own_cluster = None
        if scheduler is None:
            self._own_cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1,
                                             threads_per_worker=1, processes=True,
                                             dashboard_address=None)
            self.client = Client(self._own_cluster)
            self._own_client = True
        elif isinstance(scheduler, Client):
            self.client, self._own_client = scheduler, False
        else:
            try:
                self.client = Client(scheduler, timeout="10s")
            except OSError as e:
                raise CostdbError(f"cannot reach the dask scheduler {scheduler} ({e}); start one "
                                  "with 'dask scheduler' or use --executor process") from None
            self._own_client = True

    def map(self, fn, items):
        futures = self.client.map(fn, list(items), pure=False)
        for f in futures:
            yield f.result()

    def close(self) -> None:
        if self._own_client:
            self.client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()


def make_executor(kind: str = "process", workers: int | None = None, scheduler: Any = None) -> Executor:
    if kind == "serial":
        return SerialExecutor()
    if kind == "process":
        return ProcessExecutor(workers)
    if kind == "dask":
        return DaskExecutor(scheduler, workers)
    raise CostdbError(f"unknown executor {kind!r}; use process, dask or serial")


# --- sweeps ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    inst: Any
    budget: int | None
    deadline: float | None
    kwargs: dict[str, Any]


def run_job(job: Job) -> Any:
    """One sweep point (runs in a worker): solve, with the infeasibility explanation off."""
    from solver.solve import solve
    kw = dict(job.kwargs)
    kw.setdefault("explain_infeasible", False)
    return solve(job.inst, budget=job.budget, deadline=job.deadline, **kw)


def default_budgets(inst: Any, k: int = 5, mode: str = "integrated", compat: bool = False) -> list[int]:
    """``k`` budgets from the lower bound on the peak to the no-savings peak (inclusive)."""
    from solver.solve import min_budget_bound
    from solver.problem import compat_instance
    i2 = compat_instance(inst) if compat else inst
    lo, hi = min_budget_bound(i2, compat), i2.no_savings_peak()
    if k <= 1 or hi <= lo:
        return [hi]
    return sorted({int(lo + (hi - lo) * j / (k - 1)) for j in range(k)})


def default_deadlines(inst: Any, factors: Iterable[float] = (1.1, 1.3, 2.0)) -> list[float]:
    """Deadlines as multiples of the plain (no recomputation, no paging) compute runtime."""
    return [inst.compute_runtime_s * f for f in factors]


@dataclass
class SweepResult:
    sweep_id: int | None
    results: list[Any]
    pareto: list[bool]
    schedule_ids: list[int | None]
    point_ids: list[int | None]

    def frame(self):
        import pandas as pd
        return pd.DataFrame([{"budget_bytes": r.budget_bytes, "deadline_s": r.deadline_s,
                              "status": r.status, "energy_j": r.energy_j, "runtime_s": r.runtime_s,
                              "peak_memory_bytes": r.peak_memory_bytes, "pareto": p,
                              "schedule_id": s, "solve_time_s": r.solve_time_s}
                             for r, p, s in zip(self.results, self.pareto, self.schedule_ids)])


def sweep(inst: Any, budgets: Sequence[int] | None = None, deadlines: Sequence[float | None] | None = None,
          db: Any = None, executor: Executor | str = "process", workers: int | None = None,
          scheduler: Any = None, objectives: Sequence[str] = OBJECTIVES,
          progress: Callable[[int, int], None] | None = None, **solve_kwargs: Any) -> SweepResult:
    """Solve every (budget, deadline) pair, mark the non-dominated points and, with ``db``,
    store each schedule (validated) and each point. Workers only solve; the parent writes."""
    for o in objectives:
        if o not in OBJECTIVES:
            raise CostdbError(f"unknown objective {o!r}; use {', '.join(OBJECTIVES)}")
    mode = solve_kwargs.get("mode", "integrated")
    budgets = list(budgets) if budgets else default_budgets(inst, mode=mode,
                                                           compat=solve_kwargs.get("compat", False))
    deadlines = list(deadlines) if deadlines else [None]
    jobs = [Job(inst, b, d, solve_kwargs) for b in budgets for d in deadlines]
    own = isinstance(executor, str)
    ex = make_executor(executor, workers, scheduler) if own else executor
    sweep_id = None
    if db is not None:
        from solver.store import create_sweep
        sweep_id = create_sweep(db, inst, mode, budgets, deadlines,
                                {k: v for k, v in solve_kwargs.items()}, ex.name, list(objectives))
    results = []
    try:
        for k, r in enumerate(ex.map(run_job, jobs)):
            results.append(r)
            if progress:
                progress(k + 1, len(jobs))
    except BaseException:
        if db is not None and sweep_id is not None:
            from solver.store import finish_sweep
            finish_sweep(db, sweep_id, "failed")
        raise
    finally:
        if own:
            ex.close()
    vecs = [[(getattr(r, o) if r.feasible and getattr(r, o) is not None else math.nan)
             for o in objectives] for r in results]
    mask = pareto_mask(vecs)
    sids: list[int | None] = [None] * len(results)
    pids: list[int | None] = [None] * len(results)
    if db is not None:
        from solver.store import finish_sweep, save_point, save_schedule
        for k, (r, p) in enumerate(zip(results, mask)):
            sids[k] = save_schedule(db, inst, r, sweep_id=sweep_id) if r.schedule is not None else None
            pids[k] = save_point(db, sweep_id, inst, r, sids[k], p)
        finish_sweep(db, sweep_id)
    return SweepResult(sweep_id, results, mask, sids, pids)
