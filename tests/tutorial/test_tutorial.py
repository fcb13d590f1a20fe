"""The seed tutorial's notebook, run unchanged on Trellis (issue 15).

Reads the code cells of ../shared/seed/tutorial.md at run time (nothing of it is copied into
the project) and runs them in one interpreter, as a kernel would, with only these changes:

- ``import fluid`` -> ``from trellis import fluid`` (and ``from fluid... import`` ->
  ``from trellis.fluid... import``);
- the object-store upload (oss2 and its credentials cell) replaced by writing the pickle into
  the directory that stands for the PersistentVolumeClaim ($TRELLIS_HOME/volumes/<claim>);
- ``num_rows`` reduced; the ``%pip install`` cell left out (the venv is set up beforehand).

Then checks that the pipeline ran: the MSE file written by the test step, the three
``DataProcess <run>-stepN completed`` lines on the fluidsdk logger, every step on its inputs'
replica in the run record, and the runtime gone after ``clean_up``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import tutorial_cells as notebook  # noqa: E402

ROWS = 4000


def read_tutorial():
    path = notebook.seed_path(REPO)
    if not os.path.isfile(path):
        pytest.fail("the seed tutorial is missing: %s (CI keeps ../shared beside the checkout)" % path, pytrace=False)
    with open(path) as f:
        return f.read()


def trellis_bin():
    path = os.environ.get("TRELLIS_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("TRELLIS_BIN must name the trellis binary (scripts/test.sh sets it)", pytrace=False)
    return path


def prepared_cells(home):
    """The tutorial's cells with the test's changes; also the facts the checks need."""
    cells = notebook.code_cells(read_tutorial())
    assert len(cells) >= 8, "expected the tutorial's code cells, found %d" % len(cells)
    claims = notebook.claim_names([c for c in cells if not notebook.is_magic_only(c)])
    assert len(claims) == 1, claims
    pvc_dir = os.path.join(home, "volumes", claims[0])
    out, changes = [], {"magic": 0, "imports": 0, "credentials": 0, "upload": 0, "rows": 0}
    key = None
    for source in cells:
        if notebook.is_magic_only(source):
            changes["magic"] += 1
            continue
        if notebook.is_credentials_cell(source):
            changes["credentials"] += 1
            continue
        source, n = notebook.rewrite_fluid_imports(source)
        changes["imports"] += n
        source, k = notebook.replace_upload(source, pvc_dir)
        if k is not None:
            key = k
            changes["upload"] += 1
        source, changed = notebook.reduce_rows(source, ROWS)
        changes["rows"] += int(changed)
        out.append(source)
    assert changes["magic"] == 1 and changes["credentials"] == 1, changes
    assert changes["upload"] == 1 and changes["rows"] == 1 and changes["imports"] >= 2, changes
    assert not any(re.search(r"^\s*(import fluid|from fluid)\b", s, re.M) for s in out)
    assert not any("oss2" in s for s in out)
    assert ".clean_up(" in out[-1], "the last cell should be the clean-up"
    mounts = notebook.mount_paths(out)
    assert len(mounts) == 1, mounts
    outputs = notebook.opened_files(out, mounts[0])
    assert len(outputs) == 1, outputs
    run_ids = notebook.run_ids(out)
    assert len(run_ids) == 1, run_ids
    return out, {
        "pvc_dir": pvc_dir, "pickle": key, "mse_file": os.path.join(pvc_dir, os.path.relpath(outputs[0], mounts[0])),
        "run_id": run_ids[0], "steps": notebook.count_calls(out, "process"),
    }


def test_cells_are_read_and_changed_only_where_allowed(tmp_path):
    cells, facts = prepared_cells(str(tmp_path))
    assert facts["steps"] == 3 and facts["pickle"].endswith(".pkl")
    text = "\n".join(cells)
    assert "from trellis import fluid" in text and "from trellis.fluid.utils import" in text
    assert "num_rows = %d" % ROWS in text


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is gone for our purpose
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(900)
def test_tutorial_notebook_runs_on_trellis(tmp_path):
    binary = trellis_bin()
    # A short home: the replicas' sockets live under it (UNIX socket paths stop at 107 bytes).
    home = tempfile.mkdtemp(prefix="trellis-tut-", dir="/tmp")
    cells, facts = prepared_cells(home)
    os.makedirs(facts["pvc_dir"])
    paths = []
    for i, source in enumerate(cells):
        p = str(tmp_path / ("cell%02d.py" % (i + 1)))
        with open(p, "w") as f:
            f.write(source)
        paths.append(p)
    snapshot = str(tmp_path / "snapshot.json")
    env = dict(os.environ, TRELLIS_HOME=home, TRELLIS_BIN=binary, PYTHONUNBUFFERED="1")
    env.pop("TRELLIS_VOLUMES", None)
    env.pop("TRELLIS_TARGET", None)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "run_cells.py"), snapshot] + paths, cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=800, stdin=subprocess.DEVNULL)
    report = "stdout:\n%s\nstderr:\n%s" % (proc.stdout[-6000:], proc.stderr[-6000:])
    try:
        assert proc.returncode == 0, report

        # The test step's MSE file, in the directory that stands for the claim.
        with open(facts["mse_file"]) as f:
            mse = float(f.read())
        assert mse > 0
        assert os.path.exists(os.path.join(facts["pvc_dir"], facts["pickle"]))

        # The SDK's completion lines, in order, on the fluidsdk logger the notebook configured.
        done = re.findall(r" - fluidsdk - INFO - DataProcess (\S+) completed$", proc.stdout, re.M)
        assert done == ["%s-step%d" % (facts["run_id"], i + 1) for i in range(facts["steps"])], report

        # Every step ran on the replica that held its inputs.
        with open(snapshot) as f:
            snap = json.load(f)
        run = snap["runs"][facts["run_id"]]
        record = run["record"]
        assert record["state"] == "succeeded"
        assert len(record["replicas"]) == 2  # bind_runtime(replicas=2)
        steps = record["steps"]
        assert [s["name"] for s in steps] == done
        assert all(s["state"] == "succeeded" for s in steps)
        with_inputs = [s for s in steps if s["inputs"]]
        assert len(with_inputs) == 2, steps  # train and test read what preprocess put
        for s in with_inputs:
            for i in s["inputs"]:
                assert s["replica"] in i["residentReplicas"], (s["name"], i)
                assert i["movedBytes"] == 0, (s["name"], i)
            assert s["placementReason"] == "data-affinity", s

        # The runtime was up with the notebook's replicas and size, and clean_up stopped it.
        runtime = snap["datasets"][0]["runtime"]
        assert runtime["up"] and len(runtime["state"]["replicas"]) == 2
        assert runtime["state"]["spec"]["size"] == "30Gi"
        pids = [p["pid"] for p in runtime["state"]["processes"]]
        if runtime["state"].get("etcd"):
            pids.append(runtime["state"]["etcd"]["process"]["pid"])
        assert pids and not [p for p in pids if alive(p)], "runtime processes left after clean_up: %s" % pids
        assert not os.path.exists(snap["datasets"][0]["home"])
        status = subprocess.run([binary, "runtime", "status", "--json"], capture_output=True, text=True,
                                env=dict(env, TRELLIS_HOME=snap["datasets"][0]["home"]))
        assert json.loads(status.stdout)["up"] is False
    finally:
        stop_leftovers(binary, home)
        shutil.rmtree(home, ignore_errors=True)


def stop_leftovers(binary, home):
    datasets = os.path.join(home, "datasets")
    for ns in os.listdir(datasets) if os.path.isdir(datasets) else []:
        for name in os.listdir(os.path.join(datasets, ns)):
            subprocess.run([binary, "runtime", "down"], capture_output=True, timeout=120,
                           env=dict(os.environ, TRELLIS_HOME=os.path.join(datasets, ns, name)))
