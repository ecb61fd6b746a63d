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


#: (implementer, part) from arm64 /proc/cpuinfo -> core name (Linux arch/arm64 cputype.h)
ARM_PARTS = {
    (0x41, 0xd03): "ARM Cortex-A53", (0x41, 0xd04): "ARM Cortex-A35",
    (0x41, 0xd05): "ARM Cortex-A55", (0x41, 0xd07): "ARM Cortex-A57",
    (0x41, 0xd08): "ARM Cortex-A72", (0x41, 0xd09): "ARM Cortex-A73",
    (0x41, 0xd0a): "ARM Cortex-A75", (0x41, 0xd0b): "ARM Cortex-A76",
    (0x41, 0xd0c): "ARM Neoverse-N1", (0x41, 0xd0d): "ARM Cortex-A77",
    (0x41, 0xd40): "ARM Neoverse-V1", (0x41, 0xd41): "ARM Cortex-A78",
    (0x41, 0xd44): "ARM Cortex-X1", (0x41, 0xd46): "ARM Cortex-A510",
    (0x41, 0xd47): "ARM Cortex-A710", (0x41, 0xd49): "ARM Neoverse-N2",
    (0x41, 0xd4b): "ARM Cortex-A78C", (0x41, 0xd4f): "ARM Neoverse-V2",
    (0x4e, 0x003): "NVIDIA Denver 2", (0x4e, 0x004): "NVIDIA Carmel",
    (0x61, 0x022): "Apple M1 Icestorm", (0x61, 0x023): "Apple M1 Firestorm",
}


def _hex(v):
    try:
        return int(v, 16)
    except (TypeError, ValueError):
        return None


def arm_cores(text):
    """Core types from an arm64 /proc/cpuinfo (which has no "model name" line): one
    (name, count) per core type in order of appearance, e.g. [("NVIDIA Denver 2", 2),
    ("ARM Cortex-A57", 4)] on a Jetson TX2. Unknown parts are named by their ids."""
    order, counts = [], {}
    implementer = None
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "CPU implementer":
            implementer = _hex(value)
        elif key == "CPU part" and implementer is not None:
            part = _hex(value)
            name = ARM_PARTS.get((implementer, part),
                                 "arm64 implementer 0x%02x part 0x%03x" % (implementer, part or 0))
            if name not in counts:
                order.append(name)
                counts[name] = 0
            counts[name] += 1
            implementer = None
    return [(n, counts[n]) for n in order]


def cpu_model(root="/"):
    """The CPU's name: x86 "model name"; on arm64 the cores decoded from implementer/part
    ("4x ARM Cortex-A72"); else the first of Hardware/Model/cpu model/Processor."""
    text = _read(root, "/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.split(":")[0].strip() == "model name" and ":" in line:
            return line.split(":", 1)[1].strip()
    cores = arm_cores(text)
    if cores:
        return " + ".join("%dx %s" % (n, name) for name, n in cores)
    for key in ("Hardware", "Model", "cpu model", "Processor"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def cpu_features(root="/"):
    """The first CPU's feature flags (arm64 "Features", x86 "flags"): what a torch build may use."""
    for line in (_read(root, "/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Features", "flags"):
            return value.split()
    return None


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
        "cpu_features": cpu_features(root),
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
