"""A profiling session: plan the distinct ops still missing on a device, measure them through the
device's agent, and write each result into the database as it arrives.

Resumable by construction: the plan is "signatures of the model without a finished measurement on
this device under the same settings fingerprint" (costdb.settings: threads, affinity, cache mode,
dtype, compute unit, kernel library and agent versions), and every result is committed on its
own, so an interrupted run (Ctrl-C, kill, dropped link) loses at most the op in flight and the
next run measures only what is missing. ``force`` measures every op again in a new session whose
rows supersede the older ones of the same fingerprint (which stay, for history and ``costdb
compare``).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

from costdb.database import Database, preflight
from costdb.errors import CostdbError
from costdb.records import Measurement
from costdb.settings import settings_from_facts
from devices.catalog import DeviceProfile
from devices.connect import connect, entry_for
from devices.inventory import Inventory, load as load_inventory
from profiler.graph import TrainingGraph
from profiler.zoo import model_graph

#: Governors that do not hold the clock still; pyperf warns about the same.
STEADY_GOVERNORS = ("performance",)
BUSY_LOAD_PER_CORE = 0.5


@dataclass
class ProfileResult:
    device: str
    model_key: str
    session_id: int | None
    planned: int
    measured: int
    skipped: int
    status: str
    warnings: list[str] = field(default_factory=list)
    unstable: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    iteration_s: float | None = None
    #: the in-context step: None when it did not run, else its coverage and settings
    in_context: dict[str, Any] | None = None
    #: the settings fingerprint (``settings`` row id) the measurements were taken under
    settings_id: int | None = None
    #: why the thread count was chosen for the caller (``default_threads``), if it was
    threads_note: str | None = None
    #: planned ops another profile running at the same time measured (not measured here)
    concurrent: int = 0


def default_threads(db: Any, device: str, transport: str,
                    cpus: list[int] | None) -> tuple[int | None, str | None]:
    """The intra-op thread count when none is given, and a note saying why (or None).

    Resuming keeps the fingerprint: the threads of the device's latest session in the database.
    Otherwise, on a busy host (load average above half its cores) 1 thread: with several, each
    op waits at every parallel region for threads the other load has descheduled (ResNet-18 ops
    8-65x slower at 2 threads than at 1 on the loaded 2-core VM, docs/benchmarks.md). On a quiet
    host, and on remote devices, torch's default (all cores): None."""
    if transport != "local":
        return None, None
    for rec in reversed(db.session_list(device)):
        t = (rec.facts or {}).get("threads") or (rec.environment or {}).get("threads")
        if isinstance(t, int) and t > 0:
            return t, None              # the same settings fingerprint: the run resumes
    cores = len(cpus) if cpus else len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    if cores > 1 and load > BUSY_LOAD_PER_CORE * cores:
        return 1, (f"this machine is busy (load average {load:.2f} on {cores} cores): measured "
                   "with 1 intra-op thread, since several threads wait on each other when the "
                   "load deschedules them and timings turn into noise; --threads N overrides")
    return None, None


def attribute_energy(result: dict[str, Any], profile: DeviceProfile,
                     idle_power_w: float | None) -> dict[str, Any] | None:
    """Energy of one op call: measured when the agent read a sensor, else modelled from the
    profile (active power x runtime). A modelled figure is never labelled measured."""
    if result.get("status") != "ok":
        return None
    e = result.get("energy")
    if e:
        gross = float(e["gross_j"])
        window = float(e.get("window_s") or 0.0)
        net = gross - idle_power_w * window if idle_power_w is not None else None
        return {"energy_j": gross, "energy_net_j": net, "energy_window_s": window,
                "energy_provenance": "measured", "energy_sensor": e.get("sensor")}
    rt = float(result["runtime"]["median"])
    return {"energy_j": profile.active_power_w * rt, "energy_net_j": profile.net_active_power_w * rt,
            "energy_window_s": rt, "energy_provenance": "modeled", "energy_sensor": None}


def noise_warnings(facts: dict[str, Any]) -> list[str]:
    """Warnings about conditions that make timings unstable (governor, load, throttling)."""
    out = []
    govs = facts.get("governors") or []
    bad = [g for g in govs if g not in STEADY_GOVERNORS]
    if bad:
        out.append(f"CPU frequency governor is {', '.join(bad)}, not performance: timings may "
                   "drift; set it with 'cpupower frequency-set -g performance'")
    load = facts.get("loadavg")
    cores = facts.get("cores") or 1
    if load and load[0] > BUSY_LOAD_PER_CORE * cores:
        threads = facts.get("threads")
        if isinstance(threads, int) and threads > 1:
            out.append(f"the machine is busy (load average {load[0]:.2f} on {cores} cores) and "
                       f"torch runs {threads} intra-op threads: each op waits for threads the "
                       "other load deschedules, so timings turn into noise (10-300x slower at 2 "
                       "threads on a loaded 2-core VM); profile with --threads 1 or stop the "
                       "other work (pinning with --cpus does not help)")
        else:
            out.append(f"the machine is busy (load average {load[0]:.2f} on {cores} cores): "
                       "timings may be noisy; stop the other work for the closest figures")
    thr = facts.get("throttled")
    if isinstance(thr, dict) and thr.get("throttled_now"):
        out.append(f"the device reports throttling now ({thr.get('raw')}): cool it down first")
    return out


def throttle_warnings(start: dict[str, Any], end: dict[str, Any] | None) -> list[str]:
    """A Pi that throttled during the session (vcgencmd get_throttled read before and after)."""
    a, b = start.get("throttled"), (end or {}).get("throttled")
    if not isinstance(b, dict):
        return []
    before = (a or {}).get("since_boot") or {}
    new = [k for k, v in (b.get("since_boot") or {}).items() if v and not before.get(k)]
    if new or (b.get("throttled_now") and not (a or {}).get("throttled_now")):
        what = ", ".join(new) or "throttled"
        return [f"the device throttled during the session ({what}; get_throttled {b.get('raw')}): "
                "timings of this session may be slow; cool the device and re-measure with --force"]
    return []


def in_context_supported(transport: str, model: str | TrainingGraph) -> bool:
    """In-context profiling trains the model's own module: on this host, from a name or file."""
    return transport == "local" and not isinstance(model, TrainingGraph)


def in_context_unsupported(transport: str) -> str:
    if transport != "local":
        return (f"in-context profiling runs on the local device only (over {transport} the agent "
                "would need the model's code); its costs use the isolated estimate")
    return ("in-context profiling needs the model itself (a zoo name or file.py:factory), not "
            "a stored graph; its costs use the isolated estimate")


def _in_context_step(db: Database, device: str, session_id: int, settings_id: int | None,
                     model_id: int, model: str, graph: TrainingGraph, settings: dict[str, Any],
                     profile: DeviceProfile, emit: Callable[..., Any]) -> dict[str, Any]:
    """Trace real iterations of the model, store one ``in_context`` measurement per op.

    Per op signature the per-iteration figure is the mean over the graph nodes that use it (so
    figure x uses sums to those nodes' time in each iteration); its median over iterations is
    the estimate, the per-iteration values are the raw samples. Everything is written in one
    transaction at the end: an interrupted step leaves nothing, and the next run repeats it.
    Returns the step's summary (coverage, unattributed time, overhead), which the session keeps
    in its environment as ``in_context``.
    """
    from profiler.incontext import profile_in_context
    from profiler.iteration import model_trainer
    iterations = int(settings.get("in_context_iterations", 40))
    tr = model_trainer(model, graph.batch, graph.input_shape, dtype=graph.dtype)
    if tr.graph.key != graph.key or tr.graph.signatures() != graph.signatures():
        raise CostdbError(f"the model built for in-context profiling ({tr.graph.key}) does not "
                          f"match the profiled graph {graph.key}")
    costs = db.costs(device, model_id, settings=settings_id, kind="isolated")
    iso = {sig: float(rt) for sig, rt, st in zip(costs["signature"], costs["runtime_s"],
                                                 costs["status"]) if st == "ok"}
    memory = {sig: pm for sig, pm in zip(costs["signature"], costs["peak_memory_bytes"])
              if pm == pm and pm is not None}
    emit("in_context", total=iterations, device=device)

    def progress(done: int, total: int) -> None:
        emit("in_context_iteration", done=done, total=total, device=device)
    res = profile_in_context(tr, iterations=iterations,
                             warmups=int(settings.get("in_context_warmups", 3)),
                             isolated=iso, progress=progress)
    coverage = res.coverage()
    records = []
    for sig, f in res.signature_figures().items():
        stats = f["runtime"]
        r = {"signature": sig, "status": "ok", "runtime": stats, "inner_loops": res.block,
             "unstable": f["unstable"], "remeasured": res.settings["remeasured"],
             "runtime_provenance": "measured",
             "raw": {"values": f["values"], "inner_loops": res.block},
             "occurrences": f["occurrences"], "events_per_call": f["events_per_call"],
             "node_cv_max": f["node_cv_max"]}
        if sig in memory:  # not measured in context: the isolated call's, said so
            r["peak_memory_bytes"] = int(memory[sig])
            r["peak_memory_from"] = "isolated"
        energy = attribute_energy({"status": "ok", "runtime": stats}, profile, None)
        records.append(Measurement.from_result(device, session_id, r, energy, kind="in_context",
                                               settings_id=settings_id))
    db.add_measurements(records)
    summary = {"iterations": res.iterations, "warmups": res.settings["warmups"],
               "remeasured": res.settings["remeasured"], "ops": len(records),
               "unstable": sum(1 for m in records if m.unstable),
               "wall_s": coverage["wall_s"], "unattributed_s": coverage["unattributed_s"],
               "unattributed_share": coverage["unattributed_share"],
               "unattributed": res.unattributed_detail,
               "overhead_removed_share": coverage["overhead_share"],
               "correction": res.settings["correction"], "block": res.block,
               "overhead": res.settings["overhead"],
               "in_situ_cost_per_event_s": res.settings["in_situ_cost_per_event_s"],
               "plain_phase_s": res.settings["plain_phase_s"], "predicted": res.phases(),
               "events_per_iteration": sum(res.events.values()),
               "by_kind_s": res.kinds}
    return summary


#: how long a profile waits for ops another running profile has claimed before measuring them
#: itself (a claim holder on another host cannot be checked for liveness)
CLAIM_WAIT_S = 3600.0


def _measure_claimed(db: Database, sid: int, device: str, settings_id: int | None,
                     since: str | None, plan: list[dict[str, Any]],
                     measure: Callable[[int, dict[str, Any]], None], result: ProfileResult,
                     emit: Callable[..., Any]) -> list[tuple[int, dict[str, Any]]]:
    """Measure every op of ``plan`` this session can claim; returns the ops held by others."""
    deferred = []
    for i, spec in enumerate(plan):
        holder = db.claim_op(sid, device, spec["signature"], settings_id, since=since)
        if holder is None:
            measure(i, spec)
        elif holder == Database.DONE:   # measured meanwhile by another profile
            result.concurrent += 1
            emit("measured", spec=spec, index=i, result=None, device=device)
        else:
            deferred.append((i, spec))
    return deferred


def _wait_for_claims(db: Database, sid: int, device: str, settings_id: int | None,
                     since: str | None, deferred: list[tuple[int, dict[str, Any]]],
                     measure: Callable[[int, dict[str, Any]], None], result: ProfileResult,
                     emit: Callable[..., Any], wait_s: float = CLAIM_WAIT_S) -> None:
    """Ops another running session claimed: wait until it measured them (skip), or until it
    ended without (``close_stale_sessions`` notices a dead process of this host), then measure
    them here. After ``wait_s`` the rest is measured anyway (an op measured twice is better
    than a profile that never ends)."""
    import time
    deadline = time.monotonic() + wait_s
    while deferred:
        db.close_stale_sessions(device)
        still = []
        for i, spec in deferred:
            holder = db.claim_op(sid, device, spec["signature"], settings_id, since=since)
            if holder is None or time.monotonic() > deadline:
                measure(i, spec)
            elif holder == Database.DONE:
                result.concurrent += 1
                emit("measured", spec=spec, index=i, result=None, device=device)
            else:
                still.append((i, spec))
        deferred = still
        if deferred:
            time.sleep(0.2)   # polling another process's progress, not synchronising a test


def _resolve_inventory(inventory: Inventory | str | None) -> Inventory:
    if isinstance(inventory, Inventory):
        return inventory
    return load_inventory(inventory)


def profile(db_path: str, device: str = "local", model: str | TrainingGraph = "resnet18",
            batch: int | None = None, input_shape: tuple[int, ...] | None = None,
            dtype: str = "float32", force: bool = False, cpus: list[int] | None = None,
            threads: int | None = None, settings: dict[str, Any] | None = None,
            inventory: Inventory | str | None = None, iteration: bool | None = False,
            in_context: bool | None = False, progress: Callable[..., Any] | None = None,
            on_warning: Callable[[str], None] | None = None,
            connect_options: dict[str, Any] | None = None,
            db: Database | None = None) -> ProfileResult:
    """Profile every distinct op of ``model``'s training graph on ``device`` into ``db_path``.

    ``in_context``: after the isolated ops, run real training iterations of the model under
    torch.profiler and store per-op ``in_context`` measurements (``profiler.incontext``; local
    device and a model given by name or file only: the module must be trained here). ``True``
    warns where that is impossible, ``None`` (the CLI's default) runs it where possible and says
    nothing elsewhere. Resumable like the rest: skipped when the model's ops all have in-context
    figures traced in this model under this fingerprint, unless ``force``.

    ``progress(event, **info)`` is called with ``start`` (total), ``op`` (spec, done),
    ``in_context`` (total iterations), ``in_context_iteration`` (done, total), ``iteration`` and
    ``done``; the CLI draws a progress bar with it. Raises CostdbError for user errors and
    KeyboardInterrupt after marking the session interrupted. ``db``: an open database to write
    into instead of opening ``db_path`` (``profiler.parallel.profile_many`` shares one writer).
    """
    inv = _resolve_inventory(inventory)
    entry = entry_for(device, inv)
    if (graph_dtype := getattr(model, "dtype", dtype)) == "int8" and entry.transport != "serial":
        raise CostdbError(f"int8 training graphs are measured by the Cortex-M firmware only "
                          f"(serial devices); {device} is a {entry.transport} device: use "
                          f"--dtype float32")
    iteration_possible = entry.transport == "local" and not isinstance(model, TrainingGraph)
    if iteration and not iteration_possible:
        raise CostdbError(
            f"--iteration times whole training iterations on this host (the local device, a zoo "
            f"or file model); " + (f"{device} is reached over {entry.transport}, its agent measures "
                                   "single ops" if entry.transport != "local" else
                                   "a stored graph has no module to train")
            + "; drop --iteration (the default measures iterations where it can)")
    iteration = iteration_possible if iteration is None else iteration
    preflight(Path(db_path), create=True)
    graph = model if isinstance(model, TrainingGraph) else model_graph(model, batch, input_shape,
                                                                      dtype=dtype)
    settings = dict(settings or {})
    own_db = db is None  # profile_many passes one shared, serialised writer
    db = Database(db_path, create=True) if own_db else db
    try:
        db.upsert_device(entry.profile)
        model_id = db.save_graph(graph)
        db.close_stale_sessions(device)
        emit = progress or (lambda *a, **k: None)
        warn = on_warning or (lambda msg: None)
        threads_note = None
        if threads is None:
            threads, threads_note = default_threads(db, device, entry.transport, cpus)
        with connect(entry, cpus=cpus, threads=threads, options=connect_options) as agent:
            hello = agent.hello()
            facts = hello.get("facts", {})
            # the fingerprint these measurements will carry: only ops measured under the same
            # settings count as done (a profile at --threads 2 reuses nothing from --threads 1)
            fingerprint = settings_from_facts(
                facts, transport=entry.transport, dtype=graph.dtype, cache=settings.get("cache"),
                compute_unit=getattr(agent, "compute_unit", None),
                agent_version=hello.get("agent_version"))
            settings_id = db.add_settings(fingerprint)
            done = set() if force else db.done_signatures(device, settings_id)
            plan = [s for s in graph.distinct_specs() if s["signature"] not in done]
            result = ProfileResult(device, graph.key, None, len(plan), 0,
                                   len(graph.signatures()) - len(plan), "complete",
                                   settings_id=settings_id, threads_note=threads_note)
            ic_todo = False
            if in_context is not False:
                if in_context_supported(entry.transport, model):
                    ic_done = db.done_signatures(device, settings_id, "in_context", model=model_id)
                    ic_todo = force or not set(graph.signatures()) <= ic_done
                elif in_context:
                    warn(in_context_unsupported(entry.transport))
            if not plan and not iteration and not ic_todo:
                return result
            result.warnings = noise_warnings(facts)
            for w in result.warnings:
                warn(w)
            idle_w = None
            if facts.get("energy_sensor"):
                idle_w = agent.idle_power_w(float(settings.get("idle_seconds", 1.0)))
            env = {"facts": facts, "cpus": cpus, "threads": threads,
                   "agent_protocol": hello.get("protocol"), "transport": entry.transport,
                   "address": entry.address}
            sid = db.start_session(device, env, {**settings, "force": force, "model": graph.key},
                                   model_id, len(plan), agent_version=hello.get("agent_version"),
                                   energy_sensor=facts.get("energy_sensor"), idle_power_w=idle_w,
                                   warnings=result.warnings, settings_id=settings_id)
            result.session_id = sid
            status = "failed"
            try:
                emit("start", total=len(plan), device=device)
                since = db.session(sid).started_at if force else None

                def measure(i: int, spec: dict[str, Any]) -> None:
                    emit("op", spec=spec, index=i, device=device)
                    res = agent.measure(spec, settings)
                    res.setdefault("signature", spec["signature"])
                    res.setdefault("runtime_provenance", agent.runtime_provenance)
                    energy = attribute_energy(res, entry.profile, idle_w)
                    m = Measurement.from_result(device, sid, res, energy, kind="isolated",
                                                settings_id=settings_id)
                    if db.add_measurement(m):
                        result.measured += 1
                    if m.unstable:
                        result.unstable.append(spec["signature"])
                    if m.status == "error":
                        result.failed.append(f"{spec['op']}:{spec['phase']}: {m.error}")
                    emit("measured", spec=spec, index=i, result=res, device=device)

                # cooperative: another profile of this device (same settings) may be measuring
                # the same ops right now; claim each op first, leave the ones it holds for last
                # and take over those it did not finish (costdb.database.claim_op)
                deferred = _measure_claimed(db, sid, device, settings_id, since, plan, measure,
                                            result, emit)
                if deferred:
                    _wait_for_claims(db, sid, device, settings_id, since, deferred, measure,
                                     result, emit)
                if ic_todo:
                    result.in_context = _in_context_step(db, device, sid, settings_id, model_id,
                                                         model, graph, settings, entry.profile,
                                                         emit)
                if iteration:
                    from profiler.iteration import measure_iteration
                    emit("iteration", device=device)
                    it = measure_iteration(model, batch, input_shape, dtype=dtype)
                    db.add_iteration(device, model_id, sid, it, settings_id=settings_id)
                    result.iteration_s = it["median"]
                status = "complete" if not result.failed else "complete_with_errors"
            except KeyboardInterrupt:
                status = "interrupted"
                raise
            finally:
                final = facts
                with contextlib.suppress(Exception):
                    final = {**facts, "end": agent.hello().get("facts", {})} if entry.transport != "local" else facts
                for w in throttle_warnings(facts, final.get("end")):
                    result.warnings.append(w)
                    warn(w)
                environment = {**env, "facts": final}
                link_stats = getattr(agent, "link_stats", None)   # serial: frames, retries...
                if callable(link_stats):
                    environment["link"] = link_stats()
                if result.in_context:
                    environment["in_context"] = result.in_context
                db.update_session(sid, environment=environment)
                db.finish_session(sid, status, result.warnings)
                result.status = status
                emit("done", device=device)
        return result
    finally:
        if own_db:
            db.close()
