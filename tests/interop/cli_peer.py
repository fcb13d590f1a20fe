#!/usr/bin/env python3
"""The Python side of the `trellis get`/`trellis put` tests (Tests/TrellisClientTests/CommandTests.swift).

    cli_peer.py make  DIR          # write the files `trellis put` will store (numpy.save, pandas.to_csv)
    cli_peer.py put   SOCKET       # put the objects `trellis get` will write out
    cli_peer.py check SOCKET DIR   # compare: what trellis put (read with the Python client) with
                                   # the files, and the files trellis get wrote with the objects

`check` prints "ok NAME" / "FAIL NAME: reason" lines and exits 1 on any failure.
"""

import os
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import vineyard


def grid():
    return np.arange(12, dtype=np.int32).reshape(3, 4)


def fortran():
    return np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3) / 4)


def frame():
    i = np.arange(6)
    return pd.DataFrame({
        "a": (i * 1000 - 2500).astype(np.int64),
        "b": i * 0.1,
        "c": i % 2 == 0,
    })


def indexed():
    return pd.DataFrame({"v": np.array([1.5, np.nan, -2.25])},
                        index=pd.Index(np.array([7, 8, 9], dtype=np.int64)))


def series():
    return pd.Series(np.array([3, 1, 4, 1, 5], dtype=np.int64), name="pi")


def table():
    return pa.table({"n": pa.array([1, None, 3], pa.int64()), "s": pa.array(["x", "y,z", None], pa.large_string())})


def make(d):
    np.save(os.path.join(d, "grid.npy"), grid())
    np.save(os.path.join(d, "fortran.npy"), fortran())
    frame().to_csv(os.path.join(d, "frame.csv"), index=False)
    indexed().to_csv(os.path.join(d, "indexed.csv"))
    return 0


def put(client):
    client.put(grid(), persist=True, name="py_cli_grid")
    client.put(frame(), persist=True, name="py_cli_frame")
    client.put(indexed(), persist=True, name="py_cli_indexed")
    client.put(series(), persist=True, name="py_cli_series")
    client.put(table(), persist=True, name="py_cli_table")
    return 0


def check(client, d):
    failures = 0

    def verdict(name, fn):
        nonlocal failures
        try:
            fn()
            print("ok", name)
        except Exception as e:  # noqa: BLE001
            failures += 1
            print("FAIL %s: %r" % (name, e))

    def same_array(got, want):
        assert isinstance(got, np.ndarray), type(got)
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want)

    # trellis put → Python client get
    verdict("cli_grid", lambda: same_array(client.get(name="cli_grid"), grid()))
    def cli_fortran():
        got = client.get(name="cli_fortran")
        same_array(got, fortran())
        assert got.flags["F_CONTIGUOUS"], "not Fortran-ordered"

    def cli_table():
        t = client.get(name="cli_table")
        assert isinstance(t, pa.Table), type(t)
        assert t.column_names == ["a", "b", "c"], t.column_names
        for name in t.column_names:
            assert t.column(name).to_pylist() == frame()[name].tolist(), (name, t.column(name))

    verdict("cli_fortran", cli_fortran)
    verdict("cli_frame", lambda: pd.testing.assert_frame_equal(client.get(name="cli_frame"), frame(),
                                                               check_index_type="equiv"))
    verdict("cli_indexed", lambda: pd.testing.assert_frame_equal(
        client.get(name="cli_indexed"), indexed(), check_index_type="equiv", check_names=False))
    verdict("cli_table", cli_table)

    # Python client put → trellis get → files
    verdict("out_grid", lambda: same_array(np.load(os.path.join(d, "out_grid.npy")), grid()))
    verdict("out_frame", lambda: pd.testing.assert_frame_equal(pd.read_csv(os.path.join(d, "out_frame.csv")), frame()))
    verdict("out_indexed", lambda: pd.testing.assert_frame_equal(
        pd.read_csv(os.path.join(d, "out_indexed.csv"), index_col=0), indexed(), check_names=False))
    verdict("out_series", lambda: pd.testing.assert_series_equal(
        pd.read_csv(os.path.join(d, "out_series.csv"))["pi"], series()))
    verdict("out_table", lambda: pd.testing.assert_frame_equal(
        pd.read_csv(os.path.join(d, "out_table.csv")), pd.DataFrame({"n": [1.0, np.nan, 3.0], "s": ["x", "y,z", np.nan]})))
    return 1 if failures else 0


def main():
    mode = sys.argv[1]
    if mode == "make":
        return make(sys.argv[2])
    client = vineyard.connect(sys.argv[2])
    try:
        if mode == "put":
            return put(client)
        return check(client, sys.argv[3])
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
