"""Fixtures for the Kubernetes render and launcher tests (helpers live in k8s_render.py,
k8s_checks.py and k8s_launch.py, not here: several suites under tests/ have a conftest.py,
so `import conftest` is ambiguous)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import k8s_launch  # noqa: E402
import k8s_render  # noqa: E402


@pytest.fixture(scope="session")
def render():
    return k8s_render.render_docs


@pytest.fixture
def etcd():
    """A real etcd on loopback (the cluster metadata of the launcher tests)."""
    if not k8s_launch.ETCD:
        pytest.skip("no etcd binary (run scripts/setup-etcd.sh)")
    e = k8s_launch.cluster_lib.Etcd(k8s_launch.ETCD).start()
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture
def kube(etcd):
    """A fake API server (token auth) in front of etcd, two registered daemons, a kubeconfig."""
    env = k8s_launch.Env(etcd)
    env.write_kubeconfig({"token": "secret-token"})
    try:
        yield env
    finally:
        env.close()
