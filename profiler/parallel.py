"""Profile several devices at once: one thread per device, one serialised writer into the database.

Each device runs the ordinary session (``profiler.session.profile``: plan, measure, write each
result as it arrives, reconnect and resume on a dropped link). All sessions share one SQLite
connection behind a lock, so writes never contend for the database file and a slow device never
blocks a fast one for longer than one small transaction. A device that fails (unreachable, auth)
does not stop the others; its error is returned with the results.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from costdb.database import Database
from costdb.errors import CostdbError
from devices.connect import entry_for
from devices.inventory import Inventory, load as load_inventory
from profiler.graph import TrainingGraph
from profiler.session import ProfileResult, profile
from profiler.zoo import model_graph


class SerializedDatabase:
    """A Database whose every method call runs under one lock (one connection, one writer)."""

    def __init__(self, db: Database):
        self._db = db
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._db, name)
        if not callable(attr):
            return attr
        if name == "close":
            return lambda *a, **k: None  # the owner closes it

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)
        return locked


def all_devices(inventory: Inventory | str | None) -> list[str]:
    """Every device of the inventory (``--all``)."""
    inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory, required=True)
    if not inv.devices:
        raise CostdbError(f"--all: the inventory {inv.path} lists no devices; add [devices.NAME] "
                          "tables or name devices with --device")
    return list(inv.devices)


def profile_many(db_path: str, devices: list[str], model: str | TrainingGraph = "resnet18",
                 batch: int | None = None, input_shape: tuple[int, ...] | None = None,
                 dtype: str = "float32", force: bool = False, threads: int | None = None,
                 settings: dict[str, Any] | None = None, inventory: Inventory | str | None = None,
                 progress: Callable[..., Any] | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 connect_options: dict[str, Any] | None = None,
                 max_parallel: int | None = None) -> dict[str, ProfileResult | CostdbError]:
    """Profile ``model`` on every device in parallel; returns device -> result or error.

    Warnings reach ``on_warning`` prefixed with the device name. CostdbErrors of one device are
    returned, not raised; anything else (a bug) is raised after all devices have finished.
    """
    devices = list(dict.fromkeys(devices))
    inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
    entries = {d: entry_for(d, inv) for d in devices}       # unknown devices fail before any work
    local = [d for d, e in entries.items() if e.transport == "local"]
    if len(local) > 1:
        raise CostdbError(f"devices {', '.join(local)} all run on this host; profile them one at a "
                          "time (they would disturb each other's timings)")
    graph = model if isinstance(model, TrainingGraph) else model_graph(model, batch, input_shape,
                                                                      dtype=dtype)
    db = Database(db_path, create=True)
    try:
        # rows every session needs, written once before the threads start
        for e in entries.values():
            db.upsert_device(e.profile)
        db.save_graph(graph)
        shared = SerializedDatabase(db)
        warn = on_warning or (lambda msg: None)

        def run(device: str) -> ProfileResult:
            return profile(db_path, device=device, model=graph, force=force, threads=threads,
                           settings=settings, inventory=inv, progress=progress,
                           on_warning=lambda m: warn(f"{device}: {m}"),
                           connect_options=connect_options, db=shared)

        results: dict[str, ProfileResult | CostdbError] = {}
        bug: BaseException | None = None
        with ThreadPoolExecutor(max_workers=max_parallel or len(devices),
                                thread_name_prefix="costdb-profile") as pool:
            futures = {d: pool.submit(run, d) for d in devices}
            for d, fut in futures.items():
                try:
                    results[d] = fut.result()
                except CostdbError as e:
                    results[d] = e
                except BaseException as e:  # noqa: BLE001 - re-raised below, after the others
                    bug = bug or e
        if bug is not None:
            raise bug
        return results
    finally:
        db.close()
