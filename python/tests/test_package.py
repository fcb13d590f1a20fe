"""The package itself: the binary lookup and the deprecated trellis_flow name."""

import importlib
import os
import stat
import subprocess
import sys

import pytest

from trellis import TrellisNotFound, find_trellis


def executable(path):
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def test_trellis_bin_wins_over_path(tmp_path):
    a = executable(str(tmp_path / "a"))
    os.makedirs(tmp_path / "bin")
    executable(str(tmp_path / "bin" / "trellis"))
    assert find_trellis(environ={"TRELLIS_BIN": a, "PATH": str(tmp_path / "bin")}) == a


def test_path_is_searched(tmp_path):
    os.makedirs(tmp_path / "bin")
    b = executable(str(tmp_path / "bin" / "trellis"))
    assert find_trellis(environ={"PATH": str(tmp_path / "bin")}) == b


def test_neither_is_a_clear_error(tmp_path):
    with pytest.raises(TrellisNotFound) as e:
        find_trellis(environ={"PATH": str(tmp_path)})
    assert "TRELLIS_BIN" in str(e.value) and "PATH" in str(e.value)


def test_trellis_bin_not_executable(tmp_path):
    p = tmp_path / "t"
    p.write_text("")
    with pytest.raises(TrellisNotFound) as e:
        find_trellis(environ={"TRELLIS_BIN": str(p), "PATH": ""})
    assert str(p) in str(e.value)
    with pytest.raises(TrellisNotFound):
        find_trellis(environ={"TRELLIS_BIN": str(tmp_path), "PATH": ""})  # a directory


def test_flow_run_without_binary_fails_before_starting(tmp_path, monkeypatch):
    from trellis.flow import Flow
    monkeypatch.delenv("TRELLIS_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))

    def f():
        pass
    with pytest.raises(TrellisNotFound):
        Flow().process(f).run(home=str(tmp_path / "home"))
    assert not (tmp_path / "home").exists()


def test_old_import_warns_and_works():
    sys.modules.pop("trellis_flow", None)
    with pytest.warns(DeprecationWarning, match="trellis.flow"):
        old = importlib.import_module("trellis_flow")
    from trellis import flow
    assert old.Flow is flow.Flow and old.Runtime is flow.Runtime


def test_installed_with_type_information():
    import trellis
    root = os.path.dirname(trellis.__file__)
    assert os.path.exists(os.path.join(root, "py.typed"))
    out = subprocess.run([sys.executable, "-c", "import trellis.flow, trellis.fluid, trellis.fluid.utils.processor"],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
