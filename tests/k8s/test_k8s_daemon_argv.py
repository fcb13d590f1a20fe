"""The rendered daemon command lines start a working Trellis: the Argo target's DaemonSet
argv (with only what a node would differ in swapped: socket dir, ports on 127.0.0.1, the etcd
address) and, through a `vineyardd` symlink as the Containerfile makes it, the argv Fluid's
chart gives its workers (docs/kubernetes-fluid.md §2.3)."""

import os
import shutil
import sys
import tempfile

import pytest

from k8s_render import FLOWS, render_docs, trellis_bin

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))

import cluster_lib  # noqa: E402


@pytest.fixture
def etcd():
    if not cluster_lib.find_etcd():
        pytest.fail("no etcd binary (scripts/setup.sh installs Debian's etcd-server)")
    e = cluster_lib.Etcd().start()
    yield e
    e.cleanup()


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="k8s", dir="/tmp")  # UNIX socket paths must stay short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _start(argv, env, workdir, socket):
    proc = cluster_lib.Process(argv, os.path.join(workdir, "daemon.log"), env).spawn()
    try:
        cluster_lib.wait_until(lambda: cluster_lib.unix_accepts(socket) or not proc.alive(), 120, what="socket")
    except TimeoutError:
        proc.kill()
        raise
    if not proc.alive():
        pytest.fail("daemon exited: %s" % proc.log_tail())
    return proc


def _put_and_get(socket):
    import numpy as np
    import vineyard

    c = vineyard.connect(socket)
    c.put(np.arange(5.0), name="probe", persist=True)
    got = c.get(name="probe")
    c.close()
    return list(got)


def test_daemonset_command_line_serves_and_registers_in_etcd(etcd, workdir):
    docs = render_docs(FLOWS["fan-in"], "argo", "--namespace", "ml")
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    c = ds["spec"]["template"]["spec"]["containers"][0]
    argv = list(c["command"])
    assert argv[:2] == ["/usr/local/bin/trellis", "serve"]
    socket = os.path.join(workdir, "vineyard-worker.sock")
    swaps = {
        "/usr/local/bin/trellis": trellis_bin(),
        "/var/run/trellis/vineyard-worker.sock": socket,
        "http://fan-in-etcd.ml.svc:2379": etcd.endpoint,
        "0.0.0.0": "127.0.0.1",  # tests listen on loopback only
        "9600": str(cluster_lib.free_port()),
    }
    assert all(k in argv for k in swaps), argv
    argv = [swaps.get(a, a) for a in argv]
    env = dict(os.environ, MY_NODE_NAME="node-a", MY_HOST_NAME="127.0.0.1")
    proc = _start(argv, env, workdir, socket)
    try:
        assert _put_and_get(socket) == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert etcd.keys("/vineyard"), "the daemon did not register under the rendered --etcd_prefix"
    finally:
        assert proc.stop() == 0


def test_fluid_worker_command_line_joins_etcd(etcd, workdir):
    link = os.path.join(workdir, "vineyardd")
    os.symlink(trellis_bin(), link)
    socket = os.path.join(workdir, "vineyard-worker.sock")
    # docs/kubernetes-fluid.md §2.3, with the size small and the port free.
    argv = [link, "--socket", socket, "--size", "64Mi", "--reserve_memory", "--meta_timeout", "120",
            "--etcd_prefix", "/vineyard", "--etcd_endpoint", etcd.endpoint,
            "--rpc_socket_port", str(cluster_lib.free_port())]
    env = dict(os.environ, MY_NODE_NAME="node-a", MY_HOST_NAME="127.0.0.1")
    proc = _start(argv, env, workdir, socket)
    try:
        assert _put_and_get(socket) == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert etcd.keys("/vineyard"), "a Fluid worker must register in the runtime's etcd"
    finally:
        proc.stop()
