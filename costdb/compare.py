"""Compare two sessions or two settings op by op, the way ``pyperf compare_to`` compares runs.

For every op measured on both sides: the medians, the ratio B/A, and whether the difference is
significant given the dispersion of the stored raw samples (Welch's two-sample t-test at 95 %;
pyperf's ``is_significant`` uses the pooled-variance t-test, which assumes equal sample counts —
re-measured ops have twice the samples, hence Welch). Ops without raw samples (measured before
schema v4) get a ratio but no verdict. The geometric mean of the ratios summarises the whole
comparison; ops measured on one side only are listed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from costdb.errors import CostdbError
from costdb.records import Measurement, shape_label

if TYPE_CHECKING:
    import pandas as pd

    from costdb.database import Database

__all__ = ["Side", "OpComparison", "Comparison", "compare", "parse_side", "is_significant",
           "ratio_text"]

#: confidence level of the significance test
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a session, or a settings fingerprint on a device."""

    device: str
    session_id: int | None = None
    settings_id: int | None = None

    @property
    def label(self) -> str:
        if self.session_id is not None:
            return f"session {self.session_id} ({self.device})"
        return f"settings #{self.settings_id} ({self.device})"


@dataclass(frozen=True)
class OpComparison:
    signature: str
    op: str
    phase: str
    shapes: str
    a_median_s: float
    a_stdev_s: float | None
    a_samples: int
    b_median_s: float
    b_stdev_s: float | None
    b_samples: int
    #: B / A of the medians (> 1: B is slower)
    ratio: float
    #: None when a side has no raw samples (schema < 4) or fewer than two
    significant: bool | None
    p_value: float | None


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    kind: str
    rows: tuple[OpComparison, ...]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]

    @property
    def geometric_mean(self) -> float | None:
        """Geometric mean of the B/A ratios over the ops measured on both sides."""
        rs = [r.ratio for r in self.rows if r.ratio > 0 and math.isfinite(r.ratio)]
        return math.exp(sum(math.log(r) for r in rs) / len(rs)) if rs else None

    def frame(self) -> "pd.DataFrame":
        import pandas as pd
        from dataclasses import asdict
        return pd.DataFrame([asdict(r) for r in self.rows])


def ratio_text(ratio: float) -> str:
    """pyperf's wording: ``1.20x slower``, ``1.25x faster``, ``no change``."""
    if ratio == 1:
        return "no change"
    return f"{ratio:.2f}x slower" if ratio > 1 else f"{1 / ratio:.2f}x faster"


def is_significant(a: Sequence[float], b: Sequence[float],
                   confidence: float = CONFIDENCE) -> tuple[bool | None, float | None]:
    """(significant?, p-value) of Welch's two-sample t-test; (None, None) with < 2 values."""
    if len(a) < 2 or len(b) < 2:
        return None, None
    va, vb = _var(a), _var(b)
    if va == 0 and vb == 0:        # no dispersion at all: any difference is real
        return (sum(a) / len(a) != sum(b) / len(b)), None
    from scipy import stats
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p < 1 - confidence, p


def _var(x: Sequence[float]) -> float:
    m = sum(x) / len(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def parse_side(db: "Database", text: str | int | Side, device: str | None = None) -> Side:
    """``3`` or ``session:3`` (a session), ``settings:2`` or ``settings:<fingerprint>`` (a
    settings fingerprint; with ``device`` unless only one device has measurements under it)."""
    if isinstance(text, Side):
        return text
    s = str(text).strip()
    kind, _, ref = s.partition(":") if ":" in s else ("session", "", s)
    if kind == "session":
        if not ref.isdigit():
            raise CostdbError(f"bad side {s!r}; give a session id (3, session:3) or settings:ID")
        rec = db.session(int(ref))
        if device and rec.device != device:
            raise CostdbError(f"session {rec.id} profiled {rec.device!r}, not {device!r}")
        return Side(rec.device, session_id=rec.id, settings_id=rec.settings_id)
    if kind == "settings":
        st = db.get_settings(ref)
        devs = db.settings_devices(st.id)
        if device is None:
            if len(devs) != 1:
                raise CostdbError(f"settings #{st.id} has measurements on "
                                  f"{', '.join(devs) or 'no device'}; give --device")
            device = devs[0]
        elif device not in devs:
            raise CostdbError(f"settings #{st.id} has no measurements on {device!r}")
        return Side(device, settings_id=st.id)
    raise CostdbError(f"bad side {s!r}; give a session id (3, session:3) or settings:ID")


def _latest(db: "Database", side: Side, kind: str,
            signatures: set[str] | None) -> dict[str, Measurement]:
    ms = db.measurement_list(device=side.device, session_id=side.session_id,
                             settings_id=side.settings_id, kind=kind)
    out: dict[str, Measurement] = {}
    for m in ms:                   # oldest first: the newest per op wins
        if m.status == "ok" and (signatures is None or m.signature in signatures):
            out[m.signature] = m
    return out


def compare(db: "Database", a: str | int | Side, b: str | int | Side, device: str | None = None,
            model: str | int | None = None, kind: str = "isolated") -> Comparison:
    """Compare side ``a`` with side ``b`` (see ``parse_side``) op by op; ``model`` restricts
    the comparison to its ops."""
    sa, sb = parse_side(db, a, device), parse_side(db, b, device)
    sigs = None
    if model is not None:
        sigs = {n.signature for n in db.graph(model).nodes}
    ma, mb = _latest(db, sa, kind, sigs), _latest(db, sb, kind, sigs)
    if not ma or not mb:
        empty = sa if not ma else sb
        raise CostdbError(f"{empty.label} has no ok {kind} measurements"
                          + (f" of model {model}" if model is not None else "") + " to compare")
    ops = db.op_records(set(ma) | set(mb))
    rows = []
    for sig in sorted(set(ma) & set(mb)):
        x, y = ma[sig], mb[sig]
        sig_, p = is_significant(x.values, y.values)
        o = ops[sig]
        rows.append(OpComparison(
            signature=sig, op=o.op, phase=o.phase, shapes=shape_label(o.inputs, o.params),
            a_median_s=x.runtime_s, a_stdev_s=x.runtime_stdev_s, a_samples=len(x.values) or x.samples or 0,
            b_median_s=y.runtime_s, b_stdev_s=y.runtime_stdev_s, b_samples=len(y.values) or y.samples or 0,
            ratio=(y.runtime_s / x.runtime_s) if x.runtime_s else math.inf,
            significant=sig_, p_value=p))
    rows.sort(key=lambda r: -abs(math.log(r.ratio)) if 0 < r.ratio < math.inf else -math.inf)

    def label(sig: str) -> str:
        o = ops[sig]
        return f"{o.op}:{o.phase} {shape_label(o.inputs, o.params)}".strip()
    return Comparison(sa, sb, kind, tuple(rows), tuple(sorted(label(s) for s in set(ma) - set(mb))),
                      tuple(sorted(label(s) for s in set(mb) - set(ma))))


def summary_lines(c: Comparison, fmt_seconds: Any) -> list[str]:
    """pyperf-style text: one line per op, then the geometric mean and the one-sided ops."""
    lines = [f"Comparing {c.a.label} -> {c.b.label} ({c.kind} measurements, "
             f"{len(c.rows)} ops on both sides)"]
    hidden = 0
    for r in c.rows:
        verdict = {True: "significant", False: "not significant", None: "no raw samples"}[r.significant]
        if r.significant is False:
            hidden += 1
        lines.append(f"- {r.op}:{r.phase} {r.shapes}: {fmt_seconds(r.a_median_s)} +- "
                     f"{fmt_seconds(r.a_stdev_s)} -> {fmt_seconds(r.b_median_s)} +- "
                     f"{fmt_seconds(r.b_stdev_s)}: {ratio_text(r.ratio)} ({verdict})")
    gm = c.geometric_mean
    lines.append(f"Geometric mean: {ratio_text(gm) if gm else '-'}"
                 + (f"; {hidden} of {len(c.rows)} differences not significant" if hidden else ""))
    if c.only_a:
        lines.append(f"Only in {c.a.label} ({len(c.only_a)}): " + ", ".join(c.only_a))
    if c.only_b:
        lines.append(f"Only in {c.b.label} ({len(c.only_b)}): " + ", ".join(c.only_b))
    return lines
