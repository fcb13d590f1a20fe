"""The Python the flow runner writes out (the zygote, the step stub, the step bootstrap,
the data-plane helper) lives in Sources/TrellisFlow/Python as ordinary .py files that
`swift build` embeds in the binary. Here they are treated as the Python they are:
compiled, linted with pyflakes, and checked to be what the binary writes."""

import glob
import os
import subprocess
import sys
import tempfile

import pyflakes.api
import pyflakes.reporter
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SOURCES = sorted(glob.glob(os.path.join(REPO, "Sources", "TrellisFlow", "Python", "*.py")))


def test_the_four_sources_are_there():
    assert [os.path.basename(p) for p in SOURCES] == [
        "trellis_step.py", "trellis_stub.py", "trellis_zygote.py", "vineyard_data_plane.py"]


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_compiles(path):
    with open(path) as f:
        compile(f.read(), path, "exec")


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_pyflakes_finds_nothing(path):
    class Collect:
        def __init__(self):
            self.lines = []

        def write(self, text):
            self.lines.append(text)

        def flush(self):
            pass

    warnings, errors = Collect(), Collect()
    count = pyflakes.api.checkPath(path, pyflakes.reporter.Reporter(warnings, errors))
    assert count == 0, "".join(warnings.lines + errors.lines)


def test_the_binary_writes_these_files():
    """A flow run's lib directory holds the bootstrap the binary embedded: the same text."""
    binary = os.environ.get("TRELLIS_BIN") or os.path.join(REPO, ".build", "debug", "trellis")
    with tempfile.TemporaryDirectory(dir="/tmp") as out:
        flow = os.path.join(REPO, "examples", "house-prices", "flow.yaml")
        r = subprocess.run([binary, "flow", "render", flow, "--target", "argo", "--out", out],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        rendered = "".join(open(os.path.join(out, f)).read() for f in sorted(os.listdir(out)))
    with open(os.path.join(REPO, "Sources", "TrellisFlow", "Python", "trellis_step.py")) as f:
        step = f.read()
    # Every non-empty line of the bootstrap appears in the rendered ConfigMap.
    missing = [l for l in step.splitlines() if l.strip() and l.strip() not in rendered]
    assert not missing, missing[:5]
