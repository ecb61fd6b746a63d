"""The ``ssh`` transport: reach a device with paramiko, ship the agent, talk JSON lines to it.

* Connecting honours the inventory and ``~/.ssh/config`` (Host alias, HostName, User, Port,
  IdentityFile, ProxyJump, UserKnownHostsFile) and ssh-agent keys. Host keys are verified against
  known_hosts: an unknown host is refused unless ``accept_new_host_key`` (which records it); a
  changed key is always refused.
* Every remote command is an argv list turned into one shell word list with ``shlex.join`` and
  wrapped in ``timeout -k 5 N`` so it ends on the device even if we vanish.
* The agent (``devices.agent_bundle``) goes by SFTP into ``<remote_dir>/<version>-<hash>/agent.pyz``
  and is uploaded only when no copy with the same content hash is there.
* A dropped link or a killed agent loses at most the op in flight: :class:`SshAgent` reconnects
  with backoff, restarts the agent and measures that op again; rows already written stay.

Every failure a user can fix is a one-line :class:`CostdbError` naming the device and the fix.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import posixpath
import shlex
import socket
import stat
import uuid
import time
from dataclasses import dataclass, field
from typing import Any

import paramiko

from costdb.errors import CostdbError
from devices.agent_bundle import bundle

log = logging.getLogger("costdb.ssh")

DEFAULT_REMOTE_DIR = "~/.cache/costdb-agent"
DEFAULT_TIMEOUT = 600.0          # one remote command / one agent request
DEFAULT_START_TIMEOUT = 300.0    # python + torch import on a slow SD card
DEFAULT_SESSION_TIMEOUT = 86400  # the agent process as a whole
DEFAULT_RECONNECT_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_COMMAND_TIMEOUT = 30.0   # small helper commands: id, df, kill
KILL_GRACE = 5
#: exit status of the launcher when the cached agent does not match its content hash
HASH_MISMATCH = 5
#: Runs the agent from a private verified copy: reads the cached file ONCE, checks its sha256,
#: writes those bytes into a fresh directory created under umask 077 inside the (verified,
#: private) cache directory, and runs that copy; what runs is what was hashed, and no other user
#: can write between the check and the use. Python 2.7/3.6+ syntax (runs before the version check).
LAUNCHER = (
    "import hashlib,os,runpy,shutil,sys,tempfile\n"
    "p,h=sys.argv[1],sys.argv[2]\n"
    "f=open(p,'rb')\n"
    "d=f.read()\n"
    "f.close()\n"
    "if hashlib.sha256(d).hexdigest()!=h:\n"
    "    sys.stderr.write('costdb agent: %s does not match its sha256 %s; refusing to run it\\n'"
    " % (p,h))\n"
    "    sys.exit(5)\n"
    "os.umask(0o077)\n"
    "t=tempfile.mkdtemp(prefix='run-',dir=os.path.dirname(p))\n"
    "try:\n"
    "    q=os.path.join(t,'agent.pyz')\n"
    "    fd=os.open(q,os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o600)\n"
    "    os.write(fd,d) == len(d) or sys.exit(5)\n"
    "    os.close(fd)\n"
    "    sys.argv=[q]+sys.argv[3:]\n"
    "    runpy.run_path(q,run_name='__main__')\n"
    "finally:\n"
    "    shutil.rmtree(t,True)\n"
)


class LinkLost(Exception):
    """The SSH connection went away (network, sshd restart, device reboot)."""


class AgentDied(Exception):
    """The agent process ended without answering (killed, crashed, missing interpreter)."""

    def __init__(self, status: int | None, stderr: str):
        super().__init__(f"exit status {status}: {stderr.strip()[-300:]}")
        self.status = status
        self.stderr = stderr


class RequestTimeout(Exception):
    pass


class AgentError(CostdbError):
    """The agent answered a request with an error (it keeps serving)."""


def remote_command(argv: list[str], timeout: float) -> str:
    """The one string sshd hands to the login shell: ``timeout`` + argv, every word quoted."""
    words = [str(a) for a in argv]
    return shlex.join(["timeout", "-k", str(KILL_GRACE), f"{max(1, round(timeout))}"] + words)


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def _one_line(text: str, limit: int = 300) -> str:
    s = " ".join((text or "").split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def illegal_instruction(e: "AgentDied") -> bool:
    """The agent died of SIGILL (exit 132 from a shell, -1 when sshd sent the signal; the
    agent's faulthandler prints "Fatal Python error: Illegal instruction")."""
    return e.status == 132 or "Illegal instruction" in (e.stderr or "")


def _crash_site(stderr: str) -> str:
    """' in import torch (…/torch/__init__.py)' from a faulthandler traceback, if there is one."""
    for line in (stderr or "").splitlines():
        if "torch" in line and 'File "' in line:
            path = line.split('File "', 1)[1].split('"', 1)[0]
            return f" in import torch ({path})"
    return ""


# --- where and how to connect ------------------------------------------------------------------

@dataclass
class SshTarget:
    device: str
    alias: str
    hostname: str
    port: int = 22
    user: str | None = None
    keys: list[str] = field(default_factory=list)
    proxy_jump: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    python: str = "python3"
    remote_dir: str = DEFAULT_REMOTE_DIR
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    accept_new_host_key: bool = False
    ssh_config: str | None = None
    #: every remote wait is a setting (inventory keys of the same names, docs/ssh.md)
    start_timeout: float = DEFAULT_START_TIMEOUT
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT

    @property
    def address(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.hostname}:{self.port}"

    @property
    def known_hosts_path(self) -> str:
        return os.path.expanduser(self.known_hosts)

    def host_key_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def _ssh_config(path: str | None) -> paramiko.SSHConfig | None:
    path = os.path.expanduser(path or "~/.ssh/config")
    if not os.path.exists(path):
        return None
    try:
        return paramiko.SSHConfig.from_path(path)
    except Exception as e:  # paramiko raises ConfigParseError and friends
        raise CostdbError(f"cannot read ssh config {path}: {_one_line(str(e))}; fix the file") from None


def resolve_target(device: str, conn: dict[str, Any], options: dict[str, Any] | None = None) -> SshTarget:
    """Merge inventory keys, CLI options and ``~/.ssh/config`` (inventory wins over the config)."""
    options = options or {}
    alias = conn.get("host") or conn.get("hostname")
    if not alias:
        raise CostdbError(f"device {device!r} has no host or hostname in the inventory; "
                          'add host = "ssh-alias" or hostname = "192.0.2.10"')
    cfg_path = options.get("ssh_config") or conn.get("ssh_config")
    cfg = _ssh_config(cfg_path)
    looked = cfg.lookup(alias) if cfg is not None else {"hostname": alias}
    hostname = conn.get("hostname") or looked.get("hostname") or alias
    try:
        port = int(conn.get("port") or looked.get("port") or 22)
    except ValueError:
        raise CostdbError(f"device {device!r}: bad Port {looked.get('port')!r} in ssh config; "
                          "give a number") from None
    keys = []
    if conn.get("key"):
        keys = [os.path.expanduser(conn["key"])]
    elif looked.get("identityfile"):
        keys = [os.path.expanduser(k) for k in looked["identityfile"]]
    known = (conn.get("known_hosts") or options.get("known_hosts")
             or (looked.get("userknownhostsfile") or "").split(" ")[0] or "~/.ssh/known_hosts")
    proxy = conn.get("proxy_jump") or looked.get("proxyjump")
    if proxy and proxy.lower() == "none":
        proxy = None
    timeout = float(conn.get("timeout") or options.get("timeout") or DEFAULT_TIMEOUT)

    def setting(key: str, default: float) -> float:
        v = conn.get(key) if conn.get(key) is not None else options.get(key)
        return float(v) if v is not None else default
    ct = conn.get("connect_timeout") or options.get("connect_timeout") or looked.get("connecttimeout")
    try:
        ct = float(ct) if ct else None
    except ValueError:
        raise CostdbError(f"device {device!r}: bad ConnectTimeout {ct!r} in ssh config; give a "
                          "number of seconds") from None
    return SshTarget(
        device=device, alias=alias, hostname=hostname, port=port,
        user=conn.get("user") or looked.get("user") or os.environ.get("USER") or None,
        keys=keys, proxy_jump=proxy, known_hosts=known,
        python=conn.get("python") or options.get("python") or "python3",
        remote_dir=conn.get("remote_dir") or options.get("remote_dir") or DEFAULT_REMOTE_DIR,
        timeout=timeout, connect_timeout=ct if ct else min(DEFAULT_CONNECT_TIMEOUT, timeout),
        accept_new_host_key=bool(options.get("accept_new_host_key")), ssh_config=cfg_path,
        start_timeout=setting("start_timeout", DEFAULT_START_TIMEOUT),
        command_timeout=setting("command_timeout", min(DEFAULT_COMMAND_TIMEOUT, timeout)),
        session_timeout=setting("session_timeout", DEFAULT_SESSION_TIMEOUT),
        reconnect_timeout=setting("reconnect_timeout", DEFAULT_RECONNECT_TIMEOUT))


def _parse_jump(hop: str) -> dict[str, Any]:
    """``[user@]host[:port]`` (ProxyJump syntax) into inventory-style connection keys."""
    user, _, hostport = hop.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] or None
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    conn: dict[str, Any] = {"host": host}
    if user:
        conn["user"] = user
    if port:
        conn["port"] = int(port)
    return conn


# --- host keys ---------------------------------------------------------------------------------

class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host: refuse with how to trust it, or record it when the user asked to."""

    def __init__(self, target: SshTarget):
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        t = self.target
        if not t.accept_new_host_key:
            raise CostdbError(
                f"device {t.device!r}: host key of {hostname} is not known ({fingerprint(key)}); "
                f"check it and rerun with --accept-new-host-key to record it in {t.known_hosts}")
        path = t.known_hosts_path
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("device %s: recorded new host key %s for %s in %s", t.device, fingerprint(key),
                    hostname, path)


def _connect_client(target: SshTarget, sock: Any = None) -> paramiko.SSHClient:
    """An authenticated SSHClient; every failure becomes a one-line CostdbError."""
    t = target
    client = paramiko.SSHClient()
    if os.path.exists("/etc/ssh/ssh_known_hosts"):
        try:
            client.load_system_host_keys("/etc/ssh/ssh_known_hosts")
        except (OSError, paramiko.SSHException):
            pass
    kh = t.known_hosts_path
    if os.path.exists(kh):
        try:
            client.load_host_keys(kh)
        except (OSError, paramiko.SSHException) as e:
            raise CostdbError(f"device {t.device!r}: cannot read {kh}: {_one_line(str(e))}; "
                              "fix or move the file") from None
    client.set_missing_host_key_policy(HostKeyPolicy(t))
    for k in t.keys:
        if not os.path.exists(k):
            raise CostdbError(f"device {t.device!r}: key file {k} does not exist; fix key = in the "
                              "inventory or IdentityFile in ~/.ssh/config")
    try:
        client.connect(t.hostname, port=t.port, username=t.user, key_filename=t.keys or None,
                       timeout=t.connect_timeout, banner_timeout=t.connect_timeout,
                       auth_timeout=t.connect_timeout, allow_agent=True,
                       look_for_keys=not t.keys, sock=sock)
    except CostdbError:
        client.close()
        raise
    except paramiko.BadHostKeyException as e:
        client.close()
        raise CostdbError(
            f"device {t.device!r}: host key of {t.host_key_name()} has CHANGED (server sent "
            f"{fingerprint(e.key)}, {t.known_hosts} has {fingerprint(e.expected_key)}); refusing to "
            "connect. If the device was reinstalled, remove the old key with: ssh-keygen -R "
            f"{shlex.quote(t.host_key_name())} -f {shlex.quote(t.known_hosts_path)}") from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise CostdbError(f"device {t.device!r}: key {', '.join(t.keys) or '(default)'} is "
                          "passphrase-protected; load it into ssh-agent with 'ssh-add KEY'") from None
    except paramiko.AuthenticationException as e:
        client.close()
        tried = ", ".join(t.keys) if t.keys else "ssh-agent and ~/.ssh/id_*"
        raise CostdbError(
            f"device {t.device!r}: authentication failed for {t.address} (tried {tried}: "
            f"{_one_line(str(e), 80)}); install your public key on the device with 'ssh-copy-id -i "
            f"KEY.pub -p {t.port} {t.user or 'USER'}@{t.hostname}' or set key = \"PATH\" in the "
            "inventory") from None
    except (socket.timeout, TimeoutError):
        client.close()
        raise CostdbError(f"device {t.device!r}: cannot reach {t.address}: timed out after "
                          f"{t.connect_timeout:g} s; check the device is on and on the network, or "
                          "fix hostname/port in the inventory") from None
    except (OSError, paramiko.SSHException, EOFError, UnicodeError) as e:
        client.close()
        reason = getattr(e, "strerror", None) or _one_line(str(e), 120) or type(e).__name__
        raise CostdbError(f"device {t.device!r}: cannot reach {t.address}: {reason}; check the "
                          "device is on and sshd runs on it, or fix hostname/port in the inventory "
                          "(try 'costdb devices --check')") from None
    client.get_transport().set_keepalive(5)
    return client


def connect_ssh(target: SshTarget, options: dict[str, Any] | None = None) -> tuple[paramiko.SSHClient, list]:
    """Connect (through ProxyJump hops if any); returns the client and the jump clients to close."""
    jumps: list[paramiko.SSHClient] = []
    sock = None
    try:
        if target.proxy_jump:
            prev = None
            for hop in [h.strip() for h in target.proxy_jump.split(",") if h.strip()]:
                hop_conn = _parse_jump(hop)
                hop_target = resolve_target(f"{target.device} (jump {hop})", hop_conn,
                                            {"ssh_config": target.ssh_config,
                                             "known_hosts": target.known_hosts,
                                             "accept_new_host_key": target.accept_new_host_key,
                                             "timeout": target.timeout})
                hop_sock = None
                if prev is not None:
                    hop_sock = prev.get_transport().open_channel(
                        "direct-tcpip", (hop_target.hostname, hop_target.port), ("127.0.0.1", 0))
                prev = _connect_client(hop_target, hop_sock)
                jumps.append(prev)
            try:
                sock = prev.get_transport().open_channel(
                    "direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0),
                    timeout=target.connect_timeout)
            except (paramiko.SSHException, OSError) as e:
                raise CostdbError(f"device {target.device!r}: jump host {target.proxy_jump} cannot "
                                  f"reach {target.address}: {_one_line(str(e), 120)}; check "
                                  "proxy_jump and hostname in the inventory") from None
        return _connect_client(target, sock), jumps
    except BaseException:
        for j in jumps:
            j.close()
        raise


# --- running commands --------------------------------------------------------------------------

@dataclass
class RemoteResult:
    argv: list[str]
    status: int | None
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class SshSession:
    """An open connection to one device: quoted, time-limited commands and SFTP."""

    def __init__(self, target: SshTarget, options: dict[str, Any] | None = None):
        self.target = target
        self.client, self._jumps = connect_ssh(target, options)
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._uid: int | None = None

    @property
    def device(self) -> str:
        return self.target.device

    def active(self) -> bool:
        tr = self.client.get_transport()
        return tr is not None and tr.is_active()

    def close(self) -> None:
        for c in [self._sftp, self.client, *self._jumps]:
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass
        self._sftp = None

    def open_channel(self, argv: list[str], timeout: float) -> paramiko.Channel:
        try:
            ch = self.client.get_transport().open_session(timeout=self.target.connect_timeout)
            ch.exec_command(remote_command(argv, timeout))
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as e:
            raise LinkLost(str(e) or type(e).__name__) from None
        return ch

    def run(self, argv: list[str], timeout: float | None = None, check: bool = True,
            stdin: bytes | None = None) -> RemoteResult:
        """Run argv on the device under ``timeout`` seconds (remote ``timeout`` + a host deadline).

        Raises CostdbError on timeout, and on a non-zero exit status when ``check``."""
        timeout = float(timeout or self.target.timeout)
        ch = self.open_channel(argv, timeout)
        if stdin:
            ch.sendall(stdin)
        ch.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout + KILL_GRACE + 5
        while True:
            got = False
            while ch.recv_ready():
                out += ch.recv(65536)
                got = True
            while ch.recv_stderr_ready():
                err += ch.recv_stderr(65536)
                got = True
            if ch.exit_status_ready() and not ch.recv_ready() and not ch.recv_stderr_ready():
                break
            if ch.closed and not ch.exit_status_ready():
                if not self.active():
                    raise LinkLost(f"connection dropped while running {argv[0]}")
                break
            if time.monotonic() > deadline:
                ch.close()
                raise CostdbError(f"device {self.device!r}: remote command {shlex.join(argv)[:120]} "
                                  f"did not end {timeout:g} s after its timeout; the link or the "
                                  "device is hung, check it")
            if not got:
                time.sleep(0.002)
        status = ch.recv_exit_status() if ch.exit_status_ready() else None
        ch.close()
        res = RemoteResult(list(argv), status, bytes(out), bytes(err))
        if status == 124:
            raise CostdbError(f"device {self.device!r}: remote command {shlex.join(argv)[:120]} timed "
                              f"out after {timeout:g} s and was stopped; raise timeout = in the "
                              "inventory if it needs longer")
        if check and status != 0:
            raise CostdbError(f"device {self.device!r}: remote command {shlex.join(argv)[:120]} "
                              f"failed with exit status {status}: "
                              f"{_one_line(res.stderr.decode('utf-8', 'replace')) or '(no stderr)'}")
        return res

    # --- files --------------------------------------------------------------------------------

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
                self._sftp.get_channel().settimeout(self.target.timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                if not self.active():
                    raise LinkLost(str(e)) from None
                raise CostdbError(f"device {self.device!r}: SFTP is not available "
                                  f"({_one_line(str(e), 100)}); enable 'Subsystem sftp' in the "
                                  "device's sshd_config") from None
        return self._sftp

    def home(self) -> str:
        if self._home is None:
            self._home = self.sftp.normalize(".")
        return self._home

    def abspath(self, path: str) -> str:
        """A remote path with ``~`` expanded (by SFTP, never by a shell) and made absolute."""
        if path == "~":
            return self.home()
        if path.startswith("~/"):
            return posixpath.join(self.home(), path[2:])
        if not path.startswith("/"):
            return posixpath.join(self.home(), path)
        return path

    def makedirs(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        cur = "/"
        for p in parts:
            cur = posixpath.join(cur, p)
            try:
                st = self.sftp.stat(cur)
                if not stat.S_ISDIR(st.st_mode):
                    raise CostdbError(f"device {self.device!r}: {cur} exists and is not a directory; "
                                      "set remote_dir in the inventory to a directory")
            except FileNotFoundError:
                try:
                    self.sftp.mkdir(cur, 0o700)   # private: see verify_private_dir
                except OSError as e:
                    try:  # another session to this host may have just created it
                        if stat.S_ISDIR(self.sftp.stat(cur).st_mode):
                            continue
                    except OSError:
                        pass
                    self._disk_error(cur, e, "create")

    def _disk_error(self, path: str, exc: OSError, what: str, need: int = 0) -> None:
        """Explain an SFTP write failure: full disk, read-only, permission."""
        free = self.free_bytes(posixpath.dirname(path) or "/")
        if free is not None and free <= max(need, 4096):
            raise CostdbError(f"device {self.device!r}: no space left on the device to {what} "
                              f"{path} ({free // 1024} KiB free, {max(need, 1) // 1024 + 1} KiB "
                              "needed); free some space or set remote_dir in the inventory to a "
                              "filesystem with room") from None
        raise CostdbError(f"device {self.device!r}: cannot {what} {path}: "
                          f"{_one_line(str(exc) or type(exc).__name__, 120)}; check permissions or "
                          "set remote_dir in the inventory") from None

    def free_bytes(self, path: str) -> int | None:
        probe = path
        for _ in range(64):
            try:
                self.sftp.stat(probe)
                break
            except OSError:
                probe = posixpath.dirname(probe) or "/"
        try:
            res = self.run(["df", "-Pk", "--", probe], timeout=self.target.command_timeout,
                           check=False)
            line = res.text.strip().splitlines()[-1].split()
            return int(line[3]) * 1024
        except (CostdbError, LinkLost, ValueError, IndexError):
            return None

    def remote_uid(self) -> int:
        """The numeric user id we log in as on the device (``id -u``)."""
        if self._uid is None:
            res = self.run(["id", "-u"], timeout=self.target.command_timeout, check=False)
            try:
                self._uid = int(res.text.strip())
            except ValueError:
                raise CostdbError(f"device {self.device!r}: cannot tell our user id on the "
                                  f"device ('id -u' said {_one_line(res.text, 40)!r}); install "
                                  "coreutils on it") from None
        return self._uid

    def _unsafe(self, path: str, st: Any, own: bool, uid: int) -> str | None:
        """Why directory ``path`` lets another user replace what is in it, or None."""
        mode = st.st_mode
        if not stat.S_ISDIR(mode):
            return "not a directory"
        owners = (uid,) if own else (uid, 0)
        if st.st_uid not in owners:
            return (f"owned by uid {st.st_uid}, not by you (uid {uid})" if own else
                    f"inside a directory owned by uid {st.st_uid} (neither you nor root)")
        if mode & 0o022 and not (not own and mode & stat.S_ISVTX):
            return f"writable by {'group and others' if mode & 0o002 else 'its group'} (mode " \
                   f"{stat.S_IMODE(mode):04o})"
        return None

    def verify_private_dir(self, path: str) -> str:
        """Check that no other user can replace files in ``path`` (the agent cache): it and its
        version directory are owned by us and not group/other-writable, every directory above it
        is owned by us or root and not writable by others unless sticky (as /tmp). Returns the
        canonical path (symlinks resolved, so what was checked is what is used); refuses with
        the fix otherwise."""
        try:
            real = self.sftp.normalize(path)
        except OSError as e:
            self._disk_error(path, e, "resolve")
        uid = self.remote_uid()
        parts = [p for p in real.split("/") if p]
        for k in range(len(parts) + 1):
            cur = "/" + "/".join(parts[:k])
            try:
                st = self.sftp.stat(cur)
            except OSError as e:
                self._disk_error(cur, e, "check")
            why = self._unsafe(cur, st, own=k == len(parts) and k > 0, uid=uid)
            if why:
                fix = (f"'chmod go-w {shlex.quote(cur)}'" if "writable" in why and st.st_uid == uid
                       else "set remote_dir in the inventory to a directory only you can write, "
                            "e.g. ~/.cache/costdb-agent")
                raise CostdbError(
                    f"device {self.device!r}: refusing the agent cache {real}: {cur} is {why}, so "
                    f"another user could replace the agent and run code as you; fix: {fix}")
        return real

    def _clean_runs(self, rdir: str, older_than: float) -> None:
        """Remove private run copies left by killed agents (``run-*`` older than the session
        timeout: a live agent's copy is younger)."""
        try:
            entries = self.sftp.listdir_attr(rdir)
        except OSError:
            return
        now = time.time()
        for e in entries:
            if not e.filename.startswith("run-") or not stat.S_ISDIR(e.st_mode or 0):
                continue
            if e.st_mtime is None or now - e.st_mtime < older_than:
                continue
            d = posixpath.join(rdir, e.filename)
            try:
                for f in self.sftp.listdir(d):
                    self.sftp.remove(posixpath.join(d, f))
                self.sftp.rmdir(d)
            except OSError:
                pass

    def ensure_agent(self) -> tuple[str, bool]:
        """Upload the agent bundle unless an identical copy is there; (remote path, uploaded).

        The cache directory is created private (0700) and verified before use
        (``verify_private_dir``); the agent then runs through ``LAUNCHER`` from a private copy
        of exactly the bytes whose hash it checked."""
        data, digest, dirname = bundle()
        base = self.abspath(self.target.remote_dir)
        self.makedirs(base)
        base = self.verify_private_dir(base)
        rdir = posixpath.join(base, dirname)
        path = posixpath.join(rdir, "agent.pyz")
        try:
            st = self.sftp.stat(path)
            rdir = self.verify_private_dir(rdir)
            path = posixpath.join(rdir, "agent.pyz")
            self._clean_runs(rdir, self.target.session_timeout + KILL_GRACE)
            if st.st_size == len(data) and stat.S_ISREG(st.st_mode) \
                    and st.st_uid == self.remote_uid():
                buf = io.BytesIO()
                self.sftp.getfo(path, buf)
                if hashlib.sha256(buf.getvalue()).hexdigest() == digest:
                    return path, False
            log.info("device %s: cached agent %s differs, uploading again", self.device, path)
        except FileNotFoundError:
            pass
        self.makedirs(rdir)
        rdir = self.verify_private_dir(rdir)
        path = posixpath.join(rdir, "agent.pyz")
        # unique per upload: parallel sessions to one host share a pid but not this name
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            with self.sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            # a full disk may surface only as a short file (pipelined writes): check the size
            if self.sftp.stat(tmp).st_size != len(data):
                raise OSError(28, "short write: No space left on device?")
            self.sftp.chmod(tmp, 0o600)
            self.sftp.posix_rename(tmp, path)
        except OSError as e:
            try:
                self.sftp.remove(tmp)
            except OSError:
                pass
            if not self.active():
                raise LinkLost(str(e)) from None
            self._disk_error(path, e, "upload the agent to", need=len(data))
        return path, True


# --- the agent connection ----------------------------------------------------------------------

class SshAgent:
    """AgentConnection (devices.transport) to the agent on an SSH device."""

    runtime_provenance = "measured"

    def __init__(self, target: SshTarget, threads: int | None = None,
                 settings: dict[str, Any] | None = None, options: dict[str, Any] | None = None):
        self.target = target
        self.device = target.device
        self.options = dict(options or {})
        self.settings = dict(settings or {})
        self.threads = threads or self.settings.get("threads")
        self.sysfs_root = self.settings.get("sysfs_root") or self.options.get("sysfs_root") or "/"
        self.compute_unit = self.options.get("compute_unit") or self.settings.get("compute_unit") or "cpu"
        self.start_timeout = target.start_timeout
        self.session_timeout = target.session_timeout
        self.reconnect_timeout = target.reconnect_timeout
        self.reconnects = 0
        self._warn = self.options.get("on_warning") or (lambda msg: None)
        self.agent_restarts = 0
        self.uploaded = False
        self.agent_path: str | None = None
        self.remote_pid: int | None = None
        self._hello: dict[str, Any] | None = None
        self._hello_sent = False
        self.session: SshSession | None = None
        self._ch: paramiko.Channel | None = None
        self._stdout: Any = None
        self._stderr = bytearray()
        self.session = SshSession(target, self.options)
        try:
            self._start_agent()
        except BaseException:
            self.session.close()
            raise

    # --- process ------------------------------------------------------------------------------

    def _agent_argv(self) -> list[str]:
        """The interpreter runs ``LAUNCHER``, which checks the cached agent's hash and runs a
        private copy of the checked bytes (never the shared path itself)."""
        _, digest, _ = bundle()
        argv = [self.target.python, "-c", LAUNCHER, self.agent_path, digest,
                "--sysfs-root", self.sysfs_root]
        if self.threads:
            argv += ["--threads", str(int(self.threads))]
        return argv

    def _start_agent(self) -> None:
        """Upload if needed, start the agent and say hello (which opens the energy sensor)."""
        self.agent_path, uploaded = self.session.ensure_agent()
        self.uploaded = self.uploaded or uploaded
        self._stderr = bytearray()
        self._ch = self.session.open_channel(self._agent_argv(), self.session_timeout)
        self._stdout = self._ch.makefile("rb")
        try:
            reply = self._request({"cmd": "hello", "sensor": self.settings.get("sensor"),
                                   "sensor_options": self.settings.get("sensor_options")},
                                  self.start_timeout, "starting the agent")
        except AgentDied as e:
            raise self._start_error(e) from None
        except RequestTimeout:
            self._kill_agent()
            raise CostdbError(f"device {self.device!r}: timed out: the agent did not answer "
                              f"within {self.start_timeout:g} s (start_timeout) of starting "
                              f"'{self.target.python} {self.agent_path}' (python and torch "
                              "import); check the device's load and disk, or raise "
                              "start_timeout in the inventory") from None
        self.remote_pid = reply.get("pid")
        reply = {k: v for k, v in reply.items() if k not in ("ok", "pid")}
        reply["agent_bundle"] = {"path": self.agent_path, "uploaded": uploaded}
        if self._hello is None:
            self._hello = reply

    def _start_error(self, e: AgentDied) -> CostdbError:
        py, dev = self.target.python, self.device
        err = _one_line(e.stderr, 200)
        if e.status == 127 or "No such file" in err and py in err:
            return CostdbError(f"device {dev!r}: {py} not found on the device; install Python 3.6+ "
                               "(e.g. 'sudo apt install python3') or set python = \"/path/to/python3\" "
                               "in the inventory")
        if e.status == 126:
            return CostdbError(f"device {dev!r}: {py} is not executable on the device; fix python = "
                               "in the inventory")
        if illegal_instruction(e):
            return CostdbError(f"device {dev!r}: {py} crashed with SIGILL (illegal instruction) "
                               f"starting the agent{_crash_site(e.stderr)}: its torch build uses CPU "
                               "instructions this device lacks (a Cortex-A72/Pi 4B is ARMv8.0-A); "
                               "install a torch release built for it (docs/emulated.md lists the "
                               "ones that work)")
        if e.status in (124, 137) and "PyTorch is not installed" not in err:
            # the remote `timeout` ended it (124) or killed it after the grace period (137)
            return CostdbError(f"device {dev!r}: timed out: '{py} {self.agent_path}' was stopped "
                               f"by its limit of {self.session_timeout:g} s (session_timeout) "
                               "while starting; check the device's load, or raise "
                               "session_timeout/start_timeout in the inventory")
        if e.status == HASH_MISMATCH and "does not match its sha256" in err:
            return CostdbError(f"device {dev!r}: the cached agent {self.agent_path} changed "
                               "between upload and start (it does not match its hash); it was "
                               "not run: check who else writes to remote_dir")
        if e.status == 3 and "PyTorch is not installed" in err:
            return CostdbError(f"device {dev!r}: PyTorch is missing for {py} on the device; install "
                               "it ('pip3 install torch'; on a Jetson: NVIDIA's JetPack torch wheel)")
        if e.status == 4:
            return CostdbError(f"device {dev!r}: {py} is too old for the agent ({err}); install "
                               "Python 3.6+ or set python = in the inventory")
        if "SyntaxError" in err:
            return CostdbError(f"device {dev!r}: {py} cannot run the agent {self.agent_path} "
                               f"({err[-120:]}); it needs Python 3.6+; set python = in the inventory "
                               "or delete that file to force a fresh upload")
        return CostdbError(f"device {dev!r}: the agent exited at start with status {e.status}: "
                           f"{err or '(no stderr)'}; run '{py} {self.agent_path}' on the device to "
                           "see why")

    def _drain_stderr(self) -> None:
        ch = self._ch
        while ch is not None and ch.recv_stderr_ready():
            self._stderr += ch.recv_stderr(65536)
        del self._stderr[:-8192]

    def _agent_exit(self) -> AgentDied | LinkLost:
        ch = self._ch
        if not self.session.active():
            return LinkLost("connection dropped")
        status = None
        t_end = time.monotonic() + 5
        while ch is not None and not ch.exit_status_ready() and time.monotonic() < t_end:
            if not self.session.active():
                return LinkLost("connection dropped")
            time.sleep(0.01)
        if ch is not None and ch.exit_status_ready():
            status = ch.recv_exit_status()
        self._drain_stderr()
        if status is None and not self.session.active():
            return LinkLost("connection dropped")
        return AgentDied(status, self._stderr.decode("utf-8", "replace"))

    def _request(self, req: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
        """Send one request line, read one reply line."""
        ch = self._ch
        if ch is None or ch.closed:
            raise LinkLost("no agent channel") if not self.session.active() else self._agent_exit()
        try:
            ch.sendall((json.dumps(req) + "\n").encode())
        except (OSError, paramiko.SSHException, EOFError):
            raise self._agent_exit() from None
        ch.settimeout(timeout)
        try:
            line = self._stdout.readline()
        except socket.timeout:
            raise RequestTimeout(what) from None
        except (OSError, paramiko.SSHException, EOFError):
            raise self._agent_exit() from None
        self._drain_stderr()
        if not line:
            raise self._agent_exit()
        try:
            reply = json.loads(line)
        except ValueError:
            raise CostdbError(f"device {self.device!r}: the agent sent a malformed line while "
                              f"{what}: {_one_line(line.decode('utf-8', 'replace'), 120)}; check "
                              "that nothing else writes to its stdout") from None
        if not reply.get("ok"):
            raise AgentError(f"device {self.device!r}: the agent failed while {what}: "
                              f"{_one_line(reply.get('error', 'unknown error'), 200)}")
        return reply

    def _kill_agent(self) -> None:
        """Stop our agent process on the device (by its pid) and drop its channel."""
        pid = self.remote_pid
        if pid and self.session.active():
            try:
                self.session.run(["kill", "-KILL", str(int(pid))],
                                 timeout=self.target.command_timeout, check=False)
            except (CostdbError, LinkLost):
                pass
        if self._ch is not None:
            self._ch.close()
        self._ch = None

    def _reconnect(self, why: str) -> None:
        """Reconnect with exponential backoff and restart the agent; CostdbError when giving up."""
        self.session.close()
        delay, waited, t0 = 0.25, 0.0, time.monotonic()
        last = why
        while True:
            try:
                self.session = SshSession(self.target, self.options)
                self._start_agent()
                self.reconnects += 1
                log.warning("device %s: reconnected after %.1f s (%s)", self.device,
                            time.monotonic() - t0, why)
                self._warn(f"{self.device}: connection lost ({_one_line(why, 80)}); reconnected "
                           f"after {time.monotonic() - t0:.1f} s, measuring the op in flight again")
                return
            except CostdbError as e:
                msg = str(e)
                if "authentication failed" in msg or "CHANGED" in msg or "not known" in msg \
                        or "not found on the device" in msg or "PyTorch is missing" in msg \
                        or "SIGILL" in msg:
                    raise
                last = msg
            except LinkLost as e:
                last = str(e)
            if self.session is not None:
                self.session.close()
            waited = time.monotonic() - t0
            if waited + delay > self.reconnect_timeout:
                raise CostdbError(f"device {self.device!r}: connection lost ({_one_line(why, 80)}) "
                                  f"and not back after {waited:.0f} s ({_one_line(last, 120)}); "
                                  "measurements so far are saved, run the same command again to "
                                  "resume")
            time.sleep(delay)
            delay = min(delay * 2, 8.0)

    def _call(self, req: dict[str, Any], timeout: float, what: str,
              retries: int = 3) -> dict[str, Any]:
        """A request that survives a dropped link or a killed agent (it is sent again)."""
        died = 0
        for _ in range(retries + 1):
            try:
                return self._request(req, timeout, what)
            except LinkLost as e:
                self._reconnect(str(e))
            except AgentDied as e:
                died += 1
                if died > 1:
                    raise
                log.warning("device %s: agent died while %s (%s); restarting it", self.device, what, e)
                self._warn(f"{self.device}: the agent died while {what} ({_one_line(str(e), 80)}); "
                           "restarted it")
                self.agent_restarts += 1
                self._kill_agent()
                self._start_agent()
        return self._request(req, timeout, what)

    # --- AgentConnection ----------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Agent version and facts; the first call returns the start-up hello, later calls read
        the facts again (e.g. at the end of a session, for temperatures and throttling)."""
        if not self._hello_sent:
            self._hello_sent = True
            return dict(self._hello or {})
        try:
            facts = self._call({"cmd": "facts"}, self.target.timeout, "reading device facts")["facts"]
        except AgentDied as e:
            raise CostdbError(f"device {self.device!r}: the agent died reading facts: {e}") from None
        facts["energy_sensor"] = (self._hello or {}).get("facts", {}).get("energy_sensor")
        return {**(self._hello or {}), "facts": facts}

    def idle_power_w(self, seconds: float = 1.0) -> float | None:
        try:
            reply = self._call({"cmd": "idle", "seconds": seconds}, seconds + self.target.timeout,
                               "measuring idle power")
        except AgentDied as e:
            raise CostdbError(f"device {self.device!r}: the agent died measuring idle power: {e}") from None
        return reply.get("idle_power_w")

    def measure(self, spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        what = f"measuring {spec.get('op')}:{spec.get('phase')}"
        req = {"cmd": "measure", "spec": spec, "settings": settings, "device": self.compute_unit}
        try:
            return self._call(req, self.target.timeout, what)["result"]
        except AgentError as e:
            return {"signature": spec.get("signature"), "status": "error",
                    "error": str(e).split(": ", 1)[-1][:300],
                    "runtime_provenance": self.runtime_provenance}
        except RequestTimeout:
            self._kill_agent()
            self._reconnect_or_restart()
            return {"signature": spec.get("signature"), "status": "error",
                    "error": f"timed out after {self.target.timeout:g} s on the device (raise "
                             "timeout = in the inventory if the op needs longer)",
                    "runtime_provenance": self.runtime_provenance}
        except AgentDied as e:
            self._reconnect_or_restart()
            why = ("crashed with SIGILL (illegal instruction): the device's torch build uses CPU "
                   "instructions this CPU lacks") if illegal_instruction(e) else "out of memory?"
            return {"signature": spec.get("signature"), "status": "error",
                    "error": f"the agent died twice {what} ({_one_line(str(e), 120)}); {why}",
                    "runtime_provenance": self.runtime_provenance}

    def run_schedule(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run a schedule on the device (agent ``execute``, docs/protocol.md). Not retried: a
        half-run iteration is not resumable, and the device removes its run directory."""
        timeout = float(request.get("timeout") or max(self.target.timeout, 600.0))
        req = {"cmd": "execute", **request, "device": request.get("device") or self.compute_unit}
        try:
            return self._request(req, timeout, "executing the schedule")["result"]
        except RequestTimeout:
            self._kill_agent()
            raise CostdbError(f"device {self.device!r}: the schedule did not finish within "
                              f"{timeout:g} s; raise timeout = in the inventory") from None
        except (AgentDied, LinkLost) as e:
            raise CostdbError(f"device {self.device!r}: the agent stopped while executing the "
                              f"schedule ({_one_line(str(e), 120)}); out of memory?") from None

    def storage(self, request: dict[str, Any]) -> dict[str, Any]:
        """Measure the paging speed of the device's storage path (agent ``storage``)."""
        timeout = float(request.get("timeout") or max(self.target.timeout, 300.0))
        try:
            return self._call({"cmd": "storage", **request}, timeout, "measuring storage")["result"]
        except (AgentDied, RequestTimeout) as e:
            raise CostdbError(f"device {self.device!r}: measuring storage failed ({e})") from None

    def _reconnect_or_restart(self) -> None:
        if self.session.active():
            self.agent_restarts += 1
            self._kill_agent()
            self._start_agent()
        else:
            self._reconnect("connection dropped")

    def close(self) -> None:
        ch = self._ch
        try:
            if ch is not None and not ch.closed and self.session.active():
                # the agent answers bye and exits by itself (its remote timeout bounds it); we do
                # not wait for the interpreter's shutdown
                try:
                    self._request({"cmd": "bye"}, self.target.command_timeout, "closing")
                except (LinkLost, AgentDied, RequestTimeout, CostdbError):
                    pass
                ch.close()
        finally:
            self._ch = None
            self.session.close()


def open_ssh_agent(entry: Any, threads: int | None = None,
                   options: dict[str, Any] | None = None) -> SshAgent:
    """Connect to an inventory entry's device and start its agent (devices.connect calls this)."""
    target = resolve_target(entry.name, dict(entry.connection), options)
    return SshAgent(target, threads=threads, settings=dict(entry.settings), options=options)


def open_session(entry: Any, options: dict[str, Any] | None = None) -> SshSession:
    """A command/SFTP session to the device without starting the agent (for checks and tests)."""
    return SshSession(resolve_target(entry.name, dict(entry.connection), options), options)
