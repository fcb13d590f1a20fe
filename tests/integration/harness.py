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
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))

from benchkit import daemons  # noqa: E402
from benchkit.daemons import DaemonError  # noqa: E402

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


class Daemon(daemons.Daemon):
    """One daemon process on a private UNIX socket in a fresh /tmp directory."""

    def __init__(self, size="2Gi", extra=(), start_timeout=30.0, uid=None):
        self.size = size
        self.extra = list(extra)
        # Run the daemon as this user (the test runs as root): an unprivileged daemon.
        self.uid = uid
        # Short path: sun_path is limited to 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="tr", dir="/tmp")
        sock = os.path.join(self.dir, "d.sock")
        env = dict(os.environ)
        # glog (upstream) would otherwise drop log files into /tmp.
        env["GLOG_logtostderr"] = "1"
        env.pop("VINEYARD_IPC_SOCKET", None)
        super().__init__(daemon_command(sock, size, self.extra), sock, os.path.join(self.dir, "daemon.log"),
                         label=daemon_kind(), env=env, preexec_fn=_die_with_parent, start_timeout=start_timeout)
        self.stop_diagnostics = ""

    # -- lifecycle -------------------------------------------------------------
    def start(self):
        if not os.path.exists(self.argv[0]):
            shutil.rmtree(self.dir, ignore_errors=True)
            raise DaemonError(
                "daemon binary %s does not exist (TRELLIS_DAEMON=%s); build it or set "
                "TRELLIS_BIN / VINEYARDD_BIN" % (self.argv[0], daemon_kind())
            )
        if self.uid is not None:
            os.chown(self.dir, self.uid, self.uid)
            self.preexec_fn = _as_user(self.uid)
            # The checkout may sit under a directory other users cannot enter (a fresh clone
            # under a 0700 home): give the unprivileged daemon its own copy of the binary, in
            # the directory it owns. (Its libraries come from the toolchain, via RUNPATH.)
            copy = os.path.join(self.dir, os.path.basename(self.argv[0]))
            shutil.copy2(self.argv[0], copy)
            os.chmod(copy, 0o755)
            self.argv[0] = copy
        return super().start()

    def on_stop_timeout(self):
        self.stop_diagnostics = self.diagnostics()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=4000):
        return super().log_tail(n)

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
    return run_workers_each([(target, args) for args in args_list], timeout=timeout)


def run_workers_each(jobs, timeout=240.0):
    """Like run_workers, for ``(target, args)`` pairs: each job runs its own target."""
    import multiprocessing
    spawn = multiprocessing.get_context("spawn")
    procs, pipes = [], []
    try:
        for target, args in jobs:
            parent, child = spawn.Pipe()
            p = spawn.Process(target=target, args=tuple(args) + (child,), daemon=True)
            p.start()
            child.close()
            procs.append(p)
            pipes.append(parent)
        results = []
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


socket_accepts = daemons.socket_accepts


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


def stored_tree(socket_path, oid):
    """The daemon's stored metadata tree of `oid` (get_data, members expanded)."""
    with RawConn(socket_path) as c:
        c.register()
        reply = c.request({"type": "get_data_request", "id": [int(oid)], "sync_remote": False, "wait": False})
    (tree,) = reply["content"].values()
    return tree


def normal_tree(tree):
    """The tree without what differs between two puts of one value (ids, signatures, times)."""
    out = {}
    for k, v in tree.items():
        if k in ("id", "signature", "__timestamp"):
            continue
        out[k] = normal_tree(v) if isinstance(v, dict) else v
    return out
