"""What a new user meets in the first hour (issue 16): `costdb sessions` while a profile runs, a
report of a device that was only solved for and of a file model, report hints that work when
pasted (run here), the MCU report's device facts, `--iteration` where it cannot run, did-you-mean,
the unstable-op summary and the next-step lines of `costdb profile`.

Real SQLite files filled by the real profiler and solver; hints are run through the real CLI.
"""
from __future__ import annotations

import dataclasses
import html as htmllib
import re
import shlex
import shutil
from pathlib import Path

import pytest

import costdb
from costdb.cli import cli

from conftest import FAST
from sshd import sshd  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
CLI_FAST = ["--samples", "3", "--min-sample-time", "0.001", "--iterations", "3", "-q"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """mlp (batch 4) and a file model profiled on local; then mlp solved (a schedule) and the file
    model swept (a Pareto sweep) on rpi4b, which was never profiled."""
    from solver.commands import run_pareto, run_solve
    tmp = tmp_path_factory.mktemp("world")
    path = str(tmp / "w.db")
    costdb.profile(path, device="local", model="mlp", batch=4, settings=FAST)
    model_file = tmp / "nets" / "my_net.py"
    model_file.parent.mkdir()
    model_file.write_text((ROOT / "tests/models/my_model.py").read_text())
    file_ref = f"{model_file}:make"
    costdb.profile(path, device="local", model=file_ref, input_shape=(3, 8, 8), batch=2,
                   settings=FAST)
    run_solve(path, device="rpi4b", model="mlp", batch=4, time_limit=30)
    run_pareto(path, device="rpi4b", model=file_ref, input_shape="3x8x8", batch=2, n_budgets=2,
               executor="serial", time_limit=30)
    return {"db": path, "dir": tmp, "file_ref": file_ref}


def _hints(html: str) -> list[str]:
    """Every command the report shows in <code> that starts with 'costdb '."""
    return sorted({htmllib.unescape(c) for c in re.findall(r"<code>(costdb [^<]*)</code>", html)})


def _run(runner, command: str, cwd: Path, monkeypatch) -> object:
    args = shlex.split(command)
    assert args[0] == "costdb"
    if args[1] == "profile":       # the statistics options only make the run short
        args += CLI_FAST
    monkeypatch.chdir(cwd)
    return runner.invoke(cli, args[1:])


def test_sessions_while_a_profile_runs(runner, profiled_mlp, tmp_path):
    path = str(tmp_path / "s.db")
    shutil.copy(profiled_mlp, path)
    with costdb.open(path) as db:     # what a running profile has written: no end, no count yet
        sid = db.start_session("local", {"facts": {"torch": "2.13.0"}}, {}, None, 7)
        done = db.measurement_list(session_id=1)[:2]      # and the first two results
        for m in done:
            db.add_measurement(dataclasses.replace(m, session_id=sid))
    r = runner.invoke(cli, ["sessions", "--db", path])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if re.match(rf"\W*{sid}\b", line))
    assert "running" in row and "nan" not in row.lower()
    assert re.search(r"│\s*7\s*│\s*2\s*│", row), row          # planned 7, measured so far 2


def test_report_covers_a_device_that_was_only_solved_for(world):
    from reports.build import render_report
    html = render_report(world["db"], devices=["rpi4b"])
    assert "Device <span class=\"devname\">rpi4b</span>" in html
    assert "rpi4b was never profiled" in html
    assert "Raspberry Pi" in html                            # the catalog's figures
    # both models with data on rpi4b: the solved mlp and the swept file model
    assert html.count('<section class="model"') == 2
    assert "Recommended schedule #" in html and "stored sweep points" in html
    # --all includes it too
    html = render_report(world["db"], all_devices=True)
    assert 'data-device="rpi4b"' in html and 'data-device="local"' in html


def test_report_takes_every_model_form_solve_takes(world, runner, tmp_path):
    from reports.build import render_report
    for model, extra in ((world["file_ref"], {}), ("my_net:make", {}), ("mlp", {"batch": 4}),
                         ("mlp[batch=4,input=784,dtype=float32]", {})):
        html = render_report(world["db"], devices=["rpi4b"], model=model, **extra)
        assert html.count('<section class="model"') == 1, model
    out = tmp_path / "r.html"
    r = runner.invoke(cli, ["report", "--db", world["db"], "--device", "local", "--model",
                            world["file_ref"], "--input", "3x8x8", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "my_net:make on local" in out.read_text()
    r = runner.invoke(cli, ["report", "--db", world["db"], "--device", "local", "--model",
                            "nets/nope.py:make", "-o", str(out)])
    assert r.exit_code == 2 and "stored as 'nope:make'" in r.output


def test_every_report_hint_runs_when_pasted(world, runner, tmp_path, monkeypatch, sshd):
    """rpi4b is reached over a real sshd on loopback, through the user's inventory file."""
    from fake_boards import make_pi_tree
    from reports.build import render_report
    make_pi_tree(tmp_path / "pi")
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(sshd.inventory_toml("rpi4b", sysfs_root=str(tmp_path / "pi")))
    monkeypatch.setenv("COSTDB_INVENTORY", str(inventory))
    work = tmp_path / "w"
    work.mkdir()
    db = str(work / "w.db")
    shutil.copy(world["db"], db)
    hints = _hints(render_report(db, all_devices=True))
    kinds = {h.split()[1] for h in hints}
    assert {"profile", "solve", "pareto"} <= kinds, hints
    assert not [h for h in hints if re.search(r"\b[A-Z]{3,}\b", h)], "placeholders in hints"
    for h in hints:
        r = _run(runner, h, work, monkeypatch)
        assert r.exit_code == 0, f"{h}\n{r.output}"


def test_iteration_where_it_cannot_run_is_refused(runner, tmp_path):
    db = str(tmp_path / "q.db")
    r = runner.invoke(cli, ["profile", "--device", "qemu-m4f", "--model", "tinycnn", "--iteration",
                            "--db", db, "-q"])
    assert r.exit_code == 2
    assert "--iteration" in r.output and "qemu-m4f" in r.output and "serial" in r.output
    assert not Path(db).exists()                           # refused before any work


@pytest.mark.parametrize("args, suggestion", [
    (["profile", "--device", "locl", "--model", "mlp"], "did you mean 'local'?"),
    (["profile", "--model", "resnt18"], "did you mean 'resnet18'?"),
    (["profile", "--modle", "mlp"], "'--model'"),        # click's own suggestion
])
def test_did_you_mean(runner, tmp_path, args, suggestion):
    r = runner.invoke(cli, [*args, "--db", str(tmp_path / "x.db"), "-q"])
    assert r.exit_code == 2 and suggestion in r.output and "id you mean" in r.output, r.output


def test_did_you_mean_for_stored_models_and_devices(runner, world):
    r = runner.invoke(cli, ["costs", "--db", world["db"], "--model", "mpl"])
    assert r.exit_code == 2 and "did you mean 'mlp'?" in r.output
    r = runner.invoke(cli, ["report", "--db", world["db"], "--device", "rpi4", "-o", "x.html"])
    assert r.exit_code == 2 and "did you mean 'rpi4b'?" in r.output


def test_profile_ends_with_next_steps_that_run(runner, tmp_path, monkeypatch):
    db = str(tmp_path / "n.db")
    r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "2", "--db", db,
                            "--no-iteration", "--no-in-context", *CLI_FAST])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("costdb ")]
    assert [line.split()[1] for line in lines] == ["solve", "report"]
    for line in lines:
        res = _run(runner, line.split("#")[0], tmp_path, monkeypatch)
        assert res.exit_code == 0, f"{line}\n{res.output}"


def test_unstable_ops_are_summarised_once_by_name_and_shape(world):
    from costdb.cli.profile import unstable_summary
    with costdb.open(world["db"], readonly=True) as db:
        key = db.model("mlp").key
        sigs = list(dict.fromkeys(n.signature for n in db.graph(key).nodes))
    text = unstable_summary(world["db"], key, sigs + sigs[:3])
    assert "\n" not in text
    assert text.startswith(f"{len(sigs)} of {len(sigs)} distinct ops stay unstable")
    assert "linear:fwd 4x784 w=256x784" in text and "more" in text
    assert not re.search(r"\b[0-9a-f]{16,}\b", text)       # no bare hashes
    assert "--threads 1" in text


@pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
                    reason="needs qemu-system-arm and gcc-arm-none-eabi (README test command)")
def test_mcu_report_shows_the_board_facts_of_its_session(tmp_path):
    from reports.build import render_report
    db = str(tmp_path / "m.db")
    costdb.profile(db, device="qemu-m4f", model="tinycnn", settings={"samples": 3, "warmups": 1})
    html = render_report(db, devices=["qemu-m4f"])
    assert "No session yet" not in html
    card = html[html.index("Reported by the agent"):html.index("Catalog figures")]
    assert "clock" in card and "arena" in card
    # whole iterations cannot run there: the report says so instead of offering a command
    assert "Whole-iteration timing runs on the local device only" in html


def test_ops_shared_with_a_model_profiled_under_other_settings_do_not_block_its_costs(tmp_path):
    """mlp-784 at 1 thread, mlp-100 at 2 threads: they share every op but the first layer's, so
    each model has a few ops under the other's fingerprint. Each table uses the one fingerprint
    that covers all its ops; a model with two complete fingerprints is still refused."""
    db = str(tmp_path / "shared.db")
    costdb.profile(db, model="mlp", batch=2, threads=1, settings=FAST)
    costdb.profile(db, model="mlp", batch=2, input_shape=(100,), threads=2, settings=FAST)
    with costdb.open(db, readonly=True) as d:
        a = d.costs("local", "mlp[batch=2,input=784,dtype=float32]")
        b = d.costs("local", "mlp[batch=2,input=100,dtype=float32]")
        assert d.get_settings(a.attrs["settings_id"]).threads == 1 and a["status"].eq("ok").all()
        assert d.get_settings(b.attrs["settings_id"]).threads == 2 and b["status"].eq("ok").all()
    costdb.profile(db, model="mlp", batch=2, threads=2, settings=FAST)
    with costdb.open(db, readonly=True) as d, pytest.raises(costdb.CostdbError, match="2 different"):
        d.costs("local", "mlp[batch=2,input=784,dtype=float32]")


def test_default_threads_resume_the_last_fingerprint(tmp_path):
    """Without threads a profile keeps the thread count of the device's latest session, so that
    the same command again resumes; remote devices keep torch's (or the inventory's) default."""
    from profiler.session import default_threads
    db = str(tmp_path / "t.db")
    first = costdb.profile(db, model="mlp", batch=2, threads=1, settings=FAST)
    with costdb.open(db, readonly=True) as d:
        assert default_threads(d, "local", "local", None) == (1, None)
        assert default_threads(d, "rpi4b", "ssh", None) == (None, None)
    again = costdb.profile(db, model="mlp", batch=2, settings=FAST)      # no threads given
    assert again.settings_id == first.settings_id and again.planned == 0
    assert again.threads_note is None
