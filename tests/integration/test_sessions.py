"""Sessions (`new_session`, `delete_session`, `move_buffers_ownership`): the C++ client's
API, driven here with its frames, and the upstream Python client connected to the session
sockets. Runs against upstream vineyardd too, except where marked trellis_only."""

import os
import re
import socket
import stat

import numpy as np
import pytest

import harness

REGISTER = {"type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0,
            "username": "", "password": ""}


def _new_session(root_socket):
    with harness.RawConn(root_socket) as c:
        c.register()
        reply = c.request({"type": "new_session_request", "bulk_store_type": 1})
    assert reply.get("type") == "new_session_reply", reply
    return reply["socket_path"]


def _delete_session(session_socket):
    c = harness.RawConn(session_socket)
    c.register()
    reply = c.request({"type": "delete_session_request"})
    assert reply == {"type": "delete_session_reply"}, reply
    assert c.is_closed_by_peer(), "the daemon closes the connection after delete_session"
    c.close()


def _is_socket(path):
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def test_a_session_is_an_isolated_server_on_its_own_socket(fresh_daemon):
    import vineyard

    path = _new_session(fresh_daemon.socket)
    assert re.fullmatch(re.escape(fresh_daemon.socket) + r"\.S[0-9a-f]{16}", path), path
    assert _is_socket(path)
    with harness.RawConn(path) as c:
        reply = c.request(REGISTER)
        assert reply["ipc_socket"] == path and reply["rpc_endpoint"] == "0.0.0.0:0"
        assert reply["session_id"] == int(path.rsplit(".S", 1)[1], 16)
    root = harness.connect(fresh_daemon.socket)
    child = vineyard.connect(path)
    a = child.put(np.arange(1000), name="shared-name", persist=True)
    b = root.put(np.ones(10), name="shared-name", persist=True)
    # objects and names do not cross sessions
    assert np.array_equal(child.get(name="shared-name"), np.arange(1000))
    assert np.array_equal(root.get(name="shared-name"), np.ones(10))
    assert not root.exists(a) and not child.exists(b)
    assert child.status.memory_usage >= 8000
    child.close()
    harness.disconnect(root)
    _delete_session(path)
    assert harness.wait_until(lambda: not _is_socket(path), timeout=10), "the session's socket is removed"


def test_deleting_a_session_leaves_its_other_clients_served_until_they_leave(fresh_daemon):
    path = _new_session(fresh_daemon.socket)
    stay = harness.RawConn(path)
    stay.register()
    _delete_session(path)
    if not harness.is_upstream():
        # Trellis: no new client gets in (upstream keeps the socket until the last one leaves)
        assert harness.wait_until(lambda: not _is_socket(path), timeout=10)
    # a client already connected is still served
    reply = stay.request({"type": "instance_status_request"})
    assert reply["type"] == "instance_status_reply", reply
    stay.close()
    assert harness.wait_until(lambda: not _is_socket(path), timeout=10), "gone once its last client left"
    # and the root session is untouched
    with harness.RawConn(fresh_daemon.socket) as c:
        c.register()
        assert c.request({"type": "instance_status_request"})["type"] == "instance_status_reply"


def test_blobs_move_from_the_root_session_into_a_child(fresh_daemon):
    import vineyard

    root = harness.connect(fresh_daemon.socket)
    baseline = root.status.memory_usage
    payload = os.urandom(1 << 16)
    builder = root.create_blob(len(payload))
    builder.copy(0, payload)
    blob = builder.seal(root)
    bid = int(blob.id)
    del blob, builder
    path = _new_session(fresh_daemon.socket)
    with harness.RawConn(path) as c:
        c.register()
        reply = c.request({"type": "move_buffers_ownership_request", "id_to_id": [[bid, bid]], "session_id": 0})
        assert reply == {"type": "move_buffers_ownership_reply"}, reply
        # now the child has it, with the same bytes
        got = c.request({"type": "get_buffers_request", "num": 1, "0": bid, "unsafe": False})
        assert got["type"] == "get_buffers_reply" and got["num"] == 1 and got["0"]["data_size"] == len(payload)
    child = vineyard.connect(path)
    assert bytes(memoryview(child.get_blob(vineyard.ObjectID(bid)))) == payload
    child.close()
    harness.disconnect(root)
    if not harness.is_upstream():
        # Trellis: the root's copy is gone, its memory back once the client that wrote it lets
        # go (upstream keeps a non-owning entry in the source session, over the same memory)
        with harness.RawConn(fresh_daemon.socket) as c:
            c.register()
            assert c.request({"type": "get_buffers_request", "num": 1, "0": bid, "unsafe": False})["num"] == 0
            assert harness.wait_until(lambda: c.instance_status()["meta"]["memory_usage"] <= baseline, timeout=10)
    _delete_session(path)


@pytest.mark.trellis_only
def test_a_failed_move_changes_nothing(fresh_daemon):
    """Upstream answers a move from its own session with no reply at all; Trellis answers."""
    root = harness.connect(fresh_daemon.socket)
    builder = root.create_blob(64)
    builder.copy(0, b"k" * 64)
    bid = int(builder.seal(root).id)
    path = _new_session(fresh_daemon.socket)
    with harness.RawConn(path) as c:
        c.register()
        missing = 0x8000000000000001 | (bid & 0xFFFF0000)
        reply = c.request({"type": "move_buffers_ownership_request", "id_to_id": [[bid, bid], [missing, missing]],
                           "session_id": 0})
        assert harness.is_error(reply, 12), reply
        got = c.request({"type": "get_buffers_request", "num": 1, "0": bid, "unsafe": False})
        assert got["num"] == 0, "nothing moved"
        reply = c.request({"type": "move_buffers_ownership_request", "id_to_id": [[bid, bid]], "session_id": 12345})
        assert harness.is_error(reply, 1) and "not exit" in reply["message"], reply
        reply = c.request({"type": "move_buffers_ownership_request", "id_to_id": [], "session_id":
                           int(path.rsplit(".S", 1)[1], 16)})
        assert reply == {"type": "move_buffers_ownership_reply"}, reply
    import vineyard

    assert bytes(memoryview(root.get_blob(vineyard.ObjectID(bid)))) == b"k" * 64
    harness.disconnect(root)
    _delete_session(path)


@pytest.mark.trellis_only
def test_rpc_clients_attach_to_a_session_by_its_id(daemon_factory):
    import vineyard

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = daemon_factory(size="256Mi", extra=("--rpc", "--rpc_socket_port", str(port)))
    assert harness.wait_until(lambda: harness.daemons.tcp_accepts(port), timeout=30)
    path = _new_session(daemon.socket)
    sid = int(path.rsplit(".S", 1)[1], 16)
    rpc = vineyard._C._connect("127.0.0.1", port, session=sid)
    oid = rpc.put(np.arange(100))
    rpc.close()
    child = vineyard.connect(path)
    assert np.array_equal(child.get(oid), np.arange(100))
    child.close()
    root = harness.connect(daemon.socket)
    assert not root.exists(oid)
    harness.disconnect(root)
    with pytest.raises(vineyard._C.InvalidException, match="not exit"):
        vineyard._C._connect("127.0.0.1", port, session=0x1234)
    _delete_session(path)


@pytest.mark.trellis_only
def test_the_root_session_cannot_be_deleted_and_sessions_are_bounded(fresh_daemon):
    with harness.RawConn(fresh_daemon.socket) as c:
        c.register()
        reply = c.request({"type": "delete_session_request"})
        assert harness.is_error(reply, 1) and "root session" in reply["message"], reply
        paths = []
        while True:
            reply = c.request({"type": "new_session_request", "bulk_store_type": 1})
            if reply.get("type") != "new_session_reply":
                break
            paths.append(reply["socket_path"])
            assert len(paths) <= 1000, "no bound on sessions"
        assert harness.is_error(reply, 1) and "too many sessions" in reply["message"], reply
        assert len(paths) == 64
    for p in paths:
        _delete_session(p)
    assert harness.wait_until(lambda: not any(_is_socket(p) for p in paths), timeout=20)
    # the daemon serves on
    assert _new_session(fresh_daemon.socket)


def test_stopping_the_daemon_removes_its_sessions_sockets(daemon_factory):
    daemon = daemon_factory(size="64Mi")
    paths = [_new_session(daemon.socket) for _ in range(3)]
    held = harness.RawConn(paths[0])
    held.register()
    assert all(_is_socket(p) for p in paths)
    daemon.stop()
    held.close()
    assert daemon.returncode == 0, daemon.log_tail()
    assert not any(os.path.exists(p) for p in paths), [p for p in paths if os.path.exists(p)]
