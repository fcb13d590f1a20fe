"""Calls `trellis flow render` ($TRELLIS_BIN, else the debug build) for the k8s tests."""

import os
import subprocess

import pytest
import yaml

from k8s_checks import REPO

FLOWS = {
    "house-prices": REPO / "examples" / "house-prices" / "flow.yaml",
    "fan-in": REPO / "examples" / "fan-in" / "flow.yaml",
}


def trellis_bin():
    path = os.environ.get("TRELLIS_BIN") or str(REPO / ".build" / "debug" / "trellis")
    if not os.access(path, os.X_OK):
        pytest.fail("no trellis binary at %s: build it (swift build --product trellis) or set TRELLIS_BIN" % path)
    return path


def run_render(flow, target, *args, check=True):
    """``trellis flow render`` of ``flow``; returns the CompletedProcess."""
    cmd = [trellis_bin(), "flow", "render", str(flow), "--target", target, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail("%s exited %d: %s" % (" ".join(cmd), proc.returncode, proc.stderr))
    return proc


def render_docs(flow, target, *args):
    """The documents ``trellis flow render`` prints."""
    return [d for d in yaml.safe_load_all(run_render(flow, target, *args).stdout) if d is not None]
