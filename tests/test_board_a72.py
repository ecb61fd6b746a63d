"""The emulated Cortex-A72 board end to end, and the arm64 paths of the agent.

The slow tests (``pytest --slow``) build the Debian 12 arm64 image once into a cache directory
this module owns (``$COSTDB_TEST_CACHE_DIR`` or ``~/.cache/costdb-test``; kept between runs), boot
it in QEMU (virt, cortex-a72, 4 vCPUs) and profile the MLP through the normal SSH path. They are
skipped, with the reason, only where the image cannot be built (not root, mmdebstrap or QEMU
missing). The other tests here run in the normal suite: the arm64 cpuinfo decoding and a torch
that dies of SIGILL on import, reported by the agent path as one line.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from sshd import keygen, sshd  # noqa: E402,F401

from costdb.cli import cli  # noqa: E402
from costdb.errors import CostdbError  # noqa: E402
from devices.agent import sysinfo  # noqa: E402
from devices.inventory import Inventory  # noqa: E402

# A Raspberry Pi 4B's /proc/cpuinfo under 64-bit Raspberry Pi OS (two of its four cores shown
# in full, as the kernel prints them), and a Jetson TX2's first Denver and A57 cores.
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

processor\t: 1
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Revision\t: c03114
Serial\t\t: 100000001234abcd
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
TX2_CPUINFO = ("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd07\n\n"
               "processor\t: 1\nCPU implementer\t: 0x4e\nCPU part\t: 0x003\n\n"
               "processor\t: 2\nCPU implementer\t: 0x4e\nCPU part\t: 0x003\n\n"
               "processor\t: 3\nCPU implementer\t: 0x41\nCPU part\t: 0xd07\n")


def _tree(tmp_path: Path, cpuinfo: str) -> Path:
    (tmp_path / "proc").mkdir(parents=True)
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    return tmp_path


def test_arm64_cpuinfo_names_the_cores_not_the_board(tmp_path):
    pi = _tree(tmp_path / "pi", PI4_CPUINFO)
    assert sysinfo.cpu_model(str(pi)) == "2x ARM Cortex-A72"
    assert sysinfo.cpu_features(str(pi)) == ["fp", "asimd", "evtstrm", "crc32", "cpuid"]
    tx2 = _tree(tmp_path / "tx2", TX2_CPUINFO)
    assert sysinfo.cpu_model(str(tx2)) == "2x ARM Cortex-A57 + 2x NVIDIA Denver 2"
    odd = _tree(tmp_path / "odd", "processor\t: 0\nCPU implementer\t: 0x51\nCPU part\t: 0x801\n")
    assert sysinfo.cpu_model(str(odd)) == "1x arm64 implementer 0x51 part 0x801"


def test_x86_cpuinfo_unchanged(tmp_path):
    root = _tree(tmp_path, "processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu sse2\n")
    assert sysinfo.cpu_model(str(root)) == "Example CPU @ 2.0GHz"
    assert sysinfo.cpu_features(str(root)) == ["fpu", "sse2"]


def _sigill_python(tmp_path: Path) -> Path:
    """An interpreter whose ``import torch`` dies of SIGILL, like a torch wheel built for newer
    CPUs on a Cortex-A72: a torch package on PYTHONPATH that raises the signal when imported."""
    fake = tmp_path / "sigill-site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    wrapper = tmp_path / "python-sigill"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={fake.parent} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def test_torch_dying_of_sigill_on_import_is_one_clear_line(sshd, tmp_path):  # noqa: F811
    import costdb
    entry = sshd.inventory_entry("rpi4b", python=str(_sigill_python(tmp_path)))
    inv = Inventory(None, {"rpi4b": entry})
    with pytest.raises(CostdbError) as e:
        costdb.profile(str(tmp_path / "costs.db"), device="rpi4b", model="mlp", inventory=inv,
                       settings={"samples": 3, "min_sample_time": 0.001, "warmups": 1},
                       connect_options={"reconnect_timeout": 5})
    msg = str(e.value)
    assert "\n" not in msg
    assert "SIGILL" in msg and "illegal instruction" in msg and "rpi4b" in msg
    assert "import torch" in msg and "torch/__init__.py" in msg


def test_cli_sigill_exit_2_and_one_error_line(sshd, tmp_path):  # noqa: F811
    inv = tmp_path / "inventory.toml"
    inv.write_text(sshd.inventory_toml("rpi4b", python=str(_sigill_python(tmp_path))))
    r = CliRunner().invoke(cli, ["profile", "--device", "rpi4b", "--model", "mlp", "--inventory",
                                 str(inv), "--db", str(tmp_path / "c.db"), "-q", "--samples", "3",
                                 "--no-iteration"])
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "SIGILL" in errors[0], r.output


def test_emulated_agent_labels_runtimes_and_records_the_emulator(sshd):  # noqa: F811
    """The agent on an emulated board is the normal SSH agent (here on a loopback sshd); the
    host side labels its runtimes emulated, whatever the agent says, and adds the emulator."""
    from devices.emulated.agent import EmulatedSshAgent
    from devices.ssh import resolve_target
    from profiler.zoo import model_graph
    entry = sshd.inventory_entry("qemu-a72")
    target = resolve_target("qemu-a72", dict(entry.connection), {})
    agent = EmulatedSshAgent(target, emulator={"name": "qemu-system-aarch64", "version": "7.2"})
    try:
        facts = agent.hello()["facts"]
        spec = model_graph("mlp", 2, None).distinct_specs()[0]
        res = agent.measure(spec, {"samples": 3, "min_sample_time": 0.001, "warmups": 1})
        again = agent.hello()["facts"]          # end-of-session facts keep the label too
    finally:
        agent.close()
    assert facts["emulated"] is True and facts["emulator"]["name"] == "qemu-system-aarch64"
    assert again["emulated"] is True and again["emulator"]["version"] == "7.2"
    assert res["status"] == "ok" and res["runtime_provenance"] == "emulated"


def test_board_without_image_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("COSTDB_CACHE_DIR", str(tmp_path / "cache"))
    r = CliRunner().invoke(cli, ["profile", "--device", "qemu-a72", "--model", "mlp", "-q",
                                 "--db", str(tmp_path / "c.db")])
    assert r.exit_code == 2
    assert "costdb board build qemu-a72" in r.output and "qemu-a72" in r.output
    r = CliRunner().invoke(cli, ["board", "status", "qemu-a72"])
    assert r.exit_code == 0 and "no image" in r.output
    r = CliRunner().invoke(cli, ["board", "start", "qemu-a72", "--memory", "8G"])
    assert r.exit_code == 2 and "no image" in r.output


def test_guest_requirements_are_those_of_aarch64_linux(tmp_path):
    """pip evaluates markers for the host even under --platform; the builder evaluates them for
    the board: x86-only CUDA wheels stay out, Linux-wide ones and plain ones stay in."""
    import zipfile
    from devices.emulated.image import guest_requirements
    wheel = tmp_path / "torch-9.9.9-cp311-cp311-manylinux_2_28_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("torch-9.9.9.dist-info/METADATA", "\n".join([
            "Metadata-Version: 2.1", "Name: torch", "Version: 9.9.9",
            "Requires-Dist: filelock",
            "Requires-Dist: sympy>=1.13.3",
            "Requires-Dist: setuptools; python_version >= \"3.12\"",
            "Requires-Dist: nvidia-cudnn-cu12==9.1; platform_system == \"Linux\" and "
            "platform_machine == \"x86_64\"",
            "Requires-Dist: triton==3.6.0; platform_system == \"Linux\"",
            "Requires-Dist: pyyaml; extra == \"pyyaml\"", ""]))
    assert guest_requirements(wheel, "3.11") == ["filelock", "sympy>=1.13.3", "triton==3.6.0"]
    assert "setuptools" in guest_requirements(wheel, "3.12")


def test_board_memory_outside_2_to_4_gib_is_refused():
    from devices.emulated.vm import parse_memory
    assert parse_memory("2G") == 2048 and parse_memory("3072M") == 3072 and parse_memory(4096) == 4096
    for bad in ("1G", "5G", "lots"):
        with pytest.raises(CostdbError):
            parse_memory(bad)


# --- the real board (slow) ---------------------------------------------------------------------

FAST = ["--samples", "3", "--min-sample-time", "0.001", "--no-iteration", "-q", "--top", "3"]


@pytest.fixture(scope="module")
def board_cache():
    """The fixture's own cache root; the image in it is kept between runs."""
    root = Path(os.environ.get("COSTDB_TEST_CACHE_DIR")
                or Path.home() / ".cache" / "costdb-test").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def a72_image(board_cache):
    from devices.emulated.image import build_image
    if os.geteuid() != 0:
        pytest.skip("the qemu-a72 image cannot be built here: building it needs root")
    missing = [t for t in ("mmdebstrap", "mke2fs", "qemu-system-aarch64") if not shutil.which(t)]
    if missing:
        pytest.skip(f"the qemu-a72 image cannot be built here: {', '.join(missing)} missing "
                    "(apt-get install mmdebstrap qemu-user-static qemu-system-arm)")
    from devices.emulated.image import ensure_binfmt
    try:
        ensure_binfmt()       # a host that cannot run arm64 binaries cannot build the image
    except CostdbError as e:
        pytest.skip(f"the qemu-a72 image cannot be built here: {e}")
    mp = pytest.MonkeyPatch()
    mp.setenv("COSTDB_CACHE_DIR", str(board_cache))
    try:
        yield build_image("qemu-a72")
    finally:
        mp.undo()


@pytest.fixture
def in_board_cache(board_cache, monkeypatch):
    monkeypatch.setenv("COSTDB_CACHE_DIR", str(board_cache))


def _rows(db: Path) -> tuple[list[tuple], dict]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT device, status, runtime_provenance, runtime_s, energy_provenance, "
                           "error, signature FROM current_measurements").fetchall()
        env = json.loads(con.execute("SELECT environment_json FROM sessions ORDER BY id DESC LIMIT 1")
                         .fetchone()[0])
    finally:
        con.close()
    return rows, env


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_profile_starts_the_board_profiles_through_ssh_and_stops_it(a72_image, in_board_cache,
                                                                    tmp_path):
    from devices.emulated.vm import running_board
    from profiler.zoo import model_graph
    db = tmp_path / "costs.db"
    r = CliRunner().invoke(cli, ["profile", "--device", "qemu-a72", "--model", "mlp", "--batch", "2",
                                 "--db", str(db)] + FAST, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert running_board(a72_image) is None            # profile stopped the board it started
    rows, env = _rows(db)
    n = len(model_graph("mlp", 2, None).distinct_specs())
    assert len(rows) == n
    bad = [r for r in rows if not (r[0] == "qemu-a72" and r[1] == "ok" and r[2] == "emulated"
                                   and r[3] > 0 and r[4] == "modeled")]
    assert not bad, bad
    facts = env["facts"]
    assert env["transport"] == "ssh"
    assert facts["emulated"] is True
    emu = facts["emulator"]
    assert emu["name"] == "qemu-system-aarch64" and emu["cpu"] == "cortex-a72"
    assert emu["machine"] == "virt" and emu["smp"] == 4 and emu["version"]
    assert emu["boot_to_sshd_s"] > 0
    # the guest's own facts, as the agent read them on arm64 Linux
    assert facts["machine"] == "aarch64" and facts["cores"] == 4
    assert facts["cpu_model"] == "4x ARM Cortex-A72"
    assert facts["board"] == "linux,dummy-virt"                   # /proc/device-tree/model
    assert 1.5 * 2**30 < facts["mem_total_bytes"] <= 2 * 2**30
    assert facts["python"].startswith(a72_image.manifest["python"])
    assert facts["torch"].split("+")[0] == a72_image.manifest["torch"]
    assert "asimd" in facts["cpu_features"] and "sve" not in facts["cpu_features"]
    assert isinstance(facts["temperatures_c"], dict) and isinstance(facts["cpufreq"], list)


def other_host_key_line(port: int, tmp_path: Path) -> str:
    """A known_hosts line for the board's address holding some other ed25519 key."""
    key = keygen(tmp_path / "other_host_key")
    kind, b64 = Path(f"{key}.pub").read_text().split()[:2]
    return f"[127.0.0.1]:{port} {kind} {b64}\n"


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_running_board_is_reused_and_a_changed_host_key_is_refused(a72_image, in_board_cache,
                                                                   tmp_path):
    import costdb
    from devices.emulated.vm import A72Board, running_board
    board = A72Board(a72_image)
    board.start()
    try:
        board.wait_for_sshd()
        good = a72_image.known_hosts.read_text()
        # the board's host key changed (reinstalled image): the recorded key no longer matches
        a72_image.known_hosts.write_text(other_host_key_line(board.port, tmp_path))
        with pytest.raises(CostdbError) as e:
            costdb.profile(str(tmp_path / "c.db"), device="qemu-a72", model="mlp", batch=2,
                           settings={"samples": 3, "min_sample_time": 0.001, "warmups": 1})
        assert "CHANGED" in str(e.value) and "qemu-a72" in str(e.value)
        a72_image.known_hosts.write_text(good)
        res = costdb.profile(str(tmp_path / "c.db"), device="qemu-a72", model="mlp", batch=2,
                             settings={"samples": 3, "min_sample_time": 0.001, "warmups": 1})
        assert res.status == "complete" and res.measured == res.planned > 0
        assert running_board(a72_image) is not None     # a board we started stays running
    finally:
        board.stop()
    assert running_board(a72_image) is None


def test_board_commands_import_no_torch(tmp_path):
    from test_no_torch import imported
    env_dir = tmp_path / "cache"
    mods, r = imported(["-c", "import os, sys; os.environ['COSTDB_CACHE_DIR'] = sys.argv[1]; "
                              "from costdb.cli import cli; cli(['board', 'status'])", str(env_dir)],
                       tmp_path)
    assert "no image" in r.stdout, r.stderr[-1000:]
    assert "torch" not in mods and "profiler" not in mods
