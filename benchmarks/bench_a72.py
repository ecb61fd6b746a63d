"""The emulated Cortex-A72 board (``qemu-a72``): image build, boot, agent upload/import, profiles,
and the emulation slowdown against ``local`` for the same ops.

    python benchmarks/bench_a72.py                 # uses (or builds) the cached image
    python benchmarks/bench_a72.py --cold          # also builds an image in a fresh cache dir
    python benchmarks/bench_a72.py --models mlp    # reduced run

Figures: image build time and size (from a cold cache with --cold, else the cached image's
manifest, which recorded its own build); boot-to-sshd; agent upload (SFTP of the zipapp, remote
cache emptied first) and start (python3 + import torch on the guest, up to the agent's hello);
a bare remote ``import torch``; wall time of ``profile()`` per model on the board (the board is
started once, outside those times) and on ``local`` with the same settings; per-op slowdown =
emulated median runtime / local median runtime for the same op signature (median and range over
the ops). Emulated figures are QEMU TCG wall-clock times on this host, not Pi 4B timings.
Run as root (the image build needs it); needs qemu-system-aarch64.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices.emulated.image import build_image  # noqa: E402
from devices.emulated.vm import A72Board, qemu_version  # noqa: E402


def _medians(db: str, device: str) -> dict[str, float]:
    con = sqlite3.connect(db)
    try:
        return {sig: rt for sig, rt in con.execute(
            "SELECT signature, runtime_s FROM current_measurements WHERE device = ? AND "
            "status = 'ok' AND kind = 'isolated'", (device,))}
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,tinycnn")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--min-sample-time", type=float, default=0.01)
    ap.add_argument("--cold", action="store_true", help="build an image in a fresh cache dir")
    ap.add_argument("--memory", default="2G")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    import costdb
    settings = {"samples": args.samples, "min_sample_time": args.min_sample_time,
                "cv_threshold": 1e9}
    out: dict = {"host": platform.node(), "cpus": os.cpu_count(),
                 "loadavg_start": list(os.getloadavg()), "qemu": qemu_version()}
    tmp = Path(tempfile.mkdtemp(prefix="costdb-bench-a72-"))
    if args.cold:
        t0 = time.perf_counter()
        img = build_image("qemu-a72", tmp / "cold")
        out["cold_build_wall_s"] = time.perf_counter() - t0
        os.environ["COSTDB_CACHE_DIR"] = str(tmp)
        (tmp / "boards").mkdir()
        (tmp / "cold" / "qemu-a72").rename(tmp / "boards" / "qemu-a72")
    img = build_image("qemu-a72")
    m = img.manifest
    out["image"] = {k: m.get(k) for k in ("build_s", "steps_s", "disk_bytes", "disk_size_bytes",
                                          "torch", "python", "kernel_release", "built_at")}
    board = A72Board(img, args.memory)
    board.start()
    try:
        out["boot_to_sshd_s"] = board.wait_for_sshd()
        from devices.ssh import SshAgent, SshSession, resolve_target
        target = resolve_target("qemu-a72", board.connection(), {"start_timeout": 1800})
        target.connect_timeout = 120
        s = SshSession(target)
        try:
            s.run(["rm", "-rf", s.abspath(target.remote_dir)], timeout=120)
            t0 = time.perf_counter()
            s.ensure_agent()
            out["agent_upload_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            s.run(["python3", "-c", "import torch"], timeout=1800)
            out["remote_import_torch_s"] = time.perf_counter() - t0
        finally:
            s.close()
        t0 = time.perf_counter()
        agent = SshAgent(target, options={"start_timeout": 1800})
        out["agent_start_s"] = time.perf_counter() - t0   # cached bundle: python + import torch
        agent.close()
        out["models"] = {}
        for model in args.models.split(","):
            res = {}
            for device in ("qemu-a72", "local"):
                db = str(tmp / f"{model}-{device}.db")
                t0 = time.perf_counter()
                r = costdb.profile(db, device=device, model=model, batch=args.batch,
                                   settings=settings, force=True)
                res[f"{device}_wall_s"] = time.perf_counter() - t0
                res[f"{device}_ops"] = r.measured
                res[f"{device}_runtimes"] = _medians(db, device)
            emu, loc = res.pop("qemu-a72_runtimes"), res.pop("local_runtimes")
            ratios = sorted(emu[s] / loc[s] for s in emu if s in loc and loc[s] > 0)
            res["slowdown_median"] = statistics.median(ratios) if ratios else None
            res["slowdown_range"] = [ratios[0], ratios[-1]] if ratios else None
            res["wall_ratio"] = res["qemu-a72_wall_s"] / res["local_wall_s"]
            out["models"][model] = res
    finally:
        board.stop()
    out["loadavg_end"] = list(os.getloadavg())
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
