"""Values survive client.put / client.get unchanged (numpy, pandas, pyarrow)."""

import json
import mmap

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import harness

DTYPES = [
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64,
    np.bool_,
]

SHAPES = [(), (0,), (3, 0, 2), (7,), (3, 5), (2, 3, 4)]


def sample(dtype, shape, seed=0):
    """Deterministic values that use the dtype's range (sign bits, high bits)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64))
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        flat = rng.integers(0, 2, n).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        if n >= 2:
            flat[0], flat[1] = info.min, info.max
    else:
        flat = (rng.standard_normal(n) * 1000).astype(dtype)
        if n >= 3:
            flat[0], flat[1], flat[2] = np.finfo(dtype).max, np.finfo(dtype).tiny, -0.0
    return flat.reshape(shape)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)) or "0d")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_numpy_round_trip(client, dtype, shape, order):
    a = np.asarray(sample(dtype, shape), order=order)
    if order == "F":
        a = np.asfortranarray(a)
    oid = client.put(a)
    b = client.get(oid)
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype
    assert b.shape == a.shape
    assert np.array_equal(a, b)
    # bit-exact, not just numerically equal (-0.0, float16 patterns)
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    meta = client.get_meta(oid)
    assert meta.typename.startswith("vineyard::Tensor<")
    if shape:  # (the client records a 0-d array as shape [1])
        assert json.loads(meta["shape_"]) == list(shape)
    if a.ndim >= 2 and a.size > 1:
        assert b.flags.f_contiguous == (order == "F")
        assert b.flags.c_contiguous == (order == "C")
        assert meta["order_"] == '"%s"' % order
    del b
    client.delete(oid)
    assert not client.exists(oid)


CHUNK = 64 << 20
_K = np.uint64(0x9E3779B97F4A7C15)
_base = None


def _arange_chunk():
    global _base
    if _base is None:
        _base = np.arange(CHUNK // 8, dtype=np.uint64)
    return _base


def fill_pattern(out, start, seed):
    """Write bytes [start, start + len(out)) of a position-dependent pattern.

    ``out`` is a uint8 array whose length and ``start`` are multiples of 8; the
    pattern is cheap to regenerate, so big arrays can be checked chunk by chunk
    without a second full-size copy.
    """
    words = out.view(np.uint64)
    base = _arange_chunk()
    for off in range(0, len(words), len(base)):
        w = words[off : off + len(base)]
        np.add(base[: len(w)], np.uint64(start // 8 + off), out=w)
        w *= _K
        w += np.uint64(seed)
    return out


def big_buffer(nbytes):
    """A pre-faulted anonymous uint8 buffer (page faults are slow on small VMs)."""
    if nbytes < CHUNK:
        return np.empty(nbytes, np.uint8)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0x8000)
    m = mmap.mmap(-1, nbytes, flags=flags)
    return np.frombuffer(m, np.uint8)


@pytest.mark.parametrize(
    "nbytes",
    [0, 8, 1 << 10, 1 << 20, 64 << 20, 1 << 30],
    ids=["0B", "8B", "1KiB", "1MiB", "64MiB", "1GiB"],
)
def test_sizes(fresh_daemon, nbytes):
    """One array of each size; the daemon's --size 2Gi allows the 1 GiB one."""
    c = harness.connect(fresh_daemon.socket)
    try:
        baseline = c.status.memory_usage
        seed = nbytes + 17
        a = fill_pattern(big_buffer(nbytes), 0, seed)
        oid = c.put(a)
        del a  # keep the test process lean: compare against a regenerated pattern
        assert c.status.memory_usage >= baseline + nbytes
        b = c.get(oid)
        assert b.dtype == np.uint8 and b.shape == (nbytes,)
        step = 4 << 20  # small steps keep the temporaries in reused heap memory
        scratch = np.empty(min(nbytes, step), np.uint8)
        for start in range(0, nbytes, step):
            stop = min(nbytes, start + step)
            expected = fill_pattern(scratch[: stop - start], start, seed)
            assert np.array_equal(b[start:stop], expected), "bytes %d..%d differ" % (start, stop)
        del b
        c.delete(oid)
        assert not c.exists(oid)
        # freed: usage back to where it was
        assert c.status.memory_usage == baseline
    finally:
        harness.disconnect(c)


def test_dataframe_round_trip(client):
    df = pd.DataFrame(
        {
            "i": np.arange(-3, 7, dtype=np.int64) * 1_000_000_007,
            "f": np.linspace(-1.5, 2.5, 10),
            "s": ["alpha", "", "γάμμα", "delta", None, "x" * 1000, "a b", "7", "z", "end"],
        },
        index=pd.Index(np.arange(100, 0, -10, dtype=np.int64), name="key"),
    )
    oid = client.put(df)
    back = client.get(oid)
    assert isinstance(back, pd.DataFrame)
    pd.testing.assert_frame_equal(back, df)
    assert list(back.columns) == ["i", "f", "s"]
    assert back.index.name == "key"
    assert client.get_meta(oid).typename == "vineyard::DataFrame"
    client.delete(oid)


def test_dataframe_string_index(client):
    df = pd.DataFrame({"v": np.arange(3, dtype=np.int64)}, index=["x", "y", "z"])
    back = client.get(client.put(df))
    pd.testing.assert_frame_equal(back, df)


def test_series_round_trip(client):
    s = pd.Series(np.array([3.25, -1.0, np.nan, 1e300]), index=[3, 1, 4, 1], name="pi")
    oid = client.put(s)
    back = client.get(oid)
    assert isinstance(back, pd.Series)
    pd.testing.assert_series_equal(back, s)
    assert client.get_meta(oid).typename == "vineyard::Series"


def test_pyarrow_table_round_trip(client):
    t = pa.table(
        {
            "a": pa.array([1, 2, None, -(2**62)], pa.int64()),
            "b": pa.array(["x", None, "zz", ""], pa.string()),
            "c": pa.array([1.5, 2.5, 3.5, float("inf")], pa.float64()),
        }
    )
    oid = client.put(t)
    back = client.get(oid)
    assert isinstance(back, pa.Table)
    assert back.num_rows == 4 and back.column_names == ["a", "b", "c"]
    # vineyard stores strings as large_string; the values must be identical
    expected = t.cast(
        pa.schema([("a", pa.int64()), ("b", pa.large_string()), ("c", pa.float64())])
    )
    assert back.equals(expected)
    assert back.to_pydict() == t.to_pydict()
    assert back.column("a").null_count == 1 and back.column("b").null_count == 1
    assert client.get_meta(oid).typename == "vineyard::Table"
