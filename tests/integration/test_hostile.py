"""Hostile clients (issue 13): requests built to exhaust the daemon's stack, memory or lock.

Each test drives one attack over raw sockets, then checks that the daemon is alive, answers
a fresh client, and (where it matters) that its memory went back to where it was.
"""

import time

import pytest

import harness

META_TREE_INVALID = 21
INVALID = 1


@pytest.fixture(autouse=True)
def still_serves(request):
    # looked up first, so the daemon outlives this fixture's check
    daemons = [request.getfixturevalue(n) for n in ("daemon", "fresh_daemon") if n in request.fixturenames]
    yield
    for d in daemons:
        assert d.alive(), "daemon died:\n%s" % d.log_tail()
        with harness.RawConn(d.socket) as raw:
            raw.register()
            assert raw.instance_status()["type"] == "instance_status_reply"


def registered(d):
    c = harness.RawConn(d.socket, timeout=120.0)
    reply = c.register()
    return c, reply["instance_id"]


def assert_error(reply, code):
    assert "type" not in reply, "expected an error reply, got %.300r" % reply
    assert reply.get("code") == code, reply
    assert isinstance(reply.get("message"), str) and reply["message"], reply


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- metadata depth ---------------------------------------------------------------------


def test_a_chain_of_objects_deeper_than_the_limit_is_refused(fresh_daemon):
    """Each create_data names the previous object as its member: thousands of levels used to
    crash the daemon on get/persist/deep delete (recursion on a 512 KiB thread stack)."""
    c, instance = registered(fresh_daemon)
    with c:
        prev, created, refused = None, [], None
        for i in range(3000):
            tree = {"typename": "hostile::Chain", "instance_id": instance, "level": i}
            if prev is not None:
                tree["next"] = {"id": "o%016x" % prev}
            reply = c.request({"type": "create_data_request", "content": tree})
            if "type" not in reply:
                refused = reply
                break
            prev = reply["id"]
            created.append(prev)
        assert refused is not None, "a chain of 3000 levels was accepted"
        assert_error(refused, META_TREE_INVALID)
        assert "deep" in refused["message"], refused
        assert len(created) == 64, len(created)  # the documented limit (ObjectStore.maxMetadataDepth)

        top = created[-1]
        got = c.request({"type": "get_data_request", "id": [top], "sync_remote": False, "wait": False})
        assert got["type"] == "get_data_reply", got
        node, depth = got["content"]["o%016x" % top], 1
        while "next" in node:
            node, depth = node["next"], depth + 1
        assert depth == 64
        assert c.request({"type": "persist_request", "id": top})["type"] == "persist_reply"
        gone = c.request({"type": "del_data_request", "id": [top], "force": False, "deep": True,
                          "memory_trim": False, "fastpath": False})
        assert gone["type"] == "del_data_reply", gone
        left = c.request({"type": "get_data_request", "id": created, "sync_remote": False, "wait": False})
        assert left.get("content") in (None, {}), "deep delete left %d objects" % len(left.get("content") or {})


def test_a_nested_tree_deeper_than_the_limit_is_refused_in_one_request(fresh_daemon):
    c, instance = registered(fresh_daemon)
    with c:
        # 400 levels are refused by the JSON parser already (nesting > 128): Invalid
        for levels, accepted in ((64, True), (65, META_TREE_INVALID), (400, INVALID)):
            tree = {"typename": "hostile::Leaf", "instance_id": instance}
            for _ in range(levels - 1):
                tree = {"typename": "hostile::Nest", "instance_id": instance, "inner": tree}
            reply = c.request({"type": "create_data_request", "content": tree})
            if accepted is True:
                assert reply.get("type") == "create_data_reply", reply
                got = c.request({"type": "get_data_request", "id": [reply["id"]], "sync_remote": False,
                                 "wait": False})
                assert got["type"] == "get_data_reply"
            else:
                assert_error(reply, accepted)
        # a refused tree left nothing behind: only the accepted one's 64 objects are listed
        listed = c.request({"type": "list_data_request", "pattern": "hostile::*", "regex": False,
                            "limit": 100000})
        assert len(listed["content"]) == 64, len(listed["content"])


# -- JSON depth ----------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [100, 1000, 100000])
def test_deeply_nested_json_is_refused_with_a_clear_error(fresh_daemon, levels):
    c, _ = registered(fresh_daemon)
    with c:
        body = b'{"type":"get_data_request","id":' + b"[" * levels + b"]" * levels + b"}"
        c.send_body(body)
        reply = c.recv()
        assert "type" not in reply, reply
        if levels > 128:
            assert reply["code"] == INVALID and "nesting" in reply["message"], reply
        reply = c.instance_status()
        assert reply["type"] == "instance_status_reply"


# -- memory that another client maps is not reused ------------------------------------------


def _map_blob(conn, payload, fds):
    import mmap

    fd = fds[0]
    m = mmap.mmap(fd, payload["map_size"] - 8, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    return m, payload["data_offset"], payload["data_size"]


def test_a_reader_never_sees_its_bytes_change_after_a_delete(fresh_daemon):
    """Writer creates and fills a blob; a reader maps it; the writer deletes it and creates
    another of the same size, filled with other bytes: the reader's view must not change."""
    writer, _ = registered(fresh_daemon)
    reader, _ = registered(fresh_daemon)
    with writer, reader:
        size = 1 << 20
        created = writer.request({"type": "create_buffer_request", "size": size})
        wm, off, n = _map_blob(writer, created["created"], writer.recv_fd())
        wm[off:off + n] = b"A" * n
        writer.request({"type": "seal_request", "object_id": created["id"]})

        got = reader.request({"type": "get_buffers_request", "num": 1, "0": created["id"], "unsafe": False})
        rm, roff, rn = _map_blob(reader, got["0"], reader.recv_fd())
        assert rm[roff:roff + rn] == b"A" * n

        gone = writer.request({"type": "del_data_request", "id": [created["id"]], "force": False, "deep": True,
                               "memory_trim": True, "fastpath": False})
        assert gone["type"] == "del_data_reply"
        for _ in range(4):  # the allocator's first choice for a same-size blob is the freed block
            again = writer.request({"type": "create_buffer_request", "size": size})
            aoff = again["created"]["data_offset"]
            assert not (aoff < off + n and off < aoff + size), "the deleted blob's memory was handed out again"
            wm[aoff:aoff + size] = b"Z" * size
        assert rm[roff:roff + rn] == b"A" * n, "the reader's bytes changed"
        status = reader.instance_status()["meta"]
        assert status["retired_bytes"] >= size

        # the reader lets go: the memory is free again
        reader.request({"type": "release_request", "object_id": created["id"]})
        assert reader.instance_status()["meta"]["retired_bytes"] == 0
        rm.close()
        wm.close()


# -- bounded replies, buffers that shrink ----------------------------------------------------


def test_batches_of_blobs_are_bounded(fresh_daemon):
    c, _ = registered(fresh_daemon)
    with c:
        before = rss_kib(fresh_daemon.pid)
        reply = c.request({"type": "create_buffers_request", "num": 100000, "sizes": [0] * 100000})
        assert_error(reply, INVALID)
        assert "16384" in reply["message"], reply
        reply = c.request({"type": "get_buffers_request", "ids": [0x8000000000000000] * 100000, "unsafe": False})
        assert_error(reply, INVALID)
        ok = c.request({"type": "create_buffers_request", "num": 16384, "sizes": [0] * 16384})
        assert ok["type"] == "create_buffers_reply" and ok["num"] == 16384
        ok = c.request({"type": "get_buffers_request", "ids": [0x8000000000000000] * 16384, "unsafe": False})
        assert ok["type"] == "get_buffers_reply" and ok["num"] == 16384
        grown = rss_kib(fresh_daemon.pid) - before
        assert grown < 64 * 1024, "the daemon grew by %d KiB for bounded batches" % grown


def test_a_reply_larger_than_the_message_limit_is_refused(daemon_factory):
    d = daemon_factory(size="256Mi", extra=["--max-message-size", str(1 << 20)])
    c, inst = registered(d)
    with c:
        for i in range(4000):  # ~400 bytes of tree each: a listing of all is ~1.6 MiB
            c.request({"type": "create_data_request",
                       "content": {"typename": "hostile::Many", "instance_id": inst, "pad": "p" * 200}})
        reply = c.request({"type": "list_data_request", "pattern": "hostile::*", "regex": False, "limit": 100000})
        assert_error(reply, INVALID)
        assert "exceeds the message limit" in reply["message"], reply
        small = c.request({"type": "list_data_request", "pattern": "hostile::*", "regex": False, "limit": 100})
        assert small["type"] == "get_data_reply" and len(small["content"]) == 100


def test_idle_connections_keep_no_large_frame_buffers(fresh_daemon):
    """Eight connections each send one 32 MiB frame, then stay open and idle: the daemon's
    heap must go back near where it was (it kept 8 x 17 MiB before)."""
    conns = [registered(fresh_daemon)[0] for _ in range(8)]
    try:
        for c in conns:
            c.instance_status()
        before = rss_kib(fresh_daemon.pid)
        body = b'{"type":"instance_status_request","pad":"' + b"x" * (32 << 20) + b'"}'
        for c in conns:
            c.send_body(body)
            assert c.recv()["type"] == "instance_status_reply"
        # the heap is handed back right after each reply is sent: wait for it (bounded)
        deadline = time.monotonic() + 30
        held = rss_kib(fresh_daemon.pid) - before
        while held >= 16 * 1024 and time.monotonic() < deadline:
            time.sleep(0.1)
            held = rss_kib(fresh_daemon.pid) - before
        assert held < 16 * 1024, "8 idle connections hold %d KiB after one large frame each" % held
    finally:
        for c in conns:
            c.close()


# -- patterns ---------------------------------------------------------------------------------


def test_a_pathological_regex_is_linear(fresh_daemon):
    c, inst = registered(fresh_daemon)
    with c:
        for _ in range(200):
            c.request({"type": "create_data_request",
                       "content": {"typename": "hostile::" + "a" * 2000, "instance_id": inst}})
        # (a*)*b backtracks exponentially in std::regex and Swift's Regex alike
        reply = c.request({"type": "list_data_request", "pattern": "hostile::(a*)*b", "regex": True, "limit": 10})
        assert reply["type"] == "get_data_reply" and not reply.get("content"), reply
        reply = c.request({"type": "list_name_request", "pattern": "(x+x+)+y", "regex": True, "limit": 10})
        assert reply["type"] == "list_name_reply"
        reply = c.request({"type": "list_data_request", "pattern": "hostile::(a*)*", "regex": True, "limit": 1000})
        assert len(reply["content"]) == 200
