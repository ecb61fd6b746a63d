"""Every command and snippet in README.md and docs/*.md runs as written and ends as documented.

The fenced blocks are read from the documents themselves: ``bash`` lines are commands,
``console`` blocks are ``$ command`` lines followed by their output (a documented ``Error: ...``
line means exit status 2 with that error), ``python`` blocks are executed, ``toml`` blocks must
load as an inventory and ``json`` blocks must parse. Every other block is ``text``. HTML comments
on the lines right above a block say how to test it:

    <!-- no-test: REASON -->   cannot run here (real boards, hours of benchmark, set-up): each
                               costdb command and python script is run with --help, so its
                               options must exist; python snippets must compile
    <!-- test-append: ARGS --> ARGS are appended to each command (statistics options that only
                               make a profile short; the command is otherwise run as written)
    <!-- needs: PROG ... -->   skipped when a program is missing (QEMU, the Arm toolchain)
    <!-- file: NAME -->        the block is written to NAME in the working directory first

Commands run through the real CLI (click's runner, in-process) in one working directory holding
``costs.db``, built once for the module by the real profiler and solver: mlp at batch 2 profiled
at 1 and at 2 threads (the refusal in docs/usage.md), resnet18 (batch 2, 3x16x16, fast
statistics) profiled on local, resnet18 solved on rpi4b, which is never profiled, and tinycnn
profiled on the emulated qemu-m0 (when QEMU and the Arm toolchain are installed). Documents
are visited in order (README first), so a command may use what an earlier one stored. The
README's two set-up commands at the top are CI's own (tests/test_readme.py).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"bash", "console", "python"}
CHECKED = {"toml", "json"}
LANGS = RUN | CHECKED | {"text"}
MARKS = {"no-test", "test-append", "needs", "file"}
FAST = ["--samples", "3", "--min-sample-time", "0.001"]


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def parse(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file with the marks right above them."""
    lines = path.read_text().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        marks, k = {}, i - 1
        while k >= 0 and (c := re.match(r"^<!--\s*([\w-]+):\s*(.*?)\s*-->$", lines[k])):
            marks[c.group(1)] = c.group(2)
            k -= 1
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        out.append(Block(str(path.relative_to(ROOT)), i + 1, m.group(1), "\n".join(lines[i + 1:j]),
                         marks))
        i = j + 1
    return out


def all_blocks() -> list[Block]:
    blocks = []
    for doc in DOCS:
        found = parse(doc)
        if doc.name == "README.md":      # the two set-up commands before the first section
            head = doc.read_text().split("\n## ", 1)[0].count("\n") + 1
            found = [b for b in found if b.line > head]
        blocks += found
    return blocks


@dataclass
class Command:
    block: Block
    text: str
    expected_error: str | None = None

    @property
    def id(self) -> str:
        return f"{self.block.where} {self.text[:60]}"


def commands(block: Block) -> list[Command]:
    if block.lang == "bash":
        return [Command(block, ln.strip()) for ln in block.text.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    out: list[Command] = []
    for ln in block.text.splitlines():          # console: "$ cmd", then its output
        if ln.startswith("$ "):
            out.append(Command(block, ln[2:].strip()))
        elif ln.startswith("Error: ") and out:
            out[-1].expected_error = ln
    return out


BLOCKS = all_blocks()
COMMANDS = [c for b in BLOCKS if b.lang in ("bash", "console") for c in commands(b)]
SNIPPETS = [b for b in BLOCKS if b.lang == "python"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The user's working directory: costs.db as the module docstring says, the files the
    documents name (``file:`` blocks, path/to/my_model.py) and an empty inventory."""
    import costdb
    from click.testing import CliRunner

    from costdb.cli import cli
    from solver.commands import run_solve
    w = tmp_path_factory.mktemp("docs")
    for b in BLOCKS:
        if "file" in b.marks:
            (w / b.marks["file"]).write_text(b.text + "\n")
    (w / "path/to").mkdir(parents=True)
    (w / "path/to/my_model.py").write_text((ROOT / "tests/models/my_model.py").read_text()
                                           + "\n\nmake_model = make\n")
    db = str(w / "costs.db")
    runner = CliRunner()
    for threads in ("1", "2"):
        r = runner.invoke(cli, ["profile", "--model", "mlp", "--batch", "2", "--threads", threads,
                                "--db", db, "--no-iteration", "--no-in-context", "-q", *FAST])
        assert r.exit_code == 0, r.output
    costdb.profile(db, device="local", model="resnet18", batch=2, input_shape=(3, 16, 16),
                   threads=2, settings={"samples": 3, "min_sample_time": 0.001, "warmups": 1})
    run_solve(db, device="rpi4b", model="resnet18", memory="256MiB", time_limit=30)
    if shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc"):
        costdb.profile(db, device="qemu-m0", model="tinycnn", settings={"samples": 3, "warmups": 1})
    return w


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("COSTDB_DB", raising=False)
    monkeypatch.setenv("COSTDB_INVENTORY", str(workdir / "no-inventory.toml"))
    return workdir


def _missing(block: Block) -> list[str]:
    return [p for p in block.marks.get("needs", "").split() if not shutil.which(p)]


def test_every_block_is_tagged_and_marked_knowingly():
    for b in BLOCKS:
        assert b.lang in LANGS, f"{b.where}: a ```{b.lang or '(no language)'} block; tag it " \
                                f"{', '.join(sorted(LANGS))}"
        assert set(b.marks) <= MARKS, f"{b.where}: unknown marks {set(b.marks) - MARKS}"
        if b.lang in ("bash", "console"):
            assert commands(b), f"{b.where}: a {b.lang} block without commands"
    assert len(COMMANDS) >= 20 and len(SNIPPETS) >= 3
    for doc in DOCS:                     # commands hidden in indented code blocks escape the test
        hidden = [ln for ln in doc.read_text().splitlines() if re.match(r"^ {4}(\$ )?costdb ", ln)]
        assert not hidden, f"{doc.name}: put these in a fenced block: {hidden}"


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.id)
def test_documented_command(cmd: Command, in_workdir, runner):
    from costdb.cli import cli
    b = cmd.block
    if _missing(b):
        pytest.skip(f"needs {', '.join(_missing(b))}")
    args = shlex.split(cmd.text, comments=True)
    if "no-test" in b.marks:
        if args[0] == "costdb":
            r = runner.invoke(cli, [*args[1:], "--help"])
            assert r.exit_code == 0 and "Usage:" in r.output, f"{cmd.id}\n{r.output}"
        elif args[0] == "python" and args[1].endswith(".py"):
            r = subprocess.run([sys.executable, str(ROOT / args[1]), "--help"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr
        else:
            pytest.skip(f"{b.marks['no-test']}: {cmd.text}")
        return
    assert args[0] == "costdb", f"{cmd.id}: only costdb commands run here; mark others no-test"
    args += shlex.split(b.marks.get("test-append", ""))
    r = runner.invoke(cli, args[1:])
    if cmd.expected_error:
        assert r.exit_code == 2, f"{cmd.id}\n{r.output}"
        assert cmd.expected_error in r.output, f"{cmd.id}: documented\n{cmd.expected_error}\n" \
                                               f"got\n{r.output}"
    else:
        assert r.exit_code == 0, f"{cmd.id}\n{r.output}\n{r.exception!r}"


@pytest.mark.parametrize("block", SNIPPETS, ids=lambda b: b.where)
def test_documented_python(block: Block, in_workdir):
    code = compile(block.text, block.where, "exec")
    if "no-test" in block.marks or _missing(block):
        return                               # it compiles; running it needs what the mark says
    exec(code, {"__name__": "__docs__"})     # noqa: S102 - the documented snippet itself


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in CHECKED], ids=lambda b: b.where)
def test_documented_config_and_formats(block: Block, tmp_path):
    if block.lang == "json":
        json.loads(block.text)
        return
    tomllib.loads(block.text)
    if "[devices." in block.text:            # an inventory example: costdb loads it
        from devices.inventory import load
        path = tmp_path / "inventory.toml"
        path.write_text(block.text)
        inv = load(str(path))
        assert inv.devices


def test_cli_reference_table_is_generated_from_click():
    from costdb.cli.reference import current, table
    held = current((ROOT / "README.md").read_text())
    assert held is not None, "README.md lost the CLI table markers"
    assert held == table(), "README's CLI table is stale: run python -m costdb.cli.reference --write"
