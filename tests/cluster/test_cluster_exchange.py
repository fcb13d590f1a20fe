"""Objects exchanged between the instances of one Trellis cluster with the unchanged
upstream Python client (vineyard 0.24.2): by name over IPC with fetch=False (the client
streams the blobs from the owner's RPC endpoint) and fetch=True / migrate (the daemon
pulls them and keeps a persisted local copy), RPC clients, cluster_meta and names.

Uses one module-wide cluster of three daemons A, B, C (fixture `trio`).
"""

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
import vineyard


def frame(rows=5000, seed=1):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "i": np.arange(rows, dtype=np.int64),
        "f": rng.random(rows),
        "b": np.arange(rows) % 3 == 0,
        "s": np.arange(rows, dtype=np.int32) * -7,
    })


def blob_members(meta):
    """(id, instance_id) of every blob under an ObjectMeta."""
    out = []
    for _key, value in meta.items():
        if isinstance(value, vineyard.ObjectMeta):
            if value.typename == "vineyard::Blob":
                out.append((value.id, value.instance_id))
            else:
                out.extend(blob_members(value))
    return out


def raw_tree(node, oid):
    """The daemon's own get_data reply for one object (no client-side rewriting)."""
    reply = node.request({"type": "get_data_request", "id": [int(oid)], "sync_remote": False, "wait": False})
    (tree,) = reply["content"].values()
    return tree


@pytest.fixture(scope="module")
def abc(trio):
    a, b, c = trio.nodes
    return trio, (a, a.connect()), (b, b.connect()), (c, c.connect())


def test_instances_have_distinct_ids(abc):
    _, (_, ca), (_, cb), (_, cc) = abc
    assert len({ca.instance_id, cb.instance_id, cc.instance_id}) == 3


@pytest.mark.parametrize("kind", ["ndarray", "dataframe"])
def test_exchange_by_name_fetch_false_then_true(abc, kind):
    """Put on A (persist + name), read on B without and with fetch."""
    _, (a, ca), (b, cb), _ = abc
    name = "x_" + kind
    if kind == "ndarray":
        value = np.arange(3_000_000, dtype=np.float64) * 0.5  # 24 MB, one blob
    else:
        value = frame()  # several blobs (columns and index)
    oid = ca.put(value, persist=True, name=name)

    def check(got):
        if kind == "ndarray":
            np.testing.assert_array_equal(got, value)
        else:
            pdt.assert_frame_equal(got, value)

    assert cb.get_name(name) == oid
    baseline = b.memory_usage()

    # fetch=False: the client streams the blobs from A; nothing is stored on B.
    check(cb.get(name=name, fetch=False))
    assert b.memory_usage() == baseline
    meta = cb.get_meta(oid)
    assert meta.instance_id == ca.instance_id
    assert {inst for _, inst in blob_members(meta)} == {ca.instance_id}

    # fetch=True: daemon B migrates it; the copy is B's, persisted, with local blobs.
    got = cb.get(name=name, fetch=True)
    check(got)
    if kind == "ndarray":
        assert cb.is_shared_memory(got.ctypes.data), "get(fetch=True) did not return B's local copy"
    grown = b.memory_usage()
    copy_id = cb.migrate(oid)  # the cached copy: no second transfer
    assert b.memory_usage() == grown
    assert copy_id != oid
    check(cb.get(copy_id))
    cmeta = cb.get_meta(copy_id)
    assert cmeta.instance_id == cb.instance_id
    blobs = blob_members(cmeta)
    assert blobs and {inst for _, inst in blobs} == {cb.instance_id}
    assert len(blobs) == len(blob_members(meta))
    raw = raw_tree(b, copy_id)
    assert raw["transient"] is False and raw["instance_id"] == cb.instance_id
    # The bytes came over into B's arena.
    assert grown - baseline >= sum(cb.get_meta(blob).nbytes for blob, _ in blobs) > 0

    # A second fetch does not transfer again: same copy, same memory.
    check(cb.get(name=name, fetch=True))
    assert cb.get_object(oid, fetch=True).id == copy_id
    assert cb.migrate(oid) == copy_id
    assert b.memory_usage() == grown

    # The copy is persisted: visible to A and C as B's object.
    for other in (ca, abc[3][1]):
        assert other.get_meta(copy_id).instance_id == cb.instance_id
        check(other.get(copy_id))
    # The original on A is untouched.
    check(ca.get(name=name))


def test_exchange_both_directions_and_third_instance(abc):
    """B's DataFrame to A and C, A's array to C — every pair works, not only A → B."""
    _, (_, ca), (_, cb), (_, cc) = abc
    df = frame(rows=777, seed=7)
    arr = np.arange(1000, dtype=np.int32).reshape(10, 100)
    did = cb.put(df, persist=True, name="from_b")
    aid = ca.put(arr, persist=True, name="from_a")
    pdt.assert_frame_equal(ca.get(name="from_b"), df)
    pdt.assert_frame_equal(cc.get(name="from_b", fetch=True), df)
    np.testing.assert_array_equal(cc.get(name="from_a", fetch=False), arr)
    np.testing.assert_array_equal(cc.get(name="from_a", fetch=True), arr)
    assert cc.get_meta(cc.migrate(did)).instance_id == cc.instance_id
    assert cc.migrate(aid) != aid
    # Migrating an object that is already local returns it unchanged.
    assert cb.migrate(did) == did


def test_transient_objects_stay_private(abc):
    """Only persisted objects are shared (README §10.2)."""
    _, (_, ca), (_, cb), _ = abc
    oid = ca.put(np.arange(10))
    with pytest.raises(vineyard.ObjectNotExistsException):
        cb.get_meta(oid)


def test_deleted_by_owner_is_gone_everywhere(abc):
    """An object its owner deleted is not served from other instances' caches."""
    _, (_, ca), (b, cb), _ = abc
    arr = np.arange(1000, dtype=np.int16)
    oid = ca.put(arr, persist=True, name="short_lived")
    np.testing.assert_array_equal(cb.get(name="short_lived"), arr)  # B has seen it
    ca.delete(oid)
    with pytest.raises(vineyard.ObjectNotExistsException):
        cb.get_meta(oid)
    with pytest.raises(vineyard.ObjectNotExistsException):
        cb.get(oid)
    with pytest.raises(Exception, match="(?i)not exist|subtree"):
        cb.migrate(oid)


def test_exists_is_false_after_owner_delete(abc):
    _, (_, ca), (_, cb), _ = abc
    oid = ca.put(np.arange(3), persist=True)
    assert cb.exists(oid)
    ca.delete(oid)
    assert not cb.exists(oid)


def test_list_objects_shows_other_instances_persisted_objects(abc):
    _, (_, ca), (_, cb), _ = abc
    oid = ca.put(np.arange(3), persist=True)
    transient = ca.put(np.arange(4))
    listed = {o.id: o for o in cb.list_objects("vineyard::Tensor*", limit=100000)}
    assert oid in listed and listed[oid].meta.instance_id == ca.instance_id
    assert transient not in listed  # transient objects stay private to their instance
    ca.delete(oid)
    assert oid not in [o.id for o in cb.list_objects("*", limit=100000)]


def test_rpc_clients_put_get_numpy_and_pandas(abc):
    """vineyard.connect(host, port): remote put/get on one instance, and a persisted
    object read by name through another instance's RPC endpoint."""
    _, (a, ca), (b, cb), (c, cc) = abc
    ra = vineyard.connect("127.0.0.1", a.rpc_port)
    rb = vineyard.connect("127.0.0.1", b.rpc_port)
    assert ra.remote_instance_id == ca.instance_id
    assert rb.remote_instance_id == cb.instance_id
    arr = np.linspace(0, 1, 200_001)
    df = frame(rows=3000, seed=3)
    s = pd.Series(np.arange(50, dtype=np.float32), name="s")
    ids = [ra.put(arr), ra.put(df), ra.put(s)]
    np.testing.assert_array_equal(ra.get(ids[0]), arr)
    pdt.assert_frame_equal(ra.get(ids[1]), df)
    pdt.assert_series_equal(ra.get(ids[2]), s)
    # The bytes went into A's memory, as A's objects.
    assert ca.get_meta(ids[0]).instance_id == ca.instance_id
    np.testing.assert_array_equal(ca.get(ids[0]), arr)

    pid = ra.put(df, persist=True, name="rpc_df")
    pdt.assert_frame_equal(rb.get(name="rpc_df"), df)    # RPC client on B, blobs on A
    pdt.assert_frame_equal(cc.get(name="rpc_df", fetch=True), df)   # IPC on C, migrated
    assert rb.get_name("rpc_df") == pid
    ra.close()
    rb.close()


def test_cluster_meta_lists_every_live_instance(abc):
    trio, *_ = abc
    nodes = trio.nodes
    clients = [n.connect() for n in nodes]
    expected = {cl.instance_id: n for cl, n in zip(clients, nodes)}
    for node, client in zip(nodes, clients):
        meta = client.meta
        assert set(meta) == set(expected), meta
        for iid, info in meta.items():
            owner = expected[iid]
            assert info["rpc_endpoint"] == "127.0.0.1:%d" % owner.rpc_port
            assert info["ipc_socket"] == owner.socket
            host, port = info["rpc_endpoint"].split(":")
            # The advertised endpoint really is that instance's RPC listener.
            remote = vineyard.connect(host, int(port))
            try:
                assert remote.remote_instance_id == iid
            finally:
                remote.close()
        # The raw reply has upstream's shape: keys "i<id>".
        raw = node.cluster_meta()
        assert sorted(raw) == sorted("i%d" % i for i in expected)


def test_list_names_sees_names_from_all_instances(abc):
    trio, *_ = abc
    clients = [n.connect() for n in trio.nodes]
    ids = {}
    for k, client in enumerate(clients):
        ids["shared_name_%d" % k] = client.put(np.full(4, k), persist=True, name="shared_name_%d" % k)
    for client in clients:
        names = client.list_names("shared_name_*")
        assert names == ids
        assert client.list_names("shared_name_[12]$", regex=True) == {
            k: v for k, v in ids.items() if k[-1] in "12"}
        for name, oid in ids.items():
            assert client.get_name(name) == oid
    # A dropped name disappears everywhere.
    clients[0].drop_name("shared_name_0")
    for client in clients:
        assert "shared_name_0" not in client.list_names("shared_name_*")
        with pytest.raises(vineyard.ObjectNotExistsException):
            client.get_name("shared_name_0")


def test_global_tensor_spans_instances(cluster):
    """A vineyard::GlobalTensor whose partitions live on two instances (the upstream
    helper, as in the captured two_instances_global session): visible from both, its
    remote partition readable over RPC, not migratable, deleted shallowly."""
    from vineyard.data.tensor import make_global_tensor
    a, b = cluster.start(2)
    ca, cb = a.connect(), b.connect()
    ta = ca.put(np.arange(4, dtype=np.int64), persist=True)
    tb = cb.put(np.arange(4, 8, dtype=np.int64), persist=True)
    g = make_global_tensor(ca, [ta, tb], shape=(8,), partition_shape=(4,))
    meta = cb.get_meta(g.id)
    assert meta.isglobal and meta.typename == "vineyard::GlobalTensor"
    assert meta.instance_id == (1 << 64) - 1  # spans instances
    parts = [meta.member("partitions_-%d" % i) for i in range(2)]
    parts = [cb.get_meta(p.id) if not hasattr(p, "instance_id") else p for p in parts]
    assert {p.instance_id for p in parts} == {ca.instance_id, cb.instance_id}
    # B reads A's partition: its blob comes over RPC (fetch=False), values intact.
    remote = next(p for p in parts if p.instance_id == ca.instance_id)
    np.testing.assert_array_equal(cb.get(remote.id, fetch=False), np.arange(4))
    with pytest.raises(Exception):
        cb.migrate(g.id)  # global objects are not migrated
    ca.delete(g.id, deep=False)
    assert not cb.exists(g.id)
    # The partitions stay: a shallow delete leaves members.
    np.testing.assert_array_equal(cb.get(tb), np.arange(4, 8))
    assert ca.exists(ta)


def test_deleting_a_migrated_copy_gives_its_memory_back(abc):
    """The migration does not keep a use of the blobs it copied in: once the copy is
    deleted its memory is free again (a use left behind kept it allocated, retired, for
    the daemon's lifetime)."""
    _, (_, ca), (b, cb), _ = abc
    arr = np.arange(1 << 20, dtype=np.int64)  # 8 MiB
    oid = ca.put(arr, persist=True)
    baseline = b.memory_usage()
    copy = cb.migrate(oid)
    assert copy != oid
    assert b.memory_usage() >= baseline + arr.nbytes
    cb.delete(copy)
    assert b.memory_usage() == baseline
    assert b.status().get("retired_bytes", 0) == 0
    ca.delete(oid)
