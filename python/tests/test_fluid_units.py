"""trellis.fluid's pure parts: requirements, volumes, processors, the step launcher's plans."""

import os
import warnings

import pytest

from trellis.fluid import PackageNotInstalled, PackageVersionWarning, VolumeError, models
from trellis.fluid import _packages, _step, _volumes
from trellis.fluid.utils import processor as processor_utils

k8s = pytest.importorskip("kubernetes.client.models", reason="kubernetes is in scripts/requirements.txt")


# Requirements ---------------------------------------------------------------------------

def test_parse_requirement():
    r = _packages.parse_requirement("scikit-learn==1.4.0")
    assert (r.name, r.key, r.specifier) == ("scikit-learn", "scikit-learn", "==1.4.0")
    assert _packages.parse_requirement("Foo_Bar[x] >= 1, <2 ; python_version>'3'").specifier == ">=1,<2"
    for bad in ["", "pkg @ https://x/y.whl", "==1", "x==="]:
        with pytest.raises(ValueError):
            _packages.parse_requirement(bad)


def test_check_requirements():
    errors, warns = _packages.check_requirements(
        ["numpy", "joblib==1.3.2", "pandas<3", "nothere>=1"],
        {"numpy": "1.26.4", "joblib": "1.6.0", "pandas": "2.1.4", "nothere": None}, "ENV")
    assert len(errors) == 1 and "'nothere'" in errors[0] and "ENV" in errors[0]
    assert len(warns) == 1 and "joblib==1.3.2" in warns[0] and "1.6.0" in warns[0]


# Volumes --------------------------------------------------------------------------------

def pvc(name="data", claim="pvc-oss", read_only=None):
    return k8s.V1Volume(name=name, persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
        claim_name=claim, read_only=read_only))


def test_describe_volumes_from_kubernetes_models_and_dicts():
    mounts = _volumes.describe_volumes(
        [pvc(), {"name": "scratch", "emptyDir": {}}, k8s.V1Volume(name="h", host_path=k8s.V1HostPathVolumeSource(path="/srv/x/"))],
        [k8s.V1VolumeMount(name="data", mount_path="/data/"), {"name": "scratch", "mountPath": "/tmp/s", "readOnly": True},
         k8s.V1VolumeMount(name="h", mount_path="/h", sub_path="sub")])
    assert mounts[0] == {"volume": "data", "kind": "persistentVolumeClaim", "claim": "pvc-oss", "read_only": False,
                         "mount_path": "/data", "sub_path": ""}
    assert mounts[1]["kind"] == "emptyDir" and mounts[1]["read_only"]
    assert mounts[2]["path"] == "/srv/x" and mounts[2]["sub_path"] == "sub"


@pytest.mark.parametrize("volumes,mounts,message", [
    ([pvc()], [k8s.V1VolumeMount(name="other", mount_path="/d")], "names no volume"),
    ([pvc()], [k8s.V1VolumeMount(name="data", mount_path="rel")], "absolute"),
    ([pvc()], [k8s.V1VolumeMount(name="data", mount_path="/")], "over /"),
    ([pvc(), pvc()], [], "two volumes"),
    ([k8s.V1Volume(name="c", config_map=k8s.V1ConfigMapVolumeSource(name="cm"))], [], "configMap"),
    ([pvc()], [k8s.V1VolumeMount(name="data", mount_path="/d", sub_path="../x")], "sub_path"),
])
def test_describe_volumes_rejects(volumes, mounts, message):
    with pytest.raises(VolumeError, match=message):
        _volumes.describe_volumes(volumes, mounts)


def test_resolve_mounts(tmp_path):
    home = tmp_path / "home"
    (home / "volumes" / "pvc-oss").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    described = _volumes.describe_volumes([pvc(read_only=True), pvc("b", "other"), {"name": "e", "emptyDir": {}}],
                                          [{"name": "data", "mountPath": "/data"}, {"name": "b", "mountPath": "/b"},
                                           {"name": "e", "mountPath": "/e"}])
    got = _volumes.resolve_mounts(described, str(home), _volumes.parse_volume_map("other=%s" % elsewhere),
                                  str(tmp_path / "empty"))
    assert got[0] == {"source": str(home / "volumes" / "pvc-oss"), "target": "/data", "read_only": True,
                      "volume": "data"}
    assert got[1]["source"] == str(elsewhere)
    assert got[2]["source"] == str(tmp_path / "empty" / "e") and os.path.isdir(got[2]["source"])
    with pytest.raises(VolumeError, match="pvc-oss.*TRELLIS_VOLUMES"):
        _volumes.resolve_mounts(described[:1], str(tmp_path / "nohome"), {}, str(tmp_path / "empty"))
    with pytest.raises(VolumeError, match="claim=directory"):
        _volumes.parse_volume_map("justaname")


# Processors -----------------------------------------------------------------------------

def preprocess():
    import vineyard
    vineyard.put([1], name="x_train", persist=True)


def with_params(n, scale=2):
    import vineyard
    vineyard.put(n * scale, name="y", persist=True)


def make_closure():
    k = 3

    def inner():
        return k
    return inner


def test_processor_from_function():
    p = processor_utils.make_processor_from_func(
        preprocess, packages_to_install=["vineyard", "numpy"], volumes=[pvc()],
        volume_mounts=[k8s.V1VolumeMount(name="data", mount_path="/data")], debug_mode=True,
        env=[k8s.V1EnvVar(name="K", value="v")])
    assert isinstance(p, models.Processor) and p.script.image == "python" and p.script.image_tag == "3.10"
    step = p.trellis_step
    assert step.entry == "preprocess" and step.outputs == ["x_train"] and step.debug and step.env == {"K": "v"}
    assert "def preprocess():" in step.file_text and p.script.source == step.file_text
    assert step.mounts[0]["claim"] == "pvc-oss"


def test_processor_params_are_literals():
    p = processor_utils.make_processor_from_func(with_params, process_func_params={"n": 4})
    ns = {}
    exec(compile(p.trellis_step.file_text, "step.py", "exec"), ns)
    assert p.trellis_step.entry in ns
    with pytest.raises(ValueError, match="process_func_params"):
        processor_utils.make_processor_from_func(with_params)
    with pytest.raises(ValueError, match="literals"):
        processor_utils.make_processor_from_func(with_params, process_func_params={"n": object()})
    with pytest.raises(ValueError):
        processor_utils.make_processor_from_func(with_params, process_func_params={"m": 1})


@pytest.mark.parametrize("func,message", [
    (lambda: None, "lambda"),
    (print, "Python function"),
    (len, "Python function"),
    (make_closure(), "enclosing function"),
    ("preprocess", "needs a function"),
])
def test_processor_rejects_what_has_no_source(func, message):
    with pytest.raises(ValueError, match=message):
        processor_utils.make_processor_from_func(func)


def test_missing_package_is_an_error_naming_it():
    with pytest.raises(PackageNotInstalled, match="no-such-package-trellis"):
        processor_utils.make_processor_from_func(preprocess, packages_to_install=["numpy", "no-such-package-trellis"])


def test_other_version_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        processor_utils.make_processor_from_func(preprocess, packages_to_install=["numpy==0.0.1"])
    assert any(issubclass(w.category, PackageVersionWarning) and "numpy==0.0.1" in str(w.message) for w in caught)


def test_unknown_script_field():
    with pytest.raises(TypeError, match="nodeSelector"):
        processor_utils.make_processor_from_func(preprocess, nodeSelector={})


# The step launcher's plans ----------------------------------------------------------------

def test_namespace_flags():
    assert _step.namespace_flags(0) == ["--mount", "--propagation", "private"]
    assert _step.namespace_flags(1000)[:3] == ["--user", "--map-root-user", "--mount"]


def test_own_replica_first():
    assert _step.own_replica_first(["a:1", "b:2", "c:3"], "1") == ["b:2", "a:1", "c:3"]
    assert _step.own_replica_first(["a:1"], None) == ["a:1"]
    assert _step.own_replica_first(["a:1"], "7") == ["a:1"]


def test_ancestors():
    assert _step.ancestors({"/data", "/var/run", "/a/b/c"}) == {"/var", "/a", "/a/b"}


def test_remount_keeps_locked_flags():
    flags = _step.remount_flags(os.ST_NOSUID | os.ST_NODEV | os.ST_RELATIME)
    assert flags & _step.MS_RDONLY and flags & _step.MS_NOSUID and flags & _step.MS_NODEV
    assert flags & _step.MS_RELATIME and not flags & _step.MS_NOEXEC


def test_vineyard_reads_the_dataset_config(tmp_path):
    """The vineyard client finds the replica through the file Fluid's runtime publishes."""
    client = pytest.importorskip("vineyard.core.client")
    sock = tmp_path / "r0.sock"
    sock.write_text("")  # the client only checks that it exists
    spec = {"dataset": {"mount_path": "/var/run", "dir": str(tmp_path / "ds")},
            "rpc_endpoints": ["127.0.0.1:9600", "127.0.0.1:9601"]}
    mount = _step.prepare_dataset(spec, {"VINEYARD_IPC_SOCKET": str(sock)})
    assert mount == {"source": str(tmp_path / "ds"), "target": "/var/run", "read_only": False, "volume": "dataset"}
    socket, endpoints = client._parse_configuration(str(tmp_path / "ds"))
    assert os.path.realpath(socket) == str(sock)
    assert endpoints == "127.0.0.1:9600,127.0.0.1:9601"


class FakeMounter:
    def __init__(self):
        self.calls = []

    def tmpfs(self, target):
        self.calls.append(("tmpfs", target))

    def bind(self, source, target, recursive=True):
        self.calls.append(("bind", source, target, recursive))

    def read_only(self, target):
        self.calls.append(("ro", target))


def test_build_root_plan(tmp_path):
    host = tmp_path / "host"
    for d in ["usr/bin", "var/lib", "run", "etc"]:
        (host / d).mkdir(parents=True)
    os.symlink("/run", host / "var" / "run")
    (host / "file").write_text("x")
    os.symlink("usr/bin", host / "bin")
    root = tmp_path / "root"
    root.mkdir()
    m = FakeMounter()
    mounts = [{"source": "/vol/data", "target": "/data", "read_only": True},
              {"source": "/ds", "target": "/var/run", "read_only": False}]
    _step.build_root(str(root), mounts, m, host=str(host))
    assert m.calls[0] == ("tmpfs", str(root))
    binds = {c[2]: c for c in m.calls if c[0] == "bind"}
    # Untouched top-level directories are bound back whole; files singly; links recreated.
    assert binds[str(root / "usr")][1:] == (str(host / "usr"), str(root / "usr"), True)
    assert binds[str(root / "file")][3] is False
    assert os.readlink(root / "bin") == "usr/bin"
    # Along a mount path the directory is recreated: /var holds lib (bound) and run (the mount).
    assert (root / "var").is_dir() and str(root / "var") not in binds
    assert binds[str(root / "var" / "lib")][1] == str(host / "var" / "lib")
    assert binds[str(root / "var" / "run")][1] == "/ds"
    assert binds[str(root / "data")][1] == "/vol/data"
    assert ("ro", str(root / "data")) in m.calls and ("ro", str(root / "var" / "run")) not in m.calls
