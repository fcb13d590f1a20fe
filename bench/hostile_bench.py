#!/usr/bin/env python3
"""Hostile clients vs everyone else: what one hostile request costs another client.

For each case of issue 13, a victim process sends instance_status requests in a loop on
its own connection while the hostile connection sends its request(s); the table shows
how long the hostile request took, the victim's worst and 99th-percentile latency while
it ran, and the daemon's heap (RssAnon) before, during and after (all connections closed).

    .venv/bin/python bench/hostile_bench.py            # $TRELLIS_BIN or .build/release/trellis
    TRELLIS_BIN=.build/debug/trellis .venv/bin/python bench/hostile_bench.py

Numbers only from this program (never from a test).
"""

import multiprocessing
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import harness  # noqa: E402


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def victim(path, ready, stop, out):
    c = harness.RawConn(path, timeout=60.0)
    c.register()
    lat = []
    ready.set()
    while not stop.is_set():
        t = time.perf_counter()
        c.instance_status()
        lat.append(time.perf_counter() - t)
    c.close()
    out.send(lat)


def raw(path):
    c = harness.RawConn(path, timeout=300.0)
    inst = c.register()["instance_id"]
    return c, inst


def case_chain(d):
    c, inst = raw(d.socket)
    prev = None
    for i in range(64):
        tree = {"typename": "hostile::Chain", "instance_id": inst}
        if prev:
            tree["next"] = {"id": "o%016x" % prev}
        prev = c.request({"type": "create_data_request", "content": tree})["id"]

    def run():
        c.request({"type": "create_data_request", "content": {"typename": "x", "instance_id": inst, "n": {"id": "o%016x" % prev}}})
        c.request({"type": "get_data_request", "id": [prev]})
        c.request({"type": "persist_request", "id": prev})
        c.request({"type": "del_data_request", "id": [prev], "deep": True})
    return c, run


def case_deep_json(d):
    c, _ = raw(d.socket)
    body = b'{"type":"get_data_request","id":' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}"

    def run():
        c.send_body(body)
        c.recv()
    return c, run


def case_regex(d):
    c, inst = raw(d.socket)
    for i in range(2000):
        c.request({"type": "create_data_request",
                   "content": {"typename": "hostile::" + "a" * 200, "instance_id": inst}})

    def run():
        c.request({"type": "list_data_request", "pattern": "hostile::(a*)*b", "regex": True, "limit": 100000})
    return c, run


def case_create_buffers(d):
    c, _ = raw(d.socket)

    def run():
        c.request({"type": "create_buffers_request", "num": 100000, "sizes": [0] * 100000})
        c.request({"type": "create_buffers_request", "num": 16384, "sizes": [0] * 16384})
    return c, run


def case_get_buffers(d):
    c, _ = raw(d.socket)
    reply = c.request({"type": "create_buffer_request", "size": 64})
    bid = reply["id"]
    c.recv_fd()
    c.request({"type": "seal_request", "object_id": bid})

    def run():
        c.request({"type": "get_buffers_request", "ids": [bid] * 100000, "unsafe": False})
        c.request({"type": "get_buffers_request", "ids": [bid] * 16384, "unsafe": False})
    return c, run


def case_large_frames(d):
    conns = [raw(d.socket)[0] for _ in range(8)]
    body = b'{"type":"instance_status_request","pad":"' + b"x" * (32 << 20) + b'"}'

    def run():
        for c in conns:
            c.send_body(body)
            c.recv()
    return conns, run


CASES = [
    ("chain of 64 objects: create 65th, get, persist, deep delete", case_chain),
    ("1,000,000-deep JSON", case_deep_json),
    ("list_data (a*)*b over 2,000 typenames", case_regex),
    ("create_buffers 100,000 (refused) + 16,384 zero sizes", case_create_buffers),
    ("get_buffers 100,000 (refused) + 16,384 ids", case_get_buffers),
    ("8 connections send one 32 MiB frame, stay idle", case_large_frames),
]


def main():
    binary = os.environ.get("TRELLIS_BIN") or os.path.join(REPO, ".build", "release", "trellis")
    os.environ["TRELLIS_BIN"] = binary
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for name, setup in CASES:
        with harness.Daemon(size="1Gi") as d:
            held, run = setup(d)
            time.sleep(0.2)
            before = rss_anon_kib(d.pid)
            ready, stop = spawn.Event(), spawn.Event()
            parent, child = spawn.Pipe()
            p = spawn.Process(target=victim, args=(d.socket, ready, stop, child), daemon=True)
            p.start()
            ready.wait(60)
            time.sleep(0.2)
            t = time.perf_counter()
            run()
            took = time.perf_counter() - t
            during = rss_anon_kib(d.pid)
            time.sleep(0.1)
            stop.set()
            lat = sorted(parent.recv())
            p.join(10)
            idle = rss_anon_kib(d.pid)  # the hostile connections are still open, idle
            for c in (held if isinstance(held, list) else [held]):
                c.close()
            time.sleep(0.5)
            after = rss_anon_kib(d.pid)
            rows.append((name, took * 1000, lat[-1] * 1000 if lat else 0,
                         lat[int(len(lat) * 0.99)] * 1000 if lat else 0, len(lat), before, during, idle, after,
                         d.alive()))
    print("daemon: %s" % binary)
    print("| case | hostile request ms | victim max ms | victim p99 ms | victim requests | RssAnon before / "
          "right after / idle / closed (MiB) | daemon alive |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %.1f | %.1f | %.2f | %d | %.0f / %.0f / %.0f / %.0f | %s |"
              % (r[0], r[1], r[2], r[3], r[4], r[5] / 1024, r[6] / 1024, r[7] / 1024, r[8] / 1024, r[9]))


if __name__ == "__main__":
    main()
