"""JSON-lines agent loop: ``python3 agent.pyz [--sysfs-root R]`` on the device.

The host writes one JSON request per line on stdin; the agent answers one JSON line per request on
stdout. Requests: {"cmd": "hello"} -> version and device facts; {"cmd": "idle", "seconds": s} ->
idle power; {"cmd": "measure", "spec": {...}, "settings": {...}, "device": "cpu"} -> a result;
{"cmd": "bye"}. See docs/protocol.md.
"""
import sys


def main(argv=None):
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
