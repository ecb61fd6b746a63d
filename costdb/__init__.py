"""costdb: a hardware profiling and cost-model database for training neural networks on edge devices.

Public API::

    import costdb
    db = costdb.open("costs.db")
    df = db.costs(device="local", model="resnet18")     # one row per training-graph node
    costdb.profile("costs.db", device="local", model="mlp")

``costdb`` is the data layer: the only package that reads or writes the SQLite file (typed records
in ``costdb.records``, queries on ``costdb.Database``); it imports neither torch nor the
profiler, solver or reports (pandas only when a DataFrame is asked for).
"""
from costdb.database import Database, open  # noqa: A004
from costdb.errors import CostdbError
from costdb.graph import Node, TrainingGraph
from costdb.records import (DeviceRecord, IterationRecord, Measurement, ModelRecord, OpRecord,
                            ParetoPointRecord, RunRecord, ScheduleRecord, SessionRecord,
                            StorageProfileRecord, SweepRecord)
from costdb.settings import SettingsRecord

__version__ = "0.1.0"


def profile(db_path, device="local", model="resnet18", **options):
    """Profile ``model``'s training ops on ``device`` into ``db_path`` (see profiler.session).

    A shortcut for Python users; it imports the profiler (and torch) only when called."""
    from profiler.session import profile as _profile
    return _profile(db_path, device=device, model=model, **options)


__all__ = ["Database", "CostdbError", "DeviceRecord", "IterationRecord", "Measurement",
           "ModelRecord", "Node", "OpRecord", "ParetoPointRecord", "RunRecord", "ScheduleRecord",
           "StorageProfileRecord",
           "SessionRecord", "SettingsRecord", "SweepRecord", "TrainingGraph", "open", "profile",
           "__version__"]
