"""The request loop behind ``__main__``: one JSON line in, one JSON line out."""
import argparse
import json
import os
import sys
import traceback

from . import AGENT_VERSION, PROTOCOL_VERSION
from . import measure, sensors, sysinfo


def _reply(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def serve(argv):
    ap = argparse.ArgumentParser(prog="costdb-agent")
    ap.add_argument("--sysfs-root", default="/")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    meter = None
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError:
            _reply({"ok": False, "error": "malformed request line"})
            continue
        cmd = req.get("cmd")
        try:
            if cmd == "hello":
                meter = sensors.find_sensor(args.sysfs_root, req.get("sensor"),
                                            req.get("sensor_options"))
                facts = sysinfo.collect(args.sysfs_root)
                facts["energy_sensor"] = getattr(meter, "name", None)
                _reply({"ok": True, "agent_version": AGENT_VERSION,
                        "protocol": PROTOCOL_VERSION, "facts": facts, "pid": os.getpid()})
            elif cmd == "facts":
                _reply({"ok": True, "facts": sysinfo.collect(args.sysfs_root)})
            elif cmd == "idle":
                watts = measure.measure_idle_power(meter, float(req.get("seconds", 1.0)))
                _reply({"ok": True, "idle_power_w": watts})
            elif cmd == "measure":
                res = measure.measure_op(req["spec"], req.get("settings"),
                                         req.get("device", "cpu"), meter)
                _reply({"ok": True, "result": res})
            elif cmd == "execute":
                from . import execute
                res = execute.run_request(req, meter)
                _reply({"ok": True, "result": res})
            elif cmd == "storage":
                from . import execute
                _reply({"ok": True, "result": execute.measure_storage(req)})
            elif cmd == "bye":
                _reply({"ok": True})
                break
            else:
                _reply({"ok": False, "error": "unknown command %r" % cmd})
        except Exception as e:  # report, keep serving: one bad op must not end a session
            _reply({"ok": False, "error": "%s: %s" % (type(e).__name__, e),
                    "trace": traceback.format_exc()[-2000:]})
    if meter is not None and hasattr(meter, "close"):
        meter.close()
    return 0
