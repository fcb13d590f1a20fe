#!/usr/bin/env python3
"""Multi-node benchmark on network-namespace nodes (issue 11), in one run:

1. house-prices (examples/house-prices/flow.yaml, HOUSE_ROWS rows) on 3 namespace nodes
   (`trellis runtime up --replicas 3 --netns`) and on one machine with 2 local replicas
   (`trellis runtime up --replicas 2`): wall time of the run (the record's start to finish)
   and bytes moved between replicas/nodes. Alternating, medians of --repeat runs.
2. A fan-in move across the virtual network: an object of --move-mib MiB put on node 0 is
   migrated by node 1's daemon (`client.migrate`, daemon to daemon over the veths), against
   a plain TCP copy of the same bytes between the same two namespaces (a Python sender in
   node 0's namespace, a receiver in node 1's). Medians of --repeat.

Root only (ip netns). Prints a table; --write FILE replaces the section between the
`<!-- netns_bench -->` markers of FILE with it.

    sudo .venv/bin/python bench/netns_bench.py --binary .build/release/trellis
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

RECEIVER = r'''
import socket, sys, time
n = int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9700)); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
buf = bytearray(8 << 20); view = memoryview(buf); got = 0
t = time.perf_counter()
while got < n:
    k = c.recv_into(view)
    if not k: break
    got += k
print(got, time.perf_counter() - t, flush=True)
'''

SENDER = r'''
import socket, sys
n = int(sys.argv[2]); chunk = bytes(8 << 20)
c = socket.create_connection((sys.argv[1], 9700))
sent = 0
while sent < n:
    sent += c.send(chunk[: min(len(chunk), n - sent)])
c.close()
'''

PUT = r'''
import sys, numpy as np, vineyard
c = vineyard.connect(sys.argv[1])
a = np.random.default_rng(1).random(int(sys.argv[2]) // 8)
print(int(c.put(a, persist=True)))
'''

MIGRATE = r'''
import sys, time, vineyard
c = vineyard.connect(sys.argv[1])
oid = vineyard.ObjectID(int(sys.argv[2]))
c.get_meta(oid)
t = time.perf_counter()
copy = c.migrate(oid)
print(time.perf_counter() - t, int(copy))
'''


class Home:
    def __init__(self, binary):
        self.home = tempfile.mkdtemp(prefix="nsb", dir="/tmp")
        self.env = dict(os.environ, TRELLIS_HOME=self.home, TRELLIS_PYTHON=PY, PYTHONUNBUFFERED="1")
        self.binary = binary

    def trellis(self, *args, timeout=1800, check=True):
        p = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise SystemExit("trellis %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr))
        return p

    def state(self):
        with open(os.path.join(self.home, "runtime", "state.json")) as f:
            return json.load(f)

    def close(self):
        self.trellis("runtime", "down", check=False)
        subprocess.run(["rm", "-rf", self.home])


def parse_time(s):
    from datetime import datetime
    return datetime.strptime(s.rstrip("Z")[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def flow_run(h, run_id, rows):
    h.env["HOUSE_ROWS"] = str(rows)
    h.trellis("flow", "run", os.path.join(REPO, "examples", "house-prices", "flow.yaml"), "--run-id", run_id)
    r = json.loads(h.trellis("flow", "status", run_id, "--json").stdout)
    wall = parse_time(r["finishedAt"]) - parse_time(r["startedAt"])
    moved = sum(i.get("movedBytes", 0) for s in r["steps"] for i in s.get("inputs", []))
    return wall, moved


def house_prices(binary, rows, repeat, size):
    out = {"nodes": [], "local": []}
    for k in range(repeat):
        for kind in ("nodes", "local"):
            h = Home(binary)
            try:
                args = ["runtime", "up", "--size", size] + (["--replicas", "3", "--netns"] if kind == "nodes" else ["--replicas", "2"])
                h.trellis(*args)
                out[kind].append(flow_run(h, "hp%d" % k, rows))
            finally:
                h.close()
    return out


def fan_in_move(binary, mib, repeat):
    h = Home(binary)
    res = {"move": [], "tcp": []}
    try:
        h.trellis("runtime", "up", "--replicas", "2", "--size", "%dMi" % (mib * 3), "--netns")
        st = h.state()
        n0, n1 = st["netns"]["nodes"]
        r0, r1 = st["replicas"]
        size = mib << 20
        for _ in range(repeat):
            oid = subprocess.run([PY, "-c", PUT, r0["socket"], str(size)], capture_output=True, text=True,
                                 check=True).stdout.strip()
            got = subprocess.run([PY, "-c", MIGRATE, r1["socket"], oid], capture_output=True, text=True, check=True)
            seconds, copy = got.stdout.split()
            res["move"].append(size / float(seconds))
            subprocess.run([PY, "-c", "import sys, vineyard; c = vineyard.connect(sys.argv[1]); "
                            "c.delete(vineyard.ObjectID(int(sys.argv[2])), force=True, deep=True)", r1["socket"], copy])
            subprocess.run([PY, "-c", "import sys, vineyard; c = vineyard.connect(sys.argv[1]); "
                            "c.delete(vineyard.ObjectID(int(sys.argv[2])), force=True, deep=True)", r0["socket"], oid])
            recv = subprocess.Popen(["ip", "netns", "exec", n1["namespace"], PY, "-c", RECEIVER, n1["address"], str(size)],
                                    stdout=subprocess.PIPE, text=True)
            assert recv.stdout.readline().strip() == "ready"
            subprocess.run(["ip", "netns", "exec", n0["namespace"], PY, "-c", SENDER, n1["address"], str(size)], check=True)
            n, seconds = recv.stdout.readline().split()
            recv.wait()
            res["tcp"].append(int(n) / float(seconds))
    finally:
        h.close()
    return res


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "%s, %d cores, %s" % (cpu, os.cpu_count() or 0, platform.release())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, ".build", "release", "trellis"))
    ap.add_argument("--rows", type=int, default=600000)
    ap.add_argument("--size", default="2Gi")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--move-mib", type=int, default=256)
    ap.add_argument("--write")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("netns_bench: network namespaces need root")
    hp = house_prices(a.binary, a.rows, a.repeat, a.size)
    mv = fan_in_move(a.binary, a.move_mib, a.repeat)
    med = lambda xs: statistics.median(xs)  # noqa: E731
    nodes_wall, local_wall = med([w for w, _ in hp["nodes"]]), med([w for w, _ in hp["local"]])
    lines = [
        "Measured %s on %s (`%s`), %d repetitions, medians." % (time.strftime("%Y-%m-%d"), machine(),
                                                               os.path.relpath(a.binary, REPO), a.repeat),
        "",
        "| house-prices, %d rows | wall s | bytes moved between replicas |" % a.rows,
        "|---|---|---|",
        "| 3 namespace nodes (`runtime up --netns`) | %.2f | %d |" % (nodes_wall, max(m for _, m in hp["nodes"])),
        "| 2 local replicas | %.2f | %d |" % (local_wall, max(m for _, m in hp["local"])),
        "| nodes / local | %.2f× | |" % (nodes_wall / local_wall),
        "",
        "| %d MiB across the veths, node 0 → node 1 | GB/s |" % a.move_mib,
        "|---|---|",
        "| daemon migration (`client.migrate`) | %.2f |" % (med(mv["move"]) / 1e9),
        "| plain TCP copy, same namespaces and link | %.2f |" % (med(mv["tcp"]) / 1e9),
        "| migration / TCP | %.2f× |" % (med(mv["move"]) / med(mv["tcp"])),
    ]
    table = "\n".join(lines)
    print(table)
    if a.write:
        text = open(a.write).read()
        start, end = "<!-- netns_bench -->", "<!-- /netns_bench -->"
        if start in text and end in text:
            text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end):]
        else:
            text += "\n%s\n%s\n%s\n" % (start, table, end)
        open(a.write, "w").write(text)


if __name__ == "__main__":
    main()
