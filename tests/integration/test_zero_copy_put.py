"""Zero-copy put (trellis.accel.zero_copy): numpy places large buffers in the daemon's
arena, and ``put`` seals them where they are — a pandas block of several columns cut into
one blob per column by the daemon's ``split_buffer`` extension. What readers see is
exactly what the upstream builders write (trees compared field by field; values read back
by the upstream client in another process, by the Swift CLI's CSV and .npy export), and
the rules hold: read-only after put, memory back when an array is freed before put, an
array outliving its object or its process, a forked child, an arena that is full, and
upstream vineyardd (no extension advertised: nothing changes)."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import harness

sys.path.insert(0, str(harness.REPO_ROOT / "python"))

pytestmark = pytest.mark.trellis_only

THRESHOLD = 1 << 16


@pytest.fixture
def zc(fresh_daemon):
    import trellis.accel as accel

    accel.install()
    assert accel.zero_copy(fresh_daemon.socket, threshold=THRESHOLD), \
        "zero_copy() refused a Trellis daemon (is trellis._zerocopy built? scripts/setup-python.sh)"
    try:
        yield accel, fresh_daemon
    finally:
        accel.zero_copy_off()
        accel.uninstall()


def _free_bytes(socket):
    with harness.RawConn(socket) as c:
        c.register()
        return c.instance_status()["meta"]["free_bytes"]


def _blob_offsets(socket, tree):
    """The arena offsets of every blob in `tree` (from get_buffers, unsafe: no fds kept)."""
    ids = []

    def walk(t):
        for v in t.values():
            if isinstance(v, dict):
                if v.get("typename") == "vineyard::Blob":
                    ids.append(int(v["id"][1:], 16))
                else:
                    walk(v)

    walk(tree)
    with harness.RawConn(socket) as c:
        c.register()
        reply = c.request({"type": "get_buffers_request", "ids": ids, "unsafe": True})
    return {p["object_id"]: p["data_offset"] for p in reply["payloads"]}


def _csv_read_elsewhere(socket, oid):
    """The frame `oid` as CSV, read by the upstream client in another process."""
    reader = subprocess.run(
        [sys.executable, "-c",
         "import sys, vineyard; c = vineyard.connect(sys.argv[1]);"
         "print(c.get(vineyard.ObjectID(int(sys.argv[2]))).to_csv(index=False), end='')",
         socket, str(int(oid))],
        capture_output=True, text=True, timeout=120)
    assert reader.returncode == 0, reader.stderr
    return reader.stdout


def _frame(rows=20_000, cols=8):
    rng = np.random.default_rng(11)
    return pd.DataFrame({"c%d" % i: rng.integers(0, 1_000_000, size=rows) for i in range(cols)})


def test_a_frame_built_in_the_arena_is_published_in_place_as_upstream_writes_it(zc):
    accel, d = zc
    client = harness.connect(d.socket)
    try:
        df = _frame()  # 8 int64 columns in one block of 1.28 MB: in the arena
        expected = df.copy()
        before = accel.stats().get("zero_copy_blobs", 0)
        fast = client.put(df)
        # every column and the materialised index went in place, no blob was copied
        assert accel.stats()["zero_copy_blobs"] - before == 9
        # where the blobs are: the block's own memory, column after column
        block = df._mgr.blocks[0].values
        base = block.__array_interface__["data"][0]
        conn = accel._connection_at(d.socket)
        offsets = sorted(_blob_offsets(d.socket, harness.stored_tree(d.socket, fast)).values())
        row = block.shape[1] * 8
        assert [o for o in offsets if base - conn.zc_base <= o < base - conn.zc_base + block.nbytes] == \
            [base - conn.zc_base + i * row for i in range(8)]
        # the tree is the upstream builders' tree, field by field
        accel.zero_copy_off()
        accel.uninstall()
        upstream = client.put(expected)
        assert harness.normal_tree(harness.stored_tree(d.socket, fast)) == harness.normal_tree(harness.stored_tree(d.socket, upstream))
        # a reader in another process sees the same frame
        assert _csv_read_elsewhere(d.socket, fast) == expected.to_csv(index=False)
        pdt.assert_frame_equal(client.get(fast), expected)
    finally:
        harness.disconnect(client)


def test_columns_of_any_length_are_published_in_place_and_their_memory_returns_together(zc):
    """A block whose columns are not whole 64-byte units (10,007 rows of int64, as a
    filter or train_test_split leaves them) is still cut into one blob per column
    (``split_unaligned``: the pieces share their allocation), reads back equal in another
    process, and its memory returns once the object and the arrays are gone."""
    accel, d = zc
    assert "split_unaligned" in accel._connection_at(d.socket).extensions
    baseline = _free_bytes(d.socket)
    client = harness.connect(d.socket)
    try:
        rows = 10_007
        df = _frame(rows=rows, cols=8)  # 8 x 80,056 bytes: no column a multiple of 64
        expected = df.copy()
        before = accel.stats().get("zero_copy_blobs", 0)
        oid = client.put(df)
        assert accel.stats()["zero_copy_blobs"] - before == 9  # 8 columns and the index, none copied
        block = df._mgr.blocks[0].values
        base = block.__array_interface__["data"][0] - accel._connection_at(d.socket).zc_base
        offsets = sorted(_blob_offsets(d.socket, harness.stored_tree(d.socket, oid)).values())
        assert [o for o in offsets if base <= o < base + block.nbytes] == [base + i * rows * 8 for i in range(8)]
        assert _csv_read_elsewhere(d.socket, oid) == expected.to_csv(index=False)
        client.delete(oid, deep=True)
        del df, block, expected  # (the copy is in the arena too, and shares the index)
        import gc

        gc.collect()
    finally:
        harness.disconnect(client)
    accel.zero_copy_off()
    accel.close_connections()
    assert _free_bytes(d.socket) == baseline


def test_the_swift_cli_exports_what_was_published_in_place(zc, tmp_path):
    accel, d = zc
    client = harness.connect(d.socket)
    try:
        df = _frame(rows=10_000, cols=4)
        arr = np.arange(50_000, dtype=np.float64) / 7
        expected_df, expected_arr = df.copy(), arr.copy()
        before = accel.stats().get("zero_copy_blobs", 0)
        client.put(df, persist=True, name="zc-frame")
        client.put(arr, persist=True, name="zc-array")
        assert accel.stats()["zero_copy_blobs"] - before == 6
        binary = os.environ.get("TRELLIS_BIN") or str(harness.REPO_ROOT / ".build" / "debug" / "trellis")
        for name, out in (("zc-frame", tmp_path / "f.csv"), ("zc-array", tmp_path / "a.npy")):
            r = subprocess.run([binary, "get", "--socket", d.socket, name, "--to", str(out)],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
        pdt.assert_frame_equal(pd.read_csv(tmp_path / "f.csv"), expected_df)
        np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), expected_arr)
    finally:
        harness.disconnect(client)


def test_published_arrays_are_read_only_and_stay_valid_after_their_object_is_deleted(zc):
    accel, d = zc
    client = harness.connect(d.socket)
    try:
        df = _frame(rows=16_384, cols=4)
        arr = np.arange(1 << 16, dtype=np.int64)
        expected = df.copy()
        oid, aid = client.put(df), client.put(arr)
        with pytest.raises(ValueError, match="read-only"):
            df.iloc[0, 0] = -1
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = -1
        pdt.assert_frame_equal(client.get(oid), expected)
        free_with_objects = _free_bytes(d.socket)
        client.delete([oid, aid])
        # the writer still uses the blobs: retired, not freed — its arrays stay intact
        assert _free_bytes(d.socket) == free_with_objects
        scratch = client.put(np.full(1 << 17, 7, dtype=np.int64))  # anything reusing freed memory
        pdt.assert_frame_equal(df, expected)
        assert arr[-1] == (1 << 16) - 1
        client.delete(scratch)
    finally:
        harness.disconnect(client)
    del df, arr
    # the last use ended: the memory is the arena's again
    assert harness.wait_until(lambda: _free_bytes(d.socket) > free_with_objects, timeout=10)


def test_an_array_freed_before_put_gives_its_memory_back(zc):
    accel, d = zc
    baseline = _free_bytes(d.socket)
    reserved = accel.zero_copy_stats()["live_reservations"]
    a = np.ones(1 << 20, dtype=np.float64)  # 8 MiB in the arena, unsealed
    assert accel.zero_copy_stats()["live_reservations"] == reserved + 1
    assert _free_bytes(d.socket) <= baseline - a.nbytes
    del a
    assert accel.zero_copy_stats()["live_reservations"] == reserved
    assert _free_bytes(d.socket) == baseline
    small = np.ones(100)  # below the threshold: the heap
    assert accel.zero_copy_stats()["live_reservations"] == reserved
    assert small.sum() == 100


def test_what_cannot_be_published_as_is_is_copied_and_reads_back_equal(zc):
    accel, d = zc
    client = harness.connect(d.socket)
    try:
        big = np.arange(1 << 18, dtype=np.int64).reshape(512, 512)
        before = accel.stats().get("zero_copy_blobs", 0)
        cases = [big[10:20], big[:, 3]]  # a slice of a reservation, a strided column
        ids = [client.put(v) for v in cases]
        assert accel.stats().get("zero_copy_blobs", 0) == before  # both copied
        for v, oid in zip(cases, ids):
            np.testing.assert_array_equal(client.get(oid), v)
        # an F-ordered view: its bytes go in C order (as upstream's builder writes them)
        # straight into a blob of their own — one copy, not a C-ordered copy then another
        t = client.put(big.T)
        assert accel.stats().get("zero_copy_blobs", 0) == before
        np.testing.assert_array_equal(client.get(t), big.T)
        assert big.flags.writeable  # nothing of it was published
        # a frame whose columns are not 64-byte multiples (3 rows of int64) is copied too
        odd = pd.DataFrame({"a": np.arange(3), "b": np.arange(3)})
        pdt.assert_frame_equal(client.get(client.put(odd)), odd)
    finally:
        harness.disconnect(client)


def test_the_reservations_outlive_close_connections_and_leave_with_the_process(fresh_daemon):
    """A child process turns zero-copy on, publishes one frame and leaves another array
    unpublished, closes its connections (the one holding reservations stays), and exits:
    the unpublished memory returns, the published object stays readable."""
    d = fresh_daemon
    baseline = _free_bytes(d.socket)
    code = r"""
import sys, numpy as np, pandas as pd, vineyard
sys.path.insert(0, sys.argv[2])
import trellis.accel as accel
accel.install()
assert accel.zero_copy(sys.argv[1], threshold=1 << 16)
c = vineyard.connect(sys.argv[1])
df = pd.DataFrame({"a": np.arange(1 << 16), "b": np.arange(1 << 16) * 2})
oid = c.put(df, persist=True, name="left-behind")
pending = np.zeros(1 << 20)  # 8 MiB reserved, never put
accel.close_connections()
assert accel._zc_find(pending.__array_interface__["data"][0]) is not None
assert accel._connections, "the connection holding reservations was closed"
pending[:] = 1  # still ours to write
print(int(pending.sum()))
"""
    r = subprocess.run([sys.executable, "-c", code, d.socket, str(harness.REPO_ROOT / "python")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(1 << 20)
    client = harness.connect(d.socket)
    try:
        got = client.get(name="left-behind")
        pdt.assert_frame_equal(got, pd.DataFrame({"a": np.arange(1 << 16), "b": np.arange(1 << 16) * 2}))
        frame_bytes = 2 * (1 << 16) * 8
        assert harness.wait_until(lambda: _free_bytes(d.socket) >= baseline - frame_bytes - (1 << 20), timeout=10)
    finally:
        harness.disconnect(client)


def test_a_forked_child_leaves_its_parents_arrays_alone(zc):
    accel, d = zc
    a = np.arange(1 << 17, dtype=np.int64)  # the parent's, in the arena
    reserved = accel.zero_copy_stats()["live_reservations"]
    free_before = _free_bytes(d.socket)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import vineyard

            ok = int(a[-1]) == (1 << 17) - 1
            del a  # an inherited array: freeing it in the child must not drop the parent's blob
            # the child reserves through its own connection once it asks for it
            ok = ok and accel.zero_copy(d.socket, threshold=THRESHOLD)
            c = vineyard.connect(d.socket)
            b = np.arange(1 << 17, dtype=np.int64) * 3
            oid = c.put(b)
            ok = ok and accel.stats().get("zero_copy_blobs", 0) >= 1
            ok = ok and int(c.get(oid)[-1]) == ((1 << 17) - 1) * 3
            c.delete(oid)  # its memory goes when this process does
            code = 0 if ok else 2
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert accel.zero_copy_stats()["live_reservations"] == reserved
    assert int(a[-1]) == (1 << 17) - 1
    # the child's own reservations went with it; the parent's array is still reserved
    assert harness.wait_until(lambda: _free_bytes(d.socket) >= free_before, timeout=10)
    assert _free_bytes(d.socket) < free_before + a.nbytes


def test_an_arena_that_is_full_leaves_arrays_on_the_heap(daemon_factory):
    import trellis.accel as accel

    d = daemon_factory(size="32Mi")
    accel.install()
    assert accel.zero_copy(d.socket, threshold=THRESHOLD)
    client = harness.connect(d.socket)
    try:
        fallbacks = accel.zero_copy_stats()["fallbacks"]
        first = np.ones(3 << 20)  # 24 MiB: in the arena
        second = np.ones(3 << 20)  # does not fit beside it: the heap
        assert accel.zero_copy_stats()["fallbacks"] == fallbacks + 1
        assert accel._zc_find(second.__array_interface__["data"][0]) is None
        assert accel._zc_find(first.__array_interface__["data"][0]) is not None
        oid = client.put(first)
        np.testing.assert_array_equal(client.get(oid), first)
        assert second.sum() == 3 << 20
    finally:
        harness.disconnect(client)
        accel.zero_copy_off()
        accel.uninstall()


def test_against_upstream_vineyardd_zero_copy_stays_off(monkeypatch):
    import trellis.accel as accel

    monkeypatch.setenv("TRELLIS_DAEMON", "vineyardd")
    upstream = harness.Daemon(size="256Mi").start()
    monkeypatch.delenv("TRELLIS_DAEMON")
    try:
        assert accel.zero_copy(upstream.socket, threshold=THRESHOLD) is False
        assert accel.zero_copy_stats()["enabled"] == 0
        client = harness.connect(upstream.socket)
        try:
            df = _frame(rows=10_000, cols=3)
            pdt.assert_frame_equal(client.get(client.put(df)), df)
        finally:
            harness.disconnect(client)
    finally:
        upstream.cleanup()


def test_a_put_in_place_costs_one_round_trip_plus_one_per_block_cut(zc, monkeypatch):
    """What goes to the daemon for a zero-copy put: an array that is its whole reservation
    is sealed in the same pipelined round trip that creates its tree (no request of its
    own); a block of several columns costs one ``split_buffer`` (cut and sealed) more."""
    accel, d = zc
    sent = []
    original = accel._Connection.pipeline

    def pipeline(self, messages, fds=False):
        sent.append([m["type"] for m in messages])
        return original(self, messages, fds)

    monkeypatch.setattr(accel._Connection, "pipeline", pipeline)
    client = harness.connect(d.socket)
    try:
        arr = np.arange(1 << 17, dtype=np.int64)  # 1 MiB: its own reservation
        expected = arr.copy()
        sent.clear()
        oid = client.put(arr)
        assert sent == [["seal_request", "create_data_request"]]
        assert not arr.flags.writeable
        np.testing.assert_array_equal(client.get(oid), expected)
        df = _frame(rows=20_000, cols=4)  # one block of 4 columns; the index materialised at put
        expected_df = df.copy()
        sent.clear()
        fid = client.put(df)
        splits = [s for s in sent if s == ["trellis_split_buffer_request"]]
        assert len(splits) == 1
        assert sent[-1] == ["seal_request", "create_data_request"]  # the index's reservation, then the tree
        pdt.assert_frame_equal(client.get(fid), expected_df)
    finally:
        harness.disconnect(client)
