"""Shared fixtures of the trellis package tests."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

# The tests test this source tree (tests/tutorial runs the copy installed in the venv).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def trellis_bin():
    """The trellis binary (TRELLIS_BIN, as scripts/test.sh sets it). Tests that run flows
    fail, not skip, without it."""
    path = os.environ.get("TRELLIS_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("TRELLIS_BIN must name the trellis binary (swift build --product trellis; "
                    "TRELLIS_BIN=$PWD/.build/debug/trellis); scripts/test.sh sets it")
    return path


@pytest.fixture
def trellis_home(monkeypatch):
    """A private Trellis home (short: replica sockets live under it, and UNIX socket paths
    stop at 107 bytes); any runtime left in it is stopped, and it is removed, at the end."""
    home = tempfile.mkdtemp(prefix="trellis-py-", dir="/tmp")
    monkeypatch.setenv("TRELLIS_HOME", home)
    monkeypatch.delenv("TRELLIS_VOLUMES", raising=False)
    monkeypatch.delenv("TRELLIS_TARGET", raising=False)
    yield home
    binary = os.environ.get("TRELLIS_BIN")
    datasets = os.path.join(home, "datasets")
    for ns in os.listdir(datasets) if os.path.isdir(datasets) else []:
        for name in os.listdir(os.path.join(datasets, ns)):
            ds_home = os.path.join(datasets, ns, name)
            if binary and os.path.exists(os.path.join(ds_home, "runtime")):
                subprocess.run([binary, "runtime", "down"], env=dict(os.environ, TRELLIS_HOME=ds_home),
                               capture_output=True, timeout=120)
    shutil.rmtree(home, ignore_errors=True)
