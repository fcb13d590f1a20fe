"""A bare protocol client (stdlib only, starts fast) that creates blobs until killed.

    python raw_worker.py SOCKET SEED

1. register; create one blob of 4 KiB, fill it with a pattern derived from SEED,
   seal it (a sealed blob must survive the client's death);
2. create 16 unsealed blobs of 256 KiB and write into their memory;
3. print "ready <sealed blob id>" and keep creating unsealed 4 KiB blobs (up to
   1024 more, then idle with status requests) until killed.
"""

import array
import json
import mmap
import socket
import struct
import sys
import time

REGISTER = {
    "type": "register_request",
    "version": "0.24.2",
    "store_type": 1,
    "session_id": 0,
    "username": "",
    "password": "",
}


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.maps = {}

    def request(self, obj):
        body = json.dumps(obj).encode()
        self.s.sendall(struct.pack("<Q", len(body)) + body)
        return self.recv()

    def _exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise SystemExit("daemon closed the connection")
            buf += chunk
        return bytes(buf)

    def recv(self):
        (n,) = struct.unpack("<Q", self._exact(8))
        return json.loads(self._exact(n))

    def create(self, size):
        reply = self.request({"type": "create_buffer_request", "size": size})
        if "code" in reply:
            raise SystemExit("create_buffer failed: %r" % reply)
        payload = reply["created"]
        if reply["fd"] != -1:
            fds = array.array("i")
            _msg, anc, _f, _a = self.s.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
            for _level, _kind, data in anc:
                fds.frombytes(data[: fds.itemsize])
            # the client maps map_size - 8 bytes (upstream's realign)
            self.maps[payload["store_fd"]] = mmap.mmap(
                fds[0], payload["map_size"] - 8, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        return reply["id"], payload

    def write(self, payload, data):
        m = self.maps[payload["store_fd"]]
        off = payload["data_offset"]
        m[off : off + len(data)] = data


def pattern(seed, n):
    unit = ("blob %d " % seed).encode()
    return (unit * (n // len(unit) + 1))[:n]


def main():
    path, seed = sys.argv[1], int(sys.argv[2])
    c = Conn(path)
    assert c.request(REGISTER)["type"] == "register_reply"
    sealed, payload = c.create(4096)
    c.write(payload, pattern(seed, 4096))
    assert c.request({"type": "seal_request", "object_id": sealed})["type"] == "seal_reply"
    for _ in range(16):
        _bid, payload = c.create(256 << 10)
        c.write(payload, b"\xab" * (256 << 10))
    sys.stdout.write("ready %d\n" % sealed)
    sys.stdout.flush()
    for _ in range(1024):
        _bid, payload = c.create(4096)
        c.write(payload, b"\xcd" * 64)
    while True:
        c.request({"type": "instance_status_request"})
        time.sleep(0.01)


if __name__ == "__main__":
    main()
