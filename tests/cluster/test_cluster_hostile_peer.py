"""Issue 17: numbers from a peer must not trap the daemon. A fake instance registered in
etcd (a small server on 127.0.0.1) answers a migration with hostile numbers — a reply
header of 2^64−1, payload sizes of 2^64−1, −1, 2^62 or beyond the arena, blobs nobody
asked for, a transfer that breaks off. The migrating daemon must answer its client with a
clear error and keep serving."""

import base64
import json
import socket
import struct
import threading
import urllib.request

import numpy as np
import pytest

import cluster_lib


def etcd_put(endpoint, key, value):
    def b64(s):
        return base64.b64encode(s.encode()).decode()

    body = json.dumps({"key": b64(key), "value": b64(value)}).encode()
    req = urllib.request.Request(endpoint + "/v3/kv/put", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


def recv_frame(conn):
    (n,) = struct.unpack("<Q", cluster_lib._recv_exact(conn, 8))
    return json.loads(cluster_lib._recv_exact(conn, n))


def send_frame(conn, message):
    body = json.dumps(message).encode()
    conn.sendall(struct.pack("<Q", len(body)) + body)


class FakePeer:
    """Answers register normally, then get_remote_buffers in the way `mode` says."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.mode = None
        self.accepted = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.set()
            try:
                conn.settimeout(20)
                self.serve(conn)
            except Exception:
                pass
            finally:
                conn.close()

    def serve(self, conn):
        recv_frame(conn)  # register_request
        if self.mode == "huge_header":
            conn.sendall(struct.pack("<Q", 2**64 - 1))
            return
        send_frame(conn, {"type": "register_reply", "instance_id": 999, "version": "0.24.2",
                          "rpc_endpoint": "127.0.0.1:%d" % self.port, "ipc_socket": "", "store_match": True,
                          "session_id": 0, "support_rpc_compression": False})
        req = recv_frame(conn)
        asked = [req[str(i)] for i in range(req["num"])]
        size = {"size_max": 2**64 - 1, "size_neg": -1, "size_2_62": 2**62, "size_arena": 8 << 30,
                "short": 1 << 20, "wrong_id": 8}[self.mode]
        payloads = []
        for i, oid in enumerate(asked):
            payloads.append({"object_id": (oid ^ 0x10) if self.mode == "wrong_id" else oid, "store_fd": -1,
                             "data_offset": 0, "data_size": size, "map_size": 0, "pointer": 0,
                             "is_sealed": True, "is_owner": True})
        send_frame(conn, {"type": "get_remote_buffers_reply", "num": len(payloads), "payloads": payloads,
                          "fds": [], "compress": False})
        if self.mode == "short":
            conn.sendall(b"x" * 10)  # and hang up

    def close(self):
        self.listener.close()


@pytest.mark.parametrize("mode", ["huge_header", "size_max", "size_neg", "size_2_62", "size_arena", "short",
                                  "wrong_id"])
def test_hostile_peer_numbers_get_an_error_and_the_daemon_keeps_serving(cluster, mode):
    a, b = cluster.start(2, size="256Mi")
    cb = b.connect()
    oid = cb.put(np.arange(1000, dtype=np.int64), persist=True)
    b_id = b.status()["instance_id"]
    fake = FakePeer()
    fake.mode = mode
    try:
        # B's registry entry now sends migrations to the fake peer.
        info = a.cluster_meta()["i%d" % b_id]
        record = dict(info, instance_id=b_id, rpc_endpoint="127.0.0.1:%d" % fake.port)
        etcd_put(cluster.etcd.endpoint, cluster.prefix + "/instances/%d" % b_id, json.dumps(record))
        blobs_before = a.status()["blobs"]
        reply = a.request({"type": "migrate_object_request", "object_id": int(oid)}, timeout=60)
        assert reply.get("code", 0) != 0, reply
        assert reply.get("message"), reply
        assert fake.accepted.is_set()  # the migration did go to the fake peer
        assert a.status()["blobs"] == blobs_before  # no half-received blob is kept
        # A is alive and serves: its own put/get, and status
        assert a.alive()
        ca = cluster_lib.raw_request(a.socket, {"type": "instance_status_request"})
        assert ca["type"] == "instance_status_reply"
        rc, out, err, _ = cluster_lib.run_client(
            "import vineyard, numpy as np\nc = vineyard.connect(sock)\n"
            "x = np.arange(5000)\nassert (c.get(c.put(x)) == x).all()\nprint('ok')\n", 120, sock=a.socket)
        assert rc == 0 and out.strip() == "ok", err
    finally:
        fake.close()
