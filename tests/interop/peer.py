#!/usr/bin/env python3
"""The Python side of the Swift client's interoperability tests.

Run by Tests/TrellisClientTests/InteropTests.swift with the pinned upstream client
(vineyard 0.24.2, numpy, pandas, pyarrow from /work/main/.venv):

    peer.py put   SOCKET   # Python puts the objects; prints one JSON line for Swift to check
    peer.py check SOCKET   # Python gets what Swift put and compares with what it should be

The values of every object are functions of the element position, spelled the same way
in tests/interop/peer.py and in InteropTests.swift, so that each side can compute what
the other must have written. Names are prefixed "py_" (written by Python) and "swift_"
(written by Swift). `check` prints "ok NAME" or "FAIL NAME: reason" lines and exits 1 if
anything failed.
"""

import json
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import vineyard

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64"]
N = 24
SEED_ROWS, SEED_COLS = 600_000, 46


def pattern(dtype: str, n: int = N) -> np.ndarray:
    """The values of the tensor of `dtype`, as InteropTests.swift computes them."""
    i = np.arange(n, dtype=np.int64)
    if dtype == "bool":
        return (i % 3 == 0)
    if dtype.startswith("float"):
        return (i.astype(np.float64) * 0.25 - 3.0).astype(dtype)
    if dtype.startswith("uint"):
        return ((i * 37) % 101).astype(dtype)
    return ((i * 37) % 101 - 50).astype(dtype)


def small_frame() -> pd.DataFrame:
    i = np.arange(5)
    return pd.DataFrame({
        "a": (i * 10).astype(np.int64),
        "b": i.astype(np.float64) * 0.5,
        "c": i % 2 == 0,
        "d": (-i).astype(np.int32),
    })


def indexed_frame() -> pd.DataFrame:
    return pd.DataFrame({0: np.array([1.0, 2.0, 3.0]), "x": np.array([7, 8, 9], dtype=np.int64)},
                        index=pd.Index(np.array([10, 20, 30], dtype=np.int64), name="k"))


def small_series() -> pd.Series:
    return pd.Series(np.array([1.5, 2.5, -3.0]), name="s")


def small_table() -> pa.Table:
    return pa.table({
        "x": pa.array([1, 2, 3], pa.int64()),
        "y": pa.array([0.5, 1.5, 2.5], pa.float64()),
        "s": pa.array(["a", "bb", None], pa.large_string()),
        "f": pa.array([True, False, True], pa.bool_()),
    })


def swift_seed() -> pd.DataFrame:
    """The seed-sized frame Swift writes: c<j>[i] = (i * 46 + j) % 1000003."""
    i = np.arange(SEED_ROWS, dtype=np.int64)[:, None]
    j = np.arange(SEED_COLS, dtype=np.int64)[None, :]
    values = (i * SEED_COLS + j) % 1_000_003
    return pd.DataFrame({f"c{k}": values[:, k].copy() for k in range(SEED_COLS)})


def python_seed() -> pd.DataFrame:
    """The seed DataFrame of bench/daemon_bench.py (600,000 x 46 int64, seed 42)."""
    np.random.seed(42)
    return pd.DataFrame({f"c{i}": np.random.randint(0, 1_000_000, size=SEED_ROWS) for i in range(SEED_COLS)})


def put(client) -> None:
    out = {}

    def share(name, value):
        oid = client.put(value, persist=True, name=name)
        out[name] = int(oid)

    for dt in DTYPES:
        share("py_t_" + dt, pattern(dt))
    share("py_t_2d", np.arange(24, dtype=np.int64).reshape(4, 6))
    share("py_t_fortran", np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)))
    share("py_t_empty", np.zeros((0,), dtype=np.float64))
    share("py_df", small_frame())
    share("py_df_idx", indexed_frame())
    share("py_series", small_series())
    share("py_table", small_table())
    seed = python_seed()
    share("py_seed", seed)
    out["py_seed_sums"] = [int(seed[c].to_numpy().sum()) for c in seed.columns]
    out["py_seed_first"] = [int(v) for v in seed.iloc[0].to_numpy()]
    out["py_seed_last"] = [int(v) for v in seed.iloc[-1].to_numpy()]
    print(json.dumps(out))


def check(client) -> int:
    failures = 0

    def verdict(name, ok, reason=""):
        nonlocal failures
        if ok:
            print("ok", name)
        else:
            failures += 1
            print("FAIL %s: %s" % (name, reason))

    def get(name):
        return client.get(name=name)

    for dt in DTYPES:
        name = "swift_t_" + dt
        try:
            got, want = get(name), pattern(dt)
            verdict(name, isinstance(got, np.ndarray) and got.dtype == want.dtype and np.array_equal(got, want),
                    "got %r (%s), want %r" % (got, getattr(got, "dtype", type(got)), want))
        except Exception as e:  # noqa: BLE001
            verdict(name, False, repr(e))

    checks = [
        ("swift_t_2d", lambda g: g.shape == (4, 6) and np.array_equal(g, pattern("int64").reshape(4, 6))),
        ("swift_t_fortran", lambda g: g.flags["F_CONTIGUOUS"] and np.array_equal(g, np.arange(6.0).reshape(2, 3))),
        ("swift_t_empty", lambda g: g.shape == (0,) and g.dtype == np.float64),
    ]
    for name, ok in checks:
        try:
            g = get(name)
            verdict(name, ok(g), "got %r" % (g,))
        except Exception as e:  # noqa: BLE001
            verdict(name, False, repr(e))

    def frame_check(name, want):
        try:
            got = get(name)
            pd.testing.assert_frame_equal(got, want, check_index_type="equiv")
            verdict(name, True)
        except Exception as e:  # noqa: BLE001
            verdict(name, False, repr(e))

    frame_check("swift_df", small_frame())
    frame_check("swift_df_idx", indexed_frame())
    try:
        pd.testing.assert_series_equal(get("swift_series"), small_series(), check_index_type="equiv")
        verdict("swift_series", True)
    except Exception as e:  # noqa: BLE001
        verdict("swift_series", False, repr(e))
    try:
        got = get("swift_table")
        verdict("swift_table", isinstance(got, pa.Table) and got.equals(small_table()),
                "got %r" % (got,))
    except Exception as e:  # noqa: BLE001
        verdict("swift_table", False, repr(e))
    frame_check("swift_seed", swift_seed())
    return 1 if failures else 0


def main() -> int:
    mode, socket = sys.argv[1], sys.argv[2]
    client = vineyard.connect(socket)
    try:
        if mode == "put":
            put(client)
            return 0
        if mode == "check":
            return check(client)
        print("unknown mode", mode, file=sys.stderr)
        return 2
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
