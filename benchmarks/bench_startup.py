"""Start-up time of the commands a user runs most: ``costdb --help`` and ``costdb costs`` on a
stored model (targets on a quiet machine: 0.5 s and 1.5 s, docs/benchmarks.md).

    python benchmarks/bench_startup.py [--repeat 7] [--db costs.db --model mlp] [--console-script]

Each command runs in a fresh interpreter (``python -m costdb.cli ...``, or the installed
``costdb`` script with --console-script) and is timed from spawn to exit; the figures are the
median and the minimum of --repeat runs after one warm-up run (which fills the OS file cache).
Without --db the benchmark profiles the MLP (batch 4, 3 samples) into a temporary database first;
that step imports torch, the timed commands do not (tests/test_no_torch.py). For each command it
also prints the five slowest imports of one ``-X importtime`` run, which is where start-up goes.
The load average is printed too: figures taken on a loaded machine are not the targets'.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"--help": 0.5, "costs": 1.5}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}


def _command(args: list[str], console_script: bool) -> list[str]:
    if console_script:
        exe = shutil.which("costdb")
        if not exe:
            raise SystemExit("no costdb console script on PATH (pip install -e .)")
        return [exe, *args]
    return [sys.executable, "-m", "costdb.cli", *args]


def time_command(cmd: list[str], repeat: int, cwd: str) -> list[float]:
    """Wall-clock seconds of ``repeat`` runs (after one untimed warm-up); fails loudly on errors."""
    out = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        if i:
            out.append(dt)
    return out


def slowest_imports(cmd: list[str], cwd: str, n: int = 5) -> list[tuple[float, str]]:
    """The ``n`` top-level imports with the largest cumulative time in one -X importtime run."""
    if cmd[0] != sys.executable:
        return []
    r = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=cwd, env=_env(),
                       capture_output=True, text=True)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if cumulative.strip().isdigit() and not name[1:].startswith(" "):   # top level only
            rows.append((int(cumulative) / 1e6, name.strip()))
    return sorted(rows, reverse=True)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--db", default=None, help="A database holding --model on local (default: "
                                               "profile the MLP into a temporary one).")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--console-script", action="store_true",
                    help="Time the installed 'costdb' script instead of python -m costdb.cli.")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_startup-")
    try:
        db = a.db
        if db is None:
            sys.path.insert(0, str(ROOT))
            import costdb
            db = str(Path(tmp) / "costs.db")
            costdb.profile(db, device="local", model="mlp", batch=4,
                           settings={"samples": 3, "min_sample_time": 0.001, "warmups": 1})
        db = str(Path(db).resolve())
        load = os.getloadavg()
        print(f"# bench_startup: {sys.executable} (python {sys.version.split()[0]}), "
              f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"# {a.repeat} runs after one warm-up, fresh interpreter each")
        print("| command | median (s) | min (s) | target (s) |")
        print("|---|---|---|---|")
        report = []
        for name, args in (("--help", ["--help"]),
                           ("costs", ["costs", "--device", "local", "--model", a.model, "--db", db])):
            cmd = _command(args, a.console_script)
            times = time_command(cmd, a.repeat, tmp)
            shown = "costdb " + " ".join(args).replace(db, "DB")
            print(f"| `{shown}` | {statistics.median(times):.3f} | {min(times):.3f} | "
                  f"{TARGETS[name]} |")
            report.append((shown, slowest_imports(cmd, tmp)))
        for shown, rows in report:
            if rows:
                print(f"\nslowest imports of `{shown}`: "
                      + ", ".join(f"{mod} {sec:.3f} s" for sec, mod in rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
