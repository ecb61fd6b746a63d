"""Comparable measurements: a cost table uses one settings fingerprint; mixed settings are
refused verbatim and chosen with --settings; resumption and --force are per fingerprint.
Real profiles of the MLP on this machine at one and at two torch threads."""
from __future__ import annotations

import io
import sqlite3

import pandas as pd
import pytest

import costdb
from costdb.cli import cli
from profiler.zoo import model_graph

# isolated measurements only: the refusals below are about them (in-context rows would make
# the default estimate in_context, refused the same way with "in_context" in the text)
FAST = ["--samples", "3", "--min-sample-time", "0.001", "--no-iteration", "--no-in-context", "-q"]
KEY = "mlp[batch=2,input=784,dtype=float32]"
REFUSAL = (f"the isolated measurements of {KEY} on local were taken under 2 different settings "
           "(#1 threads=1, 20/20 ops; #2 threads=2, 20/20 ops); costs are never mixed across "
           "settings: choose one with "
           "--settings latest|ID (in Python settings='latest' or an id; 'costdb settings --device "
           "local' lists them)")


@pytest.fixture(scope="module")
def two_settings(tmp_path_factory):
    from click.testing import CliRunner
    db = str(tmp_path_factory.mktemp("settings") / "two.db")
    runner = CliRunner()
    n = len(model_graph("mlp", batch=2).signatures())
    outputs = []
    for threads in ("1", "2"):
        r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "2", "--threads", threads,
                                "--db", db, *FAST])
        assert r.exit_code == 0, r.output
        outputs.append(r.output)
    return db, n, outputs


def test_a_profile_under_other_settings_reuses_nothing(two_settings):
    db, n, outputs = two_settings
    assert f"measured {n} of {n} ops (0 already in the database)" in outputs[1]
    with costdb.open(db, readonly=True) as d:
        assert [(s.id, s.threads) for s in d.settings_list("local")] == [(1, 1), (2, 2)]
        assert [s.settings_id for s in d.session_list()] == [1, 2]
        assert len(d.done_signatures("local", 1)) == len(d.done_signatures("local", 2)) == n


@pytest.mark.parametrize("args", [
    ["costs", "--model", "mlp"],
    ["export", "--format", "csv", "--device", "local", "--model", "mlp"],
    ["solve", "--device", "local", "--model", "mlp"],
    ["pareto", "--device", "local", "--model", "mlp", "--points", "1", "--executor", "serial"],
], ids=lambda a: a[0])
def test_mixed_settings_are_refused_verbatim(runner, two_settings, args, tmp_path, monkeypatch):
    db, _, _ = two_settings
    monkeypatch.chdir(tmp_path)
    before = sqlite3.connect(db).execute("SELECT count(*) FROM schedules").fetchone()[0]
    r = runner.invoke(cli, [*args, "--db", db])
    assert r.exit_code == 2, r.output
    assert r.output == f"Error: {REFUSAL}\n"
    assert sqlite3.connect(db).execute("SELECT count(*) FROM schedules").fetchone()[0] == before
    assert not (tmp_path / "never.html").exists()


def test_a_report_shows_the_latest_settings_and_says_so(runner, two_settings, tmp_path):
    """A report does not fail on mixed settings: it shows the latest fingerprint, never a mix,
    names it and how to choose another; --settings still chooses."""
    db, _, _ = two_settings
    out = tmp_path / "r.html"
    r = runner.invoke(cli, ["report", "--device", "local", "--db", db, "-o", str(out)])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert (f"{KEY} was measured on local under several settings fingerprints; these tables show "
            "the latest, #2 (threads=2") in html
    assert "choose another with --settings ID" in html
    r = runner.invoke(cli, ["report", "--device", "local", "--db", db, "--settings", "1", "-o",
                            str(out)])
    assert r.exit_code == 0 and "several settings fingerprints" not in out.read_text()


def test_the_python_api_refuses_the_same_way(two_settings):
    db, _, _ = two_settings
    with costdb.open(db, readonly=True) as d:
        with pytest.raises(costdb.CostdbError) as e:
            d.costs("local", "mlp")
        assert str(e.value) == REFUSAL
        a, b = d.costs("local", "mlp", settings=1), d.costs("local", "mlp", settings="latest")
        assert set(a["settings_id"]) == {1} and set(b["settings_id"]) == {2}
        assert set(a["session_id"]) == {1} and set(b["session_id"]) == {2}
        fp = d.get_settings(2).fingerprint
        assert d.costs("local", "mlp", settings=fp[:6])["runtime_s"].tolist() == b["runtime_s"].tolist()
        summary = d.summary("local")
        assert summary["settings_id"].tolist() == [1, 2]          # one row per fingerprint


def test_settings_choice_on_every_command(runner, two_settings, tmp_path):
    db, n, _ = two_settings
    r = runner.invoke(cli, ["costs", "--model", "mlp", "--settings", "latest", "--db", db])
    assert r.exit_code == 0, r.output
    assert "isolated measurements under settings #2 (threads=2 " in r.output
    r = runner.invoke(cli, ["costs", "--model", "mlp", "--settings", "1", "--db", db])
    assert r.exit_code == 0 and "under settings #1 (threads=1 " in r.output and "from session 1" in r.output
    r = runner.invoke(cli, ["export", "--format", "csv", "--device", "local", "--model", "mlp",
                            "--settings", "1", "--db", db])
    assert r.exit_code == 0
    df = pd.read_csv(io.StringIO(r.output))
    assert len(df) == n and set(df["settings_id"]) == {1}
    r = runner.invoke(cli, ["export", "--format", "csv", "--device", "local", "--db", db])
    ops = pd.read_csv(io.StringIO(r.output))
    assert sorted(ops["settings_id"].value_counts().tolist()) == [n, n]   # listed apart, not mixed
    r = runner.invoke(cli, ["solve", "--device", "local", "--model", "mlp", "--settings", "latest",
                            "--db", db])
    assert r.exit_code == 0, r.output
    assert "(settings #2, isolated)" in r.output
    with costdb.open(db, readonly=True) as d:
        rec = d.schedule_list()[-1]
        assert (rec.settings_id, rec.cost_kind) == (2, "isolated")
    r = runner.invoke(cli, ["report", "--device", "local", "--settings", "1", "--db", db,
                            "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["costs", "--model", "mlp", "--settings", "7", "--db", db])
    assert r.output == (f"Error: settings '7' is not in {db}; 'costdb settings' lists the settings "
                        "ids and fingerprints\n")
    r = runner.invoke(cli, ["settings", "--db", db])
    assert r.exit_code == 0 and "threads=1" in r.output and "threads=2" in r.output


def test_force_adds_a_session_whose_rows_supersede(runner, two_settings):
    db, n, _ = two_settings
    r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "2", "--threads", "2",
                            "--force", "--db", db, *FAST])
    assert r.exit_code == 0, r.output
    assert "session 3 complete" in r.output
    with costdb.open(db, readonly=True) as d:
        assert d.session(3).settings_id == 2
        assert len(d.measurement_list(settings_id=2)) == 2 * n        # the older rows stay
        assert set(d.costs("local", "mlp", settings=2)["session_id"]) == {3}
        old = d.costs("local", "mlp", settings=2, session=2)
        assert set(old["session_id"]) == {2} and old["status"].eq("ok").all()
    r = runner.invoke(cli, ["costs", "--model", "mlp", "--session", "2", "--settings", "2", "--db", db])
    assert r.exit_code == 0 and "from session 2" in r.output
    # a session's measurements have one fingerprint, so --session alone chooses
    r = runner.invoke(cli, ["costs", "--model", "mlp", "--session", "1", "--db", db])
    assert r.exit_code == 0 and "settings #1" in r.output
