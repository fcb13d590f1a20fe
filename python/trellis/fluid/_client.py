"""The Fluid SDK's client, dataset and dataflow calls, on a Trellis runtime.

Mapping (see the package docstring for the user's view):

- a Dataset is a directory ``$TRELLIS_HOME/datasets/<namespace>/<name>`` holding
  ``dataset.json``; it is also the Trellis home of the dataset's runtime and runs;
- ``bind_runtime`` is ``trellis runtime up --replicas N --size <cache_capacity_GiB>Gi`` there;
- a DataFlow is a Trellis flow of command steps (one per ``process``), each running the
  processor's function through the step launcher (``_step.py``) with its volumes mounted,
  chained like ``runAfter`` and placed next to the objects its source reads;
- ``run`` is ``trellis flow run``; ``wait`` follows the run record and logs each step's
  completion on the ``fluidsdk`` logger;
- ``clean_up`` is ``trellis runtime down`` (the memory, and so the runs' objects, are freed)
  and removes the dataset's directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

from .. import flow as _flow
from .._binary import find_trellis
from . import _step, _volumes, constants, models
from .utils.processor import FunctionStep

__all__ = ["ClientConfig", "FluidClient", "FluidDataset", "FluidDataFlow", "FlowHandle"]

logger = logging.getLogger("fluidsdk")

LOCAL = "local"
KUBERNETES = "kubernetes"
_TARGETS = {"local": LOCAL, "kubernetes": KUBERNETES, "k8s": KUBERNETES, "cluster": KUBERNETES}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_LAUNCHER = "trellis_fluid_step.py"
_POLL = 0.2


def _default_namespace() -> str:
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE) as f:
            ns = f.read().strip()
            if ns:
                return ns
    except OSError:
        pass
    return "default"


def _runtime_kind(kind: Optional[str]) -> Optional[str]:
    if not kind:
        return None
    return constants.RUNTIME_KIND_ALIASES.get(kind.lower(), kind)


class ClientConfig:
    """Where the client works.

    The Fluid SDK's arguments are accepted: ``namespace`` (default: the in-cluster namespace,
    else ``"default"``), ``runtime_kind`` (the kind ``bind_runtime`` uses when given none),
    ``kube_config_file``, ``kube_context``, ``kube_client_configuration``.

    ``target`` picks where flows run: ``"local"`` (replicas and steps on this machine) or
    ``"kubernetes"`` (the cluster, through ``trellis flow run --on kubernetes``: each step a
    Job on the node holding its inputs, its processor's image, packages and volumes in its
    pod, the Dataset and VineyardRuntime applied by the launcher). Default:
    ``$TRELLIS_TARGET``, else ``"kubernetes"`` when a kubeconfig or context is given, else
    ``"local"`` — so a notebook's ``ClientConfig()`` runs locally and the same notebook runs on a
    cluster with ``TRELLIS_TARGET=kubernetes``. ``home`` is the Trellis home (default
    ``$TRELLIS_HOME``, else ``~/.trellis``); ``trellis`` the binary (default ``$TRELLIS_BIN``,
    else ``trellis`` on ``PATH``).
    """

    def __init__(self, namespace: Optional[str] = None, runtime_kind: str = constants.VINEYARD_RUNTIME_KIND,
                 kube_config_file: Optional[str] = None, kube_context: Optional[str] = None,
                 kube_client_configuration: Optional[Any] = None, *, target: Optional[str] = None,
                 home: Optional[str] = None, trellis: Optional[str] = None) -> None:
        self.namespace = namespace if namespace is not None else _default_namespace()
        self.runtime_kind = _runtime_kind(runtime_kind)
        self.kube_config_file = kube_config_file
        self.kube_context = kube_context
        self.kube_client_configuration = kube_client_configuration
        chosen = target or os.environ.get("TRELLIS_TARGET") or (
            KUBERNETES if (kube_config_file or kube_context or kube_client_configuration) else LOCAL)
        if chosen.lower() not in _TARGETS:
            raise ValueError("target %r: use 'local' or 'kubernetes'" % chosen)
        self.target = _TARGETS[chosen.lower()]
        self.home = os.path.abspath(os.path.expanduser(
            home or os.environ.get("TRELLIS_HOME") or os.path.join("~", ".trellis")))
        self.trellis = trellis


class FluidClient:
    """Creates and finds datasets (the Fluid SDK's ``FluidClient``)."""

    def __init__(self, config: ClientConfig) -> None:
        if not config:
            raise ValueError("config should not be None")
        if not config.namespace:
            raise ValueError("namespace should not be None")
        self.config = config
        self.trellis = find_trellis(config.trellis)
        if config.target == KUBERNETES:
            self._check_kubernetes()

    def _check_kubernetes(self) -> None:
        """The Kubernetes target runs flows through the binary's launcher (``trellis flow run
        --on kubernetes``): a binary without it is an error now, not at the first run."""
        proc = subprocess.run([self.trellis, "flow", "run", "--help"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
        if "--on" not in proc.stdout + proc.stderr:
            raise RuntimeError(
                "ClientConfig selects the Kubernetes target, but %s has no Kubernetes launcher (`trellis flow run "
                "--on kubernetes`); use a trellis binary built with it, or run locally (TRELLIS_TARGET=local)"
                % self.trellis)

    def _kube_args(self) -> List[str]:
        """``trellis flow run`` options that send a run to the configured cluster, then any
        given in ``$TRELLIS_FLOW_RUN_ARGS`` (e.g. ``--etcd-service``, ``--worker-image``)."""
        c = self.config
        args = ["--on", "kubernetes", "--namespace", c.namespace]
        if c.kube_config_file:
            args += ["--kubeconfig", c.kube_config_file]
        if c.kube_context:
            args += ["--context", c.kube_context]
        return args + shlex.split(os.environ.get("TRELLIS_FLOW_RUN_ARGS", ""))

    # The on-disk state ------------------------------------------------------------------

    def _dataset_home(self, name: str, namespace: str) -> str:
        return os.path.join(self.config.home, "datasets", namespace, name)

    def _load(self, name: str, namespace: str) -> Optional[Dict[str, Any]]:
        try:
            with open(os.path.join(self._dataset_home(name, namespace), "dataset.json")) as f:
                obj: Dict[str, Any] = json.load(f)
                return obj
        except (OSError, ValueError):
            return None

    def _save(self, obj: Dict[str, Any]) -> None:
        home = self._dataset_home(obj["name"], obj["namespace"])
        os.makedirs(home, exist_ok=True)
        tmp = os.path.join(home, ".dataset.json.tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, os.path.join(home, "dataset.json"))

    # The SDK's calls --------------------------------------------------------------------

    def create_dataset(self, dataset_name: str, mount_name: Optional[str] = None, mount_point: Optional[str] = None,
                       mount_path: str = "", mode: str = "ReadOnly", options: Optional[Dict[str, str]] = None,
                       cred_secret_name: Optional[str] = None, cred_secret_options: Optional[Dict[str, str]] = None,
                       namespace: Optional[str] = None, **spec_kwargs: Any) -> None:
        """Creates the dataset ``namespace/dataset_name`` (no mounts: a VineyardRuntime
        dataset holds what the steps put into it)."""
        if mode not in ("ReadOnly", "ReadWrite"):
            raise ValueError("mode must be ReadOnly or ReadWrite")
        if (cred_secret_name is None) != (cred_secret_options is None):
            raise ValueError("cred_secret_name and cred_secret_options must be set together")
        if (mount_name is None) != (mount_point is None):
            raise ValueError("mount_name and mount_point must be set together")
        if mount_point is not None:
            raise ValueError("dataset %s: mounts (mount_point %r) need a caching runtime such as Alluxio; Trellis "
                             "provides VineyardRuntime datasets, which have no mounts" % (dataset_name, mount_point))
        ns = namespace or self.config.namespace
        if not isinstance(dataset_name, str) or len(dataset_name) > 63 or not _DNS_LABEL.match(dataset_name):
            raise RuntimeError("failed to create dataset %r: the name must be a DNS-1123 label (lower-case letters, "
                               "digits and '-', at most 63)" % (dataset_name,))
        if self._load(dataset_name, ns) is not None:
            raise RuntimeError('failed to create dataset "%s/%s": it already exists' % (ns, dataset_name))
        self._save({"name": dataset_name, "namespace": ns, "uid": str(uuid.uuid4()), "mode": mode,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runtime": None,
                    "spec": {k: v for k, v in spec_kwargs.items() if _jsonable(v)}})
        logger.debug('Dataset "%s/%s" created', ns, dataset_name)

    def get_dataset(self, dataset_name: str, namespace: Optional[str] = None) -> "FluidDataset":
        ns = namespace or self.config.namespace
        obj = self._load(dataset_name, ns)
        if obj is None:
            raise RuntimeError('dataset "%s/%s" not found (create_dataset first)' % (ns, dataset_name))
        return FluidDataset(dataset_name, ns, obj, self)

    def cleanup_dataset(self, dataset_name: str, namespace: Optional[str] = None, wait: bool = True) -> None:
        ns = namespace or self.config.namespace
        obj = self._load(dataset_name, ns)
        if obj is not None:
            FluidDataset(dataset_name, ns, obj, self).clean_up(wait)

    # Running trellis ---------------------------------------------------------------------

    def _run_trellis(self, args: Sequence[str], home: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([self.trellis] + list(args), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              env=_env_for(home))


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _env_for(home: str) -> Dict[str, str]:
    env = dict(os.environ, TRELLIS_HOME=home)
    # Fluid steps run through the step launcher (a command step), not the warm zygote.
    env.setdefault("TRELLIS_ZYGOTE", "0")
    return env


# Runs started in this process, per dataset home (for clean_up and run-id checks before a
# record exists).
_RUNS: Dict[str, List["FlowHandle"]] = {}


class FluidDataset:
    """A dataset: binds a runtime, starts data flows, cleans up."""

    def __init__(self, name: str, namespace: str, dataset_obj: Dict[str, Any], client: FluidClient) -> None:
        self.name = name
        self.namespace = namespace
        self.obj = dataset_obj
        self.fluid_client = client
        self._binding: Optional["subprocess.Popen[bytes]"] = None

    @property
    def home(self) -> str:
        """The dataset's Trellis home: its runtime, runs (``trellis flow status RUN`` with
        ``TRELLIS_HOME`` set to this) and logs."""
        return self.fluid_client._dataset_home(self.name, self.namespace)

    def _current(self) -> Optional[Dict[str, Any]]:
        obj = self.fluid_client._load(self.name, self.namespace)
        if obj is None or obj.get("uid") != self.obj.get("uid"):
            return None
        return obj

    def runtime_status(self) -> Dict[str, Any]:
        """``trellis runtime status --json`` of the dataset's runtime."""
        proc = self.fluid_client._run_trellis(["runtime", "status", "--json"], self.home)
        try:
            status: Dict[str, Any] = json.loads(proc.stdout)
            return status
        except ValueError:
            raise RuntimeError("trellis runtime status failed: %s" % (proc.stderr.strip() or proc.stdout)) from None

    def _wait_binding(self) -> None:
        if self._binding is None:
            return
        binding, self._binding = self._binding, None
        log_path = os.path.join(self.home, "bind_runtime.log")
        if binding.wait() != 0:
            raise RuntimeError("binding dataset %s to its runtime failed: %s" % (self.name, _tail(log_path)))

    @property
    def on_kubernetes(self) -> bool:
        return self.fluid_client.config.target == KUBERNETES

    @property
    def bound(self) -> bool:
        """Whether the dataset's runtime is up (Fluid's phase ``Bound``). On Kubernetes:
        whether a runtime was bound (the launcher applies it with the first run)."""
        self._wait_binding()
        current = self._current()
        if self.on_kubernetes:
            return current is not None and current.get("runtime") is not None
        return current is not None and bool(self.runtime_status().get("up"))

    def bind_runtime(self, runtime_type: Optional[str] = None, replicas: int = 2, cache_capacity_GiB: float = 10,
                     cache_medium: str = "MEM", wait: bool = True, **kwargs: Any) -> None:
        """Starts the dataset's runtime: ``replicas`` replicas of ``cache_capacity_GiB`` GiB
        of shared memory each (``trellis runtime up``). With ``wait=False`` it starts in the
        background; ``process``/``run`` wait for it."""
        kind = _runtime_kind(runtime_type)
        if not kind:
            kind = self.fluid_client.config.runtime_kind
            logger.warning("No runtime_type is given to bind_runtime(), implicitly using %s from FluidClient", kind)
        if kind != constants.VINEYARD_RUNTIME_KIND:
            raise ValueError("Unsupported runtime kind %s: Trellis provides %s" % (kind, constants.VINEYARD_RUNTIME_KIND))
        if kwargs:
            raise ValueError("bind_runtime: Trellis's VineyardRuntime takes replicas, cache_capacity_GiB and "
                             "cache_medium; not %s" % ", ".join(sorted(kwargs)))
        if cache_medium != "MEM":
            raise ValueError("cache_medium %r: Trellis's VineyardRuntime keeps objects in memory (MEM)" % cache_medium)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError("replicas must be a positive integer")
        if isinstance(cache_capacity_GiB, bool) or not isinstance(cache_capacity_GiB, (int, float)) \
                or cache_capacity_GiB <= 0:
            raise ValueError("cache_capacity_GiB must be a positive number")
        obj = self._current()
        if obj is None:
            raise RuntimeError("Dataset %s has a different UID, the dataset may already been cleaned up" % self.name)
        self._wait_binding()
        if self.on_kubernetes:
            if obj.get("runtime") is not None:
                raise RuntimeError('%s "%s/%s" already exists: the dataset is bound (clean_up() first)'
                                   % (kind, self.namespace, self.name))
            # The launcher applies the VineyardRuntime (and the Dataset) with the first run.
            obj["runtime"] = {"kind": kind, "replicas": replicas, "size": ("%g" % cache_capacity_GiB) + "Gi",
                              "medium": cache_medium, "target": KUBERNETES}
            self.fluid_client._save(obj)
            self.obj = obj
            logger.debug('%s "%s/%s" bound on Kubernetes (namespace %s)', kind, self.namespace, self.name,
                         self.fluid_client.config.namespace)
            return
        if self.runtime_status().get("up"):
            raise RuntimeError('%s "%s/%s" already exists: the dataset is bound (clean_up() first)'
                               % (kind, self.namespace, self.name))
        size = ("%g" % cache_capacity_GiB) + "Gi"
        argv = [self.fluid_client.trellis, "runtime", "up", "--replicas", str(replicas), "--size", size]
        obj["runtime"] = {"kind": kind, "replicas": replicas, "size": size, "medium": cache_medium}
        self.fluid_client._save(obj)
        self.obj = obj
        log_path = os.path.join(self.home, "bind_runtime.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, env=_env_for(self.home), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        logger.debug('%s "%s/%s" created: %d replica(s) of %s', kind, self.namespace, self.name, replicas, size)
        self._binding = proc
        if wait:
            self._wait_binding()
            logger.debug('Dataset "%s/%s" bound', self.namespace, self.name)

    def process(self, dataset_mountpath: str, processor: models.Processor, sub_path: Optional[str] = None, *,
                name: Optional[str] = None) -> "FluidDataFlow":
        """A new data flow whose first step runs ``processor`` with the dataset mounted at
        ``dataset_mountpath``."""
        return FluidDataFlow(self).process(dataset_mountpath, processor, sub_path, name=name)

    def running_runs(self) -> List[str]:
        """Run ids of this dataset's runs still in progress."""
        running = [h.run_id for h in _RUNS.get(self.home, []) if h.running]
        runs_dir = os.path.join(self.home, "runs")
        for run_id in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
            try:
                with open(os.path.join(runs_dir, run_id, "record.json")) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            if record.get("state") == "running" and _alive(record.get("runnerPID")) and run_id not in running:
                running.append(run_id)
        return running

    def _delete_cluster_runtime(self) -> None:
        if (self.obj.get("runtime") or {}).get("target") == KUBERNETES:
            for kind in _delete_cluster_objects(self.fluid_client.config, self.name):
                logger.debug('%s "%s/%s" deleted', kind, self.fluid_client.config.namespace, self.name)

    def clean_up(self, wait: bool = True) -> None:
        """Stops the dataset's runtime (its memory, with every run's objects, is freed) and
        deletes the dataset. Refused (``RuntimeError``) while a run of the dataset is in
        progress: wait for it, or stop it (Ctrl-C in its notebook, or kill its runner),
        then clean up. A dataset already gone or re-created is left alone."""
        if self._current() is None:
            return
        try:
            self._wait_binding()
        except RuntimeError:
            pass
        running = self.running_runs()
        if running:
            raise RuntimeError("cannot clean up dataset %s/%s: run(s) %s in progress; wait() for them (or stop them) "
                               "first" % (self.namespace, self.name, ", ".join(running)))
        if self.on_kubernetes:
            self._delete_cluster_runtime()
            _RUNS.pop(self.home, None)
            shutil.rmtree(self.home, ignore_errors=True)
            logger.debug('Dataset "%s/%s" deleted', self.namespace, self.name)
            return
        status = self.runtime_status()
        if status.get("state") is not None:
            proc = self.fluid_client._run_trellis(["runtime", "down"], self.home)
            if proc.returncode != 0:
                raise RuntimeError("stopping the runtime of dataset %s failed: %s"
                                   % (self.name, proc.stderr.strip() or proc.stdout.strip()))
            logger.debug('%s "%s/%s" deleted', (self.obj.get("runtime") or {}).get("kind", "runtime"),
                         self.namespace, self.name)
        _RUNS.pop(self.home, None)
        shutil.rmtree(self.home, ignore_errors=True)
        logger.debug('Dataset "%s/%s" deleted', self.namespace, self.name)


def _delete_cluster_objects(config: ClientConfig, name: str) -> List[str]:
    """Deletes the VineyardRuntime and the Dataset ``name`` the launcher applied (absent ones
    are fine); returns the kinds deleted."""
    try:
        from kubernetes import client as kclient, config as kconfig  # type: ignore[import-not-found]
        from kubernetes.client.rest import ApiException  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError("cleaning up on Kubernetes needs the kubernetes package (pip install kubernetes)") from None
    if config.kube_client_configuration is not None:
        api_client = kclient.ApiClient(config.kube_client_configuration)
    else:
        try:
            api_client = kconfig.new_client_from_config(config_file=config.kube_config_file, context=config.kube_context)
        except Exception:
            kconfig.load_incluster_config()
            api_client = kclient.ApiClient()
    api = kclient.CustomObjectsApi(api_client)
    deleted = []
    for plural, kind in (("vineyardruntimes", "VineyardRuntime"), ("datasets", "Dataset")):
        try:
            api.delete_namespaced_custom_object("data.fluid.io", "v1alpha1", config.namespace, plural, name)
            deleted.append(kind)
        except ApiException as e:
            if e.status != 404:
                raise RuntimeError("deleting %s %s/%s failed: %s %s" % (kind, config.namespace, name, e.status,
                                                                         e.reason)) from None
    return deleted


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read().rstrip("\n").splitlines()
    except OSError:
        return "(no log at %s)" % path
    return "\n".join(text[-lines:])


class _Op:
    def __init__(self, processor: models.Processor, mount_path: str, sub_path: Optional[str], name: Optional[str]):
        self.processor = processor
        self.mount_path = mount_path
        self.sub_path = sub_path
        self.name = name


class FluidDataFlow:
    """Data operations chained with ``process`` (each runs after the previous one, like
    Fluid's ``runAfter``), started by :meth:`run`."""

    def __init__(self, dataset: FluidDataset) -> None:
        self.dataset = dataset
        self.ops: List[_Op] = []

    @property
    def dataset_name(self) -> str:
        return self.dataset.name

    @property
    def dataset_namespace(self) -> str:
        return self.dataset.namespace

    def process(self, dataset_mountpath: str, processor: models.Processor, sub_path: Optional[str] = None, *,
                name: Optional[str] = None) -> "FluidDataFlow":
        """Appends a step running ``processor`` with the dataset at ``dataset_mountpath``;
        ``name`` names the step (default ``<run_id>-step<N>``, as Fluid names it)."""
        if not isinstance(processor, models.Processor):
            raise ValueError("processor must be a fluid models.Processor (make_processor_from_func(...)), not %r"
                             % (processor,))
        if not isinstance(processor.trellis_step, FunctionStep):
            raise ValueError("Trellis runs processors made by utils.processor.make_processor_from_func; a hand-built "
                             "script or job processor is not supported")
        if not isinstance(dataset_mountpath, str) or not dataset_mountpath.startswith("/"):
            raise ValueError("dataset_mountpath must be an absolute path, not %r" % (dataset_mountpath,))
        mount = os.path.normpath(dataset_mountpath)
        clash = [m["volume"] for m in processor.trellis_step.mounts if m["mount_path"] == mount]
        if clash:
            raise ValueError("dataset_mountpath %s is also the mount path of volume %s" % (mount, clash[0]))
        if sub_path is not None and (sub_path.startswith("/") or ".." in sub_path.split("/")):
            raise ValueError("sub_path %r must be relative, without '..'" % sub_path)
        if name is not None and (len(name) > 63 or not _DNS_LABEL.match(name)):
            raise ValueError("step name %r must be a DNS-1123 label" % name)
        if self.dataset._current() is None:
            raise RuntimeError('dataset "%s/%s" was cleaned up' % (self.dataset_namespace, self.dataset_name))
        if not self.dataset.bound:
            raise RuntimeError('dataset "%s/%s" is not bound to a runtime: call bind_runtime() before process()'
                               % (self.dataset_namespace, self.dataset_name))
        self.ops.append(_Op(processor, mount, sub_path, name))
        return self

    def run(self, run_id: str, ttl_seconds_after_finished: int = constants.DEFAULT_DATAFLOW_TIME_TO_LIVE,
            ) -> "FlowHandle":
        """Starts the flow as run ``run_id`` and returns its :class:`FlowHandle` (``wait()``).

        Raises ``RuntimeError`` when the dataset is not bound or ``run_id`` was used already
        (for this dataset, until ``clean_up``). ``ttl_seconds_after_finished`` is accepted;
        locally a run's record stays until the dataset is cleaned up.
        """
        if not self.ops:
            raise ValueError("the data flow has no operations (call process() first)")
        if not isinstance(run_id, str) or len(run_id) > 56 or not _DNS_LABEL.match(run_id):
            raise ValueError("run_id %r must be a DNS-1123 label of at most 56 characters (its steps are named "
                             "<run_id>-step<N>)" % (run_id,))
        ds = self.dataset
        if ds._current() is None:
            raise RuntimeError("failed to get dataset %s: it was cleaned up" % self.dataset_name)
        if not ds.bound:
            raise RuntimeError("dataset %s is not bound" % self.dataset_name)
        flows_dir = os.path.join(ds.home, "flows", run_id)
        if os.path.exists(os.path.join(ds.home, "runs", run_id)) or os.path.exists(flows_dir) \
                or any(h.run_id == run_id for h in _RUNS.get(ds.home, [])):
            raise RuntimeError("failed to run data flow %s: a run with this run_id already exists for dataset %s "
                               "(use another run_id, or clean_up the dataset)" % (run_id, self.dataset_name))
        config = ds.fluid_client.config
        if ds.on_kubernetes:
            return self._run_on_kubernetes(run_id, flows_dir)
        volume_map = _volumes.parse_volume_map(os.environ.get("TRELLIS_VOLUMES"))
        status = ds.runtime_status()
        state = status.get("state") or {}
        replicas = sorted(state.get("replicas", []), key=lambda r: r.get("index", 0))
        rpc = ["127.0.0.1:%d" % r["rpcPort"] for r in replicas] if all(r.get("rpcPort") for r in replicas) else []
        runtime_spec = (state.get("spec") or ds.obj.get("runtime") or {})
        names = [op.name or "%s-step%d" % (run_id, i + 1) for i, op in enumerate(self.ops)]
        if len(set(names)) != len(names):
            raise ValueError("two steps of the flow are named alike: %s" % ", ".join(names))
        steps: List[FunctionStep] = []
        for op in self.ops:
            assert isinstance(op.processor.trellis_step, FunctionStep)
            steps.append(op.processor.trellis_step)
        # Resolve every volume before anything starts: a missing claim directory is an error now.
        resolved = []
        for step_name, op, fs in zip(names, self.ops, steps):
            try:
                resolved.append(_volumes.resolve_mounts(fs.mounts, config.home, volume_map,
                                                        os.path.join(flows_dir, "emptydir-" + step_name)))
            except _volumes.VolumeError as e:
                shutil.rmtree(flows_dir, ignore_errors=True)  # emptyDir directories made so far
                raise RuntimeError("step %s (%s): %s" % (step_name, fs.function_name, e)) from None
        os.makedirs(flows_dir, exist_ok=True)
        launcher = os.path.join(flows_dir, _LAUNCHER)
        with open(_step.__file__) as src, open(launcher, "w") as dst:
            dst.write(src.read())
        produced = set(n for fs in steps for n in fs.outputs)
        trellis_flow = _flow.Flow(
            runtime=_flow.Runtime(replicas=int(runtime_spec.get("replicas", 1)), size=str(runtime_spec.get("size", "1Gi"))),
            name=self.dataset_name)
        previous: Optional[str] = None
        for step_name, op, fs, mounts in zip(names, self.ops, steps, resolved):
            function_file = os.path.join(flows_dir, step_name + ".py")
            with open(function_file, "w") as f:
                f.write(fs.file_text)
            spec = {
                "step": step_name, "function_file": function_file, "function": fs.entry, "debug": fs.debug,
                "dataset": {"name": self.dataset_name, "namespace": self.dataset_namespace, "mount_path": op.mount_path,
                            "sub_path": op.sub_path, "dir": os.path.join(flows_dir, "dataset-" + step_name)},
                "root_dir": os.path.join(flows_dir, "root-" + step_name),
                "rpc_endpoints": rpc, "mounts": mounts,
            }
            spec_file = os.path.join(flows_dir, step_name + ".json")
            with open(spec_file, "w") as f:
                json.dump(spec, f, indent=2)
            trellis_flow.process(
                command=[fs.interpreter, launcher, spec_file], name=step_name,
                inputs=[n for n in fs.inputs if n in produced], outputs=fs.outputs,
                after=[previous] if previous else [], env=fs.env or None)
            previous = step_name
        run = trellis_flow.run(run_id=run_id, trellis=ds.fluid_client.trellis, home=ds.home,
                               log=os.path.join(flows_dir, "runner.log"), env=_env_for(ds.home))
        handle = FlowHandle(run_id, names, run, ds)
        _RUNS.setdefault(ds.home, []).append(handle)
        return handle


    def _step_names(self, run_id: str) -> List[str]:
        names = [op.name or "%s-step%d" % (run_id, i + 1) for i, op in enumerate(self.ops)]
        if len(set(names)) != len(names):
            raise ValueError("two steps of the flow are named alike: %s" % ", ".join(names))
        return names

    def _run_on_kubernetes(self, run_id: str, flows_dir: str) -> "FlowHandle":
        """The same flow model, launched with ``trellis flow run --on kubernetes``: each
        processor a Python step (its function's file shipped in the run's ConfigMap) whose pod
        gets the processor's image, ``packages_to_install`` and volumes; the dataset at
        ``/var/run``, where Fluid's fuse puts the worker's socket."""
        ds = self.dataset
        names = self._step_names(run_id)
        for op in self.ops:
            if op.mount_path != _KUBE_DATASET_MOUNT:
                raise ValueError("on Kubernetes the dataset is mounted at %s (where Fluid's fuse links the worker's "
                                 "socket); dataset_mountpath %s is not supported there" % (_KUBE_DATASET_MOUNT,
                                                                                            op.mount_path))
        runtime = (ds._current() or ds.obj).get("runtime") or {}
        os.makedirs(flows_dir, exist_ok=True)
        trellis_flow = _flow.Flow(
            runtime=_flow.Runtime(replicas=int(runtime.get("replicas", 1)), size=str(runtime.get("size", "1Gi"))),
            name=self.dataset_name)
        steps = [op.processor.trellis_step for op in self.ops]
        produced = set(n for fs in steps for n in fs.outputs)
        previous: Optional[str] = None
        for step_name, fs in zip(names, steps):
            assert isinstance(fs, FunctionStep)
            function_file = os.path.join(flows_dir, step_name + ".py")
            with open(function_file, "w") as f:
                f.write(fs.file_text)
                f.write("\n\nif __name__ == \"__main__\":\n    %s()\n" % fs.entry)
            trellis_flow.process(
                file=function_file, name=step_name, interpreter="python3",
                inputs=[n for n in fs.inputs if n in produced], outputs=fs.outputs,
                after=[previous] if previous else [], env=fs.env or None, kubernetes=fs.kubernetes())
            previous = step_name
        run = trellis_flow.run(run_id=run_id, trellis=ds.fluid_client.trellis, home=ds.home,
                               log=os.path.join(flows_dir, "runner.log"), env=_env_for(ds.home),
                               extra_args=ds.fluid_client._kube_args(), base_dir=flows_dir)
        handle = FlowHandle(run_id, names, run, ds)
        _RUNS.setdefault(ds.home, []).append(handle)
        return handle


_KUBE_DATASET_MOUNT = "/var/run"

_PHASES = {"pending": "Pending", "running": "Executing", "succeeded": "Complete", "failed": "Failed",
           "upstream-failed": "Failed", "cancelled": "Failed"}


class FlowHandle:
    """A started data flow (the Fluid SDK's ``FlowHandle``)."""

    def __init__(self, run_id: str, flow_steps: List[str], run: _flow.Run, dataset: FluidDataset) -> None:
        self.run_id = run_id
        self.flow_steps = list(flow_steps)
        self.run = run
        self.dataset = dataset
        self.record: Optional[Dict[str, Any]] = None

    @property
    def running(self) -> bool:
        return self.run.process is not None and self.run.process.poll() is None

    def _step_records(self) -> Dict[str, Dict[str, Any]]:
        record = self.run.status() or {}
        self.record = record or self.record
        return {s["name"]: s for s in record.get("steps", [])}

    def get_current_status(self) -> List[Dict[str, Dict[str, Any]]]:
        """``[{step_name: {"phase", "duration", "replica", ...}}]`` in flow order."""
        steps = self._step_records()
        out = []
        for name in self.flow_steps:
            s = steps.get(name, {})
            out.append({name: {"phase": _PHASES.get(s.get("state", "pending"), "Pending"),
                               "duration": s.get("duration"), "replica": s.get("replica"),
                               "placement_reason": s.get("placementReason"), "message": s.get("message"),
                               "waiting_for": {"operation_complete": s.get("state", "pending") == "pending"}}})
        return out

    def wait(self, timeout_for_each_step: float = constants.DEFAULT_POLL_TIMEOUT) -> None:
        """Waits for each step in order, logging ``DataProcess <step> completed`` on the
        ``fluidsdk`` logger; raises ``RuntimeError`` naming the step that failed, with the
        end of its log. A step still running after ``timeout_for_each_step`` seconds raises
        too (the run goes on)."""
        for name in self.flow_steps:
            started = time.monotonic()
            while True:
                s = self._step_records().get(name)
                state = s.get("state") if s else None
                if state == "succeeded":
                    logger.info("%s %s completed", constants.DATA_PROCESS_KIND, name)
                    break
                if state in ("failed", "upstream-failed", "cancelled"):
                    self._settle()
                    raise RuntimeError("failed to wait data operation %s: %s" % (name, self._failure(name, s or {})))
                if not self.running and state != "running":
                    # The runner is gone and the step never finished: read the final word.
                    s = self._step_records().get(name)
                    if s and s.get("state") == "succeeded":
                        continue
                    raise RuntimeError("failed to wait data operation %s: %s" % (name, self._failure(name, s or {})))
                if time.monotonic() - started > timeout_for_each_step:
                    raise RuntimeError("failed to wait data operation %s: %s" % (
                        name, TimeoutError("still %s after %gs" % (state or "pending", timeout_for_each_step))))
                time.sleep(_POLL)
        if self.run.process is not None:
            self.run.process.wait()
        record = self.run.status() or {}
        self.record = record
        if record.get("state") != "succeeded":
            raise RuntimeError("data flow %s: %s" % (self.run_id, record.get("message") or record.get("state")))

    def _settle(self, timeout: float = 120) -> None:
        """After a failed step the run is over: let the runner write its final record."""
        if self.run.process is not None:
            try:
                self.run.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.record = self.run.status() or self.record

    def _failure(self, name: str, s: Dict[str, Any]) -> str:
        record = self.record or {}
        state = s.get("state")
        if state == "failed":
            why = s.get("message") or "failed"
            exit_code = s.get("exitCode")
            parts = ["step %s failed%s: %s" % (name, " (exit status %s)" % exit_code if exit_code is not None else "",
                                                why)]
            log = s.get("stderrPath")
            if log:
                parts.append("log: %s\n%s" % (log, _tail(log)))
            return "\n".join(parts)
        if state == "upstream-failed":
            return "step %s did not run: an earlier step failed (%s)" % (name, record.get("message") or "")
        if state == "cancelled":
            return "the run was cancelled"
        runner_log = os.path.join(self.dataset.home, "flows", self.run_id, "runner.log")
        return "the run ended without running step %s (%s); runner log %s:\n%s" % (
            name, record.get("message") or "no run record", runner_log, _tail(runner_log))
