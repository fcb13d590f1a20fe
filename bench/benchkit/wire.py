"""A raw IPC connection speaking vineyard's framing (u64le length + JSON body).

For measurements the upstream client cannot make: many connections from one process
(the upstream client shares one per socket), a reply's bytes timed without parsing
them, and requests the client does not expose. Only for requests whose replies carry
no file descriptor (not ``create_buffer``/``get_buffers``).
"""

from __future__ import annotations

import json
import socket
import struct

REGISTER = {"type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0,
            "username": "", "password": ""}


class WireError(RuntimeError):
    pass


def recv_exact(sock, n) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("daemon closed the connection")
        got += k
    return bytes(buf)


class RawClient:
    """One registered IPC connection; `instance_id` from the register reply."""

    def __init__(self, path, timeout=120.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        reply = self.request(REGISTER)
        self.instance_id = reply.get("instance_id")

    # split in send/receive so that a caller can have many connections in flight
    def send(self, message: dict):
        body = json.dumps(message).encode()
        self.sock.sendall(struct.pack("<Q", len(body)) + body)

    def receive_bytes(self) -> bytes:
        (n,) = struct.unpack("<Q", recv_exact(self.sock, 8))
        return recv_exact(self.sock, n)

    def receive(self) -> dict:
        reply = json.loads(self.receive_bytes())
        if reply.get("code", 0) != 0:
            raise WireError(f"{reply.get('type')}: code {reply.get('code')}: {reply.get('message')}")
        return reply

    def request(self, message: dict) -> dict:
        self.send(message)
        return self.receive()

    def request_bytes(self, message: dict) -> bytes:
        self.send(message)
        return self.receive_bytes()

    def status(self) -> dict:
        return self.request({"type": "instance_status_request"})["meta"]

    def close(self):
        self.sock.close()
