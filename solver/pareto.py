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
    """Non-dominated flags for ``points`` (rows of objective values, all minimised), with the
    semantics in the module docstring. See :func:`nondominated` (the numpy version)."""
    return nondominated(points).tolist()


def nondominated(points: Any, use_moocore: bool = True) -> Any:
    """Boolean numpy mask of the non-dominated rows.

    NaN rows are removed first (never Pareto, never dominating). The rest goes to moocore's
    ``is_nondominated(keep_weakly=True)`` (C, O(n log n) for 2-3 objectives; its semantics on
    duplicates -- all copies kept or none -- and on infinities are ours, checked against the
    oracle), or without moocore to :func:`_nondominated_sorted`."""
    import numpy as np
    a = np.asarray(points, dtype=float)
    if a.size == 0:
        return np.zeros(len(a), dtype=bool)
    if a.ndim != 2:
        raise CostdbError("pareto points must be a 2-D array (rows of objective values)")
    n, d = a.shape
    mask = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(~np.isnan(a).any(axis=1))
    if not len(idx) or d == 0:
        mask[idx] = True
        return mask
    b = a[idx]
    if np.isinf(b).any():
        # +-inf are ordinary values; ranks keep the order and the ties and are finite
        b = np.column_stack([np.unique(b[:, j], return_inverse=True)[1] for j in range(d)]
                            ).astype(float)
    if d >= 2 and use_moocore:
        try:
            import moocore
        except ImportError:
            moocore = None
        if moocore is not None:
            mask[idx[np.asarray(moocore.is_nondominated(b, keep_weakly=True), dtype=bool)]] = True
            return mask
    mask[idx[_nondominated_sorted(b)]] = True
    return mask


def _nondominated_sorted(b: Any) -> Any:
    """Own O(n log n) filter for NaN-free rows (the fallback without moocore).

    Rows are sorted lexicographically (a dominator always sorts before the point it dominates)
    and grouped into distinct vectors (copies share one verdict). A distinct vector is dominated
    iff an earlier one is ``<=`` in the remaining objectives: for 2 objectives a running minimum,
    for 3 a Fenwick tree of prefix minima over ranks (compiled with numba when available), beyond
    that the sweep against the front found so far."""
    import numpy as np
    order = np.lexsort(b.T[::-1])
    srt = b[order]
    new = np.ones(len(srt), dtype=bool)
    new[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    gid = np.cumsum(new) - 1
    dom = _dominated_sorted_unique(srt[new])
    keep = np.zeros(len(b), dtype=bool)
    keep[order[~dom[gid]]] = True
    return keep


def _dominated_sorted_unique(u: Any) -> Any:
    import numpy as np
    m, d = u.shape
    dom = np.zeros(m, dtype=bool)
    if m <= 1:
        return dom
    if d == 1:
        dom[1:] = True
        return dom
    if d == 2:
        pm = np.minimum.accumulate(u[:, 1])
        dom[1:] = pm[:-1] <= u[1:, 1]
        return dom
    if d == 3:
        ys = np.unique(u[:, 1])
        rank = np.searchsorted(ys, u[:, 1]).astype(np.int64)
        z = np.searchsorted(np.unique(u[:, 2]), u[:, 2]).astype(np.int64)
        kern = _fenwick_kernel()
        if kern is not None:
            kern(rank, z, len(ys), dom)
            return dom
    front: list[Any] = []
    for j in range(m):
        p = u[j]
        if any((q <= p).all() for q in front):
            dom[j] = True
        else:
            front.append(p)
    return dom


_KERNEL: Any = None


def _fenwick_kernel() -> Any:
    """The numba-compiled 3-objective sweep (cached on disk); None without numba."""
    global _KERNEL
    if _KERNEL is None:
        try:
            from solver._pareto3 import sweep3
            _KERNEL = sweep3
        except ImportError:       # moocore does it (slower)
            _KERNEL = False
    return _KERNEL or None


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


def error_result(job: Job, exc: BaseException) -> Any:
    """A sweep point that failed: status ``error`` and the exception as a one-line message."""
    from solver.solve import SolveResult
    kw = job.kwargs
    msg = " ".join(f"{type(exc).__name__}: {exc}".split())
    return SolveResult(status="error", mode=kw.get("mode", "integrated"),
                       solver=kw.get("solver", "highs"), budget_bytes=job.budget,
                       deadline_s=job.deadline, compat=bool(kw.get("compat", False)),
                       overlap=bool(kw.get("overlap", False)), n_nodes=job.inst.n,
                       method=str(kw.get("method", "auto")), message=msg[:2000])


def run_job(job: Job, starts: list[Any] | None = None) -> Any:
    """One sweep point: solve, with the infeasibility explanation off. Never raises: a failure
    is returned as a result with status ``error`` and the message."""
    from solver.solve import solve
    kw = dict(job.kwargs)
    kw.setdefault("explain_infeasible", False)
    try:
        return solve(job.inst, budget=job.budget, deadline=job.deadline, starts=starts, **kw)
    except Exception as e:          # noqa: BLE001 - a point's failure must not end the sweep
        return error_result(job, e)


def run_chain(jobs: Sequence[Job]) -> list[Any]:
    """Points of one deadline in ascending budget order (runs in one worker): each point is
    warm-started from the previous point's schedule, which meets the larger budget too."""
    out = []
    prev = None
    for job in jobs:
        r = run_job(job, [prev] if prev is not None else None)
        out.append(r)
        if r.schedule is not None:
            prev = r.schedule
    return out


def make_chains(jobs: Sequence[Job], parallel: int) -> list[list[int]]:
    """Job indices grouped into chains: one per deadline (ascending budgets), split into
    contiguous pieces so that there are at least ``parallel`` chains when possible."""
    by_deadline: dict[Any, list[int]] = {}
    for k, j in enumerate(jobs):
        by_deadline.setdefault(j.deadline, []).append(k)
    groups = [sorted(v, key=lambda k: (jobs[k].budget is None, jobs[k].budget or 0))
              for v in by_deadline.values()]
    pieces = max(1, -(-parallel // max(len(groups), 1)))
    chains = []
    for g in groups:
        size = max(1, -(-len(g) // pieces))
        chains += [g[p:p + size] for p in range(0, len(g), size)]
    return chains


def _settled(ex: Executor, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[bool, Any]]:
    """(ok, result or exception) per item, in item order; a failing item (e.g. a worker that
    died) does not stop the others."""
    if isinstance(ex, ProcessExecutor):
        futs = [ex.pool.submit(fn, it) for it in items]
        for f in futs:
            try:
                yield True, f.result()
            except Exception as e:       # noqa: BLE001
                yield False, e
    elif isinstance(ex, DaskExecutor):
        for f in ex.client.map(fn, list(items), pure=False):
            try:
                yield True, f.result()
            except Exception as e:       # noqa: BLE001
                yield False, e
    else:
        done = 0
        try:
            for r in ex.map(fn, items):
                done += 1
                yield True, r
        except Exception as e:          # noqa: BLE001
            for _ in range(done, len(items)):
                yield False, e


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
    parallel = 1 if isinstance(ex, SerialExecutor) else (getattr(ex, "workers", None) or os.cpu_count() or 1)
    chains = make_chains(jobs, parallel)
    sweep_id = None
    if db is not None:
        from solver.store import create_sweep
        sweep_id = create_sweep(db, inst, mode, budgets, deadlines,
                                {k: v for k, v in solve_kwargs.items()}, ex.name, list(objectives))
    results: list[Any] = [None] * len(jobs)
    done = 0
    try:
        for chain, (ok, out) in zip(chains, _settled(ex, run_chain, [[jobs[k] for k in c] for c in chains])):
            for pos, k in enumerate(chain):
                results[k] = out[pos] if ok else error_result(jobs[k], out)
                done += 1
                if progress:
                    progress(done, len(jobs))
    except BaseException:
        if db is not None and sweep_id is not None:
            from solver.store import finish_sweep
            finish_sweep(db, sweep_id, "failed")
        raise
    finally:
        if own:
            ex.close()
    sids: list[int | None] = [None] * len(results)
    pids: list[int | None] = [None] * len(results)
    if db is not None:
        from solver.store import save_schedule
        for k, r in enumerate(results):
            try:
                sids[k] = save_schedule(db, inst, r, sweep_id=sweep_id)
            except Exception as e:      # noqa: BLE001 - e.g. SolverBug: stored as an error point
                results[k] = error_result(jobs[k], e)
                sids[k] = save_schedule(db, inst, results[k], sweep_id=sweep_id)
    vecs = [[(getattr(r, o) if r.feasible and getattr(r, o) is not None else math.nan)
             for o in objectives] for r in results]
    mask = pareto_mask(vecs)
    if db is not None:
        from solver.store import finish_sweep, save_point
        for k, (r, p) in enumerate(zip(results, mask)):
            pids[k] = save_point(db, sweep_id, inst, r, sids[k], p)
        finish_sweep(db, sweep_id)
    return SweepResult(sweep_id, results, mask, sids, pids)
