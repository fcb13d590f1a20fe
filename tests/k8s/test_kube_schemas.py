"""The bodies the launcher actually sends, validated against the real schemas.

A house-prices run (the example flow) against the fake API server, with one step's node out of
room so that both the required and the preferred form of the step Job are sent; every Job,
ConfigMap, Dataset and VineyardRuntime the fake received is then checked: built-in kinds with
kubernetes-validate (strict: unknown fields fail), Fluid kinds against the CRDs'
openAPIV3Schema with additionalProperties closed, plus the rules no schema encodes (DNS-1123
names, label values, matchFields with metadata.name and exactly one value, restartPolicy).
The CRDs are read from tests/k8s/schemas/ when present, else from the project inputs
(/work/shared/k8s/fluid-crds, or $TRELLIS_FLUID_CRDS).
"""

import copy
import glob
import os
import re
import shutil

import jsonschema
import kubernetes_validate
import pytest
import yaml

from k8s_launch import HERE

pytestmark = pytest.mark.timeout(600)

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def crd_dir():
    for d in (os.environ.get("TRELLIS_FLUID_CRDS"), os.path.join(HERE, "schemas"), "/work/shared/k8s/fluid-crds"):
        if d and glob.glob(os.path.join(d, "data.fluid.io_*.yaml")):
            return d
    return None


def crd_schemas():
    out = {}
    for path in glob.glob(os.path.join(crd_dir(), "data.fluid.io_*.yaml")):
        with open(path) as f:
            crd = yaml.safe_load(f)
        group = crd["spec"]["group"]
        for v in crd["spec"]["versions"]:
            out[(group + "/" + v["name"], crd["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return out


def closed(schema, top=True):
    """additionalProperties: false wherever the schema lists properties and allows no more."""
    s = copy.deepcopy(schema)

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields") and path != ("metadata",)):
            node["additionalProperties"] = False
        for k, v in node.get("properties", {}).items():
            walk(v, path + (k,))
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + ("[]",))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + ("*",))

    walk(s, ())
    return s


def semantic_problems(obj):
    problems = []
    name = obj["metadata"]["name"]
    if not DNS_LABEL.match(name) or len(name) > 63:
        problems.append("name %r is not a DNS-1123 label" % name)
    labels = dict(obj["metadata"].get("labels", {}))
    if obj["kind"] == "Job":
        labels.update(obj["spec"]["template"]["metadata"].get("labels", {}))
        pod = obj["spec"]["template"]["spec"]
        if pod.get("restartPolicy") not in ("Never", "OnFailure"):
            problems.append("Job pod restartPolicy %r" % pod.get("restartPolicy"))
        na = pod.get("affinity", {}).get("nodeAffinity", {})
        terms = [t for t in na.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])]
        terms += [p["preference"] for p in na.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        for t in terms:
            for mf in t.get("matchFields", []):
                if mf["key"] != "metadata.name" or mf["operator"] not in ("In", "NotIn") or len(mf["values"]) != 1:
                    problems.append("bad matchFields %r" % mf)
    for k, v in labels.items():
        if len(v) > 63 or not LABEL_VALUE.match(v):
            problems.append("label %s=%r" % (k, v))
    return problems


@pytest.mark.skipif(crd_dir() is None, reason="no Fluid CRDs (tests/k8s/schemas or /work/shared/k8s/fluid-crds)")
def test_house_prices_bodies_validate(kube):
    example = os.path.join(REPO, "examples", "house-prices")
    flow_dir = os.path.join(kube.dir, "house-prices")
    shutil.copytree(example, flow_dir)
    kube.cluster.no_room = {"train": "node-a", "test": "node-a", "preprocess": "node-a"}
    out = kube.trellis("flow", "run", os.path.join(flow_dir, "flow.yaml"), "--run-id", "hp-1",
                       "--image", "registry.example/trellis-step:1", *kube.kube_args())
    assert out.returncode == 0, out.stdout + out.stderr

    bodies = list(kube.cluster.created) + list(kube.cluster.applied)
    jobs = [b for b in kube.cluster.created if "TRELLIS_STEP" in kube.cluster.env_of(b)]
    forms = {kube.cluster.affinity_of(j)[0] for j in jobs}
    assert {"required", "preferred"} <= forms, forms
    assert {kube.cluster.env_of(j)["TRELLIS_STEP"] for j in jobs} == {"generate", "preprocess", "train", "test"}
    assert any("TRELLIS_DELETE" in kube.cluster.env_of(b) for b in kube.cluster.created)  # a cleanup Job too

    schemas = crd_schemas()
    version = kubernetes_validate.latest_version()
    seen = set()
    for body in bodies:
        kind = body["kind"]
        seen.add(kind)
        key = (body["apiVersion"], kind)
        if key in schemas:
            errors = sorted(jsonschema.Draft7Validator(closed(schemas[key])).iter_errors(body), key=str)
            assert not errors, "%s %s: %s" % (kind, body["metadata"]["name"], [e.message for e in errors])
        else:
            body.setdefault("metadata", {}).setdefault("namespace", "flows")
            kubernetes_validate.validate(body, version, strict=True)
        assert semantic_problems(body) == [], body["metadata"]["name"]
    assert seen == {"Job", "ConfigMap", "Dataset", "VineyardRuntime"}


def test_the_validators_catch_mistakes():
    """The checks above can fail: a typo'd field, a Job whose pod may restart, two matchFields values."""
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "flows"},
        "spec": {"template": {"metadata": {"labels": {}}, "spec": {
            "restartPolicy": "Always", "containrs": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]}]}}}}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    problems = semantic_problems(job)
    assert any("restartPolicy" in p for p in problems) and any("matchFields" in p for p in problems)
    if crd_dir():
        schema = closed(crd_schemas()[("data.fluid.io/v1alpha1", "Dataset")])
        bad = {"apiVersion": "data.fluid.io/v1alpha1", "kind": "Dataset", "metadata": {"name": "d"},
               "spec": {"acessModes": ["ReadOnlyMany"]}}
        assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))
