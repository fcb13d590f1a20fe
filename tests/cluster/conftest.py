"""Fixtures for the cluster suite: a real etcd on loopback and `trellis serve --meta etcd`
daemons ($TRELLIS_BIN, default .build/debug/trellis) that share a key prefix.

Skipped as a whole when no etcd binary is found (scripts/setup-etcd.sh installs one).
"""

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster_lib  # noqa: E402

ETCD = cluster_lib.find_etcd()


def pytest_collection_modifyitems(config, items):
    if ETCD:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    skip = pytest.mark.skip(
        reason="no etcd binary (looked at $ETCD_BIN, PATH, /usr/bin/etcd); "
        "run scripts/setup-etcd.sh to install one")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


def pytest_report_header(config):
    return "cluster suite: etcd %s, trellis %s" % (ETCD or "MISSING", cluster_lib.trellis_bin())


def _start_etcd():
    try:
        return cluster_lib.Etcd(ETCD).start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def shared_etcd():
    """One etcd for the tests that do not disturb it (each cluster has its own prefix)."""
    e = _start_etcd()
    yield e
    e.cleanup()


@pytest.fixture
def private_etcd():
    """An etcd of the test's own, for tests that kill or restart it."""
    e = _start_etcd()
    yield e
    e.cleanup()


class Cluster:
    """Daemons started by a test; all are stopped (by PID) at teardown. A daemon that died
    without the test killing it fails the test."""

    def __init__(self, etcd):
        self.etcd = etcd
        self.prefix = "/trellis-test-" + uuid.uuid4().hex[:12]
        self.nodes = []
        self.killed = set()

    def start(self, n=1, **kwargs):
        started = []
        for _ in range(n):
            node = cluster_lib.Node(self.etcd.endpoint, self.prefix, **kwargs)
            self.nodes.append(node)
            try:
                node.start()
            except RuntimeError as e:
                pytest.fail(str(e), pytrace=False)
            started.append(node)
        return started

    def stop(self, node):
        """Stops `node` gracefully (SIGTERM); it is not reported as crashed."""
        self.killed.add(id(node))
        return node.stop()

    def kill(self, node, sig=9):
        self.killed.add(id(node))
        node.kill(sig)

    def finish(self):
        crashed = []
        for node in self.nodes:
            if id(node) not in self.killed and node.process is not None and not node.alive():
                crashed.append("%s (exit %s)\n%s" % (node.socket, node.process.proc.returncode, node.log_tail()))
            node.cleanup()
        return crashed


def _cluster(etcd):
    c = Cluster(etcd)
    yield c
    crashed = c.finish()
    if crashed:
        pytest.fail("daemon died during the test:\n" + "\n".join(crashed), pytrace=False)


@pytest.fixture
def cluster(shared_etcd):
    """Start daemons with cluster.start(n, lease_ttl=…, size=…) on a fresh prefix."""
    yield from _cluster(shared_etcd)


@pytest.fixture
def private_cluster(private_etcd):
    """Like `cluster`, on an etcd the test may kill and restart (private_cluster.etcd)."""
    yield from _cluster(private_etcd)


@pytest.fixture(scope="module")
def trio(shared_etcd):
    """Three daemons A, B, C of one cluster shared by a module's tests."""
    gen = _cluster(shared_etcd)
    c = next(gen)
    c.start(3, size="1Gi")
    yield c
    next(gen, None)
