"""Build the ``qemu-a72`` board's disk: Debian 12 arm64 with openssh-server, python3 and PyPI's
aarch64 torch wheel, from package registries only.

Why this recipe: the previous approach (debootstrap's second stage inside the TCG-emulated VM)
took over an hour. Here ``mmdebstrap`` runs every maintainer script on the host under
``qemu-aarch64-static`` (binfmt_misc), torch is unpacked on the host by ``pip install --target
--platform manylinux_*_aarch64`` (the wheel is never built or executed on x86), and ``mke2fs -d``
turns the tree into an ext4 image without loop mounts. The kernel and initrd are the image's own
``linux-image-arm64`` ones, copied out beside the disk.

Each image gets a fresh ssh host key (its public half is what costdb's own known_hosts trusts) and
a fresh user key for the ``costdb`` login user. Before the image is accepted, ``import torch`` is
run in it under ``QEMU_CPU=cortex-a72``: a wheel that needs newer instructions than ARMv8.0 (like
a real Pi 4B) is refused at build time with one line, not at the first profile.

Layout of ``board_dir("qemu-a72")`` (``~/.cache/costdb/boards/qemu-a72``)::

    disk.img  vmlinuz  initrd.img  id_ed25519[.pub]  ssh_host_ed25519_key.pub  manifest.json
    known_hosts (written at each start: the port changes)   board.json (run state)

and ``qemu-a72-build.log`` beside it (kept after a failed build).

Building needs root (mmdebstrap's root mode, chroot, binfmt_misc) and the Debian packages
``mmdebstrap arch-test qemu-user-static e2fsprogs openssh-client`` on the host.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from costdb.errors import CostdbError
from devices.emulated import board_dir

#: Bump when the recipe changes: an image built by another recipe is rebuilt by ``board build``.
RECIPE = 1
SUITE = "bookworm"            # Debian 12, what Raspberry Pi OS is based on
ARCH = "arm64"
USER = "costdb"
#: The newest torch whose PyPI aarch64 wheel imports and trains on a Cortex-A72 (ARMv8.0-A)
#: here; see docs/emulated.md for the versions tried.
DEFAULT_TORCH = "2.9.1"
PACKAGES = ("linux-image-arm64", "initramfs-tools", "systemd-sysv", "udev", "dbus", "kmod",
            "openssh-server", "python3", "python3-pip", "iproute2", "procps", "ca-certificates")
#: Periodic jobs that would compete with measurements on a 4-vCPU emulated board.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                "e2scrub_reap.service", "fstrim.timer", "systemd-timesyncd.service")
STEPS = ("bootstrap Debian 12 arm64 (mmdebstrap, maintainer scripts under qemu-user)",
         "configure ssh keys, network and user",
         "torch aarch64 wheel (pip --platform)",
         "import torch under QEMU_CPU=cortex-a72",
         "kernel and initrd",
         "ext4 disk image (mke2fs -d)")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: initramfs-tools' default (MODULES=most) copies hundreds of modules, one shell call each, under
#: qemu-user: minutes. The board needs only these to mount its root; written before any package
#: is installed (a setup hook), so the kernel's postinst builds the small initrd directly.
INITRD_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "ext4", "crc32c_generic")
INITRD_HOOK = """#!/bin/sh
# costdb qemu-a72: the modules the QEMU virt board needs to mount its root filesystem
case "$1" in prereqs) exit 0;; esac
. /usr/share/initramfs-tools/hook-functions
for m in %s; do manual_add_modules "$m"; done
""" % " ".join(INITRD_MODULES)

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Image:
    """A built board image (the files beside ``manifest.json``)."""

    dir: Path
    manifest: dict[str, Any]

    @property
    def disk(self) -> Path:
        return self.dir / "disk.img"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def user_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def host_key_pub(self) -> Path:
        return self.dir / "ssh_host_ed25519_key.pub"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def user(self) -> str:
        return self.manifest.get("user", USER)


def load_image(board: str = "qemu-a72", cache_dir: str | os.PathLike | None = None) -> Image | None:
    """The built image of ``board``, or None when there is none (or it is incomplete)."""
    d = board_dir(board, cache_dir)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    img = Image(d, manifest)
    if not all(p.exists() for p in (img.disk, img.kernel, img.initrd, img.user_key, img.host_key_pub)):
        return None
    return img


def is_current(img: Image, torch_version: str = DEFAULT_TORCH) -> bool:
    """Built by this recipe with this torch: ``build_image`` returns it as it is."""
    return img.manifest.get("recipe") == RECIPE and img.manifest.get("torch") == torch_version


def require_image(board: str = "qemu-a72", cache_dir: str | os.PathLike | None = None) -> Image:
    img = load_image(board, cache_dir)
    if img is None:
        where = f" --cache-dir {cache_dir}" if cache_dir else ""
        raise CostdbError(f"board {board!r} has no image in {board_dir(board, cache_dir)}; build it "
                          f"once with 'costdb board build {board}{where}' (about 15-30 min, needs root)")
    return img


def allocated_bytes(path: Path) -> int:
    """Bytes a (sparse) file or a tree really occupies on disk."""
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


# --- host prerequisites ------------------------------------------------------------------------

def _need_tools() -> None:
    missing = [t for t in ("mmdebstrap", "arch-test", "mke2fs", "ssh-keygen", "chroot") if shutil.which(t) is None]
    if missing:
        raise CostdbError(f"building the qemu-a72 image needs {', '.join(missing)}; install them with "
                          "'apt-get install mmdebstrap arch-test qemu-user-static e2fsprogs openssh-client'")
    if os.geteuid() != 0:
        raise CostdbError("building the qemu-a72 image needs root (mmdebstrap root mode, chroot, "
                          "binfmt_misc); run 'sudo costdb board build qemu-a72'")


def ensure_binfmt() -> None:
    """Make arm64 binaries run on this host through qemu-aarch64-static (binfmt_misc, flag F).

    Debian's qemu-user-static registers itself when binfmt_misc is mounted at install time; in a
    container or a minimal VM it often is not, so mount it and register from the package's own
    ``/usr/lib/binfmt.d/qemu-aarch64.conf`` line."""
    if platform.machine() in ("aarch64", "arm64"):
        return
    if not (BINFMT / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                           capture_output=True, text=True)
        if r.returncode != 0 and not (BINFMT / "register").exists():
            raise CostdbError(f"cannot mount binfmt_misc ({r.stderr.strip()[:120]}); run 'mount -t "
                              "binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc' as root")
    entry = BINFMT / "qemu-aarch64"
    if entry.exists():
        if "enabled" in entry.read_text():
            return
        entry.write_text("1")
        return
    conf = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if not conf.exists():
        raise CostdbError("qemu-aarch64-static is not registered with binfmt_misc and "
                          f"{conf} is missing; install it with 'apt-get install qemu-user-static'")
    line = next((ln for ln in conf.read_text().splitlines() if ln.startswith(":")), "")
    try:
        (BINFMT / "register").write_text(line)
    except OSError as e:
        raise CostdbError(f"cannot register qemu-aarch64 with binfmt_misc ({e}); run "
                          "'systemctl restart systemd-binfmt' or reinstall qemu-user-static") from None


def host_mirror(sources: str = "/etc/apt/sources.list.d") -> str | None:
    """The host's own Debian mirror (from its apt sources), so the image comes from the same one."""
    texts = []
    for p in sorted(Path(sources).glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        with contextlib.suppress(OSError):
            texts.append(p.read_text())
    for text in texts:
        for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            uri = m.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s", text, re.M):
            uri = m.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return None


# --- helpers -----------------------------------------------------------------------------------

def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mnt = line.split()[4].replace("\\040", " ")
            if mnt.startswith(prefix) or mnt == prefix.rstrip("/"):
                out.append(mnt)
    return sorted(out, key=len, reverse=True)


def safe_rmtree(path: Path) -> None:
    """Remove a build tree, unmounting first whatever a killed chroot step left mounted in it
    (deleting through a bind-mounted /dev would delete the host's)."""
    if not path.exists():
        return
    for _attempt in range(5):  # a dying dpkg of a killed bootstrap may still write into it
        for mnt in _mounts_under(path):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        left = _mounts_under(path)
        if left:
            raise CostdbError(f"cannot remove {path}: {left[0]} is still mounted; unmount it by hand")
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.5)
        if not path.exists():
            return


def _run(argv: list[str], log: Any, what: str, env: dict[str, str] | None = None,
         timeout: float = 7200) -> None:
    log.write(f"\n$ {' '.join(argv)}\n")
    log.flush()
    try:
        r = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CostdbError(f"{what} did not finish in {timeout:.0f} s; see {log.name}") from None
    if r.returncode != 0:
        log.flush()
        tail = [ln for ln in Path(log.name).read_text(errors="replace").splitlines() if ln.strip()]
        last = tail[-1][:160] if tail else ""
        raise CostdbError(f"{what} failed (exit {r.returncode}: {last}); full log in {log.name}")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)


def _python_version(root: Path) -> str:
    found = sorted(p.name[len("python"):] for p in (root / "usr/lib").glob("python3.*")
                   if re.fullmatch(r"python3\.\d+", p.name))
    if not found:
        raise CostdbError(f"no python3 in the bootstrapped tree {root}; the bootstrap is broken, "
                          "rebuild with --force")
    return found[-1]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def configure_tree(root: Path, out: Path, log: Any) -> dict[str, Any]:
    """Keys, network, login user and quiet services in the bootstrapped tree."""
    _write(root / "etc/hostname", "qemu-a72\n")
    _write(root / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tqemu-a72\n::1\tlocalhost\n")
    _write(root / "etc/fstab", "/dev/vda\t/\text4\trw,relatime,errors=remount-ro\t0\t1\n")
    _write(root / "etc/systemd/network/20-wired.network",
           "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    for unit in MASKED_UNITS:
        p = root / "etc/systemd/system" / unit
        if not p.exists() and not p.is_symlink():
            p.symlink_to("/dev/null")
    # ssh: one fresh ed25519 host key, known only to this image and costdb's known_hosts
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    _keygen(out / "ssh_host_ed25519_key", "qemu-a72 host key")
    shutil.move(str(out / "ssh_host_ed25519_key"), str(root / "etc/ssh/ssh_host_ed25519_key"))
    os.chmod(root / "etc/ssh/ssh_host_ed25519_key", 0o600)
    shutil.copy(out / "ssh_host_ed25519_key.pub", root / "etc/ssh/ssh_host_ed25519_key.pub")
    _write(root / "etc/ssh/sshd_config.d/costdb.conf",
           "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
           "KbdInteractiveAuthentication no\nUseDNS no\n")
    # the login user (uid from the image's own useradd, run under qemu-user)
    _run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "-c", "costdb agent user",
          USER], log, "creating the login user")
    _keygen(out / "id_ed25519", "costdb@host for qemu-a72")
    home = root / "home" / USER
    st = home.stat()
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(out / "id_ed25519.pub", ssh_dir / "authorized_keys")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    for p in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(p, st.st_uid, st.st_gid)
    # no password anywhere: key login only
    return {"user": USER, "uid": st.st_uid}


def platform_args(glibc_minor: int = 36) -> list[str]:
    """pip ``--platform`` flags for every manylinux tag bookworm's glibc 2.36 runs: pip does not
    expand an explicit ``manylinux_2_36`` to the older tags wheels are published under."""
    tags = [f"manylinux_2_{m}_aarch64" for m in range(glibc_minor, 16, -1)]
    tags += ["manylinux2014_aarch64", "linux_aarch64"]
    return [a for t in tags for a in ("--platform", t)]


#: The environment PEP 508 markers are evaluated in for the board (pip evaluates them for the
#: host even under --platform, which would pull x86-only CUDA wheels into an arm64 image).
GUEST_MARKERS = {"platform_machine": "aarch64", "platform_system": "Linux", "sys_platform": "linux",
                 "os_name": "posix", "implementation_name": "cpython",
                 "platform_python_implementation": "CPython", "extra": ""}


def guest_requirements(wheel: Path, py: str) -> list[str]:
    """The wheel's Requires-Dist that apply on the board (aarch64 Linux, CPython ``py``)."""
    import zipfile

    from packaging.requirements import Requirement
    env = {**GUEST_MARKERS, "python_version": py, "python_full_version": py + ".0",
           "implementation_version": py + ".0"}
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


def install_torch(root: Path, version: str, py: str, log: Any, wheels: Path) -> dict[str, Any]:
    """Unpack PyPI's aarch64 torch wheel and the dependencies that apply on aarch64 into the
    image: the wheel alone first (``--no-deps``), then its aarch64 requirements."""
    dest = root / "usr/local/lib" / f"python{py}" / "dist-packages"
    dest.mkdir(parents=True, exist_ok=True)
    tag = py.replace(".", "")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    target = ["--target", str(dest), *platform_args(), "--only-binary=:all:", "--python-version", py,
              "--implementation", "cp", "--abi", f"cp{tag}", "--no-compile",
              "--no-warn-script-location"]
    wheels.mkdir(parents=True, exist_ok=True)
    _run(pip + ["download", "--no-deps", "-d", str(wheels), *target[2:-2], f"torch=={version}"],
         log, f"pip download torch=={version} for aarch64 (is that release on PyPI for cp{tag} "
              "aarch64?)")
    found = sorted(wheels.glob(f"torch-{version}-cp{tag}-*aarch64*.whl"))
    if not found:
        raise CostdbError(f"pip found no aarch64 wheel of torch=={version} for cp{tag}; pick "
                          "another --torch")
    deps = guest_requirements(found[-1], py)
    cuda = [d for d in deps if d.startswith(("nvidia-", "cuda-", "triton"))]
    if cuda:
        raise CostdbError(f"torch=={version}'s aarch64 wheel is a CUDA build (needs {cuda[0]} ...), "
                          f"not the CPU build a Pi runs; build with --torch {DEFAULT_TORCH}")
    _run(pip + ["install", "--no-deps", *target, str(found[-1])], log,
         f"unpacking torch=={version} into the image")
    if deps:
        _run(pip + ["install", *target, *deps], log, "installing torch's dependencies for aarch64")
    shutil.rmtree(dest / "bin", ignore_errors=True)  # console scripts with the host's shebang
    # Byte-compile on the host: a .pyc depends on the Python minor version, not the CPU, and the
    # login user cannot write __pycache__ there, so without this every agent start would compile
    # torch's Python sources again under TCG. -s/-p: tracebacks name the guest's paths.
    host_py = "%d.%d" % sys.version_info[:2]
    if host_py == py:
        r = subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "2", "-s", str(root),
                            "-p", "/", str(dest)], stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
        log.write(f"\ncompileall exit {r.returncode} (a file that does not compile is compiled, "
                  "and fails, only if imported)\n")
    else:
        log.write(f"\nhost Python {host_py} != image Python {py}: .pyc files are compiled on the "
                  "board at first import\n")
    return {"torch": version, "torch_wheel": found[-1].name, "torch_requires": deps,
            "site_packages": "/" + str(dest.relative_to(root))}


def check_torch(root: Path, cpu: str, log: Any, timeout: float = 1800) -> str:
    """``import torch`` and one conv forward+backward in the image under qemu-user with ``cpu``:
    returns torch's version; an illegal instruction is one clear CostdbError."""
    code = ("import torch; x = torch.randn(2, 3, 8, 8, requires_grad=True); "
            "torch.nn.functional.conv2d(x, torch.randn(4, 3, 3, 3)).sum().backward(); "
            "print('TORCH', torch.__version__)")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": cpu, "HOME": "/root",
           "LANG": "C.UTF-8"}
    proc = root / "proc"
    mounted = subprocess.run(["mount", "-t", "proc", "proc", str(proc)],
                             capture_output=True).returncode == 0
    try:
        log.write(f"\n$ QEMU_CPU={cpu} chroot {root} python3 -X faulthandler -c ...\n")
        log.flush()
        r = subprocess.run(["chroot", str(root), "/usr/bin/python3", "-X", "faulthandler", "-c", code],
                           capture_output=True, text=True, env=env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(proc)], capture_output=True)
    log.write(r.stdout + r.stderr)
    m = re.search(r"^TORCH (\S+)", r.stdout, re.M)
    if r.returncode == 0 and m:
        return m.group(1)
    if r.returncode in (-4, 132) or "Illegal instruction" in r.stderr:
        raise CostdbError(f"this torch wheel crashes with SIGILL (illegal instruction) on {cpu}: it "
                          "needs instructions newer than the board's ARMv8.0-A; build with an older "
                          f"one, e.g. --torch {DEFAULT_TORCH}")
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or ["(no output)"]
    raise CostdbError(f"import torch failed in the image under qemu-user (exit {r.returncode}: "
                      f"{last[0][:160]}); full log in {log.name}")


def _setup_hook(work: Path) -> str:
    """An mmdebstrap setup hook (run on the host, "$1" is the new root) that puts the small
    initramfs configuration in place before any package is unpacked."""
    hook = work / "initrd-hook"
    hook.write_text(INITRD_HOOK)
    d = '"$1/etc/initramfs-tools"'
    return (f'mkdir -p {d}/conf.d {d}/hooks && echo MODULES=list > {d}/conf.d/costdb.conf && '
            f'install -m 755 {shlex.quote(str(hook))} {d}/hooks/costdb-virt')


def _kernel_files(root: Path) -> tuple[Path, Path, str]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise CostdbError(f"linux-image-arm64 left no /boot/vmlinuz-* in {root}; see build.log")
    k = kernels[-1]
    release = k.name[len("vmlinuz-"):]
    initrd = root / "boot" / f"initrd.img-{release}"
    if not initrd.exists():
        raise CostdbError(f"no initrd for kernel {release} (update-initramfs did not run under "
                          "qemu-user?); see build.log")
    return k, initrd, release


@contextlib.contextmanager
def _terminate_cleans_up() -> Iterator[None]:
    """SIGTERM during a build unwinds like Ctrl-C (children killed, mounts and tree removed)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("terminated")
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _build_lock(parent: Path, board: str) -> Iterator[None]:
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / f".{board}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CostdbError(f"another 'costdb board build {board}' is running on {parent}; wait "
                              "for it to finish") from None
        yield


def build_image(board: str = "qemu-a72", cache_dir: str | os.PathLike | None = None,
                torch_version: str = DEFAULT_TORCH, force: bool = False,
                mirror: str | None = None, progress: Progress | None = None) -> Image:
    """Build (or return the cached) image of ``board``.

    Nothing half-written is left: the image is built in a sibling directory and renamed into
    place when complete; a failed build removes its directory and keeps any older image."""
    if board != "qemu-a72":
        raise CostdbError(f"no image recipe for board {board!r}; the emulated SSH board is qemu-a72")
    final = board_dir(board, cache_dir)
    have = load_image(board, cache_dir)
    if have is not None and not force and is_current(have, torch_version):
        return have
    _need_tools()
    emit = progress or (lambda i, n, what: None)
    with _build_lock(final.parent, board), _terminate_cleans_up():
        work = final.parent / f".{board}.build-{os.getpid()}"
        safe_rmtree(work)
        work.mkdir(parents=True)
        root = work / "rootfs"
        t0 = time.monotonic()
        times: dict[str, float] = {}
        try:
            with open(final.parent / f"{board}-build.log", "w") as log:
                emit(0, len(STEPS), STEPS[0])
                ensure_binfmt()
                mirror = mirror or host_mirror()
                argv = ["mmdebstrap", "--mode=root", "--variant=apt", f"--arch={ARCH}",
                        "--include=" + ",".join(PACKAGES), "--aptopt=Acquire::Retries \"3\"",
                        "--dpkgopt=path-exclude=/usr/share/doc/*",
                        "--dpkgopt=path-exclude=/usr/share/man/*",
                        "--dpkgopt=path-exclude=/usr/share/locale/*",
                        "--setup-hook=" + _setup_hook(work), SUITE, str(root)]
                if mirror:
                    argv.append(mirror)
                _run(argv, log, "mmdebstrap (Debian 12 arm64 bootstrap)")
                (work / "initrd-hook").unlink(missing_ok=True)   # installed in the image now
                times["bootstrap_s"] = time.monotonic() - t0
                emit(1, len(STEPS), STEPS[1])
                user = configure_tree(root, work, log)
                py = _python_version(root)
                emit(2, len(STEPS), STEPS[2] + f" torch=={torch_version}")
                t = time.monotonic()
                tinfo = install_torch(root, torch_version, py, log, final.parent / "wheels")
                times["torch_s"] = time.monotonic() - t
                emit(3, len(STEPS), STEPS[3])
                t = time.monotonic()
                imported = check_torch(root, "cortex-a72", log)
                times["torch_check_s"] = time.monotonic() - t
                emit(4, len(STEPS), STEPS[4])
                kernel, initrd, release = _kernel_files(root)
                shutil.copy(kernel, work / "vmlinuz")
                shutil.copy(initrd, work / "initrd.img")
                emit(5, len(STEPS), STEPS[5])
                used = allocated_bytes(root)
                size = ((int(used * 1.2) + (2 << 30)) // (256 << 20) + 1) * (256 << 20)
                t = time.monotonic()
                _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "costdb-root", "-m", "0", "-d",
                      str(root), str(work / "disk.img"), str(size // 1024) + "k"], log,
                     "mke2fs -d (ext4 image from the tree)")
                times["mke2fs_s"] = time.monotonic() - t
                safe_rmtree(root)
            fp = subprocess.run(["ssh-keygen", "-lf", str(work / "ssh_host_ed25519_key.pub")],
                                capture_output=True, text=True).stdout.split()
            manifest = {
                "board": board, "recipe": RECIPE, "suite": SUITE, "arch": ARCH,
                "torch": torch_version, "torch_imported": imported, "python": py,
                "kernel_release": release, "packages": list(PACKAGES), "mirror": mirror,
                **user, **tinfo,
                "host_key_fingerprint": fp[1] if len(fp) > 1 else None,
                "disk_bytes": allocated_bytes(work / "disk.img"),
                "disk_size_bytes": (work / "disk.img").stat().st_size,
                "build_s": time.monotonic() - t0, "steps_s": times,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
            emit(len(STEPS), len(STEPS), "done")
            old = final.parent / f".{board}.old-{os.getpid()}"
            if final.exists():
                final.rename(old)
            work.rename(final)
            safe_rmtree(old)
        except BaseException:
            safe_rmtree(work)
            raise
    img = load_image(board, cache_dir)
    assert img is not None
    return img
