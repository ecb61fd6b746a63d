"""JSON-lines agent loop: ``python3 agent.pyz [--sysfs-root R]`` on the device.

The host writes one JSON request per line on stdin; the agent answers one JSON line per request on
stdout. Requests: {"cmd": "hello"} -> version and device facts; {"cmd": "idle", "seconds": s} ->
idle power; {"cmd": "measure", "spec": {...}, "settings": {...}, "device": "cpu"} -> a result;
{"cmd": "bye"}. See docs/protocol.md.
"""
import sys


def main(argv=None):
    # A torch wheel built for newer CPUs dies with SIGILL inside "import torch" (e.g. on a
    # Cortex-A72, ARMv8.0-A like the Pi 4B): faulthandler names the signal and the import on
    # stderr before the process ends, so the host can say so in one line.
    try:
        import faulthandler
        faulthandler.enable()
    except (ImportError, RuntimeError, ValueError):  # no usable stderr: nothing to report on
        pass
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.stderr.write("costdb agent: PyTorch is not installed for %s; install it with "
                         "'pip3 install torch' (on Jetson: NVIDIA's JetPack wheel)\n" % sys.executable)
        return 3
    from .server import serve
    return serve(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
