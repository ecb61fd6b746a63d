"""costdb: a hardware profiling and cost-model database for training neural networks on edge devices.

Public API::

    import costdb
    db = costdb.open("costs.db")
    df = db.costs(device="local", model="resnet18")     # one row per training-graph node
    costdb.profile("costs.db", device="local", model="mlp")
"""
from costdb.database import Database, open  # noqa: A004
from costdb.errors import CostdbError
from costdb.records import Measurement

__version__ = "0.1.0"


def profile(db_path, device="local", model="resnet18", **options):
    """Profile ``model``'s training ops on ``device`` into ``db_path`` (see profiler.session)."""
    from profiler.session import profile as _profile
    return _profile(db_path, device=device, model=model, **options)


__all__ = ["Database", "CostdbError", "Measurement", "open", "profile", "__version__"]
