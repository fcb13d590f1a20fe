#!/usr/bin/env python3
"""Writer throughput while many requests are parked on get_name(wait=True).

Issue 17: one write used to wake every parked waiter, so with 500 clients waiting for
names that never come, create_data fell from ~10,000/s to ~300/s. Waiters are now keyed
by the name or id they wait for. This program starts `trellis serve` (or --binary, e.g.
an older build to compare), measures create_data requests/s from one raw-protocol
writer with 0 and with N parked waiters (each on a name of its own that nobody puts),
alternating rounds, and prints a table with the medians and their ratio.

    .venv/bin/python bench/waiter_bench.py [--waiters 500] [--rounds 5] [--requests 5000]

Everything listens on a UNIX socket in a fresh temporary directory; the daemon is
stopped by PID at the end.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

from benchkit.daemons import Daemon, DaemonError  # noqa: E402
REGISTER = {"type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0,
            "username": "", "password": ""}


def send(s, message):
    body = json.dumps(message).encode()
    s.sendall(struct.pack("<Q", len(body)) + body)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("daemon closed the connection")
        buf += chunk
    return bytes(buf)


def receive(s):
    (n,) = struct.unpack("<Q", recv_exact(s, 8))
    return json.loads(recv_exact(s, n))


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    send(s, REGISTER)
    reply = receive(s)
    if reply.get("code", 0) != 0:
        raise RuntimeError("register failed: %r" % reply)
    return s


def cpu_seconds(pid):
    """User + system CPU time of a process so far (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writer_rate(path, requests, pid=None):
    """(create_data requests per second from one connection, sent back to back; the
    daemon's CPU µs per request over the same interval, parked waiters' polling included)."""
    s = connect(path)
    cpu0 = cpu_seconds(pid) if pid else 0.0
    tree = {"typename": "vineyard::Scalar<int64>", "value_": 1, "type_": "int64", "nbytes": 0,
            "instance_id": 0, "transient": True}
    body = json.dumps({"type": "create_data_request", "content": tree}).encode()
    frame = struct.pack("<Q", len(body)) + body
    start = time.perf_counter()
    for _ in range(requests):
        s.sendall(frame)
        reply = receive(s)
        if reply.get("code", 0) != 0:
            raise RuntimeError("create_data failed: %r" % reply)
    elapsed = time.perf_counter() - start
    cpu = (cpu_seconds(pid) - cpu0) * 1e6 / requests if pid else 0.0
    s.close()
    return requests / elapsed, cpu


def park(path, n):
    """n connections parked in get_name(wait=True) on names nobody puts."""
    out = []
    for i in range(n):
        s = connect(path)
        send(s, {"type": "get_name_request", "name": "never-%d" % i, "wait": True})
        out.append(s)
    return out


def status(path):
    s = connect(path)
    send(s, {"type": "instance_status_request"})
    reply = receive(s)["meta"]
    s.close()
    return reply


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.environ.get("TRELLIS_BIN") or os.path.join(REPO, ".build", "release", "trellis"))
    ap.add_argument("--waiters", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=5000)
    a = ap.parse_args()
    if not os.path.exists(a.binary):
        sys.exit("no daemon binary at %s (swift build -c release --product trellis, or --binary)" % a.binary)

    tmp = tempfile.mkdtemp(prefix="trwb", dir="/tmp")
    sock = os.path.join(tmp, "d.sock")
    daemon = Daemon([a.binary, "serve", "--socket", sock, "--size", "64Mi", "--norpc"], sock,
                    os.path.join(tmp, "daemon.log"), label="trellis serve")
    parked = []
    try:
        try:
            daemon.start()
        except DaemonError as e:
            sys.exit(str(e))
        time.sleep(0.2)
        writer_rate(sock, min(1000, a.requests))  # warm-up
        without, with_, cpu0, cpu1 = [], [], [], []
        for _ in range(a.rounds):
            rate, cpu = writer_rate(sock, a.requests, daemon.pid)
            without.append(rate)
            cpu0.append(cpu)
            parked = park(sock, a.waiters)
            rate, cpu = writer_rate(sock, a.requests, daemon.pid)
            with_.append(rate)
            cpu1.append(cpu)
            for s in parked:
                s.close()
            parked = []
            # wait until the daemon noticed the departed waiters
            deadline = time.monotonic() + 30
            while status(sock).get("deferred_requests", 0) > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        m0, m1 = statistics.median(without), statistics.median(with_)
        c0, c1 = statistics.median(cpu0), statistics.median(cpu1)
        print("binary: %s, %d rounds of %d requests, load average %.1f" % (
            a.binary, a.rounds, a.requests, os.getloadavg()[0]))
        print("| writer, create_data | req/s median | min | max | daemon CPU µs/req (median) |")
        print("|---|---:|---:|---:|---:|")
        print("| 0 parked waiters | {:,.0f} | {:,.0f} | {:,.0f} | {:.1f} |".format(m0, min(without), max(without), c0))
        print("| {} parked waiters | {:,.0f} | {:,.0f} | {:,.0f} | {:.1f} |".format(
            a.waiters, m1, min(with_), max(with_), c1))
        print("| slowdown with waiters | {:.2f}× | | | {:.2f}× |".format(m0 / m1, c1 / c0 if c0 else float("nan")))
        print("target ≤ 1.2× (req/s): %s" % ("met" if m0 / m1 <= 1.2 else "NOT met"))
    finally:
        for s in parked:
            s.close()
        daemon.stop(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
