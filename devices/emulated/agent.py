"""The SSH agent on an emulated board: the normal ``devices.ssh`` agent (same bundle, same upload
cache, same host-key checks), whose runtimes are labelled ``emulated`` and whose facts carry the
emulator's (QEMU version, machine, vCPUs, memory, image) beside the guest's own, as read by the
agent (``/proc/device-tree/model``, cpuinfo, cpufreq and thermal zones where present)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from devices.emulated.vm import CONNECT_TIMEOUT, START_TIMEOUT, board_running
from devices.ssh import SshAgent, resolve_target


class EmulatedSshAgent(SshAgent):
    """An SshAgent to a QEMU board: TCG wall-clock runtimes are never real-board timings."""

    runtime_provenance = "emulated"

    def __init__(self, *args: Any, emulator: dict[str, Any], **kwargs: Any):
        self.emulator = dict(emulator)
        super().__init__(*args, **kwargs)

    def measure(self, spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        # the agent on the guest cannot know it is emulated (and must not be told to guess)
        result = super().measure(spec, settings)
        result["runtime_provenance"] = self.runtime_provenance
        return result

    def hello(self) -> dict[str, Any]:
        reply = super().hello()
        facts = dict(reply.get("facts") or {})
        facts["emulated"] = True
        facts["emulator"] = self.emulator
        return {**reply, "facts": facts}


@contextlib.contextmanager
def open_emulated_agent(entry: Any, threads: int | None = None,
                        options: dict[str, Any] | None = None) -> Iterator[EmulatedSshAgent]:
    """Start (or reuse) the board, wait for sshd, start the agent over SSH; stop what we started."""
    options = dict(options or {})
    options.setdefault("start_timeout", START_TIMEOUT)
    conn = entry.connection
    with board_running(cache_dir=conn.get("cache_dir"), memory_mib=conn.get("memory")) as board:
        # the board's own known_hosts and key, whatever the caller's options say
        options.pop("known_hosts", None)
        options.pop("accept_new_host_key", None)
        target = resolve_target(entry.name, board.connection(), options)
        target.connect_timeout = CONNECT_TIMEOUT   # key exchange under TCG on a loaded host
        agent = EmulatedSshAgent(target, threads=threads, settings=dict(entry.settings),
                                 options=options, emulator=board.emulator_facts())
        try:
            yield agent
        finally:
            agent.close()
