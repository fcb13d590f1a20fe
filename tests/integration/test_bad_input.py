"""Malformed and hostile input on raw sockets (u64le length + JSON frames).

After each test the daemon must still serve a normal client (autouse fixture).
Expected codes follow the captured upstream transcript
/work/shared/protocol/captured/raw_errors.jsonl.
"""

import json
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import vineyard

import harness

MISSING_OBJECT = 0x0000000000000123
MISSING_BLOB = 0x8000000000000123
MiB = 1 << 20


@pytest.fixture(autouse=True)
def still_serves(request):
    yield
    if "daemon" not in request.fixturenames:
        return
    d = request.getfixturevalue("daemon")
    assert d.alive(), "daemon died:\n%s" % d.log_tail()
    assert_serves(d)


def assert_serves(d):
    """A normal vineyard client and a raw client both work."""
    c = harness.connect(d.socket)
    try:
        a = np.arange(1000, dtype=np.int64)
        oid = c.put(a)
        assert np.array_equal(c.get(oid), a)
        c.delete(oid)
    finally:
        harness.disconnect(c)
    with harness.RawConn(d.socket) as raw:
        raw.register()
        assert raw.instance_status()["type"] == "instance_status_reply"


def registered(d):
    c = harness.RawConn(d.socket)
    c.register()
    return c


def assert_open(c):
    """The connection still answers a request."""
    reply = c.instance_status()
    assert reply.get("type") == "instance_status_reply", reply


def assert_error(reply, code):
    assert "type" not in reply, "error replies carry no type: %r" % reply
    assert reply.get("code") == code, reply
    assert isinstance(reply.get("message"), str)


# -- framing --------------------------------------------------------------------


def test_short_header_then_close(daemon):
    for n in (1, 3, 7):
        with harness.RawConn(daemon.socket) as c:
            c.send_raw(b"\x05" * n)
    time.sleep(0.1)


def test_header_only_then_close(daemon):
    with registered(daemon) as c:
        c.send_raw(struct.pack("<Q", 100))
    with harness.RawConn(daemon.socket) as c:  # unregistered, too
        c.send_raw(struct.pack("<Q", 100))


def test_half_a_body_then_close(daemon):
    body = json.dumps({"type": "create_buffer_request", "size": 4096}).encode()
    with registered(daemon) as c:
        c.send_raw(struct.pack("<Q", len(body)) + body[: len(body) // 2])
    # and a big announced body of which only a little arrives
    with registered(daemon) as c:
        c.send_raw(struct.pack("<Q", 10 * MiB) + b"{" + b" " * 4096)


WRITER_KILLED_MID_FRAME = r"""
import json, socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
reg = json.dumps({"type": "register_request", "version": "0.24.2", "store_type": 1,
                  "session_id": 0, "username": "", "password": ""}).encode()
s.sendall(struct.pack("<Q", len(reg)) + reg)
s.recv(4096)
s.sendall(struct.pack("<Q", 32 << 20) + b'{"type":"create_buffer_request","pad":"')
print("writing", flush=True)
while True:
    s.sendall(b"x" * 65536)
    time.sleep(0.001)
"""


def _kill_writers_mid_frame(d, n):
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER_KILLED_MID_FRAME, d.socket],
                         stdout=subprocess.PIPE)
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout.readline() == b"writing\n"
        time.sleep(0.3)  # some MiB of each body are in flight
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdout.close()


def test_process_killed_in_the_middle_of_a_large_frame(daemon):
    _kill_writers_mid_frame(daemon, 1)


@pytest.mark.trellis_only
def test_killed_writers_do_not_stall_other_clients(fresh_daemon):
    """Four writers SIGKILLed in the middle of 32 MiB frames; a new client must
    be served at once. Upstream 0.24.2 stays unresponsive for ~20 s afterwards
    (two threads busy, new connections get no register reply)."""
    _kill_writers_mid_frame(fresh_daemon, 4)
    t0 = time.monotonic()
    with harness.RawConn(fresh_daemon.socket, timeout=3) as c:
        c.register()
        assert_open(c)
    assert time.monotonic() - t0 < 3


def test_frame_split_across_slow_writes(daemon):
    """A frame arriving in pieces is one request (no timing assumptions)."""
    body = json.dumps({"type": "instance_status_request"}).encode()
    frame = struct.pack("<Q", len(body)) + body
    with registered(daemon) as c:
        for cut in (1, 5, 8, 9, len(frame) - 1):
            c.send_raw(frame[:cut])
            time.sleep(0.05)
            c.send_raw(frame[cut:])
            assert c.recv()["type"] == "instance_status_reply"
        # two frames in one write are two requests, answered in order
        c.send_raw(frame + frame)
        assert c.recv()["type"] == "instance_status_reply"
        assert c.recv()["type"] == "instance_status_reply"


def test_header_above_upstream_limit_is_refused(daemon):
    """More than 256 MiB announced: upstream drops the connection without a
    reply; Trellis (64 MiB default limit) may answer an error first. Either way
    it does not wait for the body, and other clients are unaffected."""
    with registered(daemon) as c:
        c.send_raw(struct.pack("<Q", (256 << 20) + 1))
        _expect_error_or_close(c)


@pytest.mark.trellis_only
def test_header_above_trellis_limit_is_refused(daemon):
    """64 MiB + 1 announced. Upstream's limit is 256 MiB, so it just waits for
    the body (no reply, connection stays open)."""
    with registered(daemon) as c:
        c.send_raw(struct.pack("<Q", (64 << 20) + 1))
        _expect_error_or_close(c)


def _expect_error_or_close(c, timeout=5.0):
    c.sock.settimeout(timeout)
    try:
        reply = c.recv()
    except (harness.ConnectionClosed, ConnectionResetError):
        return  # dropped
    except socket.timeout:
        pytest.fail("daemon neither answered nor closed: it is waiting for the body")
    assert "code" in reply and reply["code"] != 0, reply


@pytest.mark.trellis_only
def test_max_message_size_flag(daemon_factory):
    """`--max-message-size BYTES` (a Trellis flag; upstream rejects unknown flags)."""
    limit = 1 << 20
    d = daemon_factory(size="256Mi", extra=["--max-message-size", str(limit)])
    with registered(d) as c:
        body = json.dumps({"type": "instance_status_request"}).encode()
        body += b" " * (limit - len(body))  # exactly the limit: accepted
        assert len(body) == limit
        c.send_body(body)
        assert c.recv()["type"] == "instance_status_reply"
    with registered(d) as c:
        c.send_raw(struct.pack("<Q", limit + 1))
        _expect_error_or_close(c)
    assert_serves(d)


# -- bad JSON and bad requests ------------------------------------------------------


def test_invalid_json_keeps_connection(daemon):
    with registered(daemon) as c:
        for body in [b'{"type": "register_request", ', b"{", b"}", b"nul", b'{"a":1}x', b""]:
            c.send_body(body)
            assert_error(c.recv(), 1)
            assert_open(c)


def test_json_that_is_not_an_object_or_lacks_type(daemon):
    with registered(daemon) as c:
        for body in [b"null", b"[]", b"42", b'"str"', b'{"hello": "world"}']:
            c.send_body(body)
            assert_error(c.recv(), 1)
            assert_open(c)


def test_unknown_command(daemon):
    with registered(daemon) as c:
        for t in ["no_such_request", "", "evict_requestX", "REGISTER_REQUEST"]:
            assert_error(c.request({"type": t}), 1)
            assert_open(c)


FIELDS_OF_WRONG_TYPE = [
    {"type": "create_buffer_request", "size": "abc"},
    {"type": "create_buffer_request", "size": None},
    {"type": "create_buffer_request"},
    {"type": "seal_request", "object_id": "x"},
    {"type": "get_data_request", "id": 5, "sync_remote": False, "wait": False},
    {"type": "get_data_request", "id": ["a"], "sync_remote": False, "wait": False},
    {"type": "get_buffers_request", "ids": "x", "unsafe": False},
    {"type": "get_name_request", "name": 5, "wait": False},
    {"type": "put_name_request", "object_id": 1},
    {"type": "drop_name_request", "name": ["x"]},
]


@pytest.mark.parametrize("msg", FIELDS_OF_WRONG_TYPE, ids=lambda m: json.dumps(m)[9:60])
def test_fields_of_wrong_type(daemon, msg):
    with registered(daemon) as c:
        assert_error(c.request(msg), 1)
        assert_open(c)


CRASHES_UPSTREAM = [
    b'{"type": 5}',
    b'{"type": null}',
    b'{"type": ["register_request"]}',
    b'{"type": "create_data_request", "content": 5}',
    b"\xff\xfe not utf-8",
    b'{"type": "no_such_request", "x": "\xff"}',
]


@pytest.mark.trellis_only
@pytest.mark.parametrize("body", CRASHES_UPSTREAM, ids=lambda b: repr(b)[2:40])
def test_input_that_kills_upstream(fresh_daemon, body):
    """Upstream 0.24.2 dies (std::terminate, exit status 1) on each of these: a
    non-string "type", a non-object create_data content, or bytes that are not
    UTF-8 (building the error message throws inside nlohmann::json::dump)."""
    with registered(fresh_daemon) as c:
        c.send_body(body)
        reply = c.recv()
        if b"create_data_request" in body:
            # no upstream reference; Invalid or MetaTreeInvalid both make sense
            assert reply.get("code") in (1, 21), reply
        else:
            assert_error(reply, 1)
        assert_open(c)
    assert fresh_daemon.alive()
    assert_serves(fresh_daemon)


def test_requests_before_register(daemon):
    with harness.RawConn(daemon.socket) as c:
        for msg in [
            {"type": "get_data_request", "id": [1], "sync_remote": False, "wait": False},
            {"type": "create_buffer_request", "size": 64},
            {"type": "instance_status_request"},
        ]:
            reply = c.request(msg)
            assert_error(reply, 1)
            # upstream: "The connection is not registered yet, command is: <type>"
            assert "not registered" in reply["message"], reply
        # an unknown command before register: code 1 (upstream reports "not
        # registered" here too; which of the two problems is named does not matter)
        assert_error(c.request({"type": "no_such_request"}), 1)
        # registering afterwards works on the same connection; twice is fine
        assert c.register()["store_match"] is True
        assert c.register()["store_match"] is True
        assert_open(c)


def test_get_data_of_missing_ids(daemon, client):
    with registered(daemon) as c:
        reply = c.request(
            {"type": "get_data_request", "id": [MISSING_OBJECT, MISSING_BLOB],
             "sync_remote": False, "wait": False}
        )
        assert reply == {"type": "get_data_reply", "content": None}
        reply = c.request({"type": "get_buffers_request", "ids": [MISSING_BLOB], "unsafe": False})
        assert reply["type"] == "get_buffers_reply" and reply["num"] == 0
        assert reply["payloads"] == [] and reply["fds"] == []
        assert_open(c)
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get(vineyard.ObjectID(MISSING_OBJECT))
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get_meta(vineyard.ObjectID(MISSING_OBJECT))


def test_seal_twice_and_seal_unknown(daemon):
    with registered(daemon) as c:
        reply, fd = c.create_buffer(100)
        assert reply["type"] == "create_buffer_reply"
        assert fd is not None
        bid = reply["id"]
        assert bid >> 63 == 1
        assert c.seal(bid) == {"type": "seal_reply"}
        assert c.seal(bid) == {"type": "seal_reply"}
        reply = c.seal(MISSING_BLOB)
        assert_error(reply, 12)
        assert "o8000000000000123" in reply["message"]
        assert_open(c)
        c.request({"type": "del_data_request", "id": [bid], "force": False, "deep": True,
                   "memory_trim": False, "fastpath": False})


def test_unsealed_get_buffers(daemon):
    with registered(daemon) as c:
        reply, _fd = c.create_buffer(100)
        bid = reply["id"]
        for form in ({"ids": [bid]}, {"num": 1, "0": bid}):
            reply = c.request(dict({"type": "get_buffers_request", "unsafe": False}, **form))
            assert_error(reply, 14)
            assert_open(c)
        reply = c.request({"type": "get_buffers_request", "ids": [bid], "unsafe": True})
        assert reply["type"] == "get_buffers_reply" and reply["num"] == 1
        assert reply["payloads"][0]["object_id"] == bid
        assert reply["payloads"][0]["is_sealed"] is False
        assert reply["fds"] == []  # this connection already has the fd
        c.seal(bid)
        reply = c.request({"type": "get_buffers_request", "ids": [bid], "unsafe": False})
        assert reply["num"] == 1 and reply["payloads"][0]["is_sealed"] is True


def test_empty_blob(daemon):
    with registered(daemon) as c:
        reply, fd = c.create_buffer(0)
        assert fd is None
        assert reply["id"] == harness.EMPTY_BLOB_ID and reply["fd"] == -1
        assert reply["created"]["data_size"] == 0 and reply["created"]["store_fd"] == -1
        reply = c.request({"type": "get_buffers_request", "num": 1, "0": harness.EMPTY_BLOB_ID,
                           "unsafe": False})
        assert reply["num"] == 1 and reply["payloads"][0]["data_size"] == 0


def test_create_beyond_capacity_raw(daemon):
    with registered(daemon) as c:
        before = c.instance_status()["meta"]["memory_usage"]
        reply = c.request({"type": "create_buffer_request", "size": 1 << 40})
        assert_error(reply, 41)
        assert "1099511627776" in reply["message"]
        assert c.instance_status()["meta"]["memory_usage"] == before
        assert_open(c)


@pytest.mark.filterwarnings("ignore:No other vineyard instance available")
def test_not_enough_memory_via_python(daemon_factory):
    d = daemon_factory(size="64Mi")
    c = harness.connect(d.socket)
    try:
        with pytest.raises(vineyard.NotEnoughMemoryException):
            c.create_blob(1 << 40)
        with pytest.raises(vineyard.NotEnoughMemoryException):
            c.put(np.zeros(100 * MiB, np.uint8))
        assert c.status.memory_usage == 0
        # fill it up, hit the limit, free, and allocate again
        blobs = []
        with pytest.raises(vineyard.NotEnoughMemoryException):
            for _ in range(8):
                blobs.append(c.create_blob(16 * MiB))
        assert 2 <= len(blobs) <= 4, len(blobs)
        for b in blobs:
            b.seal(c)
        c.delete([b.id for b in blobs])
        assert c.status.memory_usage == 0
        a = np.arange(4 * MiB, dtype=np.int64)  # 32 MiB
        assert np.array_equal(c.get(c.put(a)), a)
    finally:
        harness.disconnect(c)


def test_clients_that_vanish_before_reading_the_reply(daemon):
    """The reply (and fd) goes to a closed socket: no SIGPIPE death."""
    for i in range(50):
        c = harness.RawConn(daemon.socket)
        c.register()
        c.send({"type": "create_buffer_request", "size": 4096})
        c.send({"type": "instance_status_request"})
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # odd ones with RST
    time.sleep(0.2)


def test_exit_request_closes_connection(daemon):
    with registered(daemon) as c:
        c.send({"type": "exit_request"})
        assert c.is_closed_by_peer()
