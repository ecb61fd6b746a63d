"""Readability of the HTML report in a real Chromium (playwright driving /usr/bin/chromium), from
the computed styles the browser applies: WCAG AA contrast of every text (HTML and SVG), tables
that fit the page width at 1280 px, compact session rows, one legend per figure and figure
labels readable at 100 % zoom. Reports of a fleet (local + an inventory device), a file model
and a device that was only solved for, built by the real profiler and solver.

``python tests/test_report_readability.py DIR`` writes screenshots of those reports to DIR.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import costdb
from reports.build import write_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import FAST  # noqa: E402
from test_reports import ARGS, CHROMIUM, _inventory, browser, fleet_db  # noqa: E402,F401

ROOT = Path(__file__).resolve().parent.parent

#: WCAG 2.x relative luminance and contrast; AA: 4.5 for text, 3 for large text (24 px, or
#: 18.66 px bold). Background: the first opaque ancestor background, semi-transparent layers
#: composited on the way; SVG text against the figure's white.
CONTRAST_JS = """() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  function parse(c) {
    const m = c && c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function lum(c) {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  }
  function over(top, under) {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]);
  }
  function background(el) {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let col = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) col = over(layers[i], col);
    return col;
  }
  function ratio(a, b) {
    const x = lum(a), y = lum(b);
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
  }
  const bad = [], seen = new Set();
  let n = 0;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const t = walker.currentNode, el = t.parentElement;
    if (!t.textContent.trim() || seen.has(el) || el.closest('script, style')) continue;
    seen.add(el);
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || !el.getClientRects().length) continue;
    let fg, bg;
    if (el.closest('svg')) {
      fg = parse(st.fill) || [0, 0, 0, 1];
      if (st.fill === 'none') continue;
      bg = [255, 255, 255, 1];
    } else {
      bg = background(el);
      fg = over(parse(st.color), bg);
    }
    const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight, 10) >= 700;
    const need = (size >= 24 || (bold && size >= 18.66)) && !el.closest('svg') ? 3 : 4.5;
    const r = ratio(fg, bg);
    n += 1;
    if (r < need) bad.push(`${t.textContent.trim().slice(0, 40)} (${r.toFixed(2)}, ${st.color || st.fill})`);
  }
  return {n, bad};
}"""

LAYOUT_JS = """() => {
  const main = document.querySelector('main');
  const wide = [], tall = [], legends = [], small = [];
  document.querySelectorAll('table').forEach(t => {
    const box = (t.closest('.tablewrap') || main).clientWidth;
    if (t.scrollWidth > box + 1) wide.push(`${t.className}: ${t.scrollWidth} > ${box}`);
  });
  document.querySelectorAll('table.sessions tbody tr').forEach(r => {
    const h = r.getBoundingClientRect().height;
    if (h > 64) tall.push(h);
  });
  document.querySelectorAll('figure.plot').forEach(f => {
    const n = f.querySelectorAll('g[id$="legend_1"], g[id*="legend_"]').length;
    const html = f.parentElement.querySelectorAll(':scope > .legend').length;
    if (n > 1 || html) legends.push(`${f.querySelector('figcaption').textContent.slice(0, 40)}: ${n} + ${html}`);
  });
  document.querySelectorAll('svg.fig').forEach(svg => {
    const vb = svg.viewBox.baseVal, w = svg.getBoundingClientRect().width;
    if (!vb || !vb.width || !w) return;
    const scale = w / vb.width;
    svg.querySelectorAll('text').forEach(t => {
      const px = parseFloat(getComputedStyle(t).fontSize) * scale;
      if (px < 10) small.push(`${t.textContent.slice(0, 30)}: ${px.toFixed(1)} px`);
    });
  });
  return {wide, tall, legends, small, strayLegends: document.querySelectorAll('div.legend').length};
}"""


@pytest.fixture(scope="module")
def reports(fleet_db, tmp_path_factory):
    """HTML files: the fleet, a file model on local, rpi4b solved but never profiled."""
    from solver.commands import run_solve
    tmp = tmp_path_factory.mktemp("readable")
    db = str(tmp / "r.db")
    model = tmp / "nets" / "my_net.py"
    model.parent.mkdir()
    model.write_text((ROOT / "tests/models/my_model.py").read_text())
    costdb.profile(db, device="local", model=f"{model}:make", input_shape=(3, 8, 8), batch=2,
                   settings=FAST, iteration=True)
    run_solve(db, device="rpi4b", model="my_net:make", time_limit=30)
    run_solve(db, device="local", model="my_net:make", time_limit=30)
    return {"fleet": write_report(fleet_db, tmp / "fleet.html", all_devices=True),
            "file model": write_report(db, tmp / "file.html", devices=["local"]),
            "solved only": write_report(db, tmp / "rpi4b.html", devices=["rpi4b"])}


@pytest.mark.parametrize("name", ["fleet", "file model", "solved only"])
def test_report_is_readable(reports, browser, name):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(Path(reports[name]).resolve().as_uri(), wait_until="load")
        layout = page.evaluate(LAYOUT_JS)        # before the contrast check opens the details
        assert not layout["wide"], f"tables wider than the page: {layout['wide']}"
        assert not layout["tall"], f"session rows taller than 64 px: {layout['tall']}"
        assert not layout["legends"] and not layout["strayLegends"], layout["legends"]
        assert not layout["small"], f"figure text under 10 px at 100 %: {layout['small'][:10]}"
        contrast = page.evaluate(CONTRAST_JS)
        assert contrast["n"] > 100
        assert not contrast["bad"], f"texts below WCAG AA contrast: {contrast['bad'][:10]}"
        # the check itself: the old header (light grey database name on a light chip) fails it
        page.evaluate("() => { const c = document.querySelector('header.top code');"
                      " c.style.background = '#eef1f4'; c.style.color = '#c9d6e6'; }")
        bad = page.evaluate(CONTRAST_JS)["bad"]
        assert len(bad) == 1 and "(1.30, rgb(201, 214, 230))" in bad[0], bad
    finally:
        page.close()


def screenshots(out: Path) -> list[Path]:
    """Full-page screenshots of the reports the tests build (for looking at them)."""
    import tempfile

    from playwright.sync_api import sync_playwright
    tmp = Path(tempfile.mkdtemp(prefix="costdb-shots-"))
    db = str(tmp / "shots.db")
    inv = _inventory(tmp, "other")
    for dev in ("local", "other"):
        costdb.profile(db, device=dev, model="mlp", batch=4, settings=FAST, inventory=inv,
                       iteration=True)
    model = tmp / "my_net.py"
    model.write_text((ROOT / "tests/models/my_model.py").read_text())
    costdb.profile(db, device="local", model=f"{model}:make", input_shape=(3, 8, 8), batch=2,
                   settings=FAST, iteration=True)
    from solver.commands import run_pareto, run_solve
    run_solve(db, device="local", model="mlp", time_limit=30)
    run_pareto(db, device="rpi4b", model="my_net:make", n_budgets=3, executor="serial",
               time_limit=30)
    pages = {"zoo": dict(devices=["local"], model="mlp"),
             "file": dict(devices=["local"], model="my_net:make"),
             "fleet": dict(all_devices=True), "solved-only": dict(devices=["rpi4b"])}
    try:
        costdb.profile(db, device="qemu-m4f", model="tinycnn", settings={"samples": 3, "warmups": 1})
        pages["mcu"] = dict(devices=["qemu-m4f"])
    except costdb.CostdbError as e:
        print(f"no MCU report: {e}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name, kw in pages.items():
            html = write_report(db, out / f"{name}.html", **kw)
            page = b.new_page(viewport={"width": 1280, "height": 900})
            page.goto(html.resolve().as_uri(), wait_until="load")
            shots.append(out / f"{name}.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            page.close()
        b.close()
    return shots


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Write full-page screenshots (PNG) and the HTML of "
                                             "the reports the readability tests look at.")
    ap.add_argument("out", nargs="?", default="report-shots", help="output directory")
    for shot in screenshots(Path(ap.parse_args().out)):
        print(shot)
