"""A Trellis worker started the way Fluid's chart starts vineyardd (`command:` in
charts/vineyard/templates/worker/statefulset.yaml, kubernetes-fluid.md §2.3)."""

import base64
import json
import os
import shutil
import socket
import tempfile
import urllib.request

import cluster_lib


def fluid_argv(exe, sock, size, etcd_endpoint, rpc_port):
    """Fluid's worker argv, element for element (only paths, size and ports vary)."""
    return [exe, "--socket", sock, "--size", size, "--reserve_memory", "--meta_timeout", "120",
            "--etcd_prefix", "/vineyard", "--etcd_endpoint", etcd_endpoint, "--rpc_socket_port", str(rpc_port)]


class Worker:
    """`/usr/local/bin/vineyardd` → trellis, as a symlink in a temporary root; the socket
    lives in `<root>/var/run/vineyard/` (created by the daemon, like the hostPath)."""

    def __init__(self, etcd_endpoint, size="256Mi", root=None, node="node-a", host="127.0.0.1"):
        self.root = root or tempfile.mkdtemp(prefix="tf", dir="/tmp")
        self.owns_root = root is None
        bindir = os.path.join(self.root, "usr", "local", "bin")
        os.makedirs(bindir, exist_ok=True)
        self.exe = os.path.join(bindir, "vineyardd")
        if not os.path.lexists(self.exe):
            os.symlink(os.path.abspath(cluster_lib.trellis_bin()), self.exe)
        self.socket_dir = os.path.join(self.root, "var", "run", "vineyard")
        self.socket = os.path.join(self.socket_dir, "vineyard-worker.sock")
        self.rpc_port = cluster_lib.free_port()
        self.size = size
        self.etcd_endpoint = etcd_endpoint
        self.node = node
        self.host = host
        self.process = None
        self.n = 0

    def argv(self):
        return fluid_argv(self.exe, self.socket, self.size, self.etcd_endpoint, self.rpc_port)

    def env(self):
        env = dict(os.environ)
        env.pop("VINEYARD_IPC_SOCKET", None)
        env["MY_HOST_NAME"] = self.host
        env["MY_NODE_NAME"] = self.node
        env["MY_POD_IP"] = self.host
        return env

    def spawn(self, preexec_fn=None):
        self.n += 1
        log = os.path.join(self.root, "daemon-%d.log" % self.n)
        self.process = cluster_lib.daemons.Daemon(
            self.argv(), self.socket, log, label="worker", env=self.env(), preexec_fn=preexec_fn,
            rpc_port=self.rpc_port, rpc_host=self.host).spawn()
        return self

    def start(self, timeout=90, preexec_fn=None):
        self.spawn(preexec_fn)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=90):
        self.process.wait_ready(timeout)

    def run_to_exit(self, timeout=60):
        """Starts a worker that is expected to refuse to start; returns (exit status, log)."""
        self.spawn()
        try:
            self.process.proc.wait(timeout=timeout)
        except Exception:
            self.process.kill()
            raise
        self.process._close_log()
        return self.process.proc.returncode, self.process.log_tail()

    def request(self, message):
        return cluster_lib.raw_request(self.socket, message)

    def stop(self):
        return self.process.stop() if self.process else None

    def cleanup(self):
        if self.process is not None:
            self.process.stop()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


def etcd_get_prefix(endpoint, prefix):
    """{key: value} under `prefix`, through etcd's v3 JSON gateway."""
    def b64(s):
        return base64.b64encode(s.encode()).decode()

    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": b64(prefix), "range_end": b64(end)}).encode()
    req = urllib.request.Request(endpoint + "/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        reply = json.loads(r.read())
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in reply.get("kvs", [])}


def make_stale_socket(path):
    """A socket file nobody listens on (what a killed daemon leaves in the hostPath)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
