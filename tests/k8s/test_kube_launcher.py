"""`trellis flow run --on kubernetes` against a fake API server and a real etcd.

The fake (fake_apiserver.py) plays the API server and the cluster's behaviour (scheduling,
exit codes, daemons publishing outputs in etcd); the launcher is the real binary, with its
real placement, fallback, retries, record, logs, cancel, resume and cleanup.
"""

import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.timeout(600)

PLACE_FLOW = """
name: place
max_parallel: 2
runtime: {replicas: 2, size: 1Gi}
steps:
  - {name: a, python: {file: steps.py, function: a}, outputs: [x]}
  - {name: b, python: {file: steps.py, function: a}, outputs: [y]}
  - {name: c, python: {file: steps.py, function: a}, inputs: [x, y], outputs: [z]}
  - {name: d, python: {file: steps.py, function: a}, inputs: [z]}
"""

CHAIN_FLOW = """
name: chain
steps:
  - {name: a, python: {file: steps.py, function: a}, outputs: [x]}
  - {name: b, python: {file: steps.py, function: a}, inputs: [x], outputs: [y], retries: 1, retry_delay: 0.1}
  - {name: c, python: {file: steps.py, function: a}, inputs: [y]}
"""


def steps_of(record):
    return {s["name"]: s for s in record["steps"]}


def test_placement_fallback_logs_and_cleanup(kube):
    kube.cluster.sizes = {"x": 5000, "y": 100}
    kube.cluster.no_room = {"c": "node-a"}  # node-a has no room when c arrives
    flow = kube.flow(PLACE_FLOW)
    out = kube.trellis("flow", "run", flow, "--run-id", "place-1", *kube.kube_args())
    assert out.returncode == 0, out.stdout + out.stderr

    jobs = kube.cluster.step_jobs()
    # a and b have no inputs: spread over the two nodes (one each).
    first = sorted(jobs[:2])
    assert [j[0] for j in first] == ["a", "b"]
    assert {j[3] for j in first} == {"node-a", "node-b"}
    ran = {j[0]: j[3] for j in jobs if j[3]}
    # c's inputs: 5000 bytes on a's node, 100 on b's: pinned there (required), which has no
    # room, so it was resubmitted with preferred affinity to the same node and ran elsewhere.
    c_jobs = [j for j in jobs if j[0] == "c"]
    assert c_jobs == [("c", "required", ran["a"], None), ("c", "preferred", ran["a"], ran["b"])], jobs
    # d reads z, which c left on the node it actually ran on.
    assert [j for j in jobs if j[0] == "d"] == [("d", "required", ran["b"], ran["b"])]
    assert [j[0] for j in jobs] [2:] == ["c", "c", "d"]
    # The unschedulable Job was deleted before the resubmission.
    c_required = [b["metadata"]["name"] for b in kube.cluster.created
                  if kube.cluster.env_of(b).get("TRELLIS_STEP") == "c"][0]
    assert (c_required, "Background") in kube.cluster.deleted_jobs

    record = kube.record("place-1")
    assert record["state"] == "succeeded"
    steps = steps_of(record)
    assert all(s["state"] == "succeeded" for s in steps.values())
    assert steps["c"]["replica"] == 0 and steps["d"]["replica"] == 1
    assert [r["node"] for r in record["replicas"]] == ["node-a", "node-b"]

    # flow logs: the pod's log, and the fallback note.
    logs = kube.trellis("flow", "logs", "place-1", "c")
    assert logs.returncode == 0
    assert "step c attempt 1 on %s exit 0" % ran["b"] in logs.stdout
    assert "resubmitted with preferred affinity" in logs.stderr
    assert "Insufficient memory" in logs.stderr
    ls = kube.trellis("flow", "ls")
    assert "place-1" in ls.stdout

    # Static parts applied; the run's Jobs and code ConfigMap deleted at the end; its objects
    # deleted by cleanup Jobs on the nodes that held them.
    kinds = sorted(o["kind"] for o in kube.cluster.applied)
    assert kinds == ["ConfigMap", "Dataset", "VineyardRuntime"]
    assert "trellis.io/run=place-1" in kube.cluster.deleted_collections
    code = [o for o in kube.cluster.applied if o["kind"] == "ConfigMap"][0]
    assert code["metadata"]["name"] == "place-code"
    assert code["data"]["steps.py"] if "steps.py" in code["data"] else any("def a()" in v for v in code["data"].values())
    c_body = [b for b in kube.cluster.created if kube.cluster.env_of(b).get("TRELLIS_STEP") == "c"][1]
    pod = c_body["spec"]["template"]["spec"]
    assert c_body["spec"]["backoffLimit"] == 0 and "activeDeadlineSeconds" not in pod
    env = kube.cluster.env_of(c_body)
    assert env["TRELLIS_FETCH"] == "1" and env["VINEYARD_IPC_SOCKET"] == "/var/run/vineyard-worker.sock"
    assert {"name": "fluid-dataset-vol", "persistentVolumeClaim": {"claimName": "place"}} in pod["volumes"]
    assert kube.run_names("place-1") == []
    cleaned = {n for _, names in kube.cluster.cleanups for n in names}
    assert {"place-1/x", "place-1/y", "place-1/z"} <= cleaned
    for node, names in kube.cluster.cleanups:
        assert node in ("node-a", "node-b")
    # Residency came from etcd through the API server's service proxy; static parts by
    # server-side apply.
    assert any(m[1] == "/api/v1/namespaces/flows/services/etcd:2379/proxy/v3/kv/range" for m in kube.cluster.log)
    patches = [m for m in kube.cluster.log if m[0] == "PATCH"]
    assert len(patches) == 3
    assert all(m[3] == "application/apply-patch+yaml" and m[2]["fieldManager"] == "trellis" for m in patches)


def test_failure_propagation_retries_and_resume(kube):
    kube.cluster.exit_codes = {"b": [3, 3]}
    flow = kube.flow(CHAIN_FLOW)
    out = kube.trellis("flow", "run", flow, "--run-id", "chain-1", *kube.kube_args())
    assert out.returncode == 1, out.stdout + out.stderr
    jobs = [j[0] for j in kube.cluster.step_jobs()]
    assert jobs == ["a", "b", "b"]  # one retry, and c never submitted
    record = kube.record("chain-1")
    assert record["state"] == "failed"
    steps = steps_of(record)
    assert steps["a"]["state"] == "succeeded"
    assert steps["b"]["state"] == "failed" and steps["b"]["exitCode"] == 3 and steps["b"]["attempts"] == 2
    assert steps["c"]["state"] == "upstream-failed"
    # Intermediates are kept for resume.
    assert kube.run_names("chain-1") == ["/vineyard/names/chain-1/x"]
    logs = kube.trellis("flow", "logs", "chain-1", "b")
    assert "exit 3" in logs.stdout

    # b succeeds on its next attempt: resume (no Kubernetes flags: they are kept with the run)
    # reruns b and c only.
    kube.cluster.exit_codes = {"b": [3, 3, 0]}
    before = len(kube.cluster.created)
    out = kube.trellis("flow", "resume", "chain-1")
    assert out.returncode == 0, out.stdout + out.stderr
    rerun = [kube.cluster.env_of(b)["TRELLIS_STEP"] for b in kube.cluster.created[before:]
             if "TRELLIS_STEP" in kube.cluster.env_of(b)]
    assert rerun == ["b", "c"]
    record = kube.record("chain-1")
    assert record["state"] == "succeeded"
    assert steps_of(record)["a"]["reused"] is True
    assert kube.run_names("chain-1") == []


def test_timeout_deletes_the_job(kube):
    kube.cluster.hang = {"slow"}
    flow = kube.flow("""
name: slow
steps:
  - {name: slow, python: {file: steps.py, function: a}, timeout: 1s}
""")
    out = kube.trellis("flow", "run", flow, "--run-id", "slow-1", *kube.kube_args())
    assert out.returncode == 1, out.stdout + out.stderr
    record = kube.record("slow-1")
    s = steps_of(record)["slow"]
    assert s["state"] == "failed" and s["timedOut"] is True
    name = kube.cluster.created[0]["metadata"]["name"]
    assert (name, "Background") in kube.cluster.deleted_jobs
    assert "running on" in kube.trellis("flow", "logs", "slow-1", "slow").stdout


def test_cancel_deletes_the_jobs(kube):
    kube.cluster.hang = {"h"}
    flow = kube.flow("""
name: hang
steps:
  - {name: h, python: {file: steps.py, function: a}, outputs: [x]}
  - {name: after, python: {file: steps.py, function: a}, inputs: [x]}
""")
    proc = kube.popen("flow", "run", flow, "--run-id", "hang-1", *kube.kube_args())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            polled = [m for m in kube.cluster.log if m[1].endswith("/pods") and m[0] == "GET"]
            if kube.cluster.created and polled:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("the step's Job was never polled")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout + stderr
    name = kube.cluster.created[0]["metadata"]["name"]
    assert (name, "Background") in kube.cluster.deleted_jobs
    assert [kube.cluster.env_of(b)["TRELLIS_STEP"] for b in kube.cluster.created] == ["h"]
    record = kube.record("hang-1")
    assert record["state"] == "cancelled"
    assert steps_of(record)["h"]["state"] == "cancelled"
    assert "trellis.io/run=hang-1" in kube.cluster.deleted_collections


def test_bad_kubeconfig_is_a_clear_error(kube):
    kube.write_kubeconfig({"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}})
    flow = kube.flow(CHAIN_FLOW)
    out = kube.trellis("flow", "run", flow, *kube.kube_args())
    assert out.returncode == 2
    assert "exec credential plugin, which is not supported" in out.stderr
    assert kube.cluster.created == []


def test_wrong_token_is_reported(kube):
    kube.write_kubeconfig({"token": "wrong"})
    flow = kube.flow(CHAIN_FLOW)
    out = kube.trellis("flow", "run", flow, *kube.kube_args())
    assert out.returncode == 1
    assert "401" in out.stderr and "Unauthorized" in out.stderr


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(not __import__("shutil").which("openssl"), reason="no openssl CLI")
def test_tls_with_a_client_certificate(etcd):
    import base64

    from k8s_launch import Env

    d = __import__("tempfile").mkdtemp(prefix="k8stls", dir="/tmp")
    try:
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                "-days", "2", "-subj", "/CN=fake-ca", cwd=d)
        with open(os.path.join(d, "san.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")
        for who, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", who + ".key", "-out", who + ".csr",
                    "-subj", "/CN=" + who, cwd=d)
            openssl("x509", "-req", "-in", who + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", who + ".crt", "-days", "2", *extra, cwd=d)
        env = Env(etcd, tls=(os.path.join(d, "server.crt"), os.path.join(d, "server.key"), os.path.join(d, "ca.crt")),
                  token=None)
        try:
            with open(os.path.join(d, "ca.crt"), "rb") as f:
                ca = base64.b64encode(f.read()).decode()
            with open(os.path.join(d, "client.key"), "rb") as f:
                key = base64.b64encode(f.read()).decode()
            env.write_kubeconfig(
                {"client-certificate": os.path.join(d, "client.crt"), "client-key-data": key},
                cluster_extra={"certificate-authority-data": ca})
            flow = env.flow("""
name: tls
steps:
  - {name: a, python: {file: steps.py, function: a}}
""")
            out = env.trellis("flow", "run", flow, "--run-id", "tls-1", *env.kube_args())
            assert out.returncode == 0, out.stdout + out.stderr
            assert env.server.url.startswith("https://")
            assert [j[0] for j in env.cluster.step_jobs()] == ["a"]
            # Without the client certificate the server refuses the handshake.
            env.write_kubeconfig({"token": "x"}, cluster_extra={"certificate-authority-data": ca})
            out = env.trellis("flow", "run", flow, "--run-id", "tls-2", *env.kube_args())
            assert out.returncode != 0
        finally:
            env.close()
    finally:
        __import__("shutil").rmtree(d, ignore_errors=True)


def test_direct_etcd_endpoint(kube, etcd):
    """In the cluster the metadata is reachable directly: --etcd-endpoint skips the API
    server's service proxy."""
    kube.cluster.sizes = {"x": 3000}
    flow = kube.flow(CHAIN_FLOW)
    args = ["--on", "kubernetes", "--kubeconfig", kube.kubeconfig, "--etcd-endpoint", etcd.endpoint]
    out = kube.trellis("flow", "run", flow, "--run-id", "direct-1", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not any("/proxy/" in m[1] for m in kube.cluster.log)
    jobs = kube.cluster.step_jobs()
    assert [j[0] for j in jobs] == ["a", "b", "c"]
    # b reads x where a left it; c reads y where b left it.
    assert jobs[1][1:3] == ("required", jobs[0][3]) and jobs[2][1:3] == ("required", jobs[1][3])
