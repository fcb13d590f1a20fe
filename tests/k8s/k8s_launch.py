"""Helpers of the Kubernetes launcher tests (fixtures in conftest.py): a real etcd on loopback
holding the daemons' instance records (the cluster metadata), a fake API server in front of
it, a kubeconfig pointing there, and a TRELLIS_HOME for the run records.

The launcher is the real `trellis` binary ($TRELLIS_BIN, default .build/debug/trellis).
Tests that use the etcd fixture are skipped when no etcd binary is found
(scripts/setup-etcd.sh installs one).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))

import cluster_lib  # noqa: E402
import fake_apiserver  # noqa: E402

ETCD = cluster_lib.find_etcd()
NODES = {"node-a": 1, "node-b": 2}
NAMESPACE = "flows"


class Env:
    """One fake cluster and what a test needs to run `trellis flow … --on kubernetes` on it."""

    def __init__(self, etcd, tls=None, token="secret-token", namespace=NAMESPACE):
        self.dir = tempfile.mkdtemp(prefix="k8s", dir="/tmp")
        self.meta = fake_apiserver.Etcd(etcd.endpoint)
        for node, instance in NODES.items():
            self.meta.register(instance, node)
        self.cluster = fake_apiserver.FakeCluster(self.meta, NODES, token=token, namespace=namespace)
        self.server = fake_apiserver.FakeAPIServer(self.cluster, tls=tls).start()
        self.home = os.path.join(self.dir, "home")
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")

    def write_kubeconfig(self, user, cluster_extra=None):
        cluster = {"server": self.server.url}
        cluster.update(cluster_extra or {})
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "me", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": self.cluster.namespace}}],
        }
        with open(self.kubeconfig, "w") as f:
            json.dump(config, f)  # JSON is YAML

    def flow(self, text, name="flow.yaml"):
        with open(os.path.join(self.dir, "steps.py"), "w") as f:
            f.write("def a(): pass\n")
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def env(self):
        env = dict(os.environ)
        env["TRELLIS_HOME"] = self.home
        env.pop("KUBECONFIG", None)
        return env

    def kube_args(self):
        return ["--on", "kubernetes", "--kubeconfig", self.kubeconfig, "--etcd-service", "etcd:2379"]

    def trellis(self, *args, timeout=300):
        return subprocess.run(
            [cluster_lib.trellis_bin(), *args], env=self.env(), capture_output=True, text=True, timeout=timeout)

    def popen(self, *args):
        return subprocess.Popen(
            [cluster_lib.trellis_bin(), *args], env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def record(self, run_id):
        out = self.trellis("flow", "status", run_id, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def run_names(self, run_id):
        return self.meta.keys("/vineyard/names/%s/" % run_id)

    def close(self):
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
