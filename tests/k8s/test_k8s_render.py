"""Rendered manifests of the example flows validate against the real schemas and rules, and
say what the flow says (dependencies, ordering, placement, names, images, env)."""

import pytest
import yaml

from k8s_render import FLOWS
from k8s_checks import validate_docs

VARIANTS = {
    "defaults": (),
    "namespace": ("--namespace", "ml-prod"),
    "images": (
        "--namespace", "team-a",
        "--image", "registry.example:5000/ml/trellis:1.2.3",
        "--step-image", "registry.example:5000/ml/trellis-step:1.2.3",
    ),
}


def _ns(variant):
    args = VARIANTS[variant]
    return args[args.index("--namespace") + 1] if "--namespace" in args else "default"


def _by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("target", ["fluid", "argo"])
@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_render_validates(render, flow, target, variant):
    docs = render(FLOWS[flow], target, *VARIANTS[variant])
    assert validate_docs(docs) == []
    ns = _ns(variant)
    assert all(d["metadata"]["namespace"] == ns for d in docs)
    spec = yaml.safe_load(open(FLOWS[flow]))
    steps = [s["name"] for s in spec["steps"]]
    if target == "fluid":
        assert [d["kind"] for d in docs[:3]] == ["Dataset", "VineyardRuntime", "ConfigMap"]
        dps = _by_kind(docs, "DataProcess")
        assert len(dps) == len(steps)
        rt = docs[1]
        assert rt["spec"]["replicas"] == spec["runtime"]["replicas"]
        assert rt["spec"]["tieredstore"]["levels"] == [
            {"mediumtype": "MEM", "quota": spec["runtime"]["size"], "volumeType": "emptyDir"}]
        if variant == "images":
            assert rt["spec"]["worker"]["image"] == "registry.example:5000/ml/trellis"
            assert rt["spec"]["worker"]["imageTag"] == "1.2.3"
        else:
            assert (rt["spec"]["worker"]["image"], rt["spec"]["worker"]["imageTag"]) == ("trellis", "latest")
        for dp in dps:
            pod = dp["spec"]["processor"]["job"]["podSpec"]
            assert pod["restartPolicy"] == "Never"
            (c,) = pod["containers"]
            step_image = "registry.example:5000/ml/trellis-step:1.2.3" if variant == "images" else "trellis-step:latest"
            assert c["image"] == step_image
            env = {e["name"]: e["value"] for e in c["env"]}
            assert env["VINEYARD_IPC_SOCKET"] == "/var/run/vineyard-worker.sock"
            assert env["TRELLIS_NAME_PREFIX"] == env["TRELLIS_RUN_ID"] + "/"
            assert dp["spec"]["dataset"] == {"name": docs[0]["metadata"]["name"], "namespace": ns, "mountPath": "/var/run"}
            # The node must run one of the dataset's workers (Fluid's node label).
            terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            assert terms == [{"matchExpressions": [
                {"key": "fluid.io/s-%s-%s" % (ns, docs[0]["metadata"]["name"]), "operator": "In", "values": ["true"]}]}]
    else:
        assert [d["kind"] for d in docs] == ["Service", "StatefulSet", "DaemonSet", "ConfigMap", "Workflow"]
        wf = docs[-1]
        tasks = wf["spec"]["templates"][0]["dag"]["tasks"]
        assert [t["name"] for t in tasks] and len(tasks) == len(steps)
        ds = docs[2]
        c = ds["spec"]["template"]["spec"]["containers"][0]
        assert ds["spec"]["template"]["spec"]["hostNetwork"] is True
        assert "--etcd_endpoint" in c["command"]
        assert c["command"][c["command"].index("--etcd_endpoint") + 1] == "http://%s.%s.svc:2379" % (docs[0]["metadata"]["name"], ns)
        assert c["readinessProbe"]["exec"]["command"] == ["ls", "/var/run/trellis/vineyard-worker.sock"]
        env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
        assert env["MY_NODE_NAME"] == "spec.nodeName" and env["MY_HOST_NAME"] == "status.podIP"
        size_mi = {"2Gi": 2048, "512Mi": 512}[spec["runtime"]["size"]]
        assert c["resources"]["limits"]["memory"] == "%dMi" % (size_mi + 500)


def _deps(wf):
    return {t["name"]: t.get("dependencies", []) for t in wf["spec"]["templates"][0]["dag"]["tasks"]}


def _affinity(wf, task):
    tasks = {t["name"]: t for t in wf["spec"]["templates"][0]["dag"]["tasks"]}
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    t = templates[tasks[task]["template"]]
    node = [p["value"] for p in (tasks[task].get("arguments") or {}).get("parameters", []) if p["name"] == "node"]
    na = (t.get("affinity") or {}).get("nodeAffinity") or {}
    if "requiredDuringSchedulingIgnoredDuringExecution" in na:
        term = na["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
        assert term == {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["{{inputs.parameters.node}}"]}]}
        return ("required", node[0])
    if "preferredDuringSchedulingIgnoredDuringExecution" in na:
        (p,) = na["preferredDuringSchedulingIgnoredDuringExecution"]
        assert p["weight"] == 100
        assert p["preference"]["matchFields"][0]["values"] == ["{{inputs.parameters.node}}"]
        return ("preferred", node[0])
    assert not node
    return None


def test_argo_fan_out_fan_in(render):
    wf = render(FLOWS["fan-in"], "argo")[-1]
    assert _deps(wf) == {
        "source": [], "square": ["source"], "cube": ["source"], "join": ["square", "cube"], "report": ["source", "join"],
    }
    assert _affinity(wf, "source") is None
    assert _affinity(wf, "square") == ("required", "{{tasks.source.hostNodeName}}")
    assert _affinity(wf, "cube") == ("required", "{{tasks.source.hostNodeName}}")
    # inputs from two producers: preferred, the later one in topological order on a tie
    assert _affinity(wf, "join") == ("preferred", "{{tasks.cube.hostNodeName}}")
    assert _affinity(wf, "report") == ("preferred", "{{tasks.join.hostNodeName}}")
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    assert templates["step-cube"]["retryStrategy"] == {"limit": "1"}
    assert templates["step-join"]["activeDeadlineSeconds"] == "300"
    env = {e["name"]: e["value"] for e in templates["step-source"]["container"]["env"]}
    assert env["FAN_IN_COUNT"] == "100000"
    assert env["TRELLIS_RUN_ID"] == "{{workflow.name}}"
    assert env["TRELLIS_NAME_PREFIX"] == "{{workflow.name}}/"


def test_argo_house_prices_placement(render):
    wf = render(FLOWS["house-prices"], "argo")[-1]
    assert _deps(wf) == {"generate": [], "preprocess": ["generate"], "train": ["preprocess"], "test": ["preprocess", "train"]}
    assert _affinity(wf, "train") == ("required", "{{tasks.preprocess.hostNodeName}}")
    # x_test, y_test from preprocess and model from train: most inputs come from preprocess
    assert _affinity(wf, "test") == ("preferred", "{{tasks.preprocess.hostNodeName}}")


def _run_after(docs):
    return {d["metadata"]["labels"]["trellis.io/step"]: (d["spec"].get("runAfter") or {}).get("name")
            for d in _by_kind(docs, "DataProcess")}


def test_fluid_fan_in_is_chained_in_topological_order(render):
    docs = render(FLOWS["fan-in"], "fluid")
    assert _run_after(docs) == {
        "source": None, "square": "fan-in-source", "cube": "fan-in-square", "join": "fan-in-cube",
        "report": "fan-in-join",
    }
    join = [d for d in _by_kind(docs, "DataProcess") if d["metadata"]["name"] == "fan-in-join"][0]
    assert join["metadata"]["annotations"]["trellis.io/depends-on"] == "square,cube"
    assert "chained in topological order because step 'join'" in join["metadata"]["annotations"]["trellis.io/run-after"]


def test_fluid_house_prices_runs_after_the_covering_step(render):
    docs = render(FLOWS["house-prices"], "fluid")
    assert _run_after(docs) == {
        "generate": None, "preprocess": "house-prices-generate", "train": "house-prices-preprocess",
        "test": "house-prices-train",
    }
    test = _by_kind(docs, "DataProcess")[-1]
    assert test["metadata"]["annotations"] == {
        "trellis.io/depends-on": "preprocess,train",
        "trellis.io/run-after": "train: every other dependency is upstream of it",
    }


def test_code_configmap_holds_the_steps_files_and_the_bootstrap(render):
    for flow, file in (("house-prices", "pipeline.py"), ("fan-in", "steps.py")):
        for target in ("fluid", "argo"):
            docs = render(FLOWS[flow], target)
            (cm,) = _by_kind(docs, "ConfigMap")
            assert cm["data"][file] == (FLOWS[flow].parent / file).read_text()
            boot = cm["data"]["trellis-bootstrap.py"]
            compile(boot, "trellis_step.py", "exec")
            assert "TRELLIS_NAME_PREFIX" in boot and "def install" in boot


def test_long_run_id_is_shortened_stably(render):
    run_id = "a-very-long-run-identifier-for-the-house-prices-flow"
    docs = render(FLOWS["house-prices"], "fluid", "--run-id", run_id)
    names = [d["metadata"]["name"] for d in _by_kind(docs, "DataProcess")]
    assert all(len(n) <= 43 for n in names)
    assert len(set(names)) == len(names)
    assert names == [d["metadata"]["name"] for d in _by_kind(render(FLOWS["house-prices"], "fluid", "--run-id", run_id), "DataProcess")]
    assert validate_docs(docs) == []
    env = {e["name"]: e["value"] for e in _by_kind(docs, "DataProcess")[0]["spec"]["processor"]["job"]["podSpec"]["containers"][0]["env"]}
    assert env["TRELLIS_NAME_PREFIX"] == run_id + "/"


@pytest.mark.parametrize("target,kind", [("fluid", "DataProcess"), ("argo", "Job")])
@pytest.mark.parametrize("placement", [(), ("--node", "node-7"), ("--node", "node-7", "--prefer")])
def test_single_step_objects_validate(render, target, kind, placement):
    """What the launcher submits per step (the public builders), with each affinity shape."""
    docs = render(FLOWS["fan-in"], target, "--step", "join", "--namespace", "ml", *placement)
    (doc,) = docs
    assert doc["kind"] == kind
    # a DataProcess alone names a Dataset that is not in this render; validate with it
    extra = render(FLOWS["fan-in"], "fluid", "--namespace", "ml")[:3] if target == "fluid" else \
        [d for d in render(FLOWS["fan-in"], "argo", "--namespace", "ml") if d["kind"] == "ConfigMap"]
    assert validate_docs(extra + docs) == []
    pod = doc["spec"]["processor"]["job"]["podSpec"] if kind == "DataProcess" else doc["spec"]["template"]["spec"]
    na = (pod.get("affinity") or {}).get("nodeAffinity", {})
    node_term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-7"]}]}
    if placement == ():
        assert "preferredDuringSchedulingIgnoredDuringExecution" not in na
    elif "--prefer" in placement:
        assert na["preferredDuringSchedulingIgnoredDuringExecution"] == [{"weight": 100, "preference": node_term}]
    else:
        terms = na["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert len(terms) == 1 and terms[0]["matchFields"] == node_term["matchFields"]
    if kind == "Job":
        assert doc["spec"]["backoffLimit"] == 0
        assert pod["activeDeadlineSeconds"] == 300
        assert {"name": "trellis-socket", "hostPath": {"path": "/runtime-mnt/trellis/ml/fan-in", "type": "DirectoryOrCreate"}} in pod["volumes"]


def test_render_errors_are_clear(tmp_path):
    from k8s_render import run_render

    flow = tmp_path / "flow.yaml"
    flow.write_text("name: f\nsteps:\n  - {name: a, python: {file: missing.py, function: f}}\n")
    p = run_render(flow, "fluid", check=False)
    assert p.returncode == 1 and "missing.py" in p.stderr and p.stdout == ""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: f\nsteps:\n  - {name: a, python: {file: x.py}, inputs: [nothing]}\n")
    p = run_render(bad, "argo", check=False)
    assert p.returncode == 2 and "nothing" in p.stderr
    p = run_render(FLOWS["fan-in"], "kubeflow", check=False)
    assert p.returncode != 0 and "fluid or argo" in p.stderr
    p = run_render(FLOWS["fan-in"], "fluid", "--namespace", "Not_A_Namespace", check=False)
    assert p.returncode == 2 and "DNS-1123" in p.stderr
    outside = tmp_path / "sub" / "flow.yaml"
    outside.parent.mkdir()
    outside.write_text("name: f\nsteps:\n  - {name: a, python: {file: ../x.py}}\n")
    p = run_render(outside, "fluid", check=False)
    assert p.returncode == 2 and "outside the flow's directory" in p.stderr


POD_FLOW = """
name: pods
steps:
  - name: prep
    python: {file: steps.py, function: a}
    outputs: [x]
    kubernetes:
      image: python:3.11-slim
      packages: [numpy, "pandas<2.2"]
      pip_index_url: https://pypi.example/simple
      volumes:
        - {name: data, persistentVolumeClaim: {claimName: pvc-oss}}
        - {name: scratch, emptyDir: {}}
      volume_mounts:
        - {name: data, mountPath: /data}
        - {name: scratch, mountPath: /scratch, readOnly: false}
  - {name: use, python: {file: steps.py, function: a}, inputs: [x]}
"""


@pytest.mark.parametrize("target", ["fluid", "argo"])
def test_step_pod_additions_render_and_validate(render, tmp_path, target):
    """A step's `kubernetes:` image, packages and volumes reach its pod (DataProcess, Job or
    Argo template) and the documents still pass the real schemas; other steps are unchanged."""
    (tmp_path / "steps.py").write_text("def a():\n    pass\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text(POD_FLOW)
    docs = render(flow, target)
    assert validate_docs(docs) == []
    if target == "fluid":
        pods = {d["metadata"]["name"]: d["spec"]["processor"]["job"]["podSpec"] for d in _by_kind(docs, "DataProcess")}
        volumes_of = lambda name: pods[name]["volumes"]  # noqa: E731
        container_of = lambda name: pods[name]["containers"][0]  # noqa: E731
        prep = [n for n in pods if "prep" in n][0]
        use = [n for n in pods if "use" in n][0]
    else:
        (wf,) = _by_kind(docs, "Workflow")
        templates = {t["name"]: t for t in wf["spec"]["templates"]}
        volumes_of = lambda name: templates[name].get("volumes", [])  # noqa: E731
        container_of = lambda name: templates[name]["container"]  # noqa: E731
        prep, use = "step-prep", "step-use"
    c = container_of(prep)
    assert c["image"] == "python:3.11-slim"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TRELLIS_PIP_INSTALL"] == "numpy\npandas<2.2"
    assert env["TRELLIS_PIP_INDEX_URL"] == "https://pypi.example/simple"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "pvc-oss"}} in volumes_of(prep)
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert {"name": "scratch", "mountPath": "/scratch", "readOnly": False} in c["volumeMounts"]
    other = container_of(use)
    assert "TRELLIS_PIP_INSTALL" not in {e["name"] for e in other["env"]}
    assert not any(m["name"] in ("data", "scratch") for m in other["volumeMounts"])


@pytest.mark.parametrize("bad, message", [
    ("volumes: [{name: vineyard, emptyDir: {}}]", "Trellis's own"),
    ("volumes: [{emptyDir: {}}]", "needs a name"),
    ("volume_mounts: [{name: nowhere, mountPath: /x}]", "names no volume"),
    ("volumes: [{name: d, emptyDir: {}}]\n      volume_mounts: [{name: d, mountPath: /var/run}]", "mounted already"),
    ("volumes: [{name: d, emptyDir: {}}]\n      volume_mounts: [{name: d, mountPath: rel}]", "not absolute"),
    ("imagee: x", "imagee"),
])
def test_step_pod_additions_that_cannot_make_a_pod_are_refused(tmp_path, bad, message):
    from k8s_render import run_render

    (tmp_path / "steps.py").write_text("def a():\n    pass\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: f\nsteps:\n  - name: a\n    python: {file: steps.py, function: a}\n"
                    "    kubernetes:\n      %s\n" % bad)
    p = run_render(flow, "argo", check=False)
    assert p.returncode != 0 and message in p.stderr, p.stderr
    assert p.stdout == ""
