"""Trellis as the worker of Fluid's VineyardRuntime (issue 11 item 1; kubernetes-fluid.md §2.3, 2.4, 2.7).

The daemon is run through a `vineyardd` symlink with the exact argv Fluid's chart renders,
MY_HOST_NAME=127.0.0.1 and MY_NODE_NAME=node-a, against a real etcd on 127.0.0.1.
"""

import json
import os
import socket
import stat
import struct
import subprocess
import time

import pytest

import cluster_lib
import fluid_lib

PUT_GET = """
import numpy as np, vineyard
c = vineyard.connect(*target)
a = np.arange(100000, dtype=np.int64)
oid = c.put(a)
b = c.get(oid)
assert (b == a).all(), "round trip differs"
print(json.dumps({"id": repr(oid), "instance": c.instance_id if len(target) == 1 else c.remote_instance_id}))
"""


def run_client(target, timeout=120):
    rc, out, err, _ = cluster_lib.run_client(PUT_GET, timeout, target=target)
    assert rc == 0, "client failed (%s):\n%s\n%s" % (rc, out, err)
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def worker(etcd):
    w = fluid_lib.Worker(etcd.endpoint)
    yield w
    w.cleanup()


def test_fluid_argv_serves_ipc_and_rpc_and_publishes_node(worker, etcd):
    # The hostPath survived a crash: a stale socket file is in the way.
    os.makedirs(worker.socket_dir)
    fluid_lib.make_stale_socket(worker.socket)
    worker.start()
    assert os.path.basename(worker.process.argv[0]) == "vineyardd"

    # readiness probe: `ls <socket>`
    assert subprocess.run(["ls", worker.socket], capture_output=True).returncode == 0
    st = os.lstat(worker.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777

    # upstream client over IPC, and over RPC at MY_HOST_NAME:<rpc_socket_port>
    ipc = run_client([worker.socket])
    rpc = run_client(["127.0.0.1", worker.rpc_port])
    assert ipc["instance"] == rpc["instance"]

    # the node name is in cluster_meta, instance_status and the etcd registry
    status = worker.request({"type": "instance_status_request"})["meta"]
    assert status["nodename"] == "node-a"
    assert status["hostname"] == "127.0.0.1"
    assert status["rpc_endpoint"] == "127.0.0.1:%d" % worker.rpc_port
    me = "i%d" % status["instance_id"]
    meta = worker.request({"type": "cluster_meta"})["meta"]
    assert meta[me]["nodename"] == "node-a"
    assert meta[me]["rpc_endpoint"] == "127.0.0.1:%d" % worker.rpc_port
    registry = fluid_lib.etcd_get_prefix(etcd.endpoint, "/vineyard/instances/")
    entry = json.loads(registry["/vineyard/instances/%d" % status["instance_id"]])
    assert entry["nodename"] == "node-a"
    assert entry["instance_id"] == status["instance_id"]
    assert entry["rpc_endpoint"] == "127.0.0.1:%d" % worker.rpc_port

    # preStop: `rm -f <socket>`, then SIGTERM: exit 0, no socket left
    assert subprocess.run(["sh", "-c", "rm -f %s" % worker.socket]).returncode == 0
    assert worker.stop() == 0
    assert not os.path.lexists(worker.socket)


def test_sigterm_exits_zero_and_removes_the_socket(worker):
    worker.start()
    assert worker.stop() == 0
    assert not os.path.lexists(worker.socket)
    # its etcd registration went with it
    assert not any(k.startswith("/vineyard/instances/")
                   for k in fluid_lib.etcd_get_prefix(worker.etcd_endpoint, "/vineyard/instances/"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_socket_usable_by_another_user(worker):
    os.chmod(worker.root, 0o755)  # mkdtemp made it 0700; the hostPath is traversable
    worker.start()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, then register over the socket
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect(worker.socket)
            body = json.dumps(cluster_lib.REGISTER).encode()
            s.sendall(struct.pack("<Q", len(body)) + body)
            (n,) = struct.unpack("<Q", cluster_lib._recv_exact(s, 8))
            reply = json.loads(cluster_lib._recv_exact(s, n))
            os.write(write_end, ("%s %s %d" % (reply["type"], reply.get("code", 0), os.getuid())).encode())
            status = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(write_end, ("error %r" % e).encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        said = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, said
    assert said.split() == ["register_reply", "0", "65534"]


def test_regular_file_at_socket_path_is_refused_and_kept(worker):
    os.makedirs(worker.socket_dir)
    with open(worker.socket, "w") as f:
        f.write("not a socket")
    started = time.monotonic()
    code, log = worker.run_to_exit()
    assert code != 0
    assert "not a socket" in log
    assert time.monotonic() - started < 60  # refused before the etcd wait, not after --meta_timeout
    with open(worker.socket) as f:
        assert f.read() == "not a socket"


def test_live_socket_is_refused(worker, etcd):
    worker.start()
    second = fluid_lib.Worker(etcd.endpoint, root=worker.root)
    second.socket = worker.socket
    try:
        code, log = second.run_to_exit()
        assert code != 0
        assert "in use" in log
        assert cluster_lib.unix_accepts(worker.socket)  # the first one still serves
        run_client([worker.socket])
    finally:
        second.cleanup()


def test_waits_for_etcd_up_to_meta_timeout(tmp_path):
    etcd = cluster_lib.Etcd(cluster_lib.find_etcd())  # ports chosen, not started yet
    w = fluid_lib.Worker(etcd.endpoint)
    try:
        w.spawn()
        time.sleep(2)  # the worker comes first, as in a Helm release; it must wait, not exit
        assert w.process.alive(), w.process.log_tail()
        assert not cluster_lib.unix_accepts(w.socket)
        etcd.start()
        w.wait_ready(timeout=120)
        status = w.request({"type": "instance_status_request"})["meta"]
        keys = fluid_lib.etcd_get_prefix(etcd.endpoint, "/vineyard/instances/")
        assert "/vineyard/instances/%d" % status["instance_id"] in keys
    finally:
        w.cleanup()
        etcd.cleanup()


def test_sigterm_while_waiting_for_etcd_exits_zero():
    etcd = cluster_lib.Etcd(cluster_lib.find_etcd())  # never started: the worker keeps waiting
    w = fluid_lib.Worker(etcd.endpoint)
    try:
        w.spawn()
        time.sleep(1)
        assert w.process.alive(), w.process.log_tail()
        assert w.stop() == 0, w.process.log_tail()  # not killed by the signal, not after --meta_timeout
        assert not os.path.lexists(w.socket)
    finally:
        w.cleanup()
        etcd.cleanup()


@pytest.mark.parametrize("attempt", range(5))
def test_sigterm_right_after_the_socket_appears_exits_zero(worker, attempt):
    worker.spawn()
    cluster_lib.wait_until(lambda: os.path.lexists(worker.socket) or not worker.process.alive(), 90,
                           interval=0.001, what="socket")
    assert worker.stop() == 0, worker.process.log_tail()
    assert not os.path.lexists(worker.socket)
