"""A rendered step container does what its pod would do: with the ConfigMap's items laid out
as the kubelet mounts them, its command (no shell) runs the step's code through the Trellis
bootstrap, in its working directory, with the run's environment and object-name prefix."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from k8s_render import render_docs

PROBE = r'''
import json, os

def probe():
    # Text a shell heredoc would have expanded: it must reach Python untouched.
    literal = "$HOME `echo no` \\ $(id)"
    from vineyard.core.client import Client
    out = {
        "literal": literal,
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("TRELLIS_", "VINEYARD_", "PROBE_", "PYTHON"))},
        "prefix_applied": Client.put_name.__name__ == "_put_name",
    }
    with open(os.environ["PROBE_OUT"], "w") as f:
        json.dump(out, f)
'''

SCRIPT = r'''
import json, os, sys
with open(os.environ["PROBE_OUT"], "w") as f:
    json.dump({"argv0": sys.argv[0], "cwd": os.getcwd(), "name": __name__}, f)
'''


def _materialize(docs, step, root):
    """Lays out the code volume of `step`'s pod under root (as the kubelet would at /trellis)
    and returns its container with /trellis paths moved under root."""
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    dp = [d for d in docs if d["kind"] == "DataProcess" and d["metadata"]["labels"]["trellis.io/step"] == step][0]
    pod = dp["spec"]["processor"]["job"]["podSpec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "trellis-code"]
    for item in vol["configMap"]["items"]:
        path = root / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cm["data"][item["key"]])
    (c,) = pod["containers"]
    assert [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "trellis-code"] == ["/trellis"]

    def move(s):
        return str(root) + s[len("/trellis"):] if s.startswith("/trellis") else s

    cmd = [move(a) for a in c["command"]]
    env = {e["name"]: ":".join(move(p) for p in e["value"].split(":")) for e in c["env"]}
    return cmd, move(c["workingDir"]), env


@pytest.mark.parametrize("target_step", ["probe", "script"])
def test_rendered_container_runs_the_step(tmp_path, target_step):
    flow_dir = tmp_path / "flow"
    (flow_dir / "sub").mkdir(parents=True)
    (flow_dir / "probe.py").write_text(PROBE)
    (flow_dir / "sub" / "script.py").write_text(SCRIPT)
    (flow_dir / "flow.yaml").write_text(yaml.safe_dump({
        "name": "probe-flow",
        "steps": [
            {"name": "probe", "python": {"file": "probe.py", "function": "probe"}, "outputs": ["x"],
             "env": {"PROBE_VAR": "v 1", "TRELLIS_STEP": "not-allowed"}},
            {"name": "script", "python": {"file": "script.py"}, "workdir": "sub", "inputs": ["x"]},
        ],
    }))
    docs = render_docs(flow_dir / "flow.yaml", "fluid", "--run-id", "run-7")
    root = tmp_path / "mnt"
    cmd, cwd, env = _materialize(docs, target_step, root)
    assert cmd[0] == "python3"
    cmd[0] = sys.executable
    out = tmp_path / "out.json"
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, "PROBE_OUT": str(out)}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    if target_step == "probe":
        assert got["literal"] == "$HOME `echo no` \\ $(id)"
        assert got["cwd"] == str(root / "code")
        assert got["env"]["TRELLIS_RUN_ID"] == "run-7"
        assert got["env"]["TRELLIS_STEP"] == "probe"
        assert got["env"]["TRELLIS_NAME_PREFIX"] == "run-7/"
        assert got["env"]["TRELLIS_OUTPUTS"] == "x"
        assert got["env"]["PROBE_VAR"] == "v 1"
        assert got["env"]["VINEYARD_IPC_SOCKET"] == "/var/run/vineyard-worker.sock"
        assert got["prefix_applied"] is True
    else:
        assert got == {"argv0": str(root / "code" / "sub" / "script.py"), "cwd": str(root / "code" / "sub"),
                       "name": "__main__"}


@pytest.mark.parametrize("package, works", [("pytest", True), ("trellis-no-such-package-0", False)])
def test_step_packages_are_pip_installed_before_the_step(tmp_path, package, works):
    """A step's kubernetes.packages are installed by the bootstrap before the step's code
    runs (the pod's image need not carry them): one already there is fine without reaching
    the index; one that cannot be installed fails the step with pip's status, named."""
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    (flow_dir / "probe.py").write_text(PROBE)
    (flow_dir / "flow.yaml").write_text(yaml.safe_dump({
        "name": "pip-flow",
        "steps": [{"name": "probe", "python": {"file": "probe.py", "function": "probe"},
                   "kubernetes": {"packages": [package], "pip_index_url": "http://127.0.0.1:9/simple"}}],
    }))
    docs = render_docs(flow_dir / "flow.yaml", "fluid", "--run-id", "run-8")
    cmd, cwd, env = _materialize(docs, "probe", tmp_path / "mnt")
    cmd[0] = sys.executable
    out = tmp_path / "out.json"
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, "PROBE_OUT": str(out),
                "PIP_RETRIES": "0", "PIP_TIMEOUT": "5"}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=180)
    if works:
        assert proc.returncode == 0, proc.stderr
        assert json.loads(out.read_text())["env"]["TRELLIS_PIP_INSTALL"] == package
    else:
        assert proc.returncode != 0 and not out.exists()
        assert "pip could not install %s" % package in proc.stderr, proc.stderr
