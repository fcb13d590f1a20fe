"""Object lifecycle: delete (deep/force), exists, persist, clear, status, meta."""

import os
import threading
import time

import numpy as np
import pandas as pd
import pytest
import vineyard

import harness

MISSING = vineyard.ObjectID("o0000000000000123")
MISSING_BLOB = vineyard.ObjectID("o8000000000000123")


def tensor_blob(client, oid):
    return client.get_meta(oid)["buffer_"].id


def df_parts(client, oid):
    m = client.get_meta(oid)
    col = m["__values_-value-0"]
    idx = m["index_"]
    return dict(
        col=col.id, col_blob=col["buffer_"].id, idx=idx.id, idx_tensor=idx["value_"].id,
        idx_blob=idx["value_"]["buffer_"].id,
    )


def test_exists(client):
    oid = client.put(np.arange(3))
    assert client.exists(oid)
    assert client.exists(tensor_blob(client, oid))
    assert not client.exists(MISSING)
    assert not client.exists(MISSING_BLOB)


def test_delete_default_removes_object_and_blob(client):
    oid = client.put(np.arange(3))
    blob = tensor_blob(client, oid)
    client.delete(oid)  # force=False, deep=True
    assert not client.exists(oid)
    assert not client.exists(blob)
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get(oid)


def test_delete_shallow_still_frees_blob_members(client):
    """Blob members always go with their parent, even with deep=False (§8.1)."""
    oid = client.put(np.arange(3))
    blob = tensor_blob(client, oid)
    client.delete(oid, deep=False)
    assert not client.exists(oid)
    assert not client.exists(blob)


def test_delete_dataframe_deep_and_shallow(client):
    deep = client.put(pd.DataFrame({"x": np.arange(3)}))
    parts = df_parts(client, deep)
    client.delete(deep)
    assert not client.exists(deep)
    for name, member in parts.items():
        assert not client.exists(member), "deep delete left %s" % name

    shallow = client.put(pd.DataFrame({"x": np.arange(3)}))
    parts = df_parts(client, shallow)
    client.delete(shallow, deep=False)
    assert not client.exists(shallow)
    for name, member in parts.items():
        assert client.exists(member), "shallow delete removed non-blob member %s" % name
    # the surviving column is still a complete object
    assert np.array_equal(client.get(parts["col"]), np.arange(3))


def test_delete_referenced_member_without_force_is_a_no_op(client):
    oid = client.put(pd.DataFrame({"x": np.arange(3)}))
    parts = df_parts(client, oid)
    client.delete(parts["col"])  # referenced by the DataFrame: silently kept
    client.delete(parts["col_blob"])  # referenced by the column tensor: kept
    assert client.exists(parts["col"]) and client.exists(parts["col_blob"])
    assert client.exists(oid)
    pd.testing.assert_frame_equal(client.get(oid), pd.DataFrame({"x": np.arange(3)}))


def test_delete_force_removes_referencing_objects(client):
    oid = client.put(pd.DataFrame({"x": np.arange(3)}))
    parts = df_parts(client, oid)
    client.delete(parts["col"], force=True)
    assert not client.exists(parts["col"])
    assert not client.exists(parts["col_blob"])
    assert not client.exists(oid), "force delete of a member must remove its parent"
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get(oid)


def test_delete_force_sequence_element(client):
    seq = client.put((1, 2))
    child = client.get_meta(seq)["__elements_-0"].id
    client.delete(child)
    assert client.exists(child) and client.exists(seq)
    client.delete(child, force=True)
    assert not client.exists(child)
    assert not client.exists(seq)


def test_delete_blob_directly_and_missing_ids(client):
    builder = client.create_blob(100)
    blob = builder.seal(client)
    assert client.exists(blob.id)
    del blob
    client.delete(builder.id)
    assert not client.exists(builder.id)
    client.delete(MISSING)  # unknown ids are ignored
    client.delete(MISSING_BLOB)
    a, b = client.put(np.arange(2)), client.put(np.arange(3))
    client.delete([a, b, MISSING], force=True)
    assert not client.exists(a) and not client.exists(b)


def test_persist_and_if_persist(client):
    oid = client.put(pd.DataFrame({"x": np.arange(3)}))
    obj = client.get_object(oid)
    assert obj.meta["transient"] is True
    assert obj.ispersist is False  # asks the daemon (if_persist_request)
    client.persist(oid)
    meta = client.get_meta(oid)
    assert meta["transient"] is False
    # members (non-blob) become persistent too
    assert meta["__values_-value-0"]["transient"] is False
    assert meta["index_"]["transient"] is False
    assert client.get_object(oid).ispersist is True
    client.persist(oid)  # again: fine
    pd.testing.assert_frame_equal(client.get(oid), pd.DataFrame({"x": np.arange(3)}))


def test_persist_errors(client):
    oid = client.put(np.arange(3))
    # blobs cannot be persisted (code 7)
    with pytest.raises(vineyard.AssertionFailedException, match="cannot be persisted"):
        client.persist(tensor_blob(client, oid))
    # missing object (code 27)
    with pytest.raises(vineyard.MetaTreeSubtreeNotExistsException, match="get subtree failed"):
        client.persist(MISSING)


def test_clear_removes_everything(fresh_client):
    c = fresh_client
    objs = [c.put(np.arange(1000)), c.put(pd.DataFrame({"a": [1, 2]}))]
    c.persist(objs[0])
    blob = c.create_blob(64).seal(c)
    assert c.status.memory_usage > 0
    c.clear()
    for o in objs + [blob.id]:
        assert not c.exists(o)
    assert c.list_objects("*", limit=100) == []
    assert c.status.memory_usage == 0
    # still fully usable
    assert np.array_equal(c.get(c.put(np.arange(5))), np.arange(5))


def test_status_fields_and_memory_usage(fresh_daemon):
    c = harness.connect(fresh_daemon.socket)
    try:
        st = c.status
        assert st.instance_id == 0
        assert st.deployment == "local"
        assert st.memory_limit == 2 << 30
        assert st.rpc_connections == 0
        assert st.deferred_requests == 0
        assert st.ipc_connections >= 1
        baseline = st.memory_usage
        assert baseline == 0
        ids, usages = [], [baseline]
        for n in (1 << 20, 4 << 20, 16 << 20):
            ids.append(c.put(np.ones(n, np.uint8)))
            usages.append(c.status.memory_usage)
            assert usages[-1] >= usages[-2] + n, usages
        assert usages[-1] <= (21 << 20) * 1.1 + (1 << 20), "footprint far above the data"
        for oid in reversed(ids):
            previous = c.status.memory_usage
            c.delete(oid)
            assert c.status.memory_usage < previous
        assert c.status.memory_usage == baseline
    finally:
        harness.disconnect(c)


def test_status_counts_connections(daemon):
    c = harness.connect(daemon.socket)
    try:
        before = c.status.ipc_connections
        other = harness.connect(daemon.socket)
        assert c.status.ipc_connections == before + 1
        harness.disconnect(other)
        assert harness.wait_until(lambda: c.status.ipc_connections == before, 5)
    finally:
        harness.disconnect(c)


def test_status_counts_deferred_requests(daemon):
    c = harness.connect(daemon.socket)
    waiter = harness.connect(daemon.socket)
    t = threading.Thread(target=lambda: waiter.get_name("deferred_probe", wait=True), daemon=True)
    try:
        assert c.status.deferred_requests == 0
        t.start()
        assert harness.wait_until(lambda: c.status.deferred_requests == 1, 5), c.status
        c.put(np.arange(2), persist=True, name="deferred_probe")
        t.join(5)
        assert not t.is_alive()
        assert c.status.deferred_requests == 0
    finally:
        harness.disconnect(waiter)
        harness.disconnect(c)


def test_cluster_meta(client, daemon):
    meta = client.meta
    assert list(meta) == [0]
    inst = meta[0]
    assert inst["ipc_socket"] == daemon.socket
    for key in ("hostid", "hostname", "nodename", "rpc_endpoint", "timestamp"):
        assert key in inst, key
    host, port = inst["rpc_endpoint"].split(":")  # must be exactly host:port
    assert inst["rpc_endpoint"] == "0.0.0.0:0"  # --norpc
    assert isinstance(inst["hostname"], str) and inst["hostname"]


def test_sigterm_exits_zero_and_removes_socket(daemon_factory):
    d = daemon_factory()
    c = harness.connect(d.socket)
    c.put(np.arange(10))
    harness.disconnect(c)
    with harness.RawConn(d.socket) as raw:  # a client that said goodbye properly
        raw.register()
        raw.send({"type": "exit_request"})
        assert raw.is_closed_by_peer()
    _assert_prompt_clean_exit(d)


@pytest.mark.trellis_only
def test_sigterm_with_connected_clients(daemon_factory):
    """SIGTERM while clients are connected, one with a deferred request.

    Upstream 0.24.2 fails this in two ways: with a get_name(wait=True) pending it
    exits 0 at once but leaves the socket file behind; and with plain connected
    vineyard clients it sometimes deadlocks after logging "SIGTERM Signal
    received, stop vineyard server..." (all threads in futex/epoll waits, needs
    SIGKILL; seen reliably when earlier tests of the same pytest run had used
    other daemons).
    """
    d = daemon_factory()
    c = harness.connect(d.socket)
    c.put(np.arange(10))
    waiter = harness.RawConn(d.socket)  # a request the daemon is holding back
    waiter.register()
    waiter.send({"type": "get_name_request", "name": "never_put", "wait": True})
    half = harness.RawConn(d.socket)
    half.send_raw(b"\x10\x00")  # half a header
    try:
        _assert_prompt_clean_exit(d)
        assert waiter.is_closed_by_peer(timeout=2)
        assert half.is_closed_by_peer(timeout=2)
    finally:
        waiter.close()
        half.close()


def _assert_prompt_clean_exit(d):
    t0 = time.monotonic()
    rc = d.stop(timeout=10)
    assert time.monotonic() - t0 < 10, "daemon ignored SIGTERM\n%s\n%s" % (
        d.stop_diagnostics,
        d.log_tail(),
    )
    assert rc == 0
    assert not os.path.exists(d.socket)
