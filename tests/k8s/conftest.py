"""Fixtures for the Kubernetes render and launcher tests: the trellis binary and a render helper."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import k8s_checks  # noqa: E402
import k8s_launch  # noqa: E402

REPO = k8s_checks.REPO
FLOWS = {
    "house-prices": REPO / "examples" / "house-prices" / "flow.yaml",
    "fan-in": REPO / "examples" / "fan-in" / "flow.yaml",
}


def trellis_bin():
    path = os.environ.get("TRELLIS_BIN") or str(REPO / ".build" / "debug" / "trellis")
    if not os.access(path, os.X_OK):
        pytest.fail("no trellis binary at %s: build it (swift build --product trellis) or set TRELLIS_BIN" % path)
    return path


def run_render(flow, target, *args, check=True):
    """``trellis flow render`` of ``flow``; returns the CompletedProcess."""
    cmd = [trellis_bin(), "flow", "render", str(flow), "--target", target, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail("%s exited %d: %s" % (" ".join(cmd), proc.returncode, proc.stderr))
    return proc


def render_docs(flow, target, *args):
    """The documents ``trellis flow render`` prints."""
    return [d for d in yaml.safe_load_all(run_render(flow, target, *args).stdout) if d is not None]


@pytest.fixture(scope="session")
def render():
    return render_docs


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
