"""``costdb compare`` (pyperf-style, on stored raw samples) and ``costdb merge`` on real database
files filled by the real profiler and solver."""
from __future__ import annotations

import hashlib
import math
import shutil
import sqlite3
from pathlib import Path

import pytest
from scipy import stats

import costdb
from conftest import FAST
from costdb.cli import cli
from costdb.compare import is_significant, ratio_text
from costdb.merge import merge

TABLES = ("devices", "settings", "ops", "models", "graph_nodes", "sessions", "measurements",
          "iterations", "sweeps", "schedules", "pareto_points")


def _dump(path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
    finally:
        con.close()


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """a.db: mlp (batch 2) on local at 1 thread, twice (the second forced), and mlp batch 4 at 2
    threads;
    b.db: mlp (batch 2) on 'other' (inventory, based on local) at 1 thread, with a schedule and
    a sweep stored."""
    from solver.commands import run_pareto, run_solve
    tmp = tmp_path_factory.mktemp("fleet")
    inv = tmp / "inv.toml"
    inv.write_text('[devices.other]\nbased_on = "local"\n')
    a, b = tmp / "a.db", tmp / "b.db"
    costdb.profile(str(a), device="local", model="mlp", batch=2, settings=FAST, threads=1)
    costdb.profile(str(a), device="local", model="mlp", batch=2, settings=FAST, threads=1, force=True)
    costdb.profile(str(a), device="local", model="mlp", batch=4, settings=FAST, threads=2)
    costdb.profile(str(b), device="other", model="mlp", batch=2, settings=FAST, threads=1,
                   inventory=str(inv))
    run_solve(str(b), device="other", model="mlp[batch=2,input=784,dtype=float32]", compat=True,
              time_limit=30, inventory=costdb_inventory(inv))
    run_pareto(str(b), device="other", model="mlp[batch=2,input=784,dtype=float32]",
               budgets=None, n_budgets=2, mode="remat", compat=True, executor="serial",
               time_limit=30, inventory=costdb_inventory(inv))
    return a, b, inv


def costdb_inventory(path):
    from devices.inventory import load
    return load(str(path), required=True)


# --- compare ---------------------------------------------------------------------------------

def test_significance_known_answers():
    assert is_significant([1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9, 2.05])[0] is True
    assert is_significant([1.0, 2.0, 3.0], [1.1, 2.1, 2.9])[0] is False
    assert is_significant([1.0], [2.0, 2.1]) == (None, None)          # too few samples
    assert is_significant([1.0, 1.0], [1.0, 1.0])[0] is False
    assert ratio_text(1.2) == "1.20x slower" and ratio_text(0.8) == "1.25x faster"


def test_compare_two_sessions_op_by_op(fleet):
    a, _, _ = fleet
    with costdb.open(a, readonly=True) as db:
        c = db.compare(1, 2, model="mlp[batch=2,input=784,dtype=float32]")
        ms1 = {m.signature: m for m in db.measurement_list(session_id=1)}
        ms2 = {m.signature: m for m in db.measurement_list(session_id=2)}
    assert len(c.rows) == len(ms1) == len(ms2) and not c.only_a and not c.only_b
    for r in c.rows:
        x, y = ms1[r.signature], ms2[r.signature]
        assert r.ratio == pytest.approx(y.runtime_s / x.runtime_s)
        assert len(x.values) == r.a_samples >= 3                       # raw samples were stored
        p = stats.ttest_ind(x.values, y.values, equal_var=False).pvalue
        assert r.significant == (p < 0.05) and r.p_value == pytest.approx(p)
    gm = math.exp(sum(math.log(r.ratio) for r in c.rows) / len(c.rows))
    assert c.geometric_mean == pytest.approx(gm)


def test_compare_a_session_with_itself_finds_nothing(fleet):
    a, _, _ = fleet
    with costdb.open(a, readonly=True) as db:
        c = db.compare("session:1", "session:1")
    assert c.rows and all(r.ratio == 1 and r.significant is False for r in c.rows)
    assert c.geometric_mean == 1


def test_compare_lists_ops_on_one_side_only(fleet, runner):
    a, _, _ = fleet
    with costdb.open(a, readonly=True) as db:
        c = db.compare(2, 3)     # mlp batch 2 against batch 4: only the SGD updates are the same ops
        n2 = len({m.signature for m in db.measurement_list(session_id=2)})
        n3 = len({m.signature for m in db.measurement_list(session_id=3)})
    assert c.rows and c.only_a and c.only_b
    assert len(c.rows) + len(c.only_a) == n2 and len(c.rows) + len(c.only_b) == n3
    assert all(r.op == "sgd" for r in c.rows)
    r = runner.invoke(cli, ["compare", "2", "3", "--db", str(a)])
    assert r.exit_code == 0, r.output
    assert "Geometric mean: " in r.output and f"Only in session 2 (local) ({len(c.only_a)}): " in r.output
    r = runner.invoke(cli, ["compare", "settings:1", "settings:1", "--db", str(a), "--format", "csv"])
    assert r.exit_code == 0 and r.output.startswith("signature,op,phase,")
    r = runner.invoke(cli, ["compare", "1", "settings:9", "--db", str(a)])
    assert r.output == (f"Error: settings '9' is not in {a}; 'costdb settings' lists the settings "
                        "ids and fingerprints\n")


# --- merge -----------------------------------------------------------------------------------

def test_merge_combines_fleet_databases_and_is_idempotent(fleet, tmp_path, runner):
    a, b, _ = fleet
    sha_a, sha_b = _sha(a), _sha(b)
    out = tmp_path / "fleet.db"
    res = merge(out, [a, b])
    da, db_, do = _dump(a), _dump(b), _dump(out)
    assert len(do["sessions"]) == len(da["sessions"]) + len(db_["sessions"])
    assert len(do["measurements"]) == len(da["measurements"]) + len(db_["measurements"])
    assert len(do["models"]) == 2 and len(do["devices"]) == 2             # mlp batch 2 and 4
    # a.db has 1 and 2 threads; b.db's machine measured at 1 thread too: the same fingerprint
    assert len(da["settings"]) == 2 and len(db_["settings"]) == 1 and len(do["settings"]) == 2
    assert len(do["schedules"]) == len(db_["schedules"]) and len(do["pareto_points"]) == len(db_["pareto_points"])
    assert not res.conflicts and _sha(a) == sha_a and _sha(b) == sha_b     # inputs untouched
    with costdb.open(out, readonly=True) as o, costdb.open(a, readonly=True) as x, \
            costdb.open(b, readonly=True) as y:
        key = "mlp[batch=2,input=784,dtype=float32]"
        assert o.costs("local", key, settings=1)["runtime_s"].tolist() == \
            x.costs("local", key, settings=1)["runtime_s"].tolist()
        assert o.costs("other", "mlp[batch=2,input=784,dtype=float32]")["runtime_s"].tolist() == \
            y.costs("other", "mlp[batch=2,input=784,dtype=float32]")["runtime_s"].tolist()
        sched = o.schedule_list("other")
        assert [s.energy_j for s in sched] == [s.energy_j for s in y.schedule_list("other")]
        pts = o.pareto_point_list()
        assert {p.schedule_id for p in pts if p.schedule_id} <= {s.id for s in sched}
        assert {p.sweep_id for p in pts} == {s.id for s in o.sweep_list()}
    # merging again (and in another order) changes nothing
    res2 = merge(out, [b, a])
    assert _dump(out) == do and not any(res2.added.values())
    assert res2.present["sessions"] == len(da["sessions"]) + len(db_["sessions"])
    r = runner.invoke(cli, ["merge", str(out), str(a)])
    assert r.exit_code == 0 and r.output == (f"merged 1 database into {out}: added nothing; "
                                             f"{len(da['sessions']) + len(da['iterations'])} rows "
                                             "were already there\n")
    assert _dump(out) == do


def test_conflicting_duplicate_sessions_are_kept_apart(fleet, tmp_path):
    a, _, _ = fleet
    out = tmp_path / "out.db"
    merge(out, [a])
    partial = tmp_path / "partial.db"           # a copy taken while session 1 was still running
    shutil.copy(a, partial)
    con = sqlite3.connect(partial)
    with con:
        keep = con.execute("SELECT min(id) + 4 FROM measurements WHERE session_id = 1").fetchone()[0]
        con.execute("DELETE FROM measurements WHERE session_id = 1 AND id > ?", (keep,))
        con.execute("UPDATE sessions SET status = 'running', ended_at = NULL, measured = 5 WHERE id = 1")
    con.close()
    before = _dump(out)
    res = merge(out, [partial])
    after = _dump(out)
    assert len(res.conflicts) == 1 and "session 1 (local" in res.conflicts[0]
    assert len(after["sessions"]) == len(before["sessions"]) + 1              # kept separately
    assert len(after["measurements"]) == len(before["measurements"]) + 5
    with costdb.open(out, readonly=True) as o:
        new = o.session_list()[-1]
        assert new.status == "running" and new.measured == 5
        assert "different content; kept separately" in new.warnings[-1]
    assert not any(merge(out, [partial]).added.values())                      # still idempotent
    assert _dump(out) == after


def test_a_failed_merge_writes_nothing(fleet, tmp_path):
    a, b, _ = fleet
    out = tmp_path / "out.db"
    merge(out, [b])
    bad = tmp_path / "bad.db"                  # the same model key with another graph
    shutil.copy(a, bad)
    con = sqlite3.connect(bad)
    with con:
        con.execute("UPDATE graph_nodes SET signature = (SELECT signature FROM graph_nodes WHERE idx = 1"
                    " AND model_id = 1) WHERE idx = 0 AND model_id = 1")
    con.close()
    before = _dump(out)
    with pytest.raises(costdb.CostdbError) as e:
        merge(out, [a, bad])                   # a is fine; bad fails after a was merged
    assert "mlp[batch=2,input=784,dtype=float32] has a different training graph" in str(e.value)
    assert _dump(out) == before                # the whole merge was rolled back
    fresh = tmp_path / "fresh.db"
    with pytest.raises(costdb.CostdbError):
        merge(fresh, [a, bad])
    assert not fresh.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".fresh")]
    with pytest.raises(costdb.CostdbError, match="is the output database"):
        merge(out, [out])


def test_merge_reads_older_files_without_changing_them(tmp_path):
    v3 = Path(__file__).parent / "data" / "v3.db"
    src = tmp_path / "v3.db"
    shutil.copy(v3, src)
    sha = _sha(src)
    out = tmp_path / "out.db"
    merge(out, [src])
    assert _sha(src) == sha and sqlite3.connect(src).execute("PRAGMA user_version").fetchone()[0] == 3
    with costdb.open(out, readonly=True) as o:
        assert len(o.measurement_list()) == 60 and len(o.settings_list()) == 3
