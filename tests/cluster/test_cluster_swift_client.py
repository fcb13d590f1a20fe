"""The Swift client on one instance and the Python client on another.

Swift side: the `trellis put FILE --name N --socket S` and `trellis get NAME --to FILE
--socket S` commands (TrellisClient). Skipped when the binary under test has no such
commands.
"""

import subprocess

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import cluster_lib


def _commands():
    try:
        out = subprocess.run([cluster_lib.trellis_bin(), "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()}


pytestmark = pytest.mark.skipif(
    not {"put", "get"} <= _commands(),
    reason="`trellis put` / `trellis get` are not in this trellis binary (Swift client commands not there yet)")


def trellis(*args, timeout=60):
    p = subprocess.run([cluster_lib.trellis_bin(), *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "trellis %s failed (%d):\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr)
    return p.stdout


def test_swift_put_python_get_on_another_instance(cluster, tmp_path):
    a, b = cluster.start(2)
    arr = (np.arange(60_000, dtype=np.int64) * 7 - 3).reshape(300, 200)
    df = pd.DataFrame({"a": np.arange(50, dtype=np.int64), "b": np.arange(50) * 0.25})
    np.save(tmp_path / "arr.npy", arr)
    df.to_csv(tmp_path / "df.csv", index=False)
    trellis("put", str(tmp_path / "arr.npy"), "--name", "swift_arr", "--socket", a.socket)
    trellis("put", str(tmp_path / "df.csv"), "--name", "swift_df", "--socket", a.socket)

    cb = b.connect()
    np.testing.assert_array_equal(cb.get(name="swift_arr", fetch=False), arr)
    np.testing.assert_array_equal(cb.get(name="swift_arr", fetch=True), arr)
    got = cb.get(name="swift_df", fetch=True)
    pdt.assert_frame_equal(got.reset_index(drop=True), df, check_dtype=False)


def test_python_put_swift_get_on_another_instance(cluster, tmp_path):
    a, b = cluster.start(2)
    arr = np.linspace(-1, 1, 10_001)
    oid = b.connect().put(arr, persist=True, name="py_arr")
    # The blobs are on B: `trellis get` on A fetches (migrates) the object to A first.
    trellis("get", "py_arr", "--to", str(tmp_path / "out.npy"), "--socket", a.socket)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), arr)
    ca = a.connect()
    copy = ca.migrate(oid)  # the copy the command made is remembered: same id again
    assert ca.get_meta(copy).instance_id == ca.instance_id
    trellis("get", "py_arr", "--to", str(tmp_path / "again.npy"), "--socket", a.socket)
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), arr)
    assert len([m for m in ca.list_metadatas("vineyard::Tensor*", limit=100)
                if m.instance_id == ca.instance_id]) == 1


def test_ls_cluster_shows_the_instance_of_each_object(cluster):
    import json
    a, b = cluster.start(2)
    ida = a.connect().put(np.arange(10), persist=True, name="on_a")
    idb = b.connect().put(np.arange(20), persist=True, name="on_b")
    a.connect().put(np.arange(5))  # transient: only A sees it

    local = json.loads(trellis("ls", "--json", "--socket", a.socket))
    assert {o["id"] for o in local if o["local"]} >= {"o%016x" % int(ida)}
    assert all(o["local"] for o in local)

    everywhere = json.loads(trellis("ls", "--cluster", "--json", "--socket", a.socket))
    by_id = {o["id"]: o for o in everywhere}
    ia, ib = a.connect().instance_id, b.connect().instance_id
    assert by_id["o%016x" % int(ida)]["instance_id"] == ia and by_id["o%016x" % int(ida)]["local"]
    assert by_id["o%016x" % int(idb)]["instance_id"] == ib and not by_id["o%016x" % int(idb)]["local"]
    assert "on_b" in by_id["o%016x" % int(idb)]["names"]

    table = trellis("ls", "--cluster", "--socket", a.socket)
    assert "INSTANCE" in table.splitlines()[0]
    row_b = next(line for line in table.splitlines() if line.startswith("o%016x" % int(idb)))
    assert ("i%d" % ib) in row_b and b.rpc_endpoint in row_b


def test_python_put_swift_get_after_migration(cluster, tmp_path):
    """Python on B puts; A migrates the objects (Python, fetch=True); Swift on A reads A's copies."""
    a, b = cluster.start(2)
    arr = np.linspace(-1, 1, 10_001)
    df = pd.DataFrame({"x": np.arange(20, dtype=np.int64) - 5, "y": np.arange(20) / 8, "z": np.arange(20) % 2 == 0})
    cb = b.connect()
    ids = [cb.put(arr, persist=True, name="py_arr"), cb.put(df, persist=True, name="py_df")]
    ca = a.connect()
    copies = [ca.migrate(i) for i in ids]
    trellis("get", "o%016x" % int(copies[0]), "--to", str(tmp_path / "out.npy"), "--socket", a.socket)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), arr)
    trellis("get", "o%016x" % int(copies[1]), "--to", str(tmp_path / "out.csv"), "--socket", a.socket)
    pdt.assert_frame_equal(pd.read_csv(tmp_path / "out.csv"), df)
