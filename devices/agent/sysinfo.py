"""Facts about the machine the agent runs on, recorded with every session.

All paths are read relative to ``root`` so tests can use a fake tree. Unreadable facts are
``None``, never an exception: a fact we cannot read is not a reason to refuse to profile.
"""
import glob
import os
import platform
import re
import subprocess
import sys


def _read(root, path):
    try:
        with open(os.path.join(root, path.lstrip("/"))) as f:
            return f.read().strip().strip("\x00")
    except (IOError, OSError):
        return None


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def cpu_model(root="/"):
    text = _read(root, "/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def cpufreq(root="/"):
    """Per-CPU governor and current/min/max frequency in Hz (sysfs reports kHz)."""
    out = []
    pattern = os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*")
    for d in sorted(glob.glob(pattern), key=lambda p: int(os.path.basename(p)[3:])):
        cpu = int(os.path.basename(d)[3:])
        rel = os.path.relpath(d, root)
        entry = {"cpu": cpu,
                 "governor": _read(root, rel + "/cpufreq/scaling_governor")}
        for key, name in (("cur_hz", "scaling_cur_freq"), ("min_hz", "scaling_min_freq"),
                          ("max_hz", "scaling_max_freq")):
            khz = _int(_read(root, rel + "/cpufreq/" + name))
            entry[key] = khz * 1000 if khz is not None else None
        out.append(entry)
    return out


def mem_total_bytes(root="/"):
    text = _read(root, "/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def temperatures_c(root="/"):
    temps = {}
    for d in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        rel = os.path.relpath(d, root)
        t = _int(_read(root, rel + "/temp"))
        if t is not None:
            name = _read(root, rel + "/type") or os.path.basename(d)
            temps[name] = t / 1000.0
    return temps


def cache_sizes(root="/"):
    """CPU cache sizes in bytes by level ("L1d", "L2", "L3"...) as cpu0 sees them."""
    out = {}
    for d in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu0/cache/index*"))):
        rel = os.path.relpath(d, root)
        level, ctype, size = (_read(root, rel + "/" + k) for k in ("level", "type", "size"))
        if not level or not size:
            continue
        mult = {"K": 1024, "M": 1024 * 1024, "G": 1024 ** 3}.get(size[-1:].upper(), 1)
        value = _int(size.rstrip("KMGkmg"))
        if value is None:
            continue
        name = "L" + level + ({"Data": "d", "Instruction": "i"}.get(ctype, ""))
        out[name] = value * mult
    return out


def loadavg():
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def affinity():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None


def run_tool(argv, timeout=5):
    """Output of a local diagnostic tool (e.g. vcgencmd), or None if absent or failing."""
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True)
    except OSError:
        return None
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None
    return out.strip() if p.returncode == 0 else None


_CONFIG_PATTERNS = (
    ("onednn", r"(?:MKL-DNN|oneDNN)[^\n]*?v(\d+(?:\.\d+)+)"),
    ("mkl", r"Math Kernel Library Version ([0-9][^\s-]*)"),
    ("cpu_capability", r"CPU capability usage: (\S+)"),
    ("blas", r"BLAS_INFO=([^,\s]+)"),
)


def parse_torch_config(text):
    """Kernel-relevant library versions from ``torch.__config__.show()`` (None if absent)."""
    out = {}
    for key, pattern in _CONFIG_PATTERNS:
        m = re.search(pattern, text or "")
        out[key] = m.group(1) if m else None
    return out


def torch_facts():
    try:
        import torch
    except ImportError:
        return {"torch": None}
    facts = {"torch": torch.__version__, "threads": torch.get_num_threads(),
             "interop_threads": torch.get_num_interop_threads(),
             "cuda": bool(torch.cuda.is_available())}
    try:
        facts.update(parse_torch_config(torch.__config__.show()))
    except Exception:  # a build without __config__: the versions stay unknown
        facts.update(parse_torch_config(""))
    try:  # what ATen dispatches to at run time (torch >= 2.0); the build string otherwise
        facts["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        pass
    if not (getattr(torch.backends, "mkldnn", None) and torch.backends.mkldnn.is_available()):
        facts["onednn"] = None
    if facts["cuda"]:
        facts["cuda_devices"] = [torch.cuda.get_device_name(i)
                                 for i in range(torch.cuda.device_count())]
        facts["cuda_version"] = torch.version.cuda
        try:
            facts["cudnn_version"] = torch.backends.cudnn.version()
        except Exception:
            facts["cudnn_version"] = None
    return facts


def collect(root="/"):
    """Everything we record about the device at the start (and end) of a session."""
    freq = cpufreq(root)
    governors = sorted(set(e["governor"] for e in freq if e["governor"]))
    facts = {
        "board": _read(root, "/proc/device-tree/model"),
        "cpu_model": cpu_model(root),
        "cores": os.cpu_count(),
        "cpufreq": freq,
        "governors": governors,
        "mem_total_bytes": mem_total_bytes(root),
        "temperatures_c": temperatures_c(root),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "affinity": affinity(),
        "caches": cache_sizes(root),
        "loadavg": loadavg(),
    }
    facts.update(torch_facts())
    try:
        from . import boards
        facts.update(boards.board_facts(root))
    except ImportError:
        pass
    return facts
