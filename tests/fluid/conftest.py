"""Fixtures for the Fluid suite: Trellis started exactly as Fluid's VineyardRuntime chart
starts its worker (docs: /work/shared/docs/kubernetes-fluid.md §2.3–2.7), against a real
etcd on 127.0.0.1. Reuses tests/cluster/cluster_lib.py; skipped without an etcd binary."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "cluster"))
sys.path.insert(0, HERE)

import cluster_lib  # noqa: E402

ETCD = cluster_lib.find_etcd()


def pytest_collection_modifyitems(config, items):
    if ETCD:
        return
    skip = pytest.mark.skip(reason="no etcd binary (looked at $ETCD_BIN, PATH, /usr/bin/etcd); run scripts/setup-etcd.sh")
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(skip)


@pytest.fixture
def etcd():
    """A private etcd (the chart's prefix `/vineyard` is used as is, so no sharing)."""
    try:
        e = cluster_lib.Etcd(ETCD).start()
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    yield e
    e.cleanup()
