"""Gets are zero-copy: the bytes live in the daemon's shared memory and every
client maps them rather than receiving a copy."""

import multiprocessing

import numpy as np
import pytest

import harness
import workers

MiB = 1 << 20
SPAWN = multiprocessing.get_context("spawn")


def test_two_gets_share_memory(client):
    a = np.arange(100_000, dtype=np.int64)
    oid = client.put(a)
    x = client.get(oid)
    y = client.get(oid)
    assert np.array_equal(x, a) and np.array_equal(y, a)
    assert np.shares_memory(x, y)
    assert not np.shares_memory(x, a)  # put copied into the store
    assert client.is_shared_memory(x.ctypes.data)
    assert not client.is_shared_memory(a.ctypes.data)


def test_dataframe_columns_share_memory(client):
    import pandas as pd

    df = pd.DataFrame({"a": np.arange(1000, dtype=np.int64), "b": np.linspace(0, 1, 1000)})
    oid = client.put(df)
    x, y = client.get(oid), client.get(oid)
    pd.testing.assert_frame_equal(x, df)
    for col in ("a", "b"):
        assert np.shares_memory(x[col].to_numpy(), y[col].to_numpy())


def _run_child(target, *args):
    parent, child = SPAWN.Pipe()
    p = SPAWN.Process(target=target, args=args + (child,), daemon=True)
    p.start()
    child.close()
    return p, parent


def _recv(conn, p, timeout=120):
    if not conn.poll(timeout):
        p.kill()
        pytest.fail("child process did not answer in %ss" % timeout)
    return conn.recv()


def test_other_process_maps_instead_of_copying(client):
    """A 256 MiB array read in another process costs it no private memory.

    The measure: RssAnon (anonymous pages: malloc, numpy copies) versus RssShmem
    (pages of shared memory mappings) from /proc/<pid>/status. A private copy of
    the array would add ~256 MiB of RssAnon; a mapping of the daemon's shared
    memory adds RssShmem once the pages are read and nearly no RssAnon. (USS is
    not a reliable measure on its own: a shmem page mapped by only one process
    counts as "private" in smaps even though it is shared memory.)
    """
    nbytes = 256 * MiB
    a = np.arange(nbytes // 8, dtype=np.uint64)
    a *= np.uint64(0x9E3779B97F4A7C15)
    expected = int(a.sum(dtype=np.uint64))
    oid = client.put(a)
    del a
    p, conn = _run_child(workers.zero_copy_reader, client.ipc_socket, int(oid))
    try:
        r = _recv(conn, p)
        assert r["ok"], r.get("error")
        assert r["nbytes"] == nbytes
        assert r["checksum"] == expected, "reader saw different bytes"
        assert r["shared"], "reader's array is not inside a vineyard mapping"
        anon = r["after"]["anon"] - r["before"]["anon"]
        shmem = r["after"]["shmem"] - r["before"]["shmem"]
        assert anon < 16 * MiB, "reader grew %d MiB of private anonymous memory" % (anon // MiB)
        assert shmem >= nbytes * 0.9, "reader mapped only %d MiB of shared memory" % (
            shmem // MiB
        )
        conn.send("done")
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
        client.delete(oid)


@pytest.fixture(scope="module")
def peer(daemon):
    """A second process with its own client, driven over a pipe."""
    p, conn = _run_child(workers.blob_peer, daemon.socket)

    def call(*cmd):
        conn.send(cmd)
        status, value = _recv(conn, p)
        assert status == "ok", value
        return value

    yield call
    try:
        call("quit")
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()


def _write(builder, offset, data):
    view = np.frombuffer(memoryview(builder), np.uint8)
    view[offset : offset + len(data)] = np.frombuffer(data, np.uint8)


def test_blob_written_by_one_process_read_by_another(client, peer):
    payload = bytes(range(256)) * 16
    builder = client.create_blob(len(payload))
    _write(builder, 0, payload)
    blob = builder.seal(client)
    assert peer("get_blob", int(blob.id), False) == payload


def test_blob_written_by_other_process_read_here(client, peer):
    payload = b"written by the peer process " * 100
    bid = peer("create_sealed", payload)
    import vineyard

    blob = client.get_blob(vineyard.ObjectID(bid))
    assert blob.size == len(payload)
    assert bytes(memoryview(blob)) == payload


def test_writes_after_get_are_visible_through_the_mapping(client, peer):
    """The reader holds a live view of the same pages, not a snapshot."""
    size = 8192
    builder = client.create_blob(size)
    _write(builder, 0, b"A" * size)
    first = peer("get_blob", int(builder.id), True)  # unsafe: not sealed yet
    assert first == b"A" * size
    _write(builder, 100, b"changed after the peer mapped it")
    _write(builder, size - 4, b"tail")
    again = peer("reread", int(builder.id))
    assert again[100:132] == b"changed after the peer mapped it"
    assert again[size - 4 :] == b"tail"
    assert again[:100] == b"A" * 100
    builder.seal(client)
