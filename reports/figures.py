"""matplotlib figures rendered to inline SVG strings (Agg-free SVG backend, text kept as text).

Every function returns an SVG fragment (no XML prolog) ready to embed in HTML, or ``None`` when
there is nothing to draw. Figures are closed after rendering. Text from the database goes into
the SVG through matplotlib, which escapes it as XML character data; math-text parsing is off so
an op named ``$x$`` is drawn literally and cannot break rendering.
"""
from __future__ import annotations

import io
import itertools
import math
import re
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator  # noqa: E402

_RC = {
    "svg.fonttype": "none",       # text as <text>, not paths: small and selectable
    "svg.hashsalt": "costdb",     # deterministic ids
    "text.parse_math": False,     # '$' in op or device names is literal
    "font.size": 11,
    "axes.titlesize": 12,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 72,
}

#: Colours of the phases and schedule states (figures and report CSS).
PHASE_COLORS = {"fwd": "#4c78a8", "loss": "#9d755d", "bwd_data": "#f58518", "bwd_weight": "#e45756",
                "update": "#54a24b"}
STATE_COLORS = {"absent": "#ffffff", "resident": "#c6dbef", "compute": "#2b8cbe",
                "recompute": "#e6550d", "page_out": "#756bb1", "page_in": "#31a354",
                "on_storage": "#e5e5e5"}
STATE_ORDER = list(STATE_COLORS)

_uid = itertools.count(1)


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:]
    # No RDF metadata (it only carries namespace URLs and the generator name).
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)
    # Several figures share one HTML document: make element ids unique per figure.
    prefix = f"f{next(_uid)}-"
    # Only inside tags: text content (escaped, so it has no '<') is left alone.
    text = _TAG.sub(lambda m: _prefix_ids(m.group(0), prefix), text)
    # Let CSS size the figure (keeps the aspect ratio through the viewBox).
    text = re.sub(r'<svg([^>]*?) width="([^"]*)" height="[^"]*"',
                  r'<svg\1 class="fig" style="max-width: \2"', text, count=1)
    return text


_TAG = re.compile(r"<[^>]+>")


def _prefix_ids(tag: str, prefix: str) -> str:
    tag = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', tag)
    tag = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{prefix}{m.group(1)})", tag)
    return re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', tag)


def _figure(w: float, h: float, ncols: int = 1) -> tuple[Figure, object]:
    """A figure outside pyplot (no global figure manager to register with and close)."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(w, h))
        ax = fig.subplots(1, ncols)
    return fig, ax


def _short(label: str, n: int = 42) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def top_bars(labels: Sequence[str], values: Sequence[float], unit_fmt, title: str,
             colors: Sequence[str] | None = None, xlabel: str = "",
             legend: dict[str, str] | None = None, binary: bool = False) -> str | None:
    """Horizontal bar chart, largest at the top; ``legend``: label -> colour of the bars."""
    pairs = [(lab, v) for lab, v in zip(labels, values) if v is not None and v == v]
    if not pairs:
        return None
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(6.2, 0.34 * len(pairs) + 1.0)
        ys = range(len(pairs))[::-1]
        vals = [v for _, v in pairs]
        ax.barh(list(ys), vals, color=list(colors) if colors else "#4c78a8")
        ax.set_yticks(list(ys), [_short(lab) for lab, _ in pairs])
        ax.set_title(title, loc="left")
        if xlabel:
            ax.set_xlabel(xlabel)
        vmax = max(vals) if vals else 1
        for y, v in zip(ys, vals):
            ax.text(v + 0.01 * vmax, y, unit_fmt(v), va="center", fontsize=10)
        ax.set_xlim(0, vmax * 1.3 if vmax > 0 else 1)
        if binary and vmax >= 1:      # bytes: ticks at round binary multiples (256 KiB, not 293)
            base = 1024.0 ** int(math.log(vmax, 1024))
            step = next(s for s in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
                        if vmax / (s * base) <= 4)
            ax.xaxis.set_major_locator(MultipleLocator(step * base))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: unit_fmt(v) if v else "0"))
        ax.tick_params(axis="y", labelsize=10)
        if legend:      # the phases of the bars drawn, in the figure itself (one legend)
            ax.legend(handles=[Patch(facecolor=c, label=p) for p, c in legend.items()],
                      frameon=False, loc="lower right", fontsize=10)
    return _svg(fig)


def phase_breakdown(phases: Sequence[str], runtime: Sequence[float], energy: Sequence[float],
                    runtime_title: str, energy_title: str, fmt_rt, fmt_en) -> str | None:
    """Two bar charts side by side: runtime and energy summed per phase."""
    if not phases:
        return None
    with matplotlib.rc_context(_RC):
        fig, axes = _figure(8.4, 2.6, ncols=2)
        for ax, vals, title, fmt in ((axes[0], runtime, runtime_title, fmt_rt),
                                     (axes[1], energy, energy_title, fmt_en)):
            vals = [0.0 if v is None or v != v else v for v in vals]
            ax.bar(range(len(phases)), vals, color=[PHASE_COLORS.get(p, "#888") for p in phases])
            ax.set_xticks(range(len(phases)), [p.replace("_", "\n") for p in phases])
            ax.set_title(title, loc="left")
            top = max(vals) if vals and max(vals) > 0 else 1
            for x, v in enumerate(vals):
                ax.text(x, v + 0.02 * top, fmt(v), ha="center", fontsize=10)
            ax.set_ylim(0, top * 1.2)
            ax.set_yticks([])
            ax.spines["left"].set_visible(False)
    return _svg(fig)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], title: str, fmt,
                 colors: dict[str, str] | None = None, stacked: bool = False) -> str | None:
    """Bars per group (devices) with one bar (or stack segment) per series."""
    if not groups or not series:
        return None
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(max(4.5, 1.1 * len(groups) + 3), 2.8)
        names = list(series)
        width = 0.8 if stacked else 0.8 / len(names)
        bottoms = [0.0] * len(groups)
        for k, name in enumerate(names):
            vals = [0.0 if v is None or v != v else float(v) for v in series[name]]
            xs = [i if stacked else i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
            ax.bar(xs, vals, width, bottom=bottoms if stacked else None, label=name,
                   color=(colors or {}).get(name))
            if stacked:
                bottoms = [b + v for b, v in zip(bottoms, vals)]
            else:
                for x, v in zip(xs, vals):
                    if v:
                        ax.text(x, v, fmt(v), ha="center", va="bottom", fontsize=9)
        if stacked:
            for i, b in enumerate(bottoms):
                ax.text(i, b, fmt(b), ha="center", va="bottom", fontsize=10)
        ax.set_xticks(range(len(groups)), [_short(g, 20) for g in groups])
        ax.set_title(title, loc="left")
        ax.legend(fontsize=10, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_yticks([])
        ax.spines["left"].set_visible(False)
    return _svg(fig)


def predicted_vs_measured(labels: Sequence[str], measured: Sequence[float],
                          predicted: Sequence[float | None], fmt) -> str | None:
    """Horizontal pairs of bars (measured, predicted) per stored iteration measurement."""
    if not labels:
        return None
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(5.6, 0.55 * len(labels) + 1.0)
        vmax = max([v for v in list(measured) + list(predicted) if v is not None and v == v] or [1])
        for k, (name, vals, color) in enumerate((("measured (whole iteration)", measured, "#4c78a8"),
                                                 ("predicted (sum of node medians)", predicted,
                                                  "#f58518"))):
            ys = [len(labels) - 1 - i + (0.2 if k == 0 else -0.2) for i in range(len(labels))]
            vs = [0.0 if v is None or v != v else v for v in vals]
            ax.barh(ys, vs, 0.38, color=color, label=name)
            for y, v, raw in zip(ys, vs, vals):      # labelled directly: no legend needed
                ax.text(v + 0.01 * vmax, y, (fmt(raw) if raw is not None else "n/a")
                        + (" measured" if k == 0 else " predicted"), va="center", fontsize=10)
        ax.set_yticks(range(len(labels))[::-1], list(labels))
        ax.set_xlim(0, vmax * 1.55)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v) if v else "0"))
        ax.set_title("Whole-iteration runtime: measured vs predicted (sum of node medians)",
                     loc="left")
    return _svg(fig)


def pareto(points: Iterable[dict], x: str, y: str, xlabel: str, ylabel: str, title: str,
           xscale: float = 1.0, yscale: float = 1.0, chosen: dict | None = None) -> str | None:
    """Scatter of sweep points per series, non-dominated ones joined by a step line.

    Each point: {x, y, series, pareto (bool)}; ``chosen`` is drawn as a large star.
    """
    pts = [p for p in points if p.get(x) is not None and p.get(y) is not None
           and p[x] == p[x] and p[y] == p[y]]
    if not pts:
        return None
    palette = ["#2b8cbe", "#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b", "#8c6d31"]
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(5.6, 3.6)
        series = sorted({p["series"] for p in pts}, key=lambda s: (s != "integrated", s))
        for k, name in enumerate(series):
            color = palette[k % len(palette)]
            sp = [p for p in pts if p["series"] == name]
            dom = [p for p in sp if not p.get("pareto")]
            front = sorted((p for p in sp if p.get("pareto")), key=lambda p: p[x])
            if dom:
                ax.scatter([p[x] * xscale for p in dom], [p[y] * yscale for p in dom], s=10,
                           color=color, alpha=0.35, linewidths=0)
            if front:
                ax.step([p[x] * xscale for p in front], [p[y] * yscale for p in front],
                        where="post", color=color, lw=1.4)
                ax.scatter([p[x] * xscale for p in front], [p[y] * yscale for p in front], s=18,
                           color=color, label=f"{name} ({len(sp)} points)")
            elif dom:
                ax.scatter([], [], color=color, label=f"{name} ({len(sp)} points)")
        if chosen and chosen.get(x) is not None and chosen.get(y) is not None:
            ax.scatter([chosen[x] * xscale], [chosen[y] * yscale], s=160, marker="*",
                       color="#ffd92f", edgecolors="black", linewidths=0.8, zorder=5,
                       label="chosen schedule")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=10, frameon=False)
    return _svg(fig)


def schedule_grid(states: Sequence[Sequence[str]], node_labels: Sequence[str], title: str) -> str | None:
    """POET-style grid: rows are stages, columns graph nodes, colour = state of the node's value."""
    if not states or not states[0]:
        return None
    index = {s: i for i, s in enumerate(STATE_ORDER)}
    matrix = [[index.get(s, 0) for s in row] for row in states]
    n_stages, n_nodes = len(matrix), len(matrix[0])
    cmap = ListedColormap([STATE_COLORS[s] for s in STATE_ORDER])
    with matplotlib.rc_context(_RC):
        w = min(9.0, max(4.0, 0.12 * n_nodes + 2))
        h = min(7.0, max(2.5, 0.12 * n_stages + 1.5))
        fig, ax = _figure(w, h)
        ax.imshow(matrix, cmap=cmap, vmin=-0.5, vmax=len(STATE_ORDER) - 0.5, aspect="auto",
                  interpolation="nearest")
        ax.set_xlabel("graph node (execution order)")
        ax.set_ylabel("stage")
        if n_nodes <= 40:
            ax.set_xticks(range(n_nodes), [_short(lb, 18) for lb in node_labels], rotation=90,
                          fontsize=8)
        ax.set_title(title, loc="left")
        used = sorted({s for row in states for s in row}, key=lambda s: index.get(s, 0))
        ax.legend(handles=[Patch(facecolor=STATE_COLORS.get(s, "#fff"), edgecolor="#999",
                                 label=s.replace("_", "-")) for s in used],
                  fontsize=10, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _svg(fig)


def executed_runs(front: Iterable[dict], runs: Sequence[dict], title: str) -> str | None:
    """Predicted (hollow) vs measured (filled) energy and runtime of executed schedules (``costdb
    run``), an arrow from each prediction to its measurement, beside the integrated Pareto front.

    ``front``: {x, y} sweep points (runtime s, energy J); ``runs``: {pred_x, pred_y, x, y, label}.
    """
    rs = [r for r in runs if None not in (r.get("pred_x"), r.get("pred_y"), r.get("x"), r.get("y"))]
    if not rs:
        return None
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(5.6, 3.6)
        fp = sorted((p for p in front if p.get("x") is not None and p.get("y") is not None),
                    key=lambda p: p["x"])
        if fp:
            ax.step([p["x"] for p in fp], [p["y"] for p in fp], where="post", color="#2b8cbe",
                    lw=1.0, alpha=0.5, label="integrated front (predicted)")
        for r in rs:
            ax.annotate("", (r["x"], r["y"]), (r["pred_x"], r["pred_y"]),
                        arrowprops={"arrowstyle": "->", "color": "#636363", "lw": 0.8})
        ax.scatter([r["pred_x"] for r in rs], [r["pred_y"] for r in rs], s=36, facecolors="none",
                   edgecolors="#e6550d", label="predicted (solver)")
        ax.scatter([r["x"] for r in rs], [r["y"] for r in rs], s=36, color="#31a354",
                   label="measured (costdb run)")
        for r in rs:
            ax.annotate(r.get("label", ""), (r["x"], r["y"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration runtime (s)")
        ax.set_ylabel("energy per iteration (J)")
        ax.set_title(title, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    return _svg(fig)
