"""Processes for the cluster suite: a private etcd and `trellis serve --meta etcd` daemons.

Independent of pytest, so that bench/migration_bench.py can use it too. Everything is
started on 127.0.0.1 with free ports, in fresh /tmp directories (UNIX socket paths must
stay under 108 bytes), and stopped by PID.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))

from benchkit import daemons  # noqa: E402


def find_etcd():
    """Path of an etcd binary ($ETCD_BIN, PATH, /usr/bin/etcd) or None."""
    explicit = os.environ.get("ETCD_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


def trellis_bin():
    return os.environ.get("TRELLIS_BIN") or str(REPO_ROOT / ".build" / "debug" / "trellis")


vineyardd_bin = daemons.find_vineyardd


_handed_out = set()


def free_port():
    """A TCP port free on 127.0.0.1 right now (and not handed out before by this process)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port")


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


tcp_accepts = daemons.tcp_accepts
unix_accepts = daemons.socket_accepts


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls `predicate` until it returns a truthy value; returns it or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("%s not reached within %.1f s" % (what, timeout))
        time.sleep(interval)


Process = daemons.Process


class EtcdExited(RuntimeError):
    """etcd exited while it was expected to come up."""


class Etcd:
    """A single-member etcd on loopback with a private data dir; restartable on the same
    data dir and ports."""

    def __init__(self, binary=None, start_timeout=30.0):
        self.binary = binary or find_etcd()
        if not self.binary:
            raise RuntimeError("no etcd binary (set ETCD_BIN or run scripts/setup-etcd.sh)")
        self.dir = tempfile.mkdtemp(prefix="etcd", dir="/tmp")
        self.data_dir = os.path.join(self.dir, "data")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.start_timeout = start_timeout
        self.process = None
        self.served = False

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.client_port

    def start(self):
        """Starts etcd (again, on the same ports and data). The first start moves to other
        ports when one chosen was taken before etcd could listen (a client's ephemeral
        port, a test beside this one): etcd exits at once saying so."""
        attempts = 1 if self.served else 4
        for attempt in range(attempts):
            try:
                return self._start_once()
            except EtcdExited as e:
                if attempt + 1 == attempts or "address already in use" not in str(e):
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.client_port, self.peer_port = free_port(), free_port()

    def _start_once(self):
        peer = "http://127.0.0.1:%d" % self.peer_port
        argv = [
            self.binary, "--name", "trellis-test", "--data-dir", self.data_dir,
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "trellis-test=" + peer, "--initial-cluster-state", "new",
            "--log-level", "warn", "--logger", "zap",
        ]
        env = dict(os.environ)
        env["ETCD_UNSUPPORTED_ARCH"] = env.get("ETCD_UNSUPPORTED_ARCH", "")
        self.process = Process(argv, os.path.join(self.dir, "etcd.log"), env).spawn()
        try:
            wait_until(self._healthy, self.start_timeout, interval=0.05, what="etcd health")
        except TimeoutError:
            log = self.process.log_tail()
            self.process.kill()
            raise RuntimeError("etcd did not become healthy on %s:\n%s" % (self.endpoint, log))
        self.served = True
        return self

    def _healthy(self):
        if not self.process.alive():
            raise EtcdExited("etcd exited (%s):\n%s" % (self.process.proc.returncode, self.process.log_tail()))
        try:
            with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as r:
                return json.loads(r.read()).get("health") == "true"
        except Exception:
            return False

    @property
    def pid(self):
        return self.process.pid

    def kill(self):
        """SIGKILL etcd (the data dir stays)."""
        self.process.kill(signal.SIGKILL)

    def restart(self):
        self.kill()
        wait_until(lambda: port_free(self.client_port), 10, what="etcd port release")
        return self.start()

    def keys(self, prefix):
        """Keys under `prefix` (via the v3 JSON gateway)."""
        import base64

        def b64(s):
            return base64.b64encode(s.encode()).decode()

        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = json.dumps({"key": b64(prefix), "range_end": b64(end), "keys_only": True}).encode()
        req = urllib.request.Request(self.endpoint + "/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            reply = json.loads(r.read())
        return [base64.b64decode(kv["key"]).decode() for kv in reply.get("kvs", [])]

    def cleanup(self):
        if self.process is not None:
            self.process.kill(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One daemon of a cluster: `trellis serve` (kind="trellis") or upstream vineyardd
    (kind="vineyardd") with --meta etcd on its own socket and RPC port."""

    def __init__(self, etcd_endpoint, prefix, kind="trellis", size="1Gi", lease_ttl=None,
                 meta_timeout=None, binary=None, extra=(), start_timeout=60.0):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="tc", dir="/tmp")
        self.socket = os.path.join(self.dir, "d.sock")
        self.rpc_port = free_port()
        self.etcd_endpoint = etcd_endpoint
        self.prefix = prefix
        self.size = size
        self.lease_ttl = lease_ttl
        self.meta_timeout = meta_timeout
        self.binary = binary or (trellis_bin() if kind == "trellis" else vineyardd_bin())
        self.extra = list(extra)
        self.start_timeout = start_timeout
        self.process = None

    def argv(self):
        flags = ["--socket", self.socket, "--size", self.size, "--meta", "etcd",
                 "--etcd_endpoint", self.etcd_endpoint, "--etcd_prefix", self.prefix,
                 "--rpc_socket_port", str(self.rpc_port)]
        if self.kind == "trellis":
            if self.lease_ttl is not None:
                flags += ["--lease_ttl", str(self.lease_ttl)]
            if self.meta_timeout is not None:
                flags += ["--meta_timeout", str(self.meta_timeout)]
            return [self.binary, "serve"] + flags + self.extra
        return [self.binary] + flags + self.extra

    def env(self):
        env = dict(os.environ)
        env["MY_HOST_NAME"] = "127.0.0.1"  # loopback RPC endpoints for both kinds
        env["GLOG_logtostderr"] = "1"
        env.pop("VINEYARD_IPC_SOCKET", None)
        return env

    def spawn(self):
        if not os.path.exists(self.binary):
            raise RuntimeError("daemon binary %s does not exist; build it or set TRELLIS_BIN" % self.binary)
        self.process = daemons.Daemon(self.argv(), self.socket, os.path.join(self.dir, "daemon.log"), label=self.kind,
                                      env=self.env(), start_timeout=self.start_timeout, rpc_port=self.rpc_port).spawn()
        return self

    def start(self):
        """Spawns the daemon and waits until its socket and RPC port accept."""
        self.spawn()
        self.process.wait_ready()
        return self

    @property
    def pid(self):
        return self.process.pid

    @property
    def rpc_endpoint(self):
        return "127.0.0.1:%d" % self.rpc_port

    def alive(self):
        return self.process is not None and self.process.alive()

    def kill(self, sig=signal.SIGKILL):
        self.process.kill(sig)

    def stop(self):
        return self.process.stop() if self.process else None

    def connect(self):
        """An upstream Python IPC client. vineyard shares one client per socket inside a
        process: closing it closes every handle on that socket."""
        import vineyard

        return vineyard.connect(self.socket)

    def request(self, message, timeout=20.0):
        """One request over a fresh raw IPC connection (no vineyard client state touched)."""
        return raw_request(self.socket, message, timeout)

    def status(self):
        """instance_status: instance_id, memory_usage, memory_limit, …"""
        return self.request({"type": "instance_status_request"})["meta"]

    def memory_usage(self):
        return self.status()["memory_usage"]

    def cluster_meta(self):
        return self.request({"type": "cluster_meta"})["meta"]

    def log_tail(self, n=3000):
        return self.process.log_tail(n) if self.process else ""

    def cleanup(self):
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


REGISTER = {"type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0,
            "username": "", "password": ""}


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("daemon closed the connection")
        buf += chunk
    return bytes(buf)


def raw_request(path, message, timeout=20.0):
    """register_request, then `message`, over a new UNIX connection; returns the reply."""
    import struct

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        reply = None
        for m in (REGISTER, message):
            body = json.dumps(m).encode()
            s.sendall(struct.pack("<Q", len(body)) + body)
            (n,) = struct.unpack("<Q", _recv_exact(s, 8))
            reply = json.loads(_recv_exact(s, n))
        return reply


def run_client(code, timeout, **params):
    """Runs `code` (Python, with `params` bound as globals from JSON) in a child interpreter,
    killed after `timeout` seconds. Returns (returncode or None on timeout, stdout, stderr,
    seconds). The child prints its result; a call that hangs cannot hang the caller."""
    prelude = "import json, sys\nglobals().update(json.loads(sys.argv[1]))\n"
    argv = [sys.executable, "-c", prelude + textwrap.dedent(code), json.dumps(params)]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(), err.decode(), time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out.decode(), err.decode(), time.monotonic() - start


class ClientProcess:
    """A child interpreter that runs `setup` (imports, connections), reports READY, then
    runs `code` when told to with go(). Lets a test time a client call precisely (the
    seconds of `import vineyard` are spent before) and bound it with a timeout."""

    def __init__(self, setup, code, **params):
        prelude = (
            "import json, sys\n"
            "globals().update(json.loads(sys.argv[1]))\n"
            + textwrap.dedent(setup)
            + "\nprint('READY', flush=True)\nsys.stdin.readline()\n"
            + textwrap.dedent(code)
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", prelude, json.dumps(params)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.started = None

    def wait_ready(self, timeout=60):
        line = b""
        deadline = time.monotonic() + timeout
        import select

        while b"READY" not in line:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.kill()
                raise TimeoutError("client process not ready")
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read().decode()
                raise RuntimeError("client process failed during setup:\n" + err)
        return self

    def go(self):
        self.started = time.monotonic()
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()

    def running(self):
        return self.proc.poll() is None

    def result(self, timeout):
        """(returncode or None if it had to be killed, stdout, stderr, seconds since go())."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
            rc = self.proc.returncode
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
            rc = None
        return rc, out.decode(), err.decode(), time.monotonic() - (self.started or time.monotonic())

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
