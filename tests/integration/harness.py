"""Daemon and wire-level helpers for the Trellis integration suite.

Everything here is independent of pytest so that worker processes (spawned with
multiprocessing or started as plain subprocesses) can import it cheaply.

Which daemon runs is chosen by the environment:

* ``TRELLIS_DAEMON=trellis`` (default): ``$TRELLIS_BIN serve --socket S --size …
  --meta local --norpc`` with ``TRELLIS_BIN`` defaulting to
  ``<repo>/.build/debug/trellis``.
* ``TRELLIS_DAEMON=vineyardd``: the upstream daemon shipped in the pinned
  ``vineyard-bdist`` wheel (``VINEYARDD_BIN`` overrides the path), started with
  the same flags. Upstream does not need ``--rpc_socket_port`` with ``--norpc``.
"""

import array
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Wire constants (README §1, §4.2, §4.3).
EMPTY_BLOB_ID = 0x8000000000000000
UPSTREAM_MAX_FRAME = 256 << 20  # upstream drops a connection announcing more
TRELLIS_DEFAULT_MAX_FRAME = 64 << 20

REGISTER = {
    "type": "register_request",
    "version": "0.24.2",
    "store_type": 1,
    "session_id": 0,
    "username": "",
    "password": "",
}


def daemon_kind():
    kind = os.environ.get("TRELLIS_DAEMON", "trellis").strip().lower()
    if kind not in ("trellis", "vineyardd"):
        raise RuntimeError(
            "TRELLIS_DAEMON must be 'trellis' or 'vineyardd', got %r" % kind
        )
    return kind


def is_upstream():
    return daemon_kind() == "vineyardd"


def daemon_command(socket_path, size="2Gi", extra=()):
    """The argv that starts the selected daemon on ``socket_path``."""
    common = ["--socket", socket_path, "--size", size, "--meta", "local", "--norpc"]
    if daemon_kind() == "vineyardd":
        binary = os.environ.get("VINEYARDD_BIN")
        if not binary:
            import vineyard  # only the upstream case needs the package path

            binary = os.path.join(os.path.dirname(vineyard.__file__), "bdist", "vineyardd")
        return [binary] + common + list(extra)
    binary = os.environ.get("TRELLIS_BIN") or str(REPO_ROOT / ".build" / "debug" / "trellis")
    return [binary, "serve"] + common + list(extra)


class DaemonError(RuntimeError):
    pass


class Daemon:
    """One daemon process on a private UNIX socket in a fresh /tmp directory."""

    def __init__(self, size="2Gi", extra=(), start_timeout=30.0, uid=None):
        self.size = size
        self.extra = list(extra)
        # Run the daemon as this user (the test runs as root): an unprivileged daemon.
        self.uid = uid
        # Short path: sun_path is limited to 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="tr", dir="/tmp")
        self.socket = os.path.join(self.dir, "d.sock")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.proc = None
        self.start_timeout = start_timeout
        self.returncode = None
        self.stop_diagnostics = ""

    # -- lifecycle -------------------------------------------------------------
    def start(self):
        argv = daemon_command(self.socket, self.size, self.extra)
        if not os.path.exists(argv[0]):
            shutil.rmtree(self.dir, ignore_errors=True)
            raise DaemonError(
                "daemon binary %s does not exist (TRELLIS_DAEMON=%s); build it or set "
                "TRELLIS_BIN / VINEYARDD_BIN" % (argv[0], daemon_kind())
            )
        env = dict(os.environ)
        # glog (upstream) would otherwise drop log files into /tmp.
        env["GLOG_logtostderr"] = "1"
        env.pop("VINEYARD_IPC_SOCKET", None)
        self._log = open(self.log_path, "wb")
        preexec = _die_with_parent
        if self.uid is not None:
            os.chown(self.dir, self.uid, self.uid)
            preexec = _as_user(self.uid)
            # The checkout may sit under a directory other users cannot enter (a fresh clone
            # under a 0700 home): give the unprivileged daemon its own copy of the binary, in
            # the directory it owns. (Its libraries come from the toolchain, via RUNPATH.)
            copy = os.path.join(self.dir, os.path.basename(argv[0]))
            shutil.copy2(argv[0], copy)
            os.chmod(copy, 0o755)
            argv = [copy] + argv[1:]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a ^C on the test run must not hit it first
            preexec_fn=preexec,  # no orphaned daemon if pytest is killed
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                log = self.log_tail()
                self.stop()
                raise DaemonError(
                    "daemon exited with %s during startup: %s\n%s"
                    % (self.proc.returncode, " ".join(argv), log)
                )
            if socket_accepts(self.socket):
                return self
            if time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise DaemonError("daemon did not listen on %s in time\n%s" % (self.socket, log))
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc is not None and self.returncode is None:
            if self.proc.poll() is None:
                try:
                    self.proc.send_signal(signal.SIGTERM)
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.stop_diagnostics = self.diagnostics()
                    self.proc.kill()
                    self.proc.wait()
            self.returncode = self.proc.returncode
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        return self.returncode

    def diagnostics(self):
        """Thread states and open fds of the live daemon (for failure messages)."""
        lines = []
        try:
            task_dir = "/proc/%d/task" % self.pid
            for tid in sorted(os.listdir(task_dir)):
                def read(name):
                    try:
                        with open(os.path.join(task_dir, tid, name)) as f:
                            return f.read().strip()
                    except OSError:
                        return "?"
                lines.append("thread %s %s wchan=%s" % (tid, read("comm"), read("wchan")))
            fd_dir = "/proc/%d/fd" % self.pid
            for fd in sorted(os.listdir(fd_dir), key=int):
                try:
                    lines.append("fd %s -> %s" % (fd, os.readlink(os.path.join(fd_dir, fd))))
                except OSError:
                    pass
        except OSError as e:
            lines.append("no diagnostics: %s" % e)
        return "\n".join(lines)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
            return data[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # -- introspection -----------------------------------------------------------
    def status(self):
        """instance_status over a fresh raw connection (no vineyard import)."""
        with RawConn(self.socket) as c:
            c.register()
            reply = c.request({"type": "instance_status_request"})
        return reply["meta"]

    def memory_usage(self):
        return self.status()["memory_usage"]

    def shm_resident_bytes(self):
        """Bytes of shared memory the daemon's arena file(s) really hold.

        Sums st_blocks of every memfd, /dev/shm file or unnamed tmpfs file (the
        transparent-huge-page arena: O_TMPFILE on a private mount, "/#N (deleted)")
        the daemon has open: tmpfs
        reports allocated pages there, so this rises when blob pages are touched and
        falls when they are punched out (memory_trim), independent of other activity
        on the machine.
        """
        total, seen = 0, set()
        fd_dir = "/proc/%d/fd" % self.pid
        for name in os.listdir(fd_dir):
            path = os.path.join(fd_dir, name)
            try:
                target = os.readlink(path)
                if not (target.startswith("/memfd:") or target.startswith("/dev/shm/")
                        or re.match(r"^/#\d+ \(deleted\)$", target)):
                    continue
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        return total


def run_workers(target, args_list, timeout=240.0):
    """Runs ``target(*args, conn)`` in one spawned process per ``args`` at once and returns
    what each sent on ``conn``, in order; a worker that does not report within ``timeout``
    fails the test. The processes are stopped whatever happens."""
    import multiprocessing
    spawn = multiprocessing.get_context("spawn")
    procs, pipes = [], []
    for args in args_list:
        parent, child = spawn.Pipe()
        p = spawn.Process(target=target, args=tuple(args) + (child,), daemon=True)
        p.start()
        child.close()
        procs.append(p)
        pipes.append(parent)
    results = []
    try:
        for conn in pipes:
            assert conn.poll(timeout), "worker did not finish in time"
            results.append(conn.recv())
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    return results


def connect(socket_path):
    """A vineyard client with a connection of its own; release it with disconnect().

    ``vineyard.connect(path)`` hands out one cached connection per socket path
    (two calls share it), so each client here is made with ``fork()``, which
    opens a new connection. Do not call ``close()`` on such a client: the
    0.24.2 binding's ``close()`` disconnects the *cached* client of that socket
    path, not the forked one (observed: the fork stays connected, the cached
    one is closed). The fork's socket is closed when its IPCClient is freed.
    """
    import vineyard

    return vineyard.connect(socket_path).fork()


def disconnect(client):
    """Close a client made by connect(): drop its IPCClient so it is freed.

    Objects obtained from the client (arrays, blobs) may keep the connection
    alive until they are gone, like they keep their mapping alive.
    """
    import gc

    client._ipc_client = None
    gc.collect()


def _die_with_parent():
    """In the child before exec: SIGKILL me when the process that started me dies."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except Exception:
        pass


def _as_user(uid):
    """preexec_fn: _die_with_parent, then drop to uid (its own group, no supplementary ones)."""

    def preexec():
        _die_with_parent()
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return preexec


def socket_accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(predicate, timeout=10.0, interval=0.05):
    """Poll ``predicate`` until it is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# -- raw protocol ----------------------------------------------------------------


class ConnectionClosed(Exception):
    pass


class RawConn:
    """A hand-driven protocol connection: u64le length + JSON frames."""

    def __init__(self, path, timeout=20.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.fds = []

    def close(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # framing
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_body(self, body):
        self.sock.sendall(struct.pack("<Q", len(body)) + body)

    def send(self, obj):
        self.send_body(json.dumps(obj, separators=(",", ":")).encode())

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionClosed("peer closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def recv(self):
        (n,) = struct.unpack("<Q", self._recv_exact(8))
        return json.loads(self._recv_exact(n))

    def recv_fd(self):
        """Read one fd carrier (1 byte + SCM_RIGHTS with one int)."""
        fds = array.array("i")
        msg, anc, _flags, _addr = self.sock.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
        if not msg:
            raise ConnectionClosed("peer closed while an fd was expected")
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        got = list(fds)
        self.fds.extend(got)
        return got

    def request(self, obj):
        self.send(obj)
        return self.recv()

    def register(self):
        reply = self.request(REGISTER)
        assert reply.get("type") == "register_reply", reply
        return reply

    def is_closed_by_peer(self, timeout=5.0):
        """True if the daemon closed the connection (EOF/reset) within timeout."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
            return data == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)

    # a few typed helpers
    def create_buffer(self, size):
        """create_buffer_request; returns (reply, fd or None)."""
        reply = self.request({"type": "create_buffer_request", "size": size})
        fd = None
        if "code" not in reply and reply.get("fd", -1) != -1:
            got = self.recv_fd()
            fd = got[0] if got else None
        return reply, fd

    def seal(self, blob_id):
        return self.request({"type": "seal_request", "object_id": blob_id})

    def instance_status(self):
        return self.request({"type": "instance_status_request"})


def is_error(reply, code=None):
    if "code" not in reply:
        return False
    return code is None or reply["code"] == code


def meminfo_kib(field="Shmem"):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def proc_status_kib(field, pid="self"):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)
