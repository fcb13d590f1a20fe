"""Vineyard's cluster semantics, with the upstream client only, on Trellis and on
upstream vineyardd alike (each test runs against both): deleting through an instance
that does not own the object, deleting migrated copies and their originals from either
side, metadata and names that outlive their owner, and a global object whose member
is deleted."""

import time
import uuid

import numpy as np
import pytest
import vineyard

import cluster_lib

KINDS = ["trellis", "vineyardd"]
MIB = 1 << 20


def _serving(node, timeout=60):
    """Whether `node` answers with an instance id: waited for while it lives (a loaded
    machine can take seconds to let a fresh daemon join), False at once when it dies."""
    deadline = time.monotonic() + timeout
    while node.alive():
        try:
            if node.status()["instance_id"] >= 0:
                return True
        except Exception:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return False


def _nodes(cluster, n, kind, attempts=5, joining=False):
    """`n` daemons of `kind` that answer. Upstream vineyardd 0.24.2 now and then dies with
    SIGTRAP right after an instance joins the cluster on a loaded machine (seen in CI:
    "Instance join", exit -5; once in all 5 attempts of one run, with joins taking
    ~10 s); such a start is retried — its crash is not what these tests compare — each
    attempt on a fresh key prefix unless the new daemons are `joining` a cluster that
    holds the test's objects, and when no attempt gives answering daemons the upstream
    variant is skipped with the daemons' log tails. Trellis gets no retries."""
    why = []
    for attempt in range(attempts if kind != "trellis" else 1):
        if attempt > 0 and not joining:
            cluster.prefix = "/trellis-test-" + uuid.uuid4().hex[:12]  # (what failed left instances behind)
        nodes = cluster.start(n, kind=kind, size="512Mi")
        if kind == "trellis" or all(_serving(x) for x in nodes):
            return nodes
        for x in nodes:
            why.append("attempt %d: pid %d %s; log tail: %s" % (
                attempt + 1, x.pid, "alive" if x.alive() else "exited (%s)" % x.process.proc.returncode,
                x.log_tail(400)))
            cluster.stop(x)
    pytest.skip("upstream %s did not start %d answering daemons in %d attempts (its own crash on joining a "
                "cluster, not what this test compares):\n%s" % (kind, n, attempts, "\n".join(why)))


def _settled(node, baseline, timeout=20):
    """Waits for `node`'s memory usage to come back to `baseline`; returns the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        used = node.memory_usage()
        if used <= baseline or time.monotonic() > deadline:
            return used
        time.sleep(0.1)


def _writer(node):
    """A client of its own on `node` (vineyard.connect shares one per socket)."""
    return vineyard.connect(node.socket).fork()


def _leave(client):
    """Disconnects a client made by _writer. Trellis keeps a deleted blob's memory until
    every client that wrote or read it has let go (docs/ARCHITECTURE.md); upstream frees
    it at once."""
    import gc

    client._ipc_client = None
    gc.collect()


def _gone(client, oid, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        client.sync_meta()
        if not client.exists(oid) or time.monotonic() > deadline:
            return not client.exists(oid)
        time.sleep(0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_delete_through_an_instance_that_does_not_own_the_object(cluster, kind):
    a, b = _nodes(cluster, 2, kind)
    ca, cb = a.connect(), b.connect()
    baseline = a.memory_usage()
    w = _writer(a)
    oid = w.put(np.arange(MIB, dtype=np.int64), persist=True, name="doomed")
    _leave(w)
    assert a.memory_usage() >= baseline + 8 * MIB
    cb.sync_meta()
    assert cb.exists(oid)
    cb.delete(oid)
    assert _gone(cb, oid), "B still sees the object it deleted"
    assert _gone(ca, oid), "the owner still has it"
    used = _settled(a, baseline)
    assert used <= baseline, "the owner's memory did not come back: %d > %d" % (used, baseline)


@pytest.mark.parametrize("kind", KINDS)
def test_migrated_copies_and_originals_are_deleted_from_either_side(cluster, kind):
    a, b = _nodes(cluster, 2, kind)
    ca, cb = a.connect(), b.connect()
    base_a, base_b = a.memory_usage(), b.memory_usage()
    w = _writer(a)
    first = w.put(np.arange(MIB, dtype=np.int64), persist=True)
    second = w.put(np.arange(MIB, dtype=np.int64) * 2, persist=True)
    _leave(w)
    copy = cb.migrate(first)
    assert copy != first and b.memory_usage() >= base_b + 8 * MIB
    # the copy (owned by B) deleted through A
    ca.sync_meta()
    ca.delete(copy)
    assert _gone(cb, copy) and _gone(ca, copy)
    assert _settled(b, base_b) <= base_b, "B kept the deleted copy's memory"
    # the original (owned by A) deleted through B
    cb.delete(first)
    assert _gone(ca, first) and _gone(cb, first)
    assert _settled(a, base_a + 8 * MIB) <= base_a + 8 * MIB, "A kept the deleted original's memory"
    # and the other order: an original deleted through B while B holds a copy
    copy2 = cb.migrate(second)
    cb.delete(second)
    assert _gone(ca, second)
    np.testing.assert_array_equal(cb.get(copy2), np.arange(MIB, dtype=np.int64) * 2)  # the copy is its own object
    cb.delete(copy2)
    assert _settled(a, base_a) <= base_a and _settled(b, base_b) <= base_b


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_and_names_outlive_their_owner(cluster, kind):
    """The names stay on both. The metadata: Trellis keeps it in etcd until it is deleted
    (through any instance); upstream's survivors delete a stopped instance's objects once
    they notice it is gone (meta_service.cc, DeleteAllAt), leaving its names dangling."""
    a, b = _nodes(cluster, 2, kind)
    ca, cb = a.connect(), b.connect()
    arr = np.arange(1000, dtype=np.int64)
    oid = ca.put(arr, persist=True, name="kept")
    a_id = ca.instance_id
    # B has seen it (upstream commits a persist to etcd asynchronously)
    cb.sync_meta()
    assert cb.get_name("kept") == oid and cb.get_meta(oid).instance_id == a_id
    cluster.stop(a)
    # the owner leaves the cluster's instance list…
    cluster_lib.wait_until(lambda: "i%d" % a_id not in b.cluster_meta(), 60, what="A leaving cluster_meta")
    # …and its names stay readable through the others, and through a restarted instance
    cb.sync_meta()
    assert cb.get_name("kept") == oid
    assert "kept" in cb.list_names("*")
    (a2,) = _nodes(cluster, 1, kind, joining=True)
    ca2 = a2.connect()
    ca2.sync_meta()
    assert ca2.get_name("kept") == oid
    if kind != "trellis":
        return
    # Trellis: the metadata too, on the survivors and on the restarted instance
    for client in (cb, ca2):
        meta = client.get_meta(oid)
        assert meta.typename.startswith("vineyard::Tensor") and meta.instance_id == a_id
        assert int(oid) in {int(o.id) for o in client.list_objects("*")}
    # only the blobs are out of reach, with an error instead of a hang
    with pytest.raises(Exception) as err:
        cb.get(oid, fetch=True)
    assert "%d" % a_id in str(err.value) or "instance" in str(err.value), str(err.value)
    # and everything goes when deleted, through any instance
    ca2.delete(oid)
    assert _gone(cb, oid) and _gone(ca2, oid)
    with pytest.raises(vineyard.ObjectNotExistsException):
        cb.get_name("kept")


@pytest.mark.parametrize("kind", KINDS)
def test_a_global_object_whose_member_is_deleted(cluster, kind):
    from vineyard.data.tensor import make_global_tensor

    a, b = _nodes(cluster, 2, kind)
    ca, cb = a.connect(), b.connect()
    ta = ca.put(np.arange(4, dtype=np.int64), persist=True)
    tb = cb.put(np.arange(4, 8, dtype=np.int64), persist=True)
    g = make_global_tensor(ca, [ta, tb], shape=(8,), partition_shape=(4,))
    cb.sync_meta()
    # deleting a member the global object still refers to (no force): the member stays
    cb.delete(tb)
    cb.sync_meta()
    member_kept = cb.exists(tb)
    global_kept = cb.exists(g.id)
    assert member_kept and global_kept
    # with force, the member goes and the global object that refers to it goes with it
    cb.delete(tb, force=True)
    assert _gone(cb, tb) and _gone(cb, g.id) and _gone(ca, g.id)
    assert ca.exists(ta), "the other member stays"
