"""Fuzzing every command's options, graph JSON files and inventory files (issue 13).

Hypothesis, bounded and deterministic (``derandomize``, no example database). Per case: the exit
status is 0 or 2 (1 would be a bug, reported by the CLI as "internal error"), an error is exactly
one ``Error:`` line, there is never a traceback, no case runs past a bound (SIGALRM), and
``costdb query`` never changes the database file nor creates files next to it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from costdb.cli import cli

FUZZ = dict(derandomize=True, database=None, deadline=None,
            suppress_health_check=list(HealthCheck))
BOUND_S = 120      # one CLI call; far above any legitimate case here, so only a hang trips it


@contextlib.contextmanager
def _bounded(seconds: int = BOUND_S):
    def fire(signum, frame):
        raise TimeoutError(f"CLI call still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check(args: list[str]) -> str:
    with _bounded():
        r = CliRunner().invoke(cli, args, catch_exceptions=True)
    out = r.output
    assert "Traceback" not in out, (args, out)
    assert r.exit_code in (0, 2), (args, r.exit_code, out, r.exception)
    if r.exit_code == 2:
        errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1, (args, out)
    return out


# --- values an option might be given ---------------------------------------------------------

NUMBERS = st.sampled_from(["0", "-1", "1", "3", "nan", "inf", "-inf", "1e400", "1e308", "1e300",
                           "99999999999999999999999", "1.5", "0x10", "", " ", "1_000", "2e-5",
                           "9223372036854775808", "-9223372036854775809"])
UNITS = st.sampled_from(["", "B", "KiB", "MiB", "GB", "TiB", "s", "ms", "us", "min", "h", "x",
                         "µs", "parsec", "e5"])
SIZES = st.builds(lambda n, u: n + u, NUMBERS, UNITS)
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
               max_size=40)
PATHS = st.sampled_from(["/dev/null", "/dev/full", "/nonexistent/dir/x", "/", ".", "out",
                         "FIFO", "DIR", "a b'c\"$(touch PWNED)"])
VALUES = st.one_of(NUMBERS, SIZES, TEXT, PATHS)


def _path_arg(v: str, tmp: Path) -> str:
    return {"FIFO": str(tmp / "fifo"), "DIR": str(tmp)}.get(v, v)


# --- the database the read commands are fuzzed against ---------------------------------------

@pytest.fixture(scope="module")
def fuzz_db(tmp_path_factory, request):
    profiled = request.getfixturevalue("profiled_mlp")
    d = tmp_path_factory.mktemp("fuzz")
    os.mkfifo(d / "fifo")
    return profiled, d


READ_COMMANDS = {
    "costs": ["--device", "--model", "--batch", "--input", "--settings", "--session", "--kind",
              "--top"],
    "export": ["--format", "--device", "--model", "-o", "--settings", "--session", "--kind"],
    "sessions": ["--device"],
    "settings": ["--device"],
    "compare": ["--device", "--model", "--kind", "--format"],
    "models": [],
    "devices": ["--inventory"],
    "solve": ["--device", "--model", "--batch", "--input", "--granularity", "--mode", "--solver",
              "--time-limit", "--gap", "--method", "--settings", "--kind", "--memory",
              "--deadline", "--threads", "-o", "--binary"],
    "pareto": ["--device", "--model", "--budgets", "--points", "--deadlines", "--executor",
               "--workers", "--time-limit", "--method", "--mode"],
    "profile": ["--batch", "--input", "--threads", "--samples", "--min-sample-time", "--cpus",
                "--iterations", "--top", "--cache", "--dtype"],
}
POSITIONAL = {"compare": 2}


@settings(max_examples=150, **FUZZ)
@given(cmd=st.sampled_from(sorted(READ_COMMANDS)), data=st.data())
def test_fuzzed_options_of_every_command(fuzz_db, tmp_path_factory, monkeypatch, cmd, data):
    db, d = fuzz_db
    work = tmp_path_factory.mktemp("w")
    monkeypatch.chdir(work)
    opts = READ_COMMANDS[cmd]
    chosen = data.draw(st.lists(st.sampled_from(opts), max_size=4, unique=True)) if opts else []
    args = [cmd] + [data.draw(VALUES) for _ in range(POSITIONAL.get(cmd, 0))]
    for o in chosen:
        v = data.draw(VALUES)
        args += [o, _path_arg(v, d) if o in ("-o", "--binary", "--inventory") else v]
    if cmd == "profile":
        # never a real measurement here: an unknown model ends the command after the options
        args += ["--model", "no-such-model", "--no-in-context", "--no-iteration"]
    if cmd in ("solve", "pareto"):
        if "--model" not in chosen:
            args += ["--graph", str(_tiny_graph(work))]
        args += ["--time-limit", "5"] if "--time-limit" not in chosen else []
        args += ["--executor", "serial"] if cmd == "pareto" and "--executor" not in chosen else []
    if cmd not in ("models", "devices"):
        args += ["--db", db if cmd not in ("solve", "pareto", "profile") else str(work / "w.db")]
    _check(args)
    assert not (work / "PWNED").exists()


def _tiny_graph(where: Path) -> Path:
    g = where / "g.json"
    g.write_text(json.dumps({"nodes": [
        {"id": "a", "runtime_s": 1e-3, "energy_j": 1e-3, "output_bytes": 64},
        {"id": "b", "deps": ["a"], "runtime_s": 2e-3, "energy_j": 2e-3, "output_bytes": 32},
        {"id": "c", "deps": ["b"], "phase": "loss", "runtime_s": 1e-4, "energy_j": 1e-4,
         "output_bytes": 4},
        {"id": "db", "deps": ["c", "a"], "phase": "bwd", "runtime_s": 2e-3, "energy_j": 2e-3,
         "output_bytes": 64},
        {"id": "da", "deps": ["db"], "phase": "bwd", "runtime_s": 1e-3, "energy_j": 1e-3,
         "output_bytes": 16}]}))
    return g


# --- query -------------------------------------------------------------------------------------

SQL_WORDS = st.sampled_from([
    "SELECT", "*", "FROM", "ops", "measurements", "sessions", "WHERE", "1", "=", "'x'", ";",
    "INSERT", "INTO", "VALUES", "(1)", "DELETE", "UPDATE", "SET", "DROP", "TABLE", "ATTACH",
    "'f.db'", "AS", "a", "VACUUM", "INTO", "'v.db'", "BEGIN", "COMMIT", "SAVEPOINT", "x",
    "RELEASE", "PRAGMA", "user_version", "journal_mode", "=", "DELETE", "wal", "table_info(ops)",
    "WITH", "RECURSIVE", "c(n)", "AS", "(SELECT 1)", "--", "/*", "*/", "load_extension('x')",
    "CREATE", "TEMP", "VIEW", "v", "TRIGGER", "REINDEX", "ANALYZE", "DETACH", "count(*)",
    "LIMIT", "9223372036854775808", "zeroblob(1000)", "randomblob(8)", "printf('%s', 1)"])


@settings(max_examples=200, **FUZZ)
@given(words=st.lists(SQL_WORDS, max_size=8), junk=TEXT)
def test_fuzzed_queries_never_change_the_database(fuzz_db, tmp_path_factory, monkeypatch, words,
                                                  junk):
    db, _ = fuzz_db
    work = tmp_path_factory.mktemp("q")
    monkeypatch.chdir(work)
    before = hashlib.sha256(Path(db).read_bytes()).hexdigest()
    for sql in (" ".join(words), junk, " ".join(words) + " " + junk):
        _check(["query", sql, "--db", db, "--format", "csv"])
    assert hashlib.sha256(Path(db).read_bytes()).hexdigest() == before
    assert not list(work.iterdir())           # no ATTACHed / VACUUMed files


# --- graph JSON files --------------------------------------------------------------------------

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False), TEXT)
JSON_ANY = st.recursive(JSON_LEAF, lambda c: st.lists(c, max_size=3)
                        | st.dictionaries(TEXT, c, max_size=3), max_leaves=8)
FIELDS = ["id", "deps", "phase", "runtime_s", "energy_j", "output_bytes", "param_bytes",
          "workspace_bytes", "flops", "name"]


@settings(max_examples=120, **FUZZ)
@given(data=st.data())
def test_fuzzed_graph_files(tmp_path_factory, data):
    work = tmp_path_factory.mktemp("g")
    doc = json.loads(_tiny_graph(work).read_text())
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.sampled_from(["node", "top", "edges"]))
        nodes = [n for n in doc.get("nodes") or [] if isinstance(n, dict)] \
            if isinstance(doc.get("nodes"), list) else []
        if where == "node" and nodes:
            n = data.draw(st.sampled_from(nodes))
            n[data.draw(st.sampled_from(FIELDS))] = data.draw(JSON_ANY)
        elif where in ("top", "node"):
            doc[data.draw(st.sampled_from(["nodes", "edges", "fixed_bytes", "paging", "format",
                                           "name"]))] = data.draw(JSON_ANY)
        else:
            doc["edges"] = data.draw(st.lists(st.lists(JSON_LEAF, max_size=3), max_size=3))
    g = work / "g.json"
    raw = json.dumps(doc).encode()
    if data.draw(st.booleans()):         # byte-level damage too: truncation, invalid UTF-8
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + data.draw(st.sampled_from([b"", b"\xff", b"\xc3", b"[" * 50]))
    g.write_bytes(raw)
    cmd = data.draw(st.sampled_from(["solve", "pareto"]))
    args = [cmd, "--graph", str(g), "--db", str(work / "g.db"), "--time-limit", "5"]
    if cmd == "pareto":
        args += ["--executor", "serial", "--points", "2"]
    else:
        args += data.draw(st.sampled_from([[], ["--memory", "200B"], ["--deadline", "1ms"],
                                           ["--method", "lp_round"]]))
    _check(args)


# --- inventory files ---------------------------------------------------------------------------

INV_KEYS = ["host", "hostname", "user", "port", "key", "proxy_jump", "python", "remote_dir",
            "known_hosts", "timeout", "start_timeout", "serial", "baud", "board", "threads",
            "based_on", "profile", "sensor", "sensor_options", "hostnme", "thread"]
TOML_VALUES = st.sampled_from([
    "5", "-1", "0", "1e400", "nan", "inf", '"abc"', '""', '"' + "a" * 64 + '.x"', "[1, 2]",
    "{}", "{ ram_bytes = \"x\" }", "true", '"rpi4b"', '"nrf52840"', '"local"', '"/dev/null"',
    '"socket://127.0.0.1:1"', "1979-05-27", '"a\\nb"', '"~/x"', "99999999999999999999"])


@settings(max_examples=150, **FUZZ)
@given(keys=st.lists(st.tuples(st.sampled_from(INV_KEYS), TOML_VALUES), max_size=5),
       name=st.sampled_from(["pi", "rpi4b", "a.b", '"we ird"', "nrf"]), junk=st.booleans())
def test_fuzzed_inventory_files(tmp_path_factory, keys, name, junk):
    work = tmp_path_factory.mktemp("i")
    lines = [f"[devices.{name}]"]
    seen = set()
    for k, v in keys:
        if k in seen:
            continue
        seen.add(k)
        lines.append(f"{k} = {v}")
    text = "\n".join(lines) + "\n" + ("\x01[[devices\n" if junk else "")
    inv = work / "inv.toml"
    inv.write_text(text)
    _check(["devices", "--inventory", str(inv)])
    _check(["solve", "--inventory", str(inv), "--device", name.strip('"'), "--model", "mlp",
            "--db", str(work / "i.db")])
