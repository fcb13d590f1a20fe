"""trellis.accel's own connections to the daemon when things go wrong: a request whose reply
is cut short (an exception — KeyboardInterrupt, an OSError — between sending it and having
read its reply and the descriptor passed with it) breaks the connection: it is dropped and
the next request goes on a fresh one, while the values read through it keep their memory
and the zero-copy arrays reserved through it keep theirs; close_connections() waits for a
request in flight; a forked child starts with fresh locks and connections of its own; and
the daemon refuses a put that refers to a blob it has retired (the accelerated builder
then copies the array)."""

import gc
import os
import signal
import sys
import threading
import time
import weakref

import numpy as np
import pytest

import harness

sys.path.insert(0, str(harness.REPO_ROOT / "python"))

from test_accel_get import _direct, _memory_usage  # noqa: E402  (the same counters the get tests read)

pytestmark = pytest.mark.trellis_only


@pytest.fixture
def accel():
    import trellis.accel as accel

    accel.install()
    accel.close_connections()
    yield accel
    accel.uninstall()
    accel.close_connections()


def _next_gets_are_in_step(accel, client, ids, values):
    """After a cut get, the next gets (the cut one's object last) are served directly and right."""
    before = _direct(accel)
    for oid, value in reversed(list(zip(ids, values))):
        np.testing.assert_array_equal(client.get(oid), value)
    assert _direct(accel) == before + len(ids)


class _Cut:
    """Stands for a connection's socket: the `skip`+1-th call of `method` raises `exc`
    (once; every other call goes to the socket). With `gate`, that call instead waits for
    the gate (after setting `entered`) and then goes through."""

    def __init__(self, sock, method, exc=None, skip=0, gate=None):
        self._sock, self._method, self._exc, self._skip, self._gate = sock, method, exc, skip, gate
        self.fired = False
        self.entered = threading.Event()

    def __getattr__(self, name):
        attr = getattr(self._sock, name)
        if name != self._method:
            return attr

        def call(*args, **kwargs):
            if not self.fired:
                if self._skip:
                    self._skip -= 1
                else:
                    self.fired = True
                    if self._gate is not None:
                        self.entered.set()
                        assert self._gate.wait(60)
                    else:
                        raise self._exc
            return attr(*args, **kwargs)

        return call


def _conn(mod, client):
    return mod._connections[client.ipc_socket]


def test_a_get_interrupted_before_its_reply_leaves_the_next_gets_in_step(daemon, client, accel):
    values = [np.arange(n, dtype=np.int64) * k for n, k in ((1000, 1), (2000, 3), (3000, 5))]
    a, b, c = (client.put(v) for v in values)
    first = client.get(a)  # (kept: no release of it goes ahead of the gets below)
    gc.collect()
    conn = _conn(accel, client)
    conn.sock = _Cut(conn.sock, "recv_into", KeyboardInterrupt)  # nothing of the reply read
    with pytest.raises(KeyboardInterrupt):
        client.get(b)
    before = _direct(accel)
    np.testing.assert_array_equal(client.get(b), values[1])
    np.testing.assert_array_equal(client.get(c), values[2])
    assert _direct(accel) == before + 2  # read directly, on a fresh connection, in step
    np.testing.assert_array_equal(first, values[0])  # what was read before keeps its memory
    assert accel._connections.get(client.ipc_socket) is not conn  # (dropped)
    for oid in (a, b, c):
        client.delete(oid)


def test_a_get_cut_mid_reply_leaves_the_next_gets_in_step(daemon, client, accel):
    values = [np.arange(n, dtype=np.float64) / k for n, k in ((500, 2), (700, 3))]
    a, b = (client.put(v) for v in values)
    first = client.get(a)
    gc.collect()
    conn = _conn(accel, client)
    # the get_data reply's header is read, its body is not
    conn.sock = _Cut(conn.sock, "recv_into", KeyboardInterrupt, skip=1)
    with pytest.raises(KeyboardInterrupt):
        client.get(b)
    _next_gets_are_in_step(accel, client, (a, b), values)
    np.testing.assert_array_equal(first, values[0])
    for oid in (a, b):
        client.delete(oid)


def test_a_get_cut_before_the_arena_descriptor_is_received_leaves_the_next_gets_in_step(daemon, client, accel):
    values = [np.arange(n, dtype=np.int32) for n in (100, 200)]
    a, b = (client.put(v) for v in values)
    accel.close_connections()
    assert accel.warm(client)  # a new connection: registered, nothing mapped yet
    conn = _conn(accel, client)
    conn.sock = _Cut(conn.sock, "recvmsg", KeyboardInterrupt)  # both replies read, not the fd
    with pytest.raises(KeyboardInterrupt):
        client.get(a)
    _next_gets_are_in_step(accel, client, (a, b), values)
    for oid in (a, b):
        client.delete(oid)


def test_a_broken_connection_keeps_the_blobs_of_live_values_until_they_go(fresh_daemon, fresh_client, accel):
    client = fresh_client
    baseline = _memory_usage(fresh_daemon.socket)
    expected = np.arange(1 << 16, dtype=np.int64)
    oid = client.put(expected)
    other = client.put(np.arange(10))
    value = client.get(oid)
    conn = _conn(accel, client)
    alive = weakref.ref(conn)
    conn.sock = _Cut(conn.sock, "recv_into", KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        client.get(other)
    del conn
    client.delete(oid)
    gc.collect()
    # the broken connection stays open for the value: the daemon keeps its blob
    assert alive() is not None and alive().sock.fileno() >= 0
    assert _memory_usage(fresh_daemon.socket) >= baseline + expected.nbytes
    np.testing.assert_array_equal(value, expected)
    del value
    gc.collect()
    assert alive() is None  # closed with the last value: the daemon lets the blob go
    assert harness.wait_until(lambda: _memory_usage(fresh_daemon.socket) < baseline + expected.nbytes, timeout=20)


def test_a_broken_connection_keeps_its_zero_copy_reservations_until_the_arrays_go(fresh_daemon, fresh_client, accel):
    client = fresh_client
    assert accel.zero_copy(fresh_daemon.socket, threshold=1 << 16), "trellis._zerocopy not built?"
    try:
        a = np.arange(1 << 15, dtype=np.int64)  # 256 KiB: an unsealed blob of the connection
        assert accel.zero_copy_stats()["live_reservations"] == 1
        used = _memory_usage(fresh_daemon.socket)
        conn = accel._connections[fresh_daemon.socket]
        alive = weakref.ref(conn)
        conn.sock = _Cut(conn.sock, "recv_into", KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            client.put(np.arange(100))  # (small: copied; its create_buffers reply is cut)
        assert accel._connections.get(fresh_daemon.socket) is not conn
        del conn
        gc.collect()
        # still open: the daemon keeps the reservation, so its memory is not handed out again
        assert alive() is not None and alive().sock.fileno() >= 0
        assert _memory_usage(fresh_daemon.socket) >= used
        b = np.empty(1 << 15, dtype=np.int64)  # reserved through a fresh connection
        b[:] = -1
        assert accel.zero_copy_stats()["live_reservations"] == 2
        np.testing.assert_array_equal(a, np.arange(1 << 15))
        # an array of the dropped connection is copied by a put, never sealed in place
        placed = accel.stats().get("zero_copy_blobs", 0)
        oid = client.put(a)
        assert accel.stats().get("zero_copy_blobs", 0) == placed
        np.testing.assert_array_equal(client.get(oid), np.arange(1 << 15))
        a[:] = 0  # still this process's memory, writable
        np.testing.assert_array_equal(client.get(oid), np.arange(1 << 15))
        with_a = _memory_usage(fresh_daemon.socket)
        del a
        gc.collect()
        assert alive() is None  # its last reservation went: the daemon frees it
        assert harness.wait_until(
            lambda: _memory_usage(fresh_daemon.socket) <= with_a - (1 << 18), timeout=20)
        assert accel.zero_copy_stats()["live_reservations"] == 1
        assert int(b[0]) == -1
        client.delete(oid)
        del b
    finally:
        accel.zero_copy_off()


def test_close_connections_waits_for_a_request_in_flight(daemon, client, accel):
    expected = np.arange(5000, dtype=np.int64) * 7
    oid = client.put(expected)
    assert accel.warm(client)
    conn = _conn(accel, client)
    gate = threading.Event()
    cut = _Cut(conn.sock, "recv_into", gate=gate)
    conn.sock = cut
    before = _direct(accel)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("value", client.get(oid)))
    reader.start()
    closer = None
    try:
        assert cut.entered.wait(60)  # the get is waiting for its reply, holding the lock
        closer = threading.Thread(target=accel.close_connections)
        closer.start()
        closer.join(1.0)
        assert closer.is_alive() and conn.sock.fileno() >= 0  # waits for the request
    finally:
        gate.set()
        reader.join(60)
        if closer is not None:
            closer.join(60)
    assert not reader.is_alive() and not closer.is_alive()
    np.testing.assert_array_equal(got["value"], expected)
    assert _direct(accel) == before + 1  # served on the connection, not cut
    assert accel._connections.get(client.ipc_socket) is not conn
    del got
    client.delete(oid)


def test_a_child_forked_while_other_threads_hold_the_locks_makes_its_own_connection(daemon, client, accel):
    import vineyard

    expected = np.arange(4096, dtype=np.int64) * 11
    oid = client.put(expected)
    np.testing.assert_array_equal(client.get(oid), expected)
    conn = _conn(accel, client)
    held, done = threading.Event(), threading.Event()

    def hold():
        with accel._connections_lock, conn.lock:
            held.set()
            done.wait(120)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child = vineyard.connect(daemon.socket).fork()
                value = child.get(oid)
                ok = np.array_equal(value, expected) and accel.stats().get("direct_gets", 0) >= 1
                mine = accel._connections.get(daemon.socket)
                ok = ok and mine is not None and mine is not conn and mine.pid == os.getpid()
                ok = ok and np.array_equal(child.get(child.put(expected + 1)), expected + 1)
                code = 0 if ok else 2
            except BaseException:
                code = 3
            finally:
                os._exit(code)
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            waited, status = os.waitpid(pid, os.WNOHANG)
            if waited:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (a lock held at the fork)")
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        done.set()
        holder.join(60)
    np.testing.assert_array_equal(client.get(oid), expected)  # the parent's connection is fine
    client.delete(oid)


def test_a_put_of_an_array_whose_object_was_deleted_is_copied(daemon, client, accel):
    expected = np.arange(1 << 12, dtype=np.int64) * 13
    oid = client.put(expected)
    value = client.get(oid)  # read directly: its blob is used by the reader's connection
    client.delete(oid)  # the blob is retired (kept while the value lives), no longer the store's
    again = client.put(value)
    tree = harness.stored_tree(daemon.socket, again)
    blob = int(tree["buffer_"]["id"][1:], 16)
    with harness.RawConn(daemon.socket) as c:
        c.register()
        reply = c.request({"type": "get_buffers_request", "ids": [blob], "unsafe": True})
    assert [p["object_id"] for p in reply["payloads"]] == [blob]  # a live blob, not the retired one
    del value
    gc.collect()
    np.testing.assert_array_equal(client.get(again), expected)
    client.delete(again)


def test_create_metadata_refuses_a_member_blob_that_was_deleted(daemon, client):
    """The upstream client: a Tensor whose buffer_ refers to a deleted blob is an
    ObjectNotExists error, and the daemon serves the others as before."""
    import vineyard
    from vineyard import ObjectMeta

    writer = client.create_blob(64)
    writer.copy(0, bytes(range(64)))
    blob = writer.seal(client)
    blob_meta = blob.meta  # (the member as the upstream builders add it: the blob's meta)

    def tensor_meta(member):
        meta = ObjectMeta()
        meta["typename"] = "vineyard::Tensor<uint8>"
        meta["value_type_"] = "uint8"
        meta["shape_"] = "[64]"
        meta["partition_index_"] = "[]"
        meta["order_"] = '"C"'
        meta["nbytes"] = 64
        meta.add_member("buffer_", member)
        return meta

    held = client.create_metadata(tensor_meta(blob_meta))  # a live blob: fine
    del blob
    client.delete(held.id, deep=True)  # the blob goes with it
    gc.collect()
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.create_metadata(tensor_meta(blob_meta))
    oid = client.put(np.arange(64, dtype=np.uint8))
    np.testing.assert_array_equal(client.get(oid), np.arange(64, dtype=np.uint8))
    client.delete(oid)
