"""Each check catches a deliberately broken manifest with its own, specific error.

Every case starts from a valid render (asserted valid first), breaks one thing, and expects
the message that names it — so a check that stopped working would fail here."""

import copy

import pytest

from k8s_render import FLOWS
from k8s_checks import validate_docs, schema_errors

_CACHE = {}


def _valid(render, target, *extra):
    key = (target,) + extra
    if key not in _CACHE:
        if extra == ("job",):
            base = [d for d in render(FLOWS["fan-in"], "argo") if d["kind"] == "ConfigMap"]
            docs = base + render(FLOWS["fan-in"], "argo", "--step", "join", "--node", "n1")
        else:
            docs = render(FLOWS["fan-in"], target)
        assert validate_docs(docs) == []
        _CACHE[key] = docs
    return copy.deepcopy(_CACHE[key])


def _first(docs, kind, name=None):
    for d in docs:
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name):
            return d
    raise AssertionError("no %s %s" % (kind, name))


def _pod(dp):
    return dp["spec"]["processor"]["job"]["podSpec"]


def _wf_template(docs, name):
    wf = _first(docs, "Workflow")
    return [t for t in wf["spec"]["templates"] if t["name"] == name][0]


def _dag(docs):
    return _first(docs, "Workflow")["spec"]["templates"][0]["dag"]["tasks"]


# (id, target, breaker(docs), expected substring)
CASES = [
    # --- Fluid CRD schemas (Draft 7 over openAPIV3Schema) and the strict pass
    ("dp-unknown-field-strict", "fluid",
     lambda d: _pod(_first(d, "DataProcess"))["containers"][0].__setitem__("envv", []),
     "strict: Additional properties are not allowed ('envv' was unexpected)"),
    ("dp-typo-in-spec-strict", "fluid",
     lambda d: _first(d, "DataProcess")["spec"].__setitem__("runAftr", {}),
     "strict: Additional properties are not allowed ('runAftr' was unexpected)"),
    ("dp-missing-mountpath", "fluid",
     lambda d: _first(d, "DataProcess")["spec"]["dataset"].pop("mountPath"),
     "spec/dataset: 'mountPath' is a required property"),
    ("dp-runafter-kind", "fluid",
     lambda d: _first(d, "DataProcess", "fan-in-square")["spec"]["runAfter"].__setitem__("kind", "Job"),
     "'Job' is not one of ['DataLoad', 'DataBackup', 'DataMigrate', 'DataProcess']"),
    ("dp-podspec-without-containers", "fluid",
     lambda d: _pod(_first(d, "DataProcess")).pop("containers"),
     "'containers' is a required property"),
    ("runtime-medium", "fluid",
     lambda d: _first(d, "VineyardRuntime")["spec"]["tieredstore"]["levels"][0].__setitem__("mediumtype", "RAM"),
     "'RAM' is not one of ['MEM', 'SSD', 'HDD']"),
    ("runtime-quota-pattern", "fluid",
     lambda d: _first(d, "VineyardRuntime")["spec"]["tieredstore"]["levels"][0].__setitem__("quota", "2 GiB"),
     "spec/tieredstore/levels/0/quota: '2 GiB' does not match"),
    ("dataset-unknown-field-strict", "fluid",
     lambda d: _first(d, "Dataset")["spec"].__setitem__("acessModes", ["ReadOnlyMany"]),
     "strict: Additional properties are not allowed ('acessModes' was unexpected)"),
    # --- Argo Workflow (Draft 2020-12 over schema.json) and its strict pass
    ("wf-entrypoint-type", "argo",
     lambda d: _first(d, "Workflow")["spec"].__setitem__("entrypoint", 3),
     "spec/entrypoint: 3 is not of type 'string'"),
    ("wf-task-without-name", "argo",
     lambda d: _dag(d)[1].pop("name"),
     "'name' is a required property"),
    ("wf-container-typo-strict", "argo",
     lambda d: _wf_template(d, "step-join")["container"].__setitem__("comand", ["x"]),
     "strict: Additional properties are not allowed ('comand' was unexpected)"),
    ("wf-matchfields-without-operator", "argo",
     lambda d: _wf_template(d, "step-square")["affinity"]["nodeAffinity"]
     ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0].pop("operator"),
     "'operator' is a required property"),
    # --- built-in kinds through kubernetes-validate (strict)
    ("configmap-unknown-field", "argo",
     lambda d: _first(d, "ConfigMap").__setitem__("datta", {}),
     "ConfigMap/fan-in-code: (root): Additional properties are not allowed ('datta' was unexpected)"),
    ("daemonset-container-typo", "argo",
     lambda d: _first(d, "DaemonSet")["spec"]["template"]["spec"]["containers"][0].__setitem__("imagePullPolcy", "x"),
     "Additional properties are not allowed ('imagePullPolcy' was unexpected)"),
    ("statefulset-replicas-type", "argo",
     lambda d: _first(d, "StatefulSet")["spec"].__setitem__("replicas", "one"),
     "spec/replicas: 'one' is not of type 'integer'"),
    ("service-port-missing", "argo",
     lambda d: _first(d, "Service")["spec"]["ports"][0].pop("port"),
     "'port' is a required property"),
    ("job-unknown-field", "job",
     lambda d: _first(d, "Job")["spec"].__setitem__("backofLimit", 1),
     "Additional properties are not allowed ('backofLimit' was unexpected)"),
    # --- rules no schema states
    ("dns-name", "fluid",
     lambda d: _first(d, "DataProcess")["metadata"].__setitem__("name", "Fan_In-source"),
     "metadata/name: 'Fan_In-source' is not a DNS-1123 label"),
    ("dataprocess-name-length", "fluid",
     lambda d: _first(d, "DataProcess")["metadata"].__setitem__("name", "a" * 44),
     "metadata/name: 44 characters, over 43"),
    ("label-value-length", "fluid",
     lambda d: _first(d, "DataProcess")["metadata"]["labels"].__setitem__("trellis.io/step", "s" * 64),
     "label value '%s' is invalid" % ("s" * 64)),
    ("label-value-chars", "argo",
     lambda d: _first(d, "DaemonSet")["spec"]["template"]["metadata"]["labels"].__setitem__("trellis.io/flow", "-x"),
     "label value '-x' is invalid"),
    ("dataset-runtime-names", "fluid",
     lambda d: _first(d, "VineyardRuntime")["metadata"].__setitem__("name", "other"),
     "VineyardRuntime/other: no Dataset of the same name and namespace"),
    ("dataprocess-namespace", "fluid",
     lambda d: _first(d, "DataProcess")["spec"]["dataset"].__setitem__("namespace", "elsewhere"),
     "spec/dataset/namespace: 'elsewhere' differs from the DataProcess's namespace 'default'"),
    ("mount-at-dataset-path", "fluid",
     lambda d: _pod(_first(d, "DataProcess"))["containers"][0]["volumeMounts"].append(
         {"name": "trellis-code", "mountPath": "/var/run"}),
     "volume mount at the dataset's mountPath '/var/run'"),
    ("matchfields-key", "job",
     lambda d: _first(d, "Job")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
     ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0]
     .__setitem__("key", "metadata.labels"),
     "matchFields key must be metadata.name, got 'metadata.labels'"),
    ("matchfields-operator", "job",
     lambda d: _first(d, "Job")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
     ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0]
     .__setitem__("operator", "Exists"),
     "matchFields operator must be In or NotIn, got 'Exists'"),
    ("matchfields-values", "job",
     lambda d: _first(d, "Job")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
     ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0]
     .__setitem__("values", ["n1", "n2"]),
     "matchFields needs exactly one value, got ['n1', 'n2']"),
    ("dataprocess-restart-policy", "fluid",
     lambda d: _pod(_first(d, "DataProcess")).__setitem__("restartPolicy", "Always"),
     "spec/processor/job/podSpec/restartPolicy: a Job's pod needs Never or OnFailure, got 'Always'"),
    ("job-restart-policy-missing", "job",
     lambda d: _first(d, "Job")["spec"]["template"]["spec"].pop("restartPolicy"),
     "a Job's pod needs Never or OnFailure, got None"),
    ("runafter-target", "fluid",
     lambda d: _first(d, "DataProcess", "fan-in-join")["spec"]["runAfter"].__setitem__("name", "fan-in-nope"),
     "spec/runAfter: DataProcess 'fan-in-nope' is not in the render"),
    ("configmap-item-key", "fluid",
     lambda d: _first(d, "ConfigMap")["data"].pop("steps.py"),
     "ConfigMap 'fan-in-code' has no key 'steps.py'"),
    ("dag-dependency", "argo",
     lambda d: _dag(d)[3].__setitem__("dependencies", ["square", "cubed"]),
     "task join: dependency 'cubed' is not a task"),
    ("dag-task-reference", "argo",
     lambda d: _dag(d)[3].__setitem__("dependencies", ["square"]),
     "task join: refers to tasks.cube, which is not among its dependencies"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_manifest_is_caught(render, case):
    _, target, breaker, expected = case
    docs = _valid(render, target) if target != "job" else _valid(render, "argo", "job")
    breaker(docs)
    errors = validate_docs(docs)
    assert any(expected in e for e in errors), "expected %r in %r" % (expected, errors)


def test_unknown_kind_is_reported():
    assert schema_errors({"apiVersion": "v1", "kind": "Pod2", "metadata": {"name": "x"}}) == [
        "Pod2/x: no schema for v1 Pod2"]
