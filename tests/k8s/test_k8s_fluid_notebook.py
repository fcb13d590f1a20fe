"""The seed tutorial's notebook with the Kubernetes target (issue 15): the same cells that
tests/tutorial runs on a laptop, with ``TRELLIS_TARGET=kubernetes`` and a kubeconfig, go to
a cluster through `trellis flow run --on kubernetes`.

The cluster is the fake API server in front of a real etcd (fake_apiserver.py): it
schedules each Job where its affinity says and "runs" it by publishing the step's outputs
in etcd on that node, so what is checked is what the notebook asks of the cluster — the
Dataset and VineyardRuntime, one Job per processor with the processor's image, packages and
volumes, each step pinned to the node holding its inputs — and that clean_up deletes the
Fluid objects. The cells are read from ../shared/seed at run time, as tests/tutorial does.
"""

import ast
import inspect
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "tutorial"))

import k8s_launch  # noqa: E402
import tutorial_cells as notebook  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def literal_assignments(sources):
    """name -> value of every `name = <literal>` in the cells."""
    out = {}
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    out[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return out


def cells_for(home):
    path = notebook.seed_path(REPO)
    if not os.path.isfile(path):
        pytest.fail("the seed tutorial is missing: %s" % path, pytrace=False)
    with open(path) as f:
        cells = notebook.code_cells(f.read())
    claims = notebook.claim_names([c for c in cells if not notebook.is_magic_only(c)])
    assert len(claims) == 1, claims
    out = []
    for source in cells:
        if notebook.is_magic_only(source) or notebook.is_credentials_cell(source):
            continue
        source, _ = notebook.rewrite_fluid_imports(source)
        source, _ = notebook.replace_upload(source, os.path.join(home, "volumes", claims[0]))
        source, _ = notebook.reduce_rows(source, 1000)
        out.append(source)
    return out, claims[0]


@pytest.fixture
def kube_default(etcd):
    """The fake cluster in namespace `default`: the notebook's ClientConfig() names none."""
    env = k8s_launch.Env(etcd, namespace="default")
    env.write_kubeconfig({"token": "secret-token"})
    try:
        yield env
    finally:
        env.close()


def test_tutorial_notebook_goes_to_the_cluster_with_the_kubernetes_target(kube_default, tmp_path):
    kube = kube_default
    home = str(tmp_path / "home")
    cells, claim = cells_for(home)
    os.makedirs(os.path.join(home, "volumes", claim))
    paths = []
    for i, source in enumerate(cells):
        p = str(tmp_path / ("cell%02d.py" % (i + 1)))
        with open(p, "w") as f:
            f.write(source)
        paths.append(p)
    env = dict(os.environ, TRELLIS_HOME=home, TRELLIS_TARGET="kubernetes", KUBECONFIG=kube.kubeconfig,
               TRELLIS_FLOW_RUN_ARGS="--etcd-service etcd:2379", PYTHONUNBUFFERED="1",
               TRELLIS_BIN=k8s_launch.cluster_lib.trellis_bin())
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "tutorial", "run_cells.py"),
                           str(tmp_path / "snapshot.json")] + paths, cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=500, stdin=subprocess.DEVNULL)
    report = "stdout:\n%s\nstderr:\n%s" % (proc.stdout[-5000:], proc.stderr[-5000:])
    assert proc.returncode == 0, report

    facts = literal_assignments(cells)
    (run_id,) = notebook.run_ids(cells)
    steps = ["%s-step%d" % (run_id, i + 1) for i in range(notebook.count_calls(cells, "process"))]
    assert len(steps) == 3
    done = re.findall(r" - fluidsdk - INFO - DataProcess (\S+) completed$", proc.stdout, re.M)
    assert done == steps, report

    # The static parts: the Dataset and a VineyardRuntime sized as bind_runtime asked.
    applied = {o["kind"]: o for o in kube.cluster.applied}
    (replicas,) = set(notebook._keywords(cells, "replicas"))
    (capacity,) = set(notebook._keywords(cells, "cache_capacity_GiB"))
    runtime = applied["VineyardRuntime"]
    assert runtime["spec"]["replicas"] == replicas
    assert runtime["spec"]["tieredstore"]["levels"][0]["quota"] == "%gGi" % capacity
    assert applied["Dataset"]["metadata"]["name"] == runtime["metadata"]["name"]

    # One Job per processor, in order, each with the processor's pod.
    from trellis.fluid.utils import processor as processor_module
    image = inspect.signature(processor_module.make_processor_from_func).parameters["base_image"].default
    (mount_path,) = notebook.mount_paths(cells)
    jobs = [j for j in kube.cluster.created if "TRELLIS_STEP" in kube.cluster.env_of(j)]
    assert [kube.cluster.env_of(j)["TRELLIS_STEP"] for j in jobs] == steps
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env_of = kube.cluster.env_of(job)
        assert container["image"] == image
        assert env_of["TRELLIS_PIP_INSTALL"].split("\n") == facts["packages_to_install"]
        assert env_of["TRELLIS_PIP_INDEX_URL"] == facts["pip_index_url"]
        claims = [v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        assert len(claims) == 1, pod["volumes"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts[claims[0]["name"]] == mount_path
        # The dataset's claim at /var/run, where Fluid's fuse links the worker's socket.
        by_path = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        dataset_volume = [v for v in pod["volumes"] if v["name"] == by_path["/var/run"]][0]
        assert dataset_volume["persistentVolumeClaim"]["claimName"] == runtime["metadata"]["name"]
        # The step's file is shipped in the run's code ConfigMap, not named by a path of this machine.
        assert container["command"][2:4] == ["--file", "/trellis/code/%s.py" % kube.cluster.env_of(job)["TRELLIS_STEP"]]

    # Placement: train and test read what preprocess wrote, so they are pinned to its node.
    placed = kube.cluster.step_jobs()
    first_node = placed[0][3]
    assert [p[1:4] for p in placed[1:]] == [("required", first_node, first_node)] * 2, placed

    # clean_up deleted the Fluid objects the run applied, and the dataset's local state.
    name = runtime["metadata"]["name"]
    assert sorted(kube.cluster.deleted_custom) == [("datasets", name), ("vineyardruntimes", name)]
    assert not os.path.exists(os.path.join(home, "datasets", "default", name))


def test_kubernetes_target_without_a_launcher_is_a_clear_error(tmp_path):
    """A binary without `--on kubernetes` is refused when the client is made."""
    fake = tmp_path / "trellis"
    fake.write_text("#!/bin/sh\necho 'USAGE: trellis flow run <file>'\n")
    fake.chmod(0o755)
    code = ("from trellis import fluid\n"
            "try:\n"
            "    fluid.FluidClient(fluid.ClientConfig(target='kubernetes', trellis=%r))\n"
            "except RuntimeError as e:\n"
            "    print('ERR', e)\n" % str(fake))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ERR" in out.stdout and "no Kubernetes launcher" in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0
