"""The ``local`` device: the agent's measurement code run in-process, no transport in between."""
from __future__ import annotations

import os
from typing import Any

from devices.agent import AGENT_VERSION, PROTOCOL_VERSION, measure, sensors, sysinfo


class LocalAgent:
    """AgentConnection for this host. ``cpus`` pins the process, ``threads`` sets torch's pool."""

    runtime_provenance = "measured"

    def __init__(self, sysfs_root: str = "/", cpus: list[int] | None = None,
                 threads: int | None = None, sensor: str | None = None,
                 sensor_options: dict[str, Any] | None = None, compute_unit: str = "cpu"):
        import torch
        self.sysfs_root = sysfs_root
        self.compute_unit = compute_unit
        self._saved_affinity = None
        self._saved_threads = torch.get_num_threads()
        if cpus:
            self._saved_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, cpus)
        if threads:
            torch.set_num_threads(threads)
        self.meter = sensors.find_sensor(sysfs_root, sensor, sensor_options)

    def hello(self) -> dict[str, Any]:
        facts = sysinfo.collect(self.sysfs_root)
        facts["energy_sensor"] = getattr(self.meter, "name", None)
        return {"agent_version": AGENT_VERSION, "protocol": PROTOCOL_VERSION, "facts": facts}

    def idle_power_w(self, seconds: float = 1.0) -> float | None:
        return measure.measure_idle_power(self.meter, seconds)

    def measure(self, spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        return measure.measure_op(spec, settings, self.compute_unit, self.meter)

    def run_schedule(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run a schedule (``costdb run``): ``devices.agent.execute.execute`` in this process."""
        from devices.agent.execute import ExecutionError, run_request
        from costdb.errors import CostdbError
        try:
            return run_request(request, self.meter)
        except ExecutionError as e:
            raise CostdbError(f"device local: {type(e).__name__}: {e}") from None

    def storage(self, request: dict[str, Any]) -> dict[str, Any]:
        """Measure the paging speed of the storage path (``costdb storage``)."""
        from devices.agent.execute import ExecutionError, measure_storage
        from costdb.errors import CostdbError
        try:
            return measure_storage(request)
        except (ExecutionError, OSError) as e:
            raise CostdbError(f"device local: {e}") from None

    def close(self) -> None:
        import torch
        if self.meter is not None and hasattr(self.meter, "close"):
            self.meter.close()
        torch.set_num_threads(self._saved_threads)
        if self._saved_affinity is not None:
            os.sched_setaffinity(0, self._saved_affinity)
