"""Collect a device's (or the fleet's) costs and solver results from the database and render one
self-contained HTML report.

``render_report(db_path, devices, model)`` returns the HTML text; ``write_report(...)`` writes it
atomically. The page has no external references: CSS and the small sort/filter script are inline,
figures are inline SVG made by ``reports.figures``. Every string from the database reaches the page
through jinja2 autoescaping (or, inside figures, matplotlib's XML escaping).

Everything comes from ``costdb.Database`` — the typed records the profiler and the solver store
(``DeviceRecord``, ``SessionRecord``, ``ScheduleRecord``, ``ParetoPointRecord``...) and the cost
DataFrames; this module runs no SQL. Solver results are optional: when there are none the sections
say which command produces them.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import jinja2
import pandas as pd
from markupsafe import Markup, escape

import costdb
from costdb.files import write_text_atomic
from costdb.errors import CostdbError, did_you_mean
from costdb.records import DeviceRecord, ParetoPointRecord, ScheduleRecord, SessionRecord
from costdb.units import fmt_bytes, fmt_joules, fmt_seconds
from reports import figures

#: Rows of the per-node table shown in full; bigger graphs show the most expensive nodes.
NODE_ROWS = 1000
#: Bars in the "top ops" charts.
TOP_N = 15
PHASES = ("fwd", "loss", "bwd_data", "bwd_weight", "update")
PHASE_GROUPS = {"forward": ("fwd", "loss"), "backward": ("bwd_data", "bwd_weight"), "update": ("update",)}

_env: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _env
    if _env is None:
        _env = jinja2.Environment(
            loader=jinja2.PackageLoader("reports", "templates"),
            autoescape=True,  # always on: the template is HTML whatever its extension
            trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
        _env.filters["seconds"] = fmt_seconds
        _env.filters["bytes"] = fmt_bytes
        _env.filters["joules"] = fmt_joules
        _env.globals.update(fmt_s=fmt_seconds, fmt_b=fmt_bytes, fmt_j=fmt_joules, fmt_pct=_pct,
                            KNOWN=("measured", "modeled", "emulated"))
    return _env


# --- small helpers -----------------------------------------------------------------------------

def _num(v: Any) -> float | None:
    """A finite float or None (NaN, None and non-numbers become None)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pct(v: Any) -> str:
    f = _num(v)
    return "-" if f is None else f"{100 * f:.1f}%"


def _sortkey(v: Any) -> str:
    """The data-v attribute of a numeric cell ('' sorts last)."""
    f = _num(v)
    return "" if f is None else repr(f)


def _json(text: Any, default: Any) -> Any:
    if not isinstance(text, str) or not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _provenances(values: Iterable[Any]) -> list[dict[str, Any]]:
    c = Counter(v for v in values if isinstance(v, str) and v)
    return [{"name": k, "count": n} for k, n in sorted(c.items())]


# --- device header -------------------------------------------------------------------------------

def _catalog_device(device: str) -> DeviceRecord:
    """The record of a device that was solved for but never profiled: its catalog profile (the
    figures the solver used), or just the name for a device the catalog does not know."""
    from devices.catalog import get_profile
    try:
        p = get_profile(device)
    except CostdbError:
        return DeviceRecord(name=device)
    return DeviceRecord(name=device, board=p.board, cpu=p.cpu, arch=p.arch, transport=p.transport,
                        profile=p.to_dict())


def _fact(key: str, value: Any) -> tuple[str, str]:
    """A reported fact as a (label, text) row: units from the key's suffix (``clock_hz``,
    ``ram_bytes``), so a firmware's facts read like the host's."""
    label = key.replace("_", " ")
    if isinstance(value, (int, float)) and key.endswith("_hz"):
        return label[:-3], f"{value / 1e6:.4g} MHz"
    if isinstance(value, (int, float)) and key.endswith("_bytes"):
        return label[:-6], fmt_bytes(value)
    return label, str(value)


def _device_facts(db: costdb.Database, device: str,
                  sessions: list[SessionRecord]) -> dict[str, Any]:
    dev = db.device(device) or _catalog_device(device)
    board, cpu, arch, transport = dev.board, dev.cpu, dev.arch, dev.transport
    first_seen, last_seen = dev.first_seen, dev.last_seen
    prof = dev.profile
    facts: list[tuple[str, str]] = [("board", board or "-"), ("cpu", cpu or "-"),
                                    ("architecture", arch or "-"), ("transport", transport or "-")]
    if prof.get("based_on"):
        facts.append(("based on", str(prof["based_on"])))
    if prof.get("cores"):
        facts.append(("cores", str(prof["cores"])))
    if prof.get("clock_hz"):
        facts.append(("clock", f"{prof['clock_hz'] / 1e6:.0f} MHz"))
    if prof.get("ram_bytes"):
        facts.append(("RAM", fmt_bytes(prof["ram_bytes"])))
    if prof.get("compute_units"):
        facts.append(("compute units", ", ".join(map(str, prof["compute_units"]))))
    facts.append(("energy sensors", ", ".join(map(str, prof.get("energy_sensors") or [])) or "none"))
    facts += [("first seen", first_seen or "-"), ("last seen", last_seen or "-")]
    catalog: list[tuple[str, str]] = []
    st = prof.get("storage") or {}
    if prof.get("active_power_w") is not None:
        catalog.append(("power active / idle", f"{prof['active_power_w']:.3g} W / "
                                              f"{prof.get('idle_power_w', 0):.3g} W"))
    if prof.get("flops_per_s"):
        catalog.append(("compute", f"{prof['flops_per_s'] / 1e9:.3g} GFLOP/s"))
    if st:
        catalog.append(("secondary storage",
                        f"{st.get('kind', '?')}: read {fmt_bytes(st.get('read_bytes_per_s'))}/s "
                        f"({fmt_seconds(st.get('read_latency_s'))}), write "
                        f"{fmt_bytes(st.get('write_bytes_per_s'))}/s "
                        f"({fmt_seconds(st.get('write_latency_s'))})"))
    sources = sorted((str(k), str(v)) for k, v in (prof.get("sources") or {}).items())
    # What the agent reported in the latest session
    observed: list[tuple[str, str]] = []
    latest = None
    if sessions:
        latest = sessions[-1].id
        f = sessions[-1].facts
        for key, label in (("cpu_model", "CPU model"), ("cores", "cores"), ("machine", "machine"),
                           ("mem_total_bytes", "memory"), ("kernel", "kernel"), ("python", "python"),
                           ("torch", "torch"), ("cuda", "CUDA"), ("hostname", "hostname"),
                           ("energy_sensor", "energy sensor")):
            v = f.get(key)
            if v is None or v == "" or v == []:
                continue
            observed.append((label, fmt_bytes(v) if key == "mem_total_bytes" else str(v)))
        if f.get("governors"):
            observed.append(("governors", ", ".join(sorted(set(map(str, f["governors"]))))))
        if f.get("temperatures_c"):
            observed.append(("temperatures", ", ".join(f"{k} {v} °C" for k, v in
                                                       sorted(f["temperatures_c"].items()))))
        # what a firmware agent reports (board, clock, firmware version...) has other keys:
        # show its plain facts rather than claim there is no session
        if len(observed) < 3:
            shown = {k for k, _ in observed}
            for k, v in sorted(f.items()):
                if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v) \
                        and k not in shown and len(observed) < 14:
                    observed.append(_fact(k, v))
    return {"facts": facts, "catalog": catalog, "sources": sources, "observed": observed,
            "latest_session": latest, "profiled": db.device(device) is not None,
            "transport": transport or "",
            "description": prof.get("description") or ""}


def _session_rows(sessions: list[SessionRecord], model_keys: dict[int, str]) -> list[dict[str, Any]]:
    rows = []
    for r in sessions:
        env, f = r.environment, r.facts
        versions = [f"costdb {r.costdb_version or '?'}"]
        if r.agent_version:
            versions.append(f"agent {r.agent_version}")
        for k in ("python", "torch"):
            if f.get(k):
                versions.append(f"{k} {f[k]}")
        environment = []
        if f.get("kernel"):
            environment.append(f"kernel {f['kernel']}")
        if f.get("governors"):
            environment.append("governor " + ",".join(sorted(set(map(str, f["governors"])))))
        if f.get("loadavg"):
            environment.append(f"load {float(f['loadavg'][0]):.2f}")
        if f.get("temperatures_c"):
            environment.append("temp " + ", ".join(f"{v}°C" for v in f["temperatures_c"].values()))
        if env.get("threads") or f.get("threads"):
            environment.append(f"threads {env.get('threads') or f.get('threads')}")
        if r.host:
            environment.append(f"host {r.host}")
        summary = ", ".join(x for x in (
            f"torch {f['torch']}" if f.get("torch") else "",
            f"{env.get('threads') or f.get('threads')} threads" if env.get("threads") or f.get("threads") else "",
            f"#{r.settings_id}" if r.settings_id is not None else "") if x) or "details"
        rows.append({
            "id": r.id, "status": r.status or "", "started": r.started_at or "", "summary": summary,
            "ended": r.ended_at or "",
            "model": model_keys.get(r.model_id, str(r.model_id)) if r.model_id is not None else "-",
            "planned": "-" if r.planned is None else r.planned,
            "measured": "-" if r.measured is None else r.measured,
            "sensor": r.energy_sensor or "none (energy modeled)",
            "versions": "; ".join(versions), "environment": "; ".join(environment),
            "settings": ", ".join(([f"fingerprint #{r.settings_id}"] if r.settings_id is not None else [])
                                  + [f"{k}={v}" for k, v in sorted(r.settings.items()) if k != "model"]),
            "warnings": [str(w) for w in r.warnings]})
    return rows


# --- cost tables and charts -----------------------------------------------------------------------

def _flags(status: Any, unstable: Any) -> list[str]:
    out = []
    if unstable is True or unstable == 1:
        out.append("unstable")
    if not isinstance(status, str):
        out.append("not measured")
    elif status != "ok":
        out.append(status)
    return out


def _op_label(op: str, phase: str, shapes: str) -> str:
    return f"{op}:{phase} {shapes}".strip()


def _distinct_rows(df: pd.DataFrame, shapes: dict[int, str]) -> list[dict[str, Any]]:
    """One row per distinct signature of the model (uses = graph nodes sharing it)."""
    grouped = df.groupby("signature", sort=False)["idx"].agg(["count", "first"])
    uses = dict(zip(grouped.index, grouped["count"]))
    first_idx = dict(zip(grouped.index, grouped["first"]))
    first = df.drop_duplicates("signature")
    rows = []
    for r in first.itertuples(index=False):
        sig = r.signature
        flags = _flags(r.status, r.unstable)
        rows.append({
            "op": r.op, "phase": r.phase, "shapes": shapes.get(int(first_idx[sig]), ""),
            "signature": sig, "uses": int(uses[sig]),
            "rt": _num(r.runtime_s), "sd": _num(r.runtime_stdev_s), "iqr": _num(r.runtime_iqr_s),
            "cv": _num(r.runtime_cv), "samples": _num(r.samples),
            "mem": _num(r.peak_memory_bytes), "en": _num(r.energy_j),
            "rt_prov": r.runtime_provenance if isinstance(r.runtime_provenance, str) else "",
            "en_prov": r.energy_provenance if isinstance(r.energy_provenance, str) else "",
            "flags": flags, "unstable": "unstable" in flags})
    rows.sort(key=lambda x: -(x["rt"] or -1.0))
    return rows


def _node_rows(df: pd.DataFrame, limit: int) -> tuple[list[dict[str, Any]], int]:
    sub = df
    if len(df) > limit:
        sub = df.sort_values("runtime_s", ascending=False, na_position="last").head(limit).sort_values("idx")
    rows = []
    for r in sub.itertuples(index=False):
        flags = _flags(r.status, r.unstable)
        rows.append({"idx": int(r.idx), "name": r.name, "layer": r.layer or "", "op": r.op,
                     "phase": r.phase, "rt": _num(r.runtime_s), "sd": _num(r.runtime_stdev_s),
                     "cv": _num(r.runtime_cv), "mem": _num(r.peak_memory_bytes),
                     "en": _num(r.energy_j), "out": _num(r.output_bytes), "flags": flags,
                     "unstable": "unstable" in flags, "signature": r.signature})
    return rows, len(df) - len(sub)


# Big tables are rendered here rather than in jinja loops (10,000 rows x 14 cells through jinja
# macros take seconds). Every string from the database goes through ``escape``; numbers are
# formatted by costdb.units.

_UNSTABLE = ' class="unstable"'


def _ncell(v: float | None, fmt) -> str:
    return f'<td class="n" data-v="{"" if v is None else repr(v)}">{escape(fmt(v))}</td>'


def _flag_cells(flags: list[str]) -> str:
    return "".join(f'<span class="flag flag-{escape(f.replace(" ", "-"))}">{escape(f)}</span>' for f in flags)


def _distinct_html(rows: list[dict[str, Any]]) -> Markup:
    out = []
    for r in rows:
        out.append(
            f'<tr{_UNSTABLE if r["unstable"] else ""}><td>{escape(r["op"])}</td>'
            f'<td>{escape(r["phase"])}</td><td class="wrap">{escape(r["shapes"])}</td><td class="n">{r["uses"]}</td>'
            f'{_ncell(r["rt"], fmt_seconds)}{_ncell(r["sd"], fmt_seconds)}{_ncell(r["iqr"], fmt_seconds)}'
            f'{_ncell(r["cv"], _pct)}<td class="n">{"-" if r["samples"] is None else int(r["samples"])}</td>'
            f'{_ncell(r["mem"], fmt_bytes)}{_ncell(r["en"], fmt_joules)}'
            f'<td>{escape(r["rt_prov"])}/{escape(r["en_prov"])}</td><td>{_flag_cells(r["flags"])}</td>'
            f'<td class="sig">{escape(r["signature"])}</td></tr>')
    return Markup("\n".join(out))


def _nodes_html(rows: list[dict[str, Any]]) -> Markup:
    out = []
    for r in rows:
        out.append(
            f'<tr{_UNSTABLE if r["unstable"] else ""}><td class="n" data-v="{r["idx"]}">'
            f'{r["idx"]}</td><td>{escape(r["name"])}</td><td>{escape(r["layer"])}</td>'
            f'<td>{escape(r["op"])}</td><td>{escape(r["phase"])}</td>{_ncell(r["rt"], fmt_seconds)}'
            f'{_ncell(r["sd"], fmt_seconds)}{_ncell(r["cv"], _pct)}{_ncell(r["mem"], fmt_bytes)}'
            f'{_ncell(r["en"], fmt_joules)}{_ncell(r["out"], fmt_bytes)}<td>{_flag_cells(r["flags"])}</td></tr>')
    return Markup("\n".join(out))


def _top_chart(rows: list[dict[str, Any]], key: str, fmt, title: str,
               binary: bool = False) -> str | None:
    ranked = sorted((r for r in rows if r[key] is not None and r[key] > 0), key=lambda r: -r[key])[:TOP_N]
    if not ranked:
        return None
    labels = [_op_label(r["op"], r["phase"], r["shapes"]) for r in ranked]
    colors = [figures.PHASE_COLORS.get(r["phase"], "#888") for r in ranked]
    used = {r["phase"] for r in ranked}
    legend = {p: c for p, c in figures.PHASE_COLORS.items() if p in used}
    return figures.top_bars(labels, [r[key] for r in ranked], fmt, title, colors, legend=legend,
                            binary=binary)


def _phase_table(df: pd.DataFrame) -> list[dict[str, Any]]:
    total_rt = float(df["runtime_s"].sum()) or float("nan")
    total_en = float(df["energy_j"].sum()) or float("nan")
    out = []
    for group, phases in PHASE_GROUPS.items():
        part = df[df["phase"].isin(phases)]
        rt, en = float(part["runtime_s"].sum()), float(part["energy_j"].sum())
        out.append({"group": group, "phases": ", ".join(phases), "nodes": len(part), "rt": rt,
                    "en": en, "rt_share": _pct(rt / total_rt), "en_share": _pct(en / total_en)})
    return out


def _costs(db: costdb.Database, device: str, key: str, model_id: int, settings: Any,
           kind: str) -> tuple[pd.DataFrame, str]:
    """The cost table of a report section, and a note when it is not the obvious one.

    A device that was only solved for has every node unmeasured. A model profiled under several
    settings fingerprints shows the latest (a cost table never mixes them) instead of failing
    the whole report; ``--settings`` chooses another."""
    if db.device(device) is None:
        return db.node_costs_unmeasured(model_id), ""
    if settings is not None:
        return db.costs(device, key, settings=settings, kind=kind), ""
    try:
        return db.costs(device, key, kind=kind), ""
    except CostdbError:
        df = db.costs(device, key, settings="latest", kind=kind)
    sid = df.attrs.get("settings_id")
    return df, (f"{key} was measured on {device} under several settings fingerprints; these "
                f"tables show the latest, #{sid} ({db.get_settings(sid).describe()}); choose "
                f"another with --settings ID ('costdb settings --device {device}' lists them).")


def _model_cost_section(db: costdb.Database, device: str, key: str, model_id: int,
                        node_limit: int, settings: Any = None, kind: str = "auto") -> dict[str, Any]:
    df, note = _costs(db, device, key, model_id, settings, kind)
    shapes = db.node_labels(model_id)
    measured = df["status"].eq("ok")
    distinct = _distinct_rows(df, shapes)
    nodes, hidden = _node_rows(df, node_limit)
    rt_prov = _provenances(df.drop_duplicates("signature")["runtime_provenance"])
    en_prov = _provenances(df.drop_duplicates("signature")["energy_provenance"])
    by_phase_rt = [float(df.loc[df.phase == p, "runtime_s"].sum()) for p in PHASES]
    by_phase_en = [float(df.loc[df.phase == p, "energy_j"].sum()) for p in PHASES]
    present = [i for i, p in enumerate(PHASES) if (df.phase == p).any()]
    return {
        "n_nodes": len(df), "n_distinct": len(distinct), "n_measured": int(measured.sum()),
        "n_unstable": sum(1 for r in distinct if r["unstable"]),
        "n_missing": int((~df["status"].notna()).sum()),
        "runtime_s": _num(df["runtime_s"].sum()) if measured.any() else None,
        "energy_j": _num(df["energy_j"].sum()) if measured.any() else None,
        "max_peak_memory": _num(df["peak_memory_bytes"].max()),
        "rt_prov": rt_prov, "en_prov": en_prov,
        "distinct_html": _distinct_html(distinct), "nodes_html": _nodes_html(nodes),
        "n_nodes_shown": len(nodes), "nodes_hidden": hidden,
        "phase_table": _phase_table(df),
        "fig_top_runtime": _top_chart(distinct, "rt", fmt_seconds, f"Top {TOP_N} ops by runtime (median)"),
        "fig_top_energy": _top_chart(distinct, "en", fmt_joules, f"Top {TOP_N} ops by energy (gross)"),
        "fig_top_memory": _top_chart(distinct, "mem", fmt_bytes, f"Top {TOP_N} ops by peak memory", binary=True),
        "fig_phases": figures.phase_breakdown(
            [PHASES[i] for i in present], [by_phase_rt[i] for i in present],
            [by_phase_en[i] for i in present], "Runtime per phase (sum over nodes)",
            "Gross energy per phase (sum over nodes)", fmt_seconds, fmt_joules) if measured.any() else None,
        "has_data": bool(measured.any()), "settings_note": note,
        "df": df,
    }


def _iteration_rows(db: costdb.Database, device: str, key: str) -> list[dict[str, Any]]:
    it = db.iterations(device)
    it = it[it["model"] == key]
    rows = []
    for r in it.itertuples(index=False):
        rows.append({"measured": _num(r.measured_s), "predicted": _num(r.predicted_s),
                     "error": _num(r.error), "cv": _num(r.runtime_cv), "samples": _num(r.samples),
                     "threads": _num(r.threads), "optimizer": r.optimizer or "",
                     "prov": r.runtime_provenance or "", "at": r.measured_at or ""})
    return rows


# --- solver results ---------------------------------------------------------------------------------

def _front(points: list[dict[str, Any]], x: str) -> None:
    """Mark the non-dominated points of each series in the (x, energy) projection."""
    for series in {p["series"] for p in points}:
        sp = sorted((p for p in points if p["series"] == series and p.get("pareto") is None
                     and p.get(x) is not None and p.get("energy_j") is not None),
                    key=lambda p: (p[x], p["energy_j"]))
        best = math.inf
        for p in sp:
            p["pareto"] = p["energy_j"] < best
            best = min(best, p["energy_j"])


def _schedule_states(sched: Any, n_nodes: int) -> list[list[str]] | None:
    """Stage x node states from a schedule's JSON (see docs/reports.md for accepted encodings)."""
    if isinstance(sched, str):
        sched = _json(sched, None)
    if not isinstance(sched, dict):
        return None
    low = {k.lower(): v for k, v in sched.items()}
    for nest in ("matrices", "decisions", "variables", "x"):
        if isinstance(low.get(nest), dict):
            low.update({k.lower(): v for k, v in low[nest].items()})

    def mat(*names: str) -> list[list[Any]] | None:
        for n in names:
            v = low.get(n)
            if isinstance(v, list) and v and isinstance(v[0], list):
                return v
        return None

    R = mat("r", "compute", "recompute_matrix")
    if R is not None:
        ram = mat("s_ram", "sram", "ram", "keep", "resident")
        sd = mat("s_sd", "ssd", "sd", "storage", "on_storage")
        m_in = mat("m_in", "min", "page_in", "pagein")
        m_out = mat("m_out", "mout", "page_out", "pageout")
        T = len(R)
        n = max(len(row) for row in R)
        states = []
        computed = [False] * n
        for t in range(T):
            row = []
            for i in range(n):
                def on(m: list[list[Any]] | None) -> bool:
                    return bool(m and t < len(m) and i < len(m[t]) and m[t][i] and m[t][i] > 0.5)
                if on(R):
                    row.append("recompute" if computed[i] else "compute")
                    computed[i] = True
                elif on(m_in):
                    row.append("page_in")
                elif on(m_out):
                    row.append("page_out")
                elif on(ram):
                    row.append("resident")
                elif on(sd):
                    row.append("on_storage")
                else:
                    row.append("absent")
            states.append(row)
        return states
    stages = low.get("stages") or low.get("steps")
    if isinstance(stages, list) and stages and isinstance(stages[0], dict):
        n = int(low["n"]) if isinstance(low.get("n"), int) else 0
        for st in stages:
            for v in st.values():
                if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
                    n = max(n, max(v) + 1)
        n = n or n_nodes
        states = []
        computed = [False] * n
        stored: set[int] = set()      # paged out once: on secondary storage from then on
        keys = (("page_in", ("page_in", "m_in", "pagein")), ("page_out", ("page_out", "m_out", "pageout")),
                ("resident", ("resident", "ram", "keep", "s_ram", "in_ram")),
                ("on_storage", ("on_storage", "sd", "s_sd", "storage")))
        kept: list[int] = []          # RAM at the start of the stage = the previous stage's keep
        for st in stages:
            s = {k.lower(): v for k, v in st.items()}
            row = ["on_storage" if i in stored else "absent" for i in range(n)]
            for i in kept:
                row[i] = "resident"
            kept = [i for name in ("keep", "resident", "ram", "s_ram", "in_ram") for i in s.get(name) or []
                    if isinstance(i, int) and 0 <= i < n]
            for name in ("page_out", "m_out", "pageout"):
                stored.update(i for i in s.get(name) or [] if isinstance(i, int) and 0 <= i < n)
            for state, names in reversed(keys):
                for name in names:
                    for i in s.get(name) or []:
                        if isinstance(i, int) and 0 <= i < n:
                            row[i] = state
            for name in ("compute", "r", "recompute"):
                for i in s.get(name) or []:
                    if isinstance(i, int) and 0 <= i < n:
                        row[i] = "recompute" if computed[i] else "compute"
                        computed[i] = True
            states.append(row)
        return states
    return None


def _schedule_row(r: ScheduleRecord) -> dict[str, Any]:
    return {"id": r.id, "series": r.mode or "integrated", "solver": r.solver or "",
            "status": r.status or "", "budget": _num(r.budget_bytes), "deadline": _num(r.deadline_s),
            "energy_j": _num(r.energy_j), "runtime_s": _num(r.runtime_s),
            "peak": _num(r.peak_memory_bytes), "solve_time": _num(r.solve_time_s),
            "created": r.created_at or "", "provenance": r.cost_provenance or "",
            "has_schedule": r.has_schedule, "from_sweep": r.sweep_id is not None,
            "method": r.method or "", "chosen": False}


def _point_row(p: ParetoPointRecord) -> dict[str, Any]:
    return {"series": p.series, "pareto": p.pareto, "energy_j": _num(p.energy_j),
            "runtime_s": _num(p.runtime_s), "peak": _num(p.peak_memory_bytes),
            "budget": _num(p.budget_bytes), "deadline": _num(p.deadline_s)}


def _solver_section(db: costdb.Database, device: str, key: str, name: str, model_id: int,
                    db_hint: str, node_names: list[str]) -> dict[str, Any]:
    dev = shlex.quote(device)
    pareto_cmd = f"costdb pareto --device {dev} --model {name}{db_hint}"
    solve_cmd = f"costdb solve --device {dev} --model {name}{db_hint}"
    sec: dict[str, Any] = {"pareto_cmd": pareto_cmd, "solve_cmd": solve_cmd, "points": 0,
                           "fig_energy_runtime": None, "fig_energy_memory": None, "schedules": [],
                           "chosen": None, "fig_grid": None, "grid_note": "", "series": []}
    records = db.schedule_list(device=device, model_id=model_id)
    chosen = None
    if records:
        by_id = {r.id: r for r in records}
        rows = [_schedule_row(r) for r in records]
        feasible = [r for r in rows if r["energy_j"] is not None and by_id[r["id"]].feasible]
        integ = [r for r in feasible if r["series"] == "integrated"]
        # The recommendation: the latest integrated schedule the user asked for with 'costdb
        # solve' (not part of a sweep); else the lowest-energy integrated one; else the
        # lowest-energy schedule of any kind.
        direct = [r for r in integ if not r["from_sweep"]]
        if direct:
            chosen = direct[-1]
        elif integ:
            chosen = min(integ, key=lambda r: (r["energy_j"], -(r["id"] or 0)))
        elif feasible:
            chosen = min(feasible, key=lambda r: (r["energy_j"], -(r["id"] or 0)))
        if chosen:
            chosen["chosen"] = True
            sched_obj = _json(by_id[chosen["id"]].schedule_json, None)
            states = _schedule_states(sched_obj, len(node_names))
            if states:
                n = len(states[0])
                names = sched_obj.get("node_names") if isinstance(sched_obj, dict) else None
                if not (isinstance(names, list) and len(names) == n):
                    names = node_names if len(node_names) == n else [str(i) for i in range(n)]
                labels = [str(x) for x in names]
                sec["fig_grid"] = figures.schedule_grid(
                    states, labels, f"Schedule {chosen['id']} ({chosen['series']}): "
                                    f"{len(states)} stages x {n} nodes")
                counts = Counter(s for row in states for s in row)
                sec["grid_counts"] = [(s.replace("_", "-"), counts.get(s, 0)) for s in figures.STATE_ORDER
                                      if s != "absent"]
            else:
                sec["grid_note"] = ("the chosen schedule has no stage x node decisions stored "
                                    "(schedule_json missing or in an unknown encoding)")
        sec["schedules"] = rows
        sec["chosen"] = chosen
    point_records = db.pareto_point_list(device=device, model_id=model_id)
    if point_records:
        points = [_point_row(p) for p in point_records]
        for p in points:
            if p["budget"] is None:
                p["budget"] = p["peak"]
        # The stored flag is non-dominance over all objectives (energy, runtime, memory); each
        # plot marks the front of its own two axes.
        pts_rt = [dict(p, pareto=None) for p in points]
        _front(pts_rt, "runtime_s")
        pts_mem = [dict(p, pareto=None) for p in points]
        _front(pts_mem, "budget")
        ch = None
        if chosen:
            ch = {"runtime_s": chosen["runtime_s"], "energy_j": chosen["energy_j"],
                  "budget": chosen["budget"] if chosen["budget"] is not None else chosen["peak"]}
        sec["points"] = len(points)
        sec["series"] = [{"name": s, "points": n} for s, n in
                         sorted(Counter(p["series"] for p in points).items())]
        sec["fig_energy_runtime"] = figures.pareto(
            [dict(p, x=p["runtime_s"], y=p["energy_j"]) for p in pts_rt], "x", "y",
            "iteration runtime (s)", "energy per iteration (J, net of idle)", "Energy vs runtime", chosen=(
                {"x": ch["runtime_s"], "y": ch["energy_j"]} if ch else None))
        sec["fig_energy_memory"] = figures.pareto(
            [dict(p, x=p["budget"], y=p["energy_j"]) for p in pts_mem], "x", "y",
            "memory budget (MiB)", "energy per iteration (J, net of idle)", "Energy vs memory budget",
            xscale=1 / 2**20, chosen=({"x": ch["budget"], "y": ch["energy_j"]} if ch else None))
    _runs_section(db, device, model_id, sec)
    return sec


def _runs_section(db: costdb.Database, device: str, model_id: int, sec: dict[str, Any]) -> None:
    """Executed schedules (``costdb run``): predicted vs measured beside the Pareto front."""
    recs = db.run_list(device=device, model_id=model_id)
    sec["runs"] = [{"id": r.id, "schedule": r.schedule_id, "mode": r.mode, "budget": r.budget_bytes,
                    "pred_runtime": r.predicted_runtime_s, "runtime": r.runtime_s,
                    "pred_act": r.predicted_activation_peak_bytes, "act": r.activation_peak_bytes,
                    "pred_out": r.predicted_pageout_bytes, "out": r.pageout_bytes,
                    "pred_energy": r.predicted_energy_j, "energy": r.energy_j,
                    "energy_prov": r.energy_provenance, "bit_exact": r.bit_exact} for r in recs]
    sec["fig_runs"] = None
    if recs:
        front = [{"x": p.runtime_s, "y": p.energy_j} for p in
                 db.pareto_point_list(device=device, model_id=model_id)
                 if p.pareto and p.mode == "integrated" and not p.baseline]
        sec["fig_runs"] = figures.executed_runs(
            front, [{"pred_x": r.predicted_runtime_s, "pred_y": r.predicted_energy_j,
                     "x": r.runtime_s, "y": r.energy_j, "label": f"#{r.schedule_id}"} for r in recs],
            "Executed schedules: predicted vs measured")
        sec["runs_prov"] = _provenances(r.energy_provenance for r in recs)


# --- comparison ---------------------------------------------------------------------------------------

def _comparison(db: costdb.Database, model_id: int, key: str, name: str,
                db_hint: str, settings: Any = None, kind: str = "auto") -> dict[str, Any] | None:
    devs = [d for d in db.measured_devices(model_id) if model_id in db.models_with_data(d)]
    if len(devs) < 2:
        return None
    rows = []
    per_phase: dict[str, list[float]] = {g: [] for g in PHASE_GROUPS}
    energy: list[float] = []
    iters = db.iterations()
    for dev in devs:
        df, _ = _costs(db, dev, key, model_id, settings, kind)
        ok = df["status"].eq("ok")
        it = iters[(iters["device"] == dev) & (iters["model"] == key)]
        last = it.iloc[-1] if len(it) else None
        for g, phases in PHASE_GROUPS.items():
            per_phase[g].append(float(df.loc[df.phase.isin(phases), "runtime_s"].sum()))
        energy.append(float(df["energy_j"].sum()))
        rec = db.require_device(dev)
        energies = [e for e in (_num(r.energy_j) for r in db.schedule_list(dev, model_id))
                    if e is not None]
        solver_best = min(energies) if energies else None
        rows.append({"device": dev, "board": rec.board or "", "cpu": rec.cpu or "",
                     "measured": f"{int(ok.sum())}/{len(df)}", "rt": _num(df["runtime_s"].sum()),
                     "en": _num(df["energy_j"].sum()), "mem": _num(df["peak_memory_bytes"].max()),
                     "unstable": int(df.drop_duplicates("signature")["unstable"].eq(True).sum()),
                     "iter": _num(last["measured_s"]) if last is not None else None,
                     "rt_prov": ", ".join(p["name"] for p in _provenances(df["runtime_provenance"])),
                     "en_prov": ", ".join(p["name"] for p in _provenances(df["energy_provenance"])),
                     "solver_best": solver_best})
    return {"model": key, "devices": devs, "rows": rows,
            "fig_runtime": figures.grouped_bars(devs, per_phase, f"{name}: runtime per iteration "
                                                "(sum of node medians) by phase", fmt_seconds,
                                                colors={"forward": figures.PHASE_COLORS["fwd"],
                                                        "backward": figures.PHASE_COLORS["bwd_data"],
                                                        "update": figures.PHASE_COLORS["update"]},
                                                stacked=True),
            "fig_energy": figures.grouped_bars(devs, {"energy per iteration": energy},
                                               f"{name}: energy per iteration (gross)", fmt_joules,
                                               colors={"energy per iteration": "#e45756"})}


# --- top level -------------------------------------------------------------------------------------

def resolve_model(db: costdb.Database, model: str, batch: int | None = None,
                  input_shape: Any = None) -> int:
    """The stored model a report covers, from any form ``costdb solve`` accepts: an id, a key,
    a name (with batch and input to choose a variant) or ``path/to/file.py:factory`` (stored
    under the name ``file:factory``); no torch is imported."""
    try:
        return db.resolve_model(model, batch, input_shape)
    except CostdbError:
        path, sep, attr = str(model).rpartition(":")
        if not (sep and path.endswith(".py")):
            raise
    try:
        return db.resolve_model(f"{Path(path).stem}:{attr}", batch, input_shape)
    except CostdbError:
        raise CostdbError(f"model {model!r} is not in {db.path} (stored as "
                          f"{Path(path).stem + ':' + attr!r}); profile or solve it first: "
                          f"costdb profile --model {shlex.quote(str(model))} --input CxHxW") from None


def model_arg(m: Any, stored: Sequence[Any]) -> str:
    """``--model`` for a command hint that reads the stored model: its name where that names
    one variant, else its (quoted) key."""
    same = [o for o in stored if o.name == m.name]
    return shlex.quote(m.name if len(same) == 1 else m.key)


def profile_model_args(m: Any) -> str:
    """The ``costdb profile`` options that measure exactly this stored variant: a zoo model by
    name, batch and input; a file model (``file:factory``, whose path is not stored) by its key,
    which profiles the stored graph."""
    if ":" in m.name:
        return f"--model {shlex.quote(m.key)}"
    return f"--model {shlex.quote(m.name)} --batch {m.batch} --input {shlex.quote(m.input_shape)}"


def _counted(counts: dict[str, int]) -> list[dict[str, Any]]:
    return [{"name": k, "count": n} for k, n in sorted(counts.items())]


def collect(db: costdb.Database, devices: Sequence[str] | None = None, model: str | None = None,
            all_devices: bool = False, node_rows: int = NODE_ROWS,
            db_label: str | None = None, settings: Any = None, kind: str = "auto",
            batch: int | None = None, input_shape: Any = None) -> dict[str, Any]:
    """The template context: one section per device (and model) plus the fleet comparison.

    Each cost table is built from one settings fingerprint (``settings``: None when the
    measurements agree, ``"latest"`` or an id; see ``costdb.Database.costs``)."""
    known = db.devices_with_data()
    if all_devices:
        devices = known
    devices = list(dict.fromkeys(devices or []))
    if not devices:
        if len(known) == 1:
            devices = known
        elif not known:
            raise CostdbError(f"{db.path} has no devices yet; run 'costdb profile --device D "
                              "--model M' first")
        else:
            raise CostdbError("give --device NAME (repeatable) or --all; devices with data: "
                              + ", ".join(known))
    for d in devices:
        if d not in known:
            raise CostdbError(f"device {d!r} has no data in {db.path}{did_you_mean(d, known)}"
                              + (f"; devices with data: {', '.join(known)}" if known else ""))
    stored = db.model_list()
    model_keys = {m.id: m.key for m in stored}
    model_names = {m.id: m.name for m in stored}
    by_id = {m.id: m for m in stored}
    chosen_model = resolve_model(db, model, batch, input_shape) if model else None
    hint = f" --db {shlex.quote(db_label)}" if db_label else ""
    sections = []
    compare_models: list[int] = []
    for dev in devices:
        sessions = db.session_list(dev)
        info = _device_facts(db, dev, sessions)
        local = info["transport"] == "local"
        mids = [chosen_model] if chosen_model is not None else db.models_with_data(dev)
        prov = db.provenance_counts(dev)
        all_rt, all_en, it_prov = (_counted(prov[k]) for k in ("runtime", "energy", "iteration"))
        models = []
        for mid in mids:
            key, name = model_keys[mid], model_names[mid]
            costs = _model_cost_section(db, dev, key, mid, node_rows, settings, kind)
            node_names = costs.pop("df")["name"].tolist()
            iters = _iteration_rows(db, dev, key)
            fig_iter = figures.predicted_vs_measured(
                [f"#{k + 1} {r['at'][:16]}" for k, r in enumerate(iters[-6:])],
                [r["measured"] for r in iters[-6:]], [r["predicted"] for r in iters[-6:]],
                fmt_seconds) if iters else None
            profile_cmd = (f"costdb profile --device {shlex.quote(dev)} "
                           f"{profile_model_args(by_id[mid])}{hint}")
            # whole iterations train the model's own module on this host: a zoo model on a
            # local-transport device (a file model's path is not stored)
            iter_cmd = profile_cmd if local and ":" not in name else None
            models.append({
                "id": mid, "key": key, "name": name, "anchor": f"d{len(sections)}-m{mid}",
                "iter_cmd": iter_cmd, "local": local,
                "export_cmd": f"costdb export --device {shlex.quote(dev)} --model "
                              f"{shlex.quote(key)} --format csv -o nodes.csv{hint}",
                "costs": costs, "iterations": iters, "fig_iter": fig_iter,
                "iter_prov": _provenances(r["prov"] for r in iters),
                "profile_cmd": profile_cmd,
                "solver": _solver_section(db, dev, key, model_arg(by_id[mid], stored), mid, hint,
                                          node_names)})
            if mid not in compare_models:
                compare_models.append(mid)
        sections.append({"name": dev, "anchor": f"d{len(sections)}", "info": info,
                         "sessions": _session_rows(sessions, model_keys), "models": models,
                         "prov_runtime": all_rt, "prov_energy": all_en, "prov_iter": it_prov,
                         "profile_cmd": models[0]["profile_cmd"] if models else
                         f"costdb profile --device {shlex.quote(dev)} --model "
                         f"{'mlp' if local else 'tinycnn'}{hint}"})
    comparisons = []
    for mid in compare_models:
        c = _comparison(db, mid, model_keys[mid], model_names[mid], hint, settings, kind)
        if c:
            comparisons.append(c)
    title_devs = ", ".join(devices) if len(devices) <= 4 else f"{len(devices)} devices"
    title_model = f" — {model_names[chosen_model]}" if chosen_model is not None else ""
    return {"title": f"costdb report: {title_devs}{title_model}",
            "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "version": costdb.__version__,
            "db": db_label or str(db.path), "devices": sections, "comparisons": comparisons,
            "fleet": len(known) > 1, "known_devices": known,
            "state_colors": figures.STATE_COLORS, "phase_colors": figures.PHASE_COLORS}


def render_report(db_path: str | os.PathLike, devices: Sequence[str] | None = None,
                  model: str | None = None, all_devices: bool = False,
                  node_rows: int = NODE_ROWS, settings: Any = None, kind: str = "auto",
                  batch: int | None = None, input_shape: Any = None) -> str:
    """The report as one HTML string (see module docstring)."""
    with costdb.open(db_path, readonly=True) as db:
        ctx = collect(db, devices, model, all_devices, node_rows, db_label=str(db_path),
                      settings=settings, kind=kind, batch=batch, input_shape=input_shape)
    return _environment().get_template("report.html.j2").render(**ctx)


def write_report(db_path: str | os.PathLike, output: str | os.PathLike = "report.html",
                 devices: Sequence[str] | None = None, model: str | None = None,
                 all_devices: bool = False, node_rows: int = NODE_ROWS,
                 settings: Any = None, kind: str = "auto", batch: int | None = None,
                 input_shape: Any = None) -> Path:
    """Render and write atomically (temp file in the target directory, then rename)."""
    html = render_report(db_path, devices, model, all_devices, node_rows, settings, kind,
                         batch, input_shape)
    return write_text_atomic(output, html)
