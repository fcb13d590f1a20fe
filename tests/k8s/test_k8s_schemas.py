"""The schema fixtures are the shared inputs, unmodified, and the validators work offline."""

import hashlib
import re
import socket

import pytest

import k8s_checks
from k8s_checks import SCHEMAS, SHARED_K8S

SHARED_PATHS = {
    "data.fluid.io_datasets.yaml": "fluid-crds/data.fluid.io_datasets.yaml",
    "data.fluid.io_vineyardruntimes.yaml": "fluid-crds/data.fluid.io_vineyardruntimes.yaml",
    "data.fluid.io_dataprocesses.yaml": "fluid-crds/data.fluid.io_dataprocesses.yaml",
    "argo-workflows-schema.json": "argo-workflows/schema.json",
}


def test_fixtures_match_the_checksums_in_their_readme():
    readme = (SCHEMAS / "README.md").read_text()
    for name in SHARED_PATHS:
        m = re.search(r"([0-9a-f]{64})\s+`?%s`?" % re.escape(name), readme)
        assert m, "README.md lists no sha256 for %s" % name
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == m.group(1)


def test_fixtures_equal_the_shared_copies():
    if not SHARED_K8S.is_dir():
        pytest.skip("no shared/k8s beside the checkout (%s); the checksum test above still pins the fixtures"
                    % SHARED_K8S)
    for name, rel in SHARED_PATHS.items():
        assert (SCHEMAS / name).read_bytes() == (SHARED_K8S / rel).read_bytes(), name


def test_strict_closes_objects_with_properties_only():
    schema = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": {"type": "object", "properties": {"a": {"type": "string"}}},
            "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"b": {}}},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    s = k8s_checks.strict(schema)
    assert s["additionalProperties"] is False
    assert s["properties"]["spec"]["additionalProperties"] is False
    assert "additionalProperties" not in s["properties"]["metadata"]
    assert "additionalProperties" not in s["properties"]["open"]
    assert s["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema  # the input is not changed


def test_every_validator_works_without_network(monkeypatch):
    k8s_checks._CACHE.clear()

    def refuse(*args, **kwargs):
        raise AssertionError("a validator tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    assert k8s_checks.schema_errors(cm) == []
    ds = {"apiVersion": "data.fluid.io/v1alpha1", "kind": "Dataset", "metadata": {"name": "x"},
          "spec": {"accessModes": ["ReadOnlyMany"]}}
    assert k8s_checks.schema_errors(ds) == []
    wf = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "x-"},
          "spec": {"entrypoint": "a", "templates": [{"name": "a", "container": {"image": "busybox"}}]}}
    assert k8s_checks.schema_errors(wf) == []
    k8s_checks._CACHE.clear()
