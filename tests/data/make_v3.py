"""Write tests/data/v3.db: a database exactly as costdb wrote it at schema version 3.

Run it with the code of commit f2c3c2d (the last schema-v3 costdb), not with this tree::

    mkdir /tmp/v3 && git archive f2c3c2d | tar -x -C /tmp/v3
    PYTHONPATH=/tmp/v3 python tests/data/make_v3.py tests/data/v3.db

The file holds what a user's database has after a few weeks: the MLP profiled on ``local`` with
one thread, then again with ``--force --threads 2 --cache cold`` (two sessions of the same
device), a measured whole iteration, an ``other`` device (inventory, based on local) with a
failed op, a ``costdb solve`` schedule and a Pareto sweep with its points. tests/test_migration.py
migrates a copy and checks that every row and value survives.
"""
import sqlite3
import sys
import tempfile
from pathlib import Path

import costdb
from costdb import schema
from solver.commands import run_pareto, run_solve

FAST = {"samples": 3, "min_sample_time": 0.001, "warmups": 1}


def main(out: str) -> None:
    assert schema.LATEST == 3, "run this with the schema-v3 code (see the docstring)"
    out_path = Path(out)
    out_path.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp())
    inv = tmp / "inventory.toml"
    inv.write_text('[devices.other]\nbased_on = "local"\n')
    db = str(out_path)
    costdb.profile(db, device="local", model="mlp", batch=2, settings=dict(FAST, cache="warm"),
                   threads=1, iteration=True)
    costdb.profile(db, device="local", model="mlp", batch=2, settings=dict(FAST, cache="cold"),
                   threads=2, force=True, iteration=False)
    costdb.profile(db, device="other", model="mlp", batch=2, settings=FAST, inventory=str(inv))
    run_solve(db, device="local", model="mlp", compat=True, time_limit=30)
    run_pareto(db, device="local", model="mlp", budgets=None, n_budgets=3, mode="remat",
               compat=True, executor="serial", time_limit=30)
    con = sqlite3.connect(db)
    with con:   # one failed op on 'other', as a dropped link would leave it
        sig = con.execute("SELECT signature FROM measurements WHERE device = 'other' LIMIT 1").fetchone()[0]
        con.execute("UPDATE measurements SET status = 'error', error = 'RuntimeError: link lost',"
                    " runtime_s = NULL WHERE device = 'other' AND signature = ?", (sig,))
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode = DELETE")
    con.execute("VACUUM")
    con.close()
    print(f"wrote {out_path} (schema {schema.LATEST})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/v3.db")
