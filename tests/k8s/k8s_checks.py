"""Offline validation of rendered Kubernetes manifests (no cluster needed).

- Fluid custom resources (Dataset, VineyardRuntime, DataProcess): jsonschema Draft 7 over the
  CRD's ``openAPIV3Schema``, in a strict pass that adds ``additionalProperties: false`` to every
  object schema with ``properties`` and neither ``x-kubernetes-preserve-unknown-fields`` nor
  ``additionalProperties`` (the API server would silently prune an unknown field; we want the
  typo reported). ``metadata`` stays open.
- Argo's Workflow: Draft 2020-12 against ``#/definitions/io.argoproj.workflow.v1alpha1.Workflow``
  of Argo's ``schema.json``, plus the same strict pass over its object definitions.
- Built-in kinds (Job, ConfigMap, DaemonSet, StatefulSet, Service): PyPI ``kubernetes-validate``
  in strict mode (it bundles the schemas, so it works offline).
- Rules no schema states (docs/kubernetes-fluid.md §1.5, §6): DNS-1123 names, DataProcess name
  ≤ 43, label values, Dataset and runtime names equal, DataProcess namespace = dataset
  namespace, no user mount at the dataset mountPath, ``matchFields`` only ``metadata.name``
  with one value and In/NotIn, Job pod restartPolicy Never/OnFailure, and that references
  between the documents (runAfter, ConfigMap items, DAG dependencies) resolve.

Every check returns readable strings ``"<kind>/<name>: <path>: <message>"``; an empty list
means valid.
"""

import copy
import json
import os
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCHEMAS = HERE / "schemas"
# The project's read-only inputs, beside the checkout (as CI lays them out).
SHARED_K8S = REPO.parent / "shared" / "k8s"

CRD_FILES = [
    "data.fluid.io_datasets.yaml",
    "data.fluid.io_vineyardruntimes.yaml",
    "data.fluid.io_dataprocesses.yaml",
]
ARGO_SCHEMA = "argo-workflows-schema.json"
ARGO_WORKFLOW_REF = "#/definitions/io.argoproj.workflow.v1alpha1.Workflow"
# Kubernetes version whose bundled schemas built-in kinds are checked against.
K8S_VERSION = "1.32.0"
BUILTIN_KINDS = {"Job", "ConfigMap", "DaemonSet", "StatefulSet", "Service"}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MAX_DATAPROCESS_NAME = 43
MAX_CONFIGMAP_BYTES = 1048576


# ---------------------------------------------------------------- schemas


def strict(schema, open_paths=(("properties", "metadata"),)):
    """A copy of ``schema`` where unknown properties are errors (see the module docstring).

    ``open_paths`` are paths from the root left untouched (metadata)."""
    out = copy.deepcopy(schema)
    skip = set()
    for p in open_paths:
        node = out
        for k in p:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        skip.add(id(node))

    def walk(node):
        if isinstance(node, dict):
            if id(node) in skip:
                return
            if (
                isinstance(node.get("properties"), dict)
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out)
    return out


def load_crd_schemas(directory=SCHEMAS):
    """``{(apiVersion, kind): openAPIV3Schema}`` of the CRD files in ``directory``."""
    out = {}
    for name in CRD_FILES:
        with open(Path(directory) / name) as f:
            crd = yaml.safe_load(f)
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out[("%s/%s" % (group, v["name"]), kind)] = v["schema"]["openAPIV3Schema"]
    return out


def load_argo_schema(directory=SCHEMAS):
    with open(Path(directory) / ARGO_SCHEMA) as f:
        return json.load(f)


_CACHE = {}


def _crd_validators():
    if "crd" not in _CACHE:
        _CACHE["crd"] = {
            key: (jsonschema.Draft7Validator(s), jsonschema.Draft7Validator(strict(s)))
            for key, s in load_crd_schemas().items()
        }
    return _CACHE["crd"]


def _argo_validators():
    if "argo" not in _CACHE:
        full = load_argo_schema()
        defs = full["definitions"]
        plain = {"$ref": ARGO_WORKFLOW_REF, "definitions": defs}
        strict_defs = {k: strict(v, open_paths=()) for k, v in defs.items()}
        strict_schema = {"$ref": ARGO_WORKFLOW_REF, "definitions": strict_defs}
        _CACHE["argo"] = (
            jsonschema.Draft202012Validator(plain),
            jsonschema.Draft202012Validator(strict_schema),
        )
    return _CACHE["argo"]


def _where(doc):
    meta = doc.get("metadata") or {}
    return "%s/%s" % (doc.get("kind"), meta.get("name") or meta.get("generateName"))


def _path(err):
    return "/".join(str(p) for p in err.absolute_path) or "(root)"


def _schema_errors(doc, validators):
    out = []
    seen = set()
    for label, v in zip(("", "strict: "), validators):
        for e in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
            msg = "%s: %s: %s%s" % (_where(doc), _path(e), label, e.message)
            key = (_path(e), e.message)
            if key not in seen:
                seen.add(key)
                out.append(msg)
    return out


def schema_errors(doc):
    """Schema problems of one document (CRD, Argo Workflow or built-in kind)."""
    kind = doc.get("kind")
    api = doc.get("apiVersion")
    crds = _crd_validators()
    if (api, kind) in crds:
        return _schema_errors(doc, crds[(api, kind)])
    if api == "argoproj.io/v1alpha1" and kind == "Workflow":
        return _schema_errors(doc, _argo_validators())
    if kind in BUILTIN_KINDS:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            return []
        except kubernetes_validate.ValidationError as e:
            # kubernetes-validate stops at the first error; it carries jsonschema's fields.
            return ["%s: %s: %s" % (_where(doc), _path(e), e.message)]
        except kubernetes_validate.SchemaNotFoundError as e:
            return ["%s: %s" % (_where(doc), e.message)]
    return ["%s: no schema for %s %s" % (_where(doc), api, kind)]


# ---------------------------------------------------------------- rules no schema states


def _walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def _pod_specs(doc):
    """(path, podSpec) of every pod spec in a document."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "DataProcess":
        ps = ((spec.get("processor") or {}).get("job") or {}).get("podSpec")
        if ps is not None:
            yield "spec/processor/job/podSpec", ps
    elif kind in ("Job", "DaemonSet", "StatefulSet"):
        ps = (spec.get("template") or {}).get("spec")
        if ps is not None:
            yield "spec/template/spec", ps


def rule_errors(docs):
    """Problems no schema catches, across a whole render."""
    out = []
    datasets = {}
    runtimes = {}
    dataprocesses = {}
    configmaps = {}
    for d in docs:
        meta = d.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        if d.get("kind") == "Dataset":
            datasets[key] = d
        elif d.get("kind") == "VineyardRuntime":
            runtimes[key] = d
        elif d.get("kind") == "DataProcess":
            dataprocesses[key] = d
        elif d.get("kind") == "ConfigMap":
            configmaps[key] = d

    for d in docs:
        w = _where(d)
        kind = d.get("kind")
        meta = d.get("metadata") or {}
        name = meta.get("name")
        ns = meta.get("namespace")
        # names
        if name is not None:
            if kind in ("ConfigMap",):
                if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
                    out.append("%s: metadata/name: %r is not a DNS-1123 subdomain" % (w, name))
            elif not DNS_LABEL.match(name) or len(name) > 63:
                out.append("%s: metadata/name: %r is not a DNS-1123 label (≤ 63)" % (w, name))
        elif "generateName" in meta:
            stem = meta["generateName"]
            if not DNS_SUBDOMAIN.match(stem + "x") or len(stem) + 5 > 63:
                out.append("%s: metadata/generateName: %r + 5 characters is not a DNS-1123 label" % (w, stem))
        else:
            out.append("%s: metadata: neither name nor generateName" % w)
        if ns is not None and not DNS_LABEL.match(ns):
            out.append("%s: metadata/namespace: %r is not a DNS-1123 label" % (w, ns))
        # label values, everywhere labels appear
        for path, node in _walk(d):
            if path and path[-1] in ("labels", "matchLabels") and isinstance(node, dict):
                for k, v in node.items():
                    if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
                        out.append("%s: %s/%s: label value %r is invalid (≤ 63, alphanumeric ends, [-_.])"
                                   % (w, "/".join(map(str, path)), k, v))
        # matchFields: only metadata.name, In/NotIn, exactly one value
        for path, node in _walk(d):
            if path and path[-1] == "matchFields" and isinstance(node, list):
                for i, req in enumerate(node):
                    p = "/".join(map(str, path + (i,)))
                    if req.get("key") != "metadata.name":
                        out.append("%s: %s: matchFields key must be metadata.name, got %r" % (w, p, req.get("key")))
                    if req.get("operator") not in ("In", "NotIn"):
                        out.append("%s: %s: matchFields operator must be In or NotIn, got %r"
                                   % (w, p, req.get("operator")))
                    if not isinstance(req.get("values"), list) or len(req["values"]) != 1:
                        out.append("%s: %s: matchFields needs exactly one value, got %r" % (w, p, req.get("values")))
        # pods of Jobs (and DataProcess job processors) must not restart in place
        for p, ps in _pod_specs(d):
            if kind in ("Job", "DataProcess") and ps.get("restartPolicy") not in ("Never", "OnFailure"):
                out.append("%s: %s/restartPolicy: a Job's pod needs Never or OnFailure, got %r"
                           % (w, p, ps.get("restartPolicy")))
            # ConfigMap volumes: the ConfigMap and each item key exist in this render
            for v in ps.get("volumes") or []:
                cm = v.get("configMap")
                if cm is None:
                    continue
                target = configmaps.get((ns, cm.get("name")))
                if target is None:
                    out.append("%s: %s/volumes/%s: ConfigMap %r is not in the render" % (w, p, v.get("name"), cm.get("name")))
                    continue
                for item in cm.get("items") or []:
                    if item.get("key") not in (target.get("data") or {}):
                        out.append("%s: %s/volumes/%s: ConfigMap %r has no key %r"
                                   % (w, p, v.get("name"), cm.get("name"), item.get("key")))
        if kind == "ConfigMap":
            size = sum(len(k.encode()) + len(str(v).encode()) for k, v in (d.get("data") or {}).items())
            if size > MAX_CONFIGMAP_BYTES:
                out.append("%s: data: %d bytes, over the %d a ConfigMap may hold" % (w, size, MAX_CONFIGMAP_BYTES))
        if kind == "DataProcess":
            if name is not None and len(name) > MAX_DATAPROCESS_NAME:
                out.append("%s: metadata/name: %d characters, over %d (Fluid's Helm release '<name>-processor' "
                           "must fit in 53)" % (w, len(name), MAX_DATAPROCESS_NAME))
            spec = d.get("spec") or {}
            ds = spec.get("dataset") or {}
            ds_ns = ds.get("namespace", ns)
            if ds_ns != ns:
                out.append("%s: spec/dataset/namespace: %r differs from the DataProcess's namespace %r"
                           % (w, ds_ns, ns))
            if (ds_ns, ds.get("name")) not in datasets:
                out.append("%s: spec/dataset/name: Dataset %r is not in the render" % (w, ds.get("name")))
            mount = ds.get("mountPath")
            for p, ps in _pod_specs(d):
                for group in ("containers", "initContainers"):
                    for c in ps.get(group) or []:
                        for m in c.get("volumeMounts") or []:
                            if m.get("mountPath") == mount:
                                out.append("%s: %s/%s/%s: volume mount at the dataset's mountPath %r"
                                           % (w, p, group, c.get("name"), mount))
                for v in ps.get("volumes") or []:
                    if v.get("name") == "fluid-dataset-vol":
                        out.append("%s: %s/volumes: the name 'fluid-dataset-vol' is Fluid's" % (w, p))
            ra = spec.get("runAfter")
            if ra and ra.get("kind") == "DataProcess":
                if (ra.get("namespace", ns), ra.get("name")) not in dataprocesses:
                    out.append("%s: spec/runAfter: DataProcess %r is not in the render" % (w, ra.get("name")))
        if kind == "Workflow":
            out.extend(_workflow_rule_errors(d))

    for key in runtimes:
        if key not in datasets:
            out.append("VineyardRuntime/%s: no Dataset of the same name and namespace (Fluid binds them by name)"
                       % key[1])
    for key in datasets:
        if runtimes and key not in runtimes:
            out.append("Dataset/%s: no VineyardRuntime of the same name and namespace" % key[1])
    return out


def _workflow_rule_errors(d):
    out = []
    w = _where(d)
    spec = d.get("spec") or {}
    templates = {t.get("name"): t for t in spec.get("templates") or []}
    if spec.get("entrypoint") not in templates:
        out.append("%s: spec/entrypoint: no template %r" % (w, spec.get("entrypoint")))
    for t in templates.values():
        dag = t.get("dag")
        if not dag:
            continue
        tasks = {x.get("name"): x for x in dag.get("tasks") or []}
        for task in tasks.values():
            deps = task.get("dependencies") or []
            for dep in deps:
                if dep not in tasks:
                    out.append("%s: task %s: dependency %r is not a task" % (w, task.get("name"), dep))
            if task.get("template") not in templates:
                out.append("%s: task %s: no template %r" % (w, task.get("name"), task.get("template")))
            for p in (task.get("arguments") or {}).get("parameters") or []:
                for ref in re.findall(r"\{\{tasks\.([^.}]+)\.", str(p.get("value", ""))):
                    if ref not in deps:
                        out.append("%s: task %s: refers to tasks.%s, which is not among its dependencies"
                                   % (w, task.get("name"), ref))
    return out


def validate_docs(docs):
    """Every schema and rule problem of a render."""
    out = []
    for d in docs:
        out.extend(schema_errors(d))
    out.extend(rule_errors(docs))
    return out
