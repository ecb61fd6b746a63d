"""HTML reports, opened in a real headless Chromium (playwright driving Debian's /usr/bin/chromium).

The databases are filled by the real profiler (``local`` and an inventory device based on it).
No timing thresholds here; the generation benchmark is benchmarks/bench_report.py.
"""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

import costdb
from reports.build import render_report, write_report

from conftest import FAST

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
EVIL = "<script>alert(1)</script>"
EVIL_OP = '<script>alert("op")</script>'
EVIL_BOARD = "<img src=x onerror=alert(2)>"
MODEL_KEY = "mlp[batch=4,input=784,dtype=float32]"


def _inventory(tmp: Path, *names: str) -> str:
    path = tmp / "inventory.toml"
    path.write_text("".join(f'[devices."{n}"]\nbased_on = "local"\n\n' for n in names))
    return str(path)


@pytest.fixture(scope="module")
def fleet_db(tmp_path_factory):
    """mlp profiled on ``local`` and on ``other`` (inventory, based on local), with whole-iteration
    timings on both."""
    tmp = tmp_path_factory.mktemp("reports")
    path = str(tmp / "fleet.db")
    inv = _inventory(tmp, "other")
    for dev in ("local", "other"):
        costdb.profile(path, device=dev, model="mlp", batch=4, settings=FAST, inventory=inv,
                       iteration=True)
    return path


@pytest.fixture(scope="module")
def evil_db(tmp_path_factory):
    """A device named ``<script>…`` (through the real inventory and profiler) whose board and one
    op carry HTML too (rewritten in the real tables)."""
    tmp = tmp_path_factory.mktemp("evil")
    path = str(tmp / "evil.db")
    costdb.profile(path, device=EVIL, model="mlp", batch=4, settings=FAST,
                   inventory=_inventory(tmp, EVIL))
    con = sqlite3.connect(path)
    with con:
        sig = con.execute("SELECT signature FROM graph_nodes WHERE op = 'relu' LIMIT 1").fetchone()[0]
        con.execute("UPDATE ops SET op = ? WHERE signature = ?", (EVIL_OP, sig))
        con.execute("UPDATE graph_nodes SET op = ?, name = ? WHERE signature = ?", (EVIL_OP, EVIL_OP, sig))
        con.execute("UPDATE devices SET board = ?", (EVIL_BOARD,))
    con.close()
    return path


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Opened:
    """A report page with everything it logged, requested and tried to pop up."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

        def dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()
        self.page.on("dialog", dialog)
        self.url = path.resolve().as_uri()
        self.page.goto(self.url, wait_until="load")

    def close(self) -> None:
        self.page.close()

    def assert_clean(self) -> None:
        bad = [m for m in self.console if m[0] in ("error", "warning")]
        assert not bad, bad
        assert not self.errors, self.errors
        assert self.requests == [self.url], f"the report fetched something: {self.requests}"
        assert not self.dialogs, self.dialogs


def _column(page, table_id: str, header: str) -> tuple[int, object]:
    heads = page.locator(f"#{table_id} thead th")
    texts = [t.strip() for t in heads.all_inner_texts()]
    col = texts.index(header)
    return col, heads.nth(col)


def _values(page, table_id: str, col: int) -> list[float | None]:
    raw = page.eval_on_selector_all(
        f"#{table_id} tbody tr", f"rows => rows.map(r => r.cells[{col}].getAttribute('data-v'))")
    return [None if v in (None, "") else float(v) for v in raw]


# --- Python-level checks --------------------------------------------------------------------

def test_report_has_sections_and_no_external_urls(fleet_db):
    html = render_report(fleet_db, devices=["local"], model="mlp")
    for text in ("Provenance of the figures", "Sessions", "Forward vs backward vs update", "Top ops",
                 "Whole iteration: predicted vs measured", "Cost per distinct op",
                 "Cost per graph node", "Pareto fronts", "Device comparison"):
        assert text in html
    # The only URLs are the SVG namespace names (not fetched).
    urls = set(re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", html))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert not re.search(r"""<(?:link|img|iframe)\b|\bsrc\s*=""", html)
    # Exactly one script element: ours.
    assert html.count("<script") == 1


def test_missing_solver_results_name_the_commands(fleet_db):
    html = render_report(fleet_db, devices=["local"])
    assert f"costdb pareto --device local --model mlp --db {fleet_db}" in html
    assert f"costdb solve --device local --model mlp --db {fleet_db}" in html


def test_missing_iteration_names_the_command(evil_db):
    html = render_report(evil_db, all_devices=True)
    assert "No whole-iteration measurement" in html
    assert "times full forward + backward + update iterations" in html
    assert "Only one device in the database" in html


def test_write_report_atomic_and_errors(fleet_db, tmp_path):
    out = write_report(fleet_db, tmp_path / "r.html", devices=["other"])
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(costdb.CostdbError, match="devices with data: local, other"):
        render_report(fleet_db, devices=["nope"])
    with pytest.raises(costdb.CostdbError, match="--all"):
        render_report(fleet_db)
    with pytest.raises(costdb.CostdbError, match="does not exist"):
        write_report(fleet_db, tmp_path / "missing-dir" / "r.html", devices=["local"])


def test_cli_report(fleet_db, tmp_path, runner):
    from costdb.cli import cli
    out = tmp_path / "fleet.html"
    res = runner.invoke(cli, ["report", "--db", fleet_db, "--all", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and out.exists()
    html = out.read_text()
    assert html.count('class="device"') == 2 and f"{MODEL_KEY} on 2 devices" in html
    res = runner.invoke(cli, ["report", "--db", fleet_db, "--device", "local", "--model", "nosuch",
                              "-o", str(out)])
    assert res.exit_code == 2 and "not in" in res.output


# --- in the browser -------------------------------------------------------------------------

def test_fleet_report_in_browser(fleet_db, browser, tmp_path):
    path = write_report(fleet_db, tmp_path / "fleet.html", all_devices=True)
    o = Opened(browser, path)
    try:
        page = o.page
        o.assert_clean()
        assert page.locator("section.device").count() == 2
        assert page.locator("section.model").count() == 2
        # header: facts, sessions, provenance visible
        for anchor in ("d0", "d1"):
            prov = page.locator(f"#{anchor}-provenance")
            assert prov.is_visible()
            assert "MEASURED" in prov.inner_text().upper() and "MODELED" in prov.inner_text().upper()
        assert page.locator("table.sessions tbody tr").count() == 2
        assert "torch" in page.locator("table.sessions").first.inner_text()
        # figures: phase breakdown, 3 top-op charts, iteration chart per model, 2 comparison charts
        assert page.locator("figure.plot svg.fig").count() >= 2 * 5 + 2
        assert page.locator("#comparison table.comparison tbody tr").count() == 2
        box = page.locator("figure.plot svg.fig").first.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50
        # missing solver data says which command produces it
        assert "costdb pareto --device local --model mlp" in page.locator("#d0").inner_text()
        # predicted vs measured
        assert page.locator("table.iterations tbody tr").count() == 2
        # screenshot renders non-blank
        png = page.screenshot(full_page=False)
        from io import BytesIO

        from PIL import Image
        img = Image.open(BytesIO(png)).convert("RGB")
        colors = img.getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 50
        assert max(c for c, _ in colors) < 0.9 * img.width * img.height
    finally:
        o.close()


def test_sorting_and_filtering(fleet_db, browser, tmp_path):
    path = write_report(fleet_db, tmp_path / "one.html", devices=["local"], model="mlp")
    o = Opened(browser, path)
    try:
        page = o.page
        table = page.locator("table.ops").get_attribute("id")
        col, th = _column(page, table, "runtime (median)")
        th.click()
        asc = _values(page, table, col)
        assert asc == sorted(asc) and len(asc) == 20
        assert th.get_attribute("aria-sort") == "ascending"
        th.click()
        desc = _values(page, table, col)
        assert desc == sorted(desc, reverse=True)
        # text column sorts too
        col_op, th_op = _column(page, table, "op")
        th_op.click()
        ops = page.eval_on_selector_all(f"#{table} tbody tr",
                                        f"rows => rows.map(r => r.cells[{col_op}].textContent)")
        assert ops == sorted(ops, key=str.lower)
        # node table: sort by index descending
        nodes = page.locator("table.nodes").get_attribute("id")
        col_i, th_i = _column(page, nodes, "#")
        th_i.click()
        th_i.click()
        assert _values(page, nodes, col_i) == list(range(19, -1, -1))
        # filter
        ctl = page.locator(f'.controls[data-for="{table}"]')
        ctl.locator("input.filter").fill("bwd_weight")
        page.wait_for_function(f"() => document.querySelectorAll('#{table} tbody tr').length === 3")
        assert "3 of 20 rows" in ctl.locator(".count").inner_text()
        ctl.locator("input.filter").fill("")
        page.wait_for_function(f"() => document.querySelectorAll('#{table} tbody tr').length === 20")
        n_unstable = page.locator(f"#{table} tbody tr.unstable").count()
        ctl.locator("input.only-unstable").check()
        assert ctl.locator(".count").inner_text().startswith(f"{n_unstable} of 20")
        assert page.locator(f"#{table} tbody tr").count() == n_unstable
        assert page.locator(f"#{table} tbody tr:not(.unstable)").count() == 0
        o.assert_clean()
    finally:
        o.close()


def test_escaping_holds_in_browser(evil_db, browser, tmp_path):
    html = render_report(evil_db, all_devices=True)
    assert EVIL not in html and EVIL_OP not in html and EVIL_BOARD not in html
    path = tmp_path / "evil.html"
    path.write_text(html)
    o = Opened(browser, path)
    try:
        page = o.page
        o.assert_clean()      # no dialog fired, no errors, no fetch of "x"
        assert page.locator(".devname").inner_text() == EVIL
        assert EVIL in page.title()
        table = page.locator("table.ops").get_attribute("id")
        ops = page.eval_on_selector_all(f"#{table} tbody tr", "rows => rows.map(r => r.cells[0].textContent)")
        assert EVIL_OP in ops
        assert EVIL_BOARD in page.locator(f"#d0 .card").first.inner_text()
        # the op name went through a matplotlib figure too: drawn as text, not markup
        svg_texts = page.eval_on_selector_all("svg.fig text", "ts => ts.map(t => t.textContent)")
        assert any(EVIL_OP[:20] in t for t in svg_texts)
        assert page.evaluate("document.querySelectorAll('script').length") == 1
        assert page.evaluate("document.querySelectorAll('img').length") == 0
    finally:
        o.close()


def test_big_table_is_paged_sorted_and_filtered(fleet_db, browser, tmp_path):
    """More rows than the page keeps in the DOM (500): sorting and filtering work on all of them."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_report import build
    db = str(tmp_path / "big.db")
    build(db, n_ops=1200, n_points=50)
    path = write_report(db, tmp_path / "big.html", devices=["bench"])
    o = Opened(browser, path)
    try:
        page = o.page
        table = page.locator("table.ops").get_attribute("id")
        ctl = page.locator(f'.controls[data-for="{table}"]')
        assert page.locator(f"#{table} tbody tr").count() == 500
        assert "1200 rows (first 500 shown)" in ctl.locator(".count").inner_text()
        col, th = _column(page, table, "runtime (median)")
        th.click()
        asc = _values(page, table, col)
        assert asc == sorted(asc) and len(asc) == 500
        with costdb.open(db, readonly=True) as dbh:
            fastest = dbh.conn.execute("SELECT min(runtime_s) FROM measurements").fetchone()[0]
        assert asc[0] == pytest.approx(fastest)
        ctl.locator("input.filter").fill("conv2d")
        page.wait_for_function(f"() => document.querySelector('[data-for=\\'{table}\\'] .count')"
                               ".textContent.indexOf('of 1200') > 0")
        n = len(_values(page, table, col))
        ops = page.eval_on_selector_all(f"#{table} tbody tr", "rows => rows.map(r => r.cells[0].textContent)")
        assert set(ops) == {"conv2d"} and 0 < n <= 500
        ctl.locator("input.filter").fill("")
        page.wait_for_function(f"() => document.querySelectorAll('#{table} tbody tr').length === 500")
        ctl.locator("button.show-all").click()
        assert page.locator(f"#{table} tbody tr").count() == 1200
        assert _values(page, table, col) == sorted(_values(page, table, col))
        o.assert_clean()
    finally:
        o.close()
