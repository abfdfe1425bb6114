"""Two private libvirtd daemons on one host, for real live-migration tests.

Each daemon runs in its own mount and UTS namespace (new session, then
``unshare -m -u --propagation private``) with a private directory bound over
/run and overlays on /etc and /var whose upper layers live in the daemon's
temp directory, so the host's files are not written.  The guest is a tiny
multiboot kernel (``guest/dirty.S``) that keeps N MiB of RAM dirty, so a
bandwidth-limited pre-copy migration never converges on its own.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

GUEST_SRC = Path(__file__).resolve().parent / "guest"
SIDES = ("src", "dst")
PREFIX = "lmcaps-libvirt-"
# SeaBIOS needs ~3 s to boot under nested KVM (each port I/O exit is slow);
# qboot boots the multiboot kernel in ~0.2 s.  SeaBIOS is used if it is absent.
QBOOT = Path("/usr/share/qemu/qboot.rom")
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_kernels: dict[str, Path] = {}
_kernel_lock = threading.Lock()
_RANDOM = random.SystemRandom()  # independent of tests seeding `random`

# Parent of each daemon, a child subreaper.  QEMU is double-forked by libvirtd,
# so its parent is the nearest subreaper or PID 1.  A PID 1 that reaps slowly
# (seen here: ~1.6 s) stalls every destroy, migration end and capability probe
# while libvirtd waits for the QEMU PID to vanish.  Exits when no child is left.
_REAPER = r"""
import ctypes, os, signal, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
child = subprocess.Popen(sys.argv[2:])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(child.pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: child.terminate())
rc = 0
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        sys.exit(rc)
    if pid == child.pid:
        rc = os.waitstatus_to_exitcode(status)
"""
# Runs inside the new namespaces; $1 = daemon dir, $2 = hostname, $3 = libvirtd.
_NS_SCRIPT = """set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir=$1/etc.upper,workdir=$1/etc.work /etc
mount -t overlay overlay -o lowerdir=/var,upperdir=$1/var.upper,workdir=$1/var.work /var
mount --bind "$1/run" /run
hostname "$2"
exec "$3"
"""
# QEMU as root without the distro's security setup; ports/address per daemon.
_QEMU_CONF = ('user = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
              'namespaces = [ ]\n'
              'cgroup_controllers = [ ]\ndynamic_ownership = 0\nremember_owner = 0\n'
              'stdio_handler = "file"\nmigration_port_min = {lo}\n'
              'migration_port_max = {hi}\n'
              'migration_address = "{addr}"\n')
_GUEST_XML = """<domain type='{type}'><name>{name}</name><vcpu>1</vcpu>{metadata}
  <memory unit='MiB'>{ram}</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type>{loader}
    <kernel>{kernel}</kernel><cmdline>{dirty}</cmdline></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices><emulator>{emulator}</emulator>
    <serial type='file'><source path='{serial}' append='on'/></serial>
    <controller type='usb' model='none'/><memballoon model='none'/></devices>
</domain>"""


def _which(name: str) -> Optional[str]:
    """Find an executable, looking in sbin directories too."""
    return shutil.which(name, path=_PATH)


def kvm_usable() -> bool:
    """Tell whether /dev/kvm can be opened read-write."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def available() -> tuple[bool, str]:
    """Report whether this machine can run a LibvirtPair: ``(ok, reason)``."""
    if os.geteuid() != 0:
        return False, "needs root (mount namespaces, overlay mounts)"
    for tool in ("libvirtd", "qemu-system-x86_64", "unshare", "mount", "as", "ld"):
        if not _which(tool):
            return False, "%s not found" % tool
    try:
        import libvirt  # noqa: F401
    except ImportError as exc:
        return False, "libvirt python module: %s" % exc
    with tempfile.TemporaryDirectory(prefix=PREFIX + "probe-") as t:
        probe = ("cd %s && mkdir l u w m && mount -t overlay o "
                 "-o lowerdir=l,upperdir=u,workdir=w m" % t)
        res = subprocess.run(["unshare", "-m", "-u", "--propagation", "private",
                              "sh", "-c", probe], capture_output=True, text=True)
    if res.returncode:
        return False, ("unshare + overlay mount failed (CAP_SYS_ADMIN?): " +
                       res.stderr.strip())
    return True, ""


def build_guest_kernel() -> Path:
    """Assemble and link guest/dirty.S once per process; return the ELF path."""
    src, lds = GUEST_SRC / "dirty.S", GUEST_SRC / "linker.ld"
    key = hashlib.sha256(src.read_bytes() + lds.read_bytes()).hexdigest()
    with _kernel_lock:
        if key not in _kernels or not _kernels[key].exists():
            out = Path(tempfile.mkdtemp(prefix=PREFIX + "guest-", dir="/tmp"))
            atexit.register(shutil.rmtree, out, True)
            (out / "owner.pid").write_text(str(os.getpid()))
            subprocess.run(["as", "--32", "-o", out / "dirty.o", src],
                           check=True, capture_output=True)
            # -n: no page alignment; the multiboot header stays in the first 8 KiB.
            subprocess.run(["ld", "-m", "elf_i386", "-n", "-T", lds, "-o",
                            out / "dirty.elf", out / "dirty.o"],
                           check=True, capture_output=True)
            _kernels[key] = out / "dirty.elf"
        return _kernels[key]


def _alive(pid: int) -> bool:
    """Tell whether a process exists and is not a zombie."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    """Return a process's command line, '' if it is gone."""
    with contextlib.suppress(OSError):
        return Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    return ""


def _mnt_ns(pid: int) -> Optional[str]:
    """Return a process's mount namespace id, None if it is gone."""
    with contextlib.suppress(OSError):
        return os.readlink("/proc/%d/ns/mnt" % pid)
    return None


def _kill(pids: list[int], sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
    """Signal processes and wait until they are gone (or zombies)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def _read_pid(path: Path, word: str) -> list[int]:
    """Return ``[pid]`` from a PID file if that process lives and runs `word`."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip())
        if _alive(pid) and word in _cmdline(pid):
            return [pid]
    return []


def _qemu_pids(side_dir: Path) -> list[int]:
    """Return live QEMU PIDs from a daemon's <run>/libvirt/qemu/*.pid files."""
    return [pid for f in (side_dir / "run/libvirt/qemu").glob("*.pid")
            for pid in _read_pid(f, "qemu")]


def _kill_side(side_dir: Path) -> None:
    """Kill a daemon's guests, then the daemon (libvirtd leaves guests running)."""
    _kill(_qemu_pids(side_dir))
    _kill(_read_pid(side_dir / "daemon.pid", "libvirtd"), signal.SIGTERM, 5)
    _kill(_read_pid(side_dir / "daemon.pid", "libvirtd"))


def sweep_stale(tmpdir: str = "/tmp") -> None:
    """Kill and remove pairs (and guest builds) whose owner died uncleanly."""
    for base in Path(tmpdir).glob(PREFIX + "*"):
        with contextlib.suppress(OSError, ValueError):
            if _alive(int((base / "owner.pid").read_text())):
                continue
            for side in SIDES:
                _kill_side(base / side)
            shutil.rmtree(base, ignore_errors=True)


class LibvirtPair:
    """Two private libvirtd daemons, "src" and "dst", ready to migrate guests."""

    def __init__(self, kvm: Optional[bool] = None, debug_log: bool = False,
                 start_timeout: float = 60.0) -> None:
        """Prepare (not start) a pair.

        :param kvm: use KVM; default: whether /dev/kvm is usable, else TCG.
        :param debug_log: log libvirt's qemu/util code at debug level.
        :param start_timeout: seconds to wait for each daemon's socket.
        """
        self.kvm = kvm_usable() if kvm is None else kvm
        self.debug_log, self.start_timeout = debug_log, start_timeout
        self.base: Optional[Path] = None  # set while started
        self._dir: Optional[Path] = None  # kept after stop() for leftovers()
        self._procs: dict[str, subprocess.Popen] = {}
        self._pids: dict[str, int] = {}
        self._ns: set[str] = set()
        self._conns: dict[str, Any] = {}
        self._lock = threading.RLock()
        a = _RANDOM.randrange(2, 250)
        self.addr = {"src": "127.0.1.%d" % a, "dst": "127.0.1.%d" % (a + 1)}
        port = _RANDOM.randrange(49152, 65000, 32)
        self.ports = {"src": (port, port + 15), "dst": (port + 16, port + 31)}

    def uri(self, side: str) -> str:
        """Return the client URI of one daemon ('src' or 'dst')."""
        sock = self._side(side) / "run/libvirt/libvirt-sock"
        return "qemu+unix:///system?socket=%s" % sock

    @property
    def src_uri(self) -> str:
        """Client URI of the source daemon."""
        return self.uri("src")

    @property
    def dst_uri(self) -> str:
        """Client URI of the destination daemon (the P2P dconnuri)."""
        return self.uri("dst")

    @property
    def dst_migrate_uri(self) -> str:
        """Value for VIR_MIGRATE_PARAM_URI: where the source QEMU connects."""
        return "tcp://%s" % self.addr["dst"]

    @property
    def domain_type(self) -> str:
        """Libvirt domain type: 'kvm', or 'qemu' (TCG)."""
        return "kvm" if self.kvm else "qemu"

    def daemon_pid(self, side: str) -> int:
        """Return the PID of one libvirtd (known once start() returned)."""
        return self._pids[side]

    def log_path(self, side: str) -> Path:
        """Return the libvirtd log file of one daemon."""
        return self._side(side) / "libvirtd.log"

    def _side(self, side: str) -> Path:
        """Return one daemon's directory; the pair must be started."""
        if self.base is None or side not in SIDES:
            raise RuntimeError("pair not started or bad side %r" % side)
        return self.base / side

    def __enter__(self) -> "LibvirtPair":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "LibvirtPair":
        """Start both daemons, wait for their sockets and warm them up."""
        with self._lock:
            if self.base is not None:
                return self
            sweep_stale()
            # Under /tmp on purpose: neither daemon's /etc, /var or /run view
            # hides it, so each sees the other's socket and the guest kernel.
            if self._dir is None:
                atexit.register(self.stop)
            self._pids.clear()
            self._ns.clear()
            self.base = self._dir = Path(
                tempfile.mkdtemp(prefix=PREFIX + "pair-", dir="/tmp"))
            try:
                (self.base / "owner.pid").write_text(str(os.getpid()))
                for side in SIDES:
                    self._spawn(side)
                for side in SIDES:
                    self._wait_ready(side)
                self._warm_up()
            except BaseException:
                self.stop()
                raise
        return self

    def _spawn(self, side: str) -> None:
        """Write one daemon's config into its overlay upper dirs and start it."""
        d = self._side(side)
        for sub in ("etc.upper/libvirt", "etc.work", "var.upper", "var.work", "run"):
            (d / sub).mkdir(parents=True)
        etc = d / "etc.upper"
        filters = ("1:qemu 1:libvirt 4:object 4:json 4:event 1:util"
                   if self.debug_log else "3:*")
        # Own host_uuid: libvirt refuses to migrate between equal host UUIDs.
        (etc / "libvirt/libvirtd.conf").write_text(
            'host_uuid = "%s"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            'log_filters = "%s"\nlog_outputs = "1:file:%s"\n'
            % (uuid.uuid4(), filters, d / "libvirtd.log"))
        lo, hi = self.ports[side]
        (etc / "libvirt/qemu.conf").write_text(
            _QEMU_CONF.format(lo=lo, hi=hi, addr=self.addr[side]))
        # Debian's libvirtd resolves its compiled-in libvirt-qemu user/group
        # before reading qemu.conf, and fails without them.
        for name, line in (("passwd", "libvirt-qemu:x:64055:64055::/nonexistent:"
                            "/usr/sbin/nologin"), ("group", "libvirt-qemu:x:64055:")):
            text = Path("/etc", name).read_text().rstrip("\n")
            if "\nlibvirt-qemu:" not in "\n" + text:
                text += "\n" + line
            (etc / name).write_text(text + "\n")
        hosts = Path("/etc/hosts").read_text().rstrip("\n") + "\n"
        (etc / "hosts").write_text(hosts + "".join(
            "%s lmcaps-%s\n" % (self.addr[s], s) for s in SIDES))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C"}
        with open(d / "stdio.log", "wb") as log:
            self._procs[side] = subprocess.Popen(
                [sys.executable, "-I", "-c", _REAPER, str(d / "daemon.pid"),
                 "unshare", "-m", "-u", "--propagation", "private", "sh", "-c",
                 _NS_SCRIPT, "sh", str(d), "lmcaps-" + side,
                 _which("libvirtd") or "libvirtd"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True)

    def _wait_ready(self, side: str) -> None:
        """Connect to a daemon once it listens; raise with its output if it won't."""
        import libvirt
        d, proc = self._side(side), self._procs[side]
        deadline = time.monotonic() + self.start_timeout
        while side not in self._conns:
            if (d / "run/libvirt/libvirt-sock").exists():
                with contextlib.suppress(libvirt.libvirtError):  # bound, not listening
                    self._conns[side] = self.open(side)
            if side not in self._conns and (
                    proc.poll() is not None or time.monotonic() > deadline):
                raise RuntimeError("libvirtd %s did not start (rc=%s): %s" % (
                    side, proc.returncode, (d / "stdio.log").read_text()[-2000:]))
            time.sleep(0.01)
        self._pids[side] = int((d / "daemon.pid").read_text())
        self._ns.add(_mnt_ns(self._pids[side]) or "")

    def _warm_up(self) -> None:
        """Make both daemons probe QEMU now, in parallel (seconds when cold)."""
        conns = [self._conns[side] for side in SIDES]  # opened by _wait_ready
        with concurrent.futures.ThreadPoolExecutor(len(conns)) as pool:
            list(pool.map(lambda c: c.getDomainCapabilities(
                None, "x86_64", None, self.domain_type, 0), conns))

    def stop(self) -> None:
        """Kill guests, then daemons; remove every file.  Safe to call twice."""
        with self._lock:
            for conn in self._conns.values():
                with contextlib.suppress(Exception):
                    conn.close()
            self._conns.clear()
            if self.base is None:
                return
            for side in SIDES:
                _kill(_qemu_pids(self.base / side))
            # Anything else in the daemons' namespaces, while the daemons keep
            # them alive (a freed namespace id can be reused by someone else).
            _kill([p for p in self._ns_pids() if p not in self._pids.values()])
            for side in SIDES:
                _kill_side(self.base / side)
            for proc in self._procs.values():
                # A reaper exits once it has no child left.  If it does not
                # (start failed half-way: sh/unshare still there), kill its
                # process group; its PID cannot be reused before we reap it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2)
                if proc.poll() is None:
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self._procs.clear()
            # The mounts exist only in the daemons' namespaces: gone with them.
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def _ns_pids(self) -> list[int]:
        """Return live processes in this pair's mount namespaces."""
        ns = self._ns - {""}
        return [int(p) for p in os.listdir("/proc")
                if ns and p.isdigit() and _mnt_ns(int(p)) in ns and _alive(int(p))]

    def leftovers(self) -> list[str]:
        """Describe processes, files or mounts of this pair still present.

        Meant for right after stop(): it checks the last start's PIDs and namespaces.
        """
        found = ["process %d in our namespace" % p for p in self._ns_pids()]
        found += ["daemon %d" % p for p in self._pids.values() if _alive(p)]
        if self._dir is None:
            return found
        found += ["process %s: %s" % (p, _cmdline(int(p))) for p in os.listdir("/proc")
                  if p.isdigit() and str(self._dir) in _cmdline(int(p))]
        if self._dir.exists():
            found.append("directory %s" % self._dir)
        for pid in ("self", "1"):  # our mount namespace and init's
            with contextlib.suppress(OSError):
                info = Path("/proc/%s/mountinfo" % pid).read_text()
                found += ["mount " + m for m in info.splitlines()
                          if str(self._dir) in m]
        return found

    def open(self, side: str) -> Any:
        """Open a new connection to one daemon; the caller closes it."""
        import libvirt
        return libvirt.open(self.uri(side))

    def conn(self, side: str) -> Any:
        """Return this pair's shared connection to one daemon."""
        with self._lock:
            if side not in self._conns:
                self._conns[side] = self.open(side)
            return self._conns[side]

    def serial_path(self, name: str) -> Path:
        """Return a guest's serial log, shared by both sides (appended)."""
        if self.base is None:
            raise RuntimeError("pair not started")
        return self.base / ("%s.serial.log" % name)

    def guest_xml(self, name: str, dirty_mib: int = 8, ram_mib: int = 128,
                  metadata: str = "") -> str:
        """Return domain XML booting the dirtying kernel, with no disk or NIC.

        :param metadata: XML elements for the domain's ``<metadata>``.
        """
        loader = "<loader type='rom'>%s</loader>" % QBOOT if QBOOT.exists() else ""
        return _GUEST_XML.format(
            type=self.domain_type, name=name, ram=ram_mib, loader=loader,
            metadata="<metadata>%s</metadata>" % metadata if metadata else "",
            kernel=build_guest_kernel(), dirty=dirty_mib,
            emulator=_which("qemu-system-x86_64"), serial=self.serial_path(name))

    def define_guest(self, name: str, dirty_mib: int = 8, ram_mib: int = 128,
                     persistent: bool = False, boot_timeout: float = 30.0,
                     metadata: str = "") -> str:
        """Start a guest on src and wait until it dirties memory; return its name.

        :param persistent: define it before starting it (default: transient).
        :param metadata: XML elements for the domain's ``<metadata>``.
        :raises RuntimeError: if the guest's banner does not show in time.
        """
        xml = self.guest_xml(name, dirty_mib, ram_mib, metadata)
        conn = self.conn("src")
        if persistent:
            conn.defineXML(xml).create()
        else:
            conn.createXML(xml, 0)
        # Migrating before the kernel runs would converge at once (zero pages).
        path, deadline = self.serial_path(name), time.monotonic() + boot_timeout
        while not path.exists() or b" MiB" not in path.read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError("guest %s did not boot" % name)
            time.sleep(0.01)
        return name

    def _lookup(self, side: str, name: str) -> Any:
        """Return the domain on one side, None if absent (no error printed)."""
        found = [d for d in self.conn(side).listAllDomains() if d.name() == name]
        return found[0] if found else None

    def log_tails(self, name: str | None = None, chars: int = 2000) -> str:
        """The end of both daemons' logs (warnings and errors) and, with
        ``name``, of that guest's QEMU log on each side, for a failure
        message."""
        parts = []
        for side in SIDES:
            files = [self._side(side) / "libvirtd.log"]
            if name is not None:
                files.append(self._side(side) /
                             f"var.upper/log/libvirt/qemu/{name}.log")
            for path in files:
                try:
                    text = path.read_text()
                except OSError as exc:
                    text = f"(unreadable: {exc})"
                parts.append(f"{side} {path.name}: ...{text[-chars:]}")
        return "\n".join(parts)

    def states(self, name: str) -> dict[str, Optional[tuple[int, int]]]:
        """Return ``{side: (state, reason) or None}`` for a guest."""
        import libvirt
        out: dict[str, Optional[tuple[int, int]]] = dict.fromkeys(SIDES)
        for side in SIDES:
            # absent, or gone meanwhile
            with contextlib.suppress(libvirt.libvirtError, AttributeError):
                out[side] = tuple(self._lookup(side, name).state())  # type: ignore
        return out

    def where(self, name: str) -> Optional[str]:
        """Return the side the guest lives on: 'src', 'dst' or None.

        Mid-migration both sides have it: the running one wins, else 'src'.
        """
        import libvirt
        active = {s: v for s, v in self.states(name).items()
                  if v and v[0] != libvirt.VIR_DOMAIN_SHUTOFF}
        running = [s for s, v in active.items() if v[0] == libvirt.VIR_DOMAIN_RUNNING]
        if len(active) == 1:
            return next(iter(active))
        if len(running) == 1:
            return running[0]
        return "src" if active else None

    def destroy_guest(self, name: str) -> None:
        """Destroy and undefine a guest on both sides; ignore absence."""
        import libvirt
        for dom in filter(None, (self._lookup(side, name) for side in SIDES)):
            with contextlib.suppress(libvirt.libvirtError):  # gone meanwhile
                persistent = dom.isPersistent()
                if dom.isActive():
                    dom.destroy()
                if persistent:
                    dom.undefine()
