"""trellis.fluid against a real trellis binary and runtime: a flow with a volume and the
dataset's config file, and the errors users get for bad use."""

import logging
import os
import shutil
import json
import subprocess
import sys
import tempfile

import pytest

from trellis import fluid
from trellis.fluid import _step, constants
from trellis.fluid.utils import processor as processor_utils

k8s = pytest.importorskip("kubernetes.client.models", reason="kubernetes is in scripts/requirements.txt")


# Step functions (module level: their source is what the steps run) ------------------------

def put_via_config():
    import os
    import time

    # Wait (bounded) until the test says go, so that it can try clean_up mid-run.
    for _ in range(1200):
        if os.path.exists("/out/go"):
            break
        time.sleep(0.1)
    # Reach the replica through the vineyard-config.yaml of the dataset mount, not the env.
    os.environ.pop("VINEYARD_IPC_SOCKET", None)
    import numpy as np
    import vineyard
    vineyard.put(np.arange(1000), name="greeting", persist=True)


def get_greeting():
    import vineyard
    with open("/out/greeting.txt", "w") as f:
        f.write("sum %d" % vineyard.get(name="greeting", fetch=True).sum())


def explode():
    import os
    with open("/scratch/note", "w") as f:  # an emptyDir volume: writable, the step's own
        f.write("x")
    assert os.path.exists("/out")
    raise ValueError("boom from the step")


def alive(pid):
    """Running (a zombie waiting for a parent that does not reap counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def volume(claim):
    return k8s.V1Volume(name="out", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim))


def out_mount():
    return k8s.V1VolumeMount(name="out", mount_path="/out")


def processor(func, claim="results"):
    return processor_utils.make_processor_from_func(func, volumes=[volume(claim)], volume_mounts=[out_mount()])


def client(home):
    return fluid.FluidClient(fluid.ClientConfig(home=home))


# Tests -------------------------------------------------------------------------------------

def test_process_before_bind_runtime(trellis_bin, trellis_home):
    c = client(trellis_home)
    c.create_dataset(dataset_name="unbound")
    ds = c.get_dataset(dataset_name="unbound")
    with pytest.raises(RuntimeError, match="bind_runtime"):
        ds.process(processor=processor(explode), dataset_mountpath="/var/run")
    with pytest.raises(ValueError, match="Unsupported runtime kind AlluxioRuntime"):
        ds.bind_runtime(runtime_type=constants.ALLUXIO_RUNTIME_KIND)
    with pytest.raises(RuntimeError, match="already exists"):
        c.create_dataset(dataset_name="unbound")
    with pytest.raises(RuntimeError, match="not found"):
        c.get_dataset(dataset_name="nothere")
    ds.clean_up()
    with pytest.raises(RuntimeError, match="not found"):
        c.get_dataset(dataset_name="unbound")


def test_targets(trellis_bin, trellis_home, monkeypatch):
    assert fluid.ClientConfig().target == "local"
    assert fluid.ClientConfig(kube_context="prod").target == "kubernetes"
    monkeypatch.setenv("TRELLIS_TARGET", "kubernetes")
    config = fluid.ClientConfig()
    assert config.target == "kubernetes"
    help_text = subprocess.run([trellis_bin, "flow", "run", "--help"], capture_output=True, text=True).stdout
    assert "--on" in help_text  # this binary has the launcher: the client is made
    client = fluid.FluidClient(config)
    client.create_dataset(dataset_name="remote")
    ds = client.get_dataset(dataset_name="remote")
    assert not ds.bound
    ds.bind_runtime(runtime_type=constants.VINEYARD_RUNTIME_KIND, replicas=3, cache_capacity_GiB=2)
    # Nothing starts here: the launcher applies the runtime with the first run.
    assert ds.bound and ds.obj["runtime"]["target"] == "kubernetes" and ds.obj["runtime"]["replicas"] == 3
    assert not os.path.exists(os.path.join(ds.home, "runtime"))
    with pytest.raises(RuntimeError, match="already exists"):
        ds.bind_runtime(runtime_type=constants.VINEYARD_RUNTIME_KIND)

    def step():
        pass

    flow = ds.process(processor=processor_utils.make_processor_from_func(step), dataset_mountpath="/mnt/elsewhere")
    with pytest.raises(ValueError, match="mounted at /var/run"):
        flow.run(run_id="r1")
    with pytest.raises(ValueError):
        fluid.ClientConfig(target="mars")


def test_without_binary_the_client_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("TRELLIS_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="TRELLIS_BIN"):
        fluid.FluidClient(fluid.ClientConfig(home=str(tmp_path)))


@pytest.mark.timeout(600)
def test_flow_volumes_config_and_bad_use(trellis_bin, trellis_home, caplog):
    caplog.set_level(logging.INFO, logger="fluidsdk")
    c = client(trellis_home)
    c.create_dataset(dataset_name="demo")
    ds = c.get_dataset(dataset_name="demo")
    ds.bind_runtime(runtime_type=constants.VINEYARD_RUNTIME_KIND, replicas=1, cache_capacity_GiB=0.25,
                    cache_medium="MEM", wait=True)
    assert ds.bound
    state = ds.runtime_status()["state"]
    assert state["spec"]["size"] == "0.25Gi" and len(state["replicas"]) == 1
    with pytest.raises(RuntimeError, match="already exists"):
        ds.bind_runtime(runtime_type="vineyard", replicas=1, cache_capacity_GiB=0.25)

    # A claim without its directory: refused before anything runs.
    with pytest.raises(RuntimeError, match="nothere.*TRELLIS_VOLUMES"):
        ds.process(processor=processor(get_greeting, claim="nothere"), dataset_mountpath="/var/run").run("no-dir")

    out = os.path.join(trellis_home, "volumes", "results")
    os.makedirs(out)
    flow = ds.process(processor=processor(put_via_config), dataset_mountpath="/var/run") \
             .process(processor=processor(get_greeting), dataset_mountpath="/var/run")
    run = flow.run(run_id="ok-1")
    # clean_up while the run is in progress is refused, and stops nothing.
    with pytest.raises(RuntimeError, match="ok-1 in progress"):
        ds.clean_up(wait=True)
    assert ds.bound
    with open(os.path.join(out, "go"), "w"):
        pass
    run.wait()
    with open(os.path.join(out, "greeting.txt")) as f:
        assert f.read() == "sum 499500"
    done = [r.getMessage() for r in caplog.records if r.name == "fluidsdk" and r.levelno == logging.INFO]
    assert done == ["DataProcess ok-1-step1 completed", "DataProcess ok-1-step2 completed"]
    steps = run.record["steps"]
    assert steps[1]["placementReason"] == "data-affinity" and steps[1]["inputs"][0]["bytes"] > 0
    assert [list(s.values())[0]["phase"] for s in run.get_current_status()] == ["Complete", "Complete"]

    # The same run id again: refused.
    with pytest.raises(RuntimeError, match="already exists"):
        ds.process(processor=processor(get_greeting), dataset_mountpath="/var/run").run(run_id="ok-1")

    # A step that raises: the run fails naming the step, its log and what it said.
    scratch = processor_utils.make_processor_from_func(
        explode, volumes=[volume("results"), {"name": "scratch", "emptyDir": {}}],
        volume_mounts=[out_mount(), {"name": "scratch", "mountPath": "/scratch"}])
    bad = ds.process(processor=scratch, dataset_mountpath="/var/run").run(run_id="bad-1")
    with pytest.raises(RuntimeError) as e:
        bad.wait()
    message = str(e.value)
    assert "bad-1-step1" in message and "boom from the step" in message and "log: " in message
    assert os.path.isfile(message.split("log: ", 1)[1].split("\n", 1)[0])
    assert bad.get_current_status()[0]["bad-1-step1"]["phase"] == "Failed"
    with open(os.path.join(ds.home, "flows", "bad-1", "emptydir-bad-1-step1", "scratch", "note")) as f:
        assert f.read() == "x"

    pids = [p["pid"] for p in state["processes"]]
    ds.clean_up(wait=True)
    assert not os.path.exists(ds.home)
    assert pids and not [p for p in pids if alive(p)]
    with pytest.raises(RuntimeError, match="not found"):
        c.get_dataset(dataset_name="demo")
    ds.clean_up()  # gone already: nothing to do


FAKE_BOOTSTRAP = '''
import importlib.util, sys
args = sys.argv[1:]
spec = importlib.util.spec_from_file_location("step", args[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
getattr(module, args[3])()
'''

STEP = '''
def step():
    import os
    with open("/data/seen.txt", "w") as f:
        f.write("uid %d, config %s" % (os.getuid(), os.path.exists("/var/run/vineyard-config.yaml")))
'''


@pytest.mark.timeout(120)
def test_launcher_unprivileged_user_namespace():
    """The step launcher's path for a runner that is not root: a user namespace. As root the
    test drops to nobody (setpriv) with the system python3."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    base = tempfile.mkdtemp(prefix="trellis-userns-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        for d in ("lib", "data", "run"):
            os.makedirs(os.path.join(base, d))
        with open(os.path.join(base, "lib", "trellis_step.py"), "w") as f:
            f.write(FAKE_BOOTSTRAP)
        with open(os.path.join(base, "fn.py"), "w") as f:
            f.write(STEP)
        launcher = os.path.join(base, "launcher.py")
        shutil.copy(_step.__file__, launcher)
        spec = os.path.join(base, "step.json")
        with open(spec, "w") as f:
            json.dump({"step": "s", "function_file": os.path.join(base, "fn.py"), "function": "step",
                       "dataset": {"mount_path": "/var/run", "dir": os.path.join(base, "run", "ds")},
                       "root_dir": os.path.join(base, "run", "root"), "rpc_endpoints": [],
                       "mounts": [{"source": os.path.join(base, "data"), "target": "/data", "read_only": False,
                                   "volume": "data"}]}, f)
        drop = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to test as an unprivileged user"
            for root, dirs, files in os.walk(base):
                for name in dirs + files + [""]:
                    os.chown(os.path.join(root, name), 65534, 65534)
            drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        argv = drop + [python, launcher, spec]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.path.join(base, "lib"), "HOME": base,
               "VINEYARD_IPC_SOCKET": os.path.join(base, "none.sock")}
        can = subprocess.run(drop + ["unshare"] + _step.namespace_flags(1000) + ["true"], capture_output=True, env=env)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=base, timeout=100)
        if can.returncode == 0:
            assert proc.returncode == 0, proc.stderr
            with open(os.path.join(base, "data", "seen.txt")) as f:
                assert f.read() == "uid 0, config True"  # root inside its own user namespace
        else:
            # No unprivileged user namespaces here: the step fails and says why.
            assert proc.returncode == 2, proc.stderr
            assert "user namespaces" in proc.stderr and "data at /data" in proc.stderr
            assert not os.path.exists(os.path.join(base, "data", "seen.txt"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
