"""Report sections fed by the solver: Pareto fronts, schedules (integrated vs baselines), the
POET-style schedule grid. Everything is produced by the real solver API (``solver.commands.run_solve``
and ``solver.pareto.sweep``) into the real tables of schema v3 (``schedules``, ``pareto_points``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import costdb
from conftest import FAST
from reports.build import _schedule_states, render_report, write_report

pytest.importorskip("solver.store")


@pytest.fixture(scope="module")
def solved_db(tmp_path_factory):
    from solver.commands import load_instance, run_solve
    from solver.pareto import default_budgets, sweep
    path = str(tmp_path_factory.mktemp("solved") / "solved.db")
    costdb.profile(path, device="local", model="mlp", batch=4, settings=FAST)
    with costdb.open(path) as db:
        inst = load_instance(db, "local", "mlp", None, None, None, "layer", None)
        for mode in ("remat", "paging", "integrated"):
            budgets = default_budgets(inst, 3, mode, compat=True)
            sweep(inst, budgets, [None], db=db, executor="serial", mode=mode, compat=True,
                  time_limit=30, threads=1)
    res, _, sid = run_solve(path, device="local", model="mlp", mode="integrated", compat=True,
                            time_limit=30)
    with costdb.open(path, readonly=True) as db:
        n_sched = db.conn.execute("SELECT count(*) FROM schedules").fetchone()[0]
        n_points = db.conn.execute("SELECT count(*) FROM pareto_points").fetchone()[0]
    return path, sid, n_sched, n_points


def test_solver_sections(solved_db):
    path, sid, n_sched, n_points = solved_db
    assert n_points >= 3 and n_sched >= 4
    html = render_report(path, devices=["local"], model="mlp")
    assert "No Pareto sweep stored" not in html and "No schedule stored" not in html
    assert "Energy vs runtime" in html and "Energy vs memory budget" in html
    assert "chosen schedule" in html
    # the recommendation is the schedule asked for with 'costdb solve' (not a sweep point)
    assert f"Recommended schedule #{sid} (integrated)" in html
    assert "POET-style schedule" in html
    assert f"{n_points} stored sweep points" in html
    for mode in ("remat", "paging", "integrated"):
        assert f"<td>{mode}</td>" in html


def test_solver_sections_in_browser(solved_db, tmp_path):
    from test_reports import ARGS, CHROMIUM, Opened
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    path, sid, n_sched, _ = solved_db
    out = write_report(path, tmp_path / "solved.html", devices=["local"])
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        o = Opened(b, out)
        try:
            o.assert_clean()
            page = o.page
            assert page.locator("table.schedules tbody tr").count() == n_sched
            chosen = page.locator("table.schedules tr.chosen")
            assert chosen.count() == 1 and chosen.locator("td").first.inner_text().startswith(str(sid))
            grid = page.locator("figure.grid svg.fig")
            assert grid.count() == 1 and grid.bounding_box()["width"] > 100
            anchor = page.locator("section.model").get_attribute("id")
            # phases, 3 top-op charts, 2 Pareto fronts, the grid
            assert page.locator(f"#{anchor} figure.plot svg.fig").count() >= 4 + 2 + 1
        finally:
            o.close()
            b.close()


def test_schedule_grid_states_from_real_schedule_encoding():
    from solver.schedule import Schedule, Stage
    # 4 nodes: 0 paged out at stage 1, paged in at stage 3 where node 1 is recomputed.
    # A cell is "resident" when the value is in RAM during the stage (kept from the previous
    # stage or kept at this stage's end).
    sched = Schedule((Stage((0,), keep=(0,)), Stage((1,), keep=(1,), pageout=(0,)),
                      Stage((2,), keep=(2,)), Stage((1, 3), keep=(), pagein=(0,))))
    states = _schedule_states(json.loads(sched.to_json()), 4)
    assert states[0] == ["compute", "absent", "absent", "absent"]
    assert states[1] == ["page_out", "compute", "absent", "absent"]
    assert states[2] == ["on_storage", "resident", "compute", "absent"]
    assert states[3] == ["page_in", "recompute", "resident", "compute"]
    # matrix form (POET's R / S_RAM / M_in / M_out) is read as well
    m = _schedule_states({"R": [[1, 0], [0, 1]], "S_RAM": [[1, 0], [1, 1]]}, 2)
    assert m == [["compute", "absent"], ["resident", "compute"]]
