#!/usr/bin/env python3
"""Swift client vs Python client, on the same Trellis daemon, in the same run.

    .venv/bin/python bench/client_bench.py                  # starts its own daemon
    .venv/bin/python bench/client_bench.py --quick          # smoke run (~20 s)
    .venv/bin/python bench/client_bench.py --socket S       # use a running daemon
    .venv/bin/python bench/client_bench.py --json out.json  # also write the raw figures

Scenarios (identical on both sides, see `trellis bench-client --help`):

* small objects: put+get pairs of 8 B and 1 KiB int64 tensors — `client.put(arr)` then
  `client.get(id)` in Python, `putTensor` then `get(Tensor<Int64>.self, id)` in Swift: the
  same five requests (create_buffer, seal, create_data, get_data, get_buffers). p50/p99 of
  one pair, pairs per second (one client, one connection).
* large objects: put throughput (GB/s, from a source array already in memory) and get
  latency of 1 MiB, 64 MiB and 1 GiB uint8 tensors; median of --repeats runs, the object
  deleted between runs.

The daemon is `trellis serve` (--trellis, else $TRELLIS_BIN, else .build/release/trellis,
else .build/debug/trellis — build it with `swift build -c release` for real figures). Each client runs in its own process; the two runs are
sequential, never concurrent. The target of the client issue: Swift small put+get ≥ 2x the
Python client's pairs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MiB, GiB = 1 << 20, 1 << 30
sys.path.insert(0, HERE)

from benchkit.daemons import Daemon, DaemonError, find_trellis  # noqa: E402


# ---------------------------------------------------------------- Python client side

def python_worker(socket: str, small: list[int], large: list[int], iterations: int, warmup: int,
                  repeats: int) -> dict:
    import numpy as np
    import vineyard

    client = vineyard.connect(socket)
    out = {"client": "python", "small": [], "large": []}
    for size in small:
        arr = np.full(max(1, size // 8), 7, dtype=np.int64)
        ids = []
        for _ in range(warmup):
            oid = client.put(arr)
            client.get(oid)
            ids.append(oid)
        lat = []
        start = time.perf_counter_ns()
        for _ in range(iterations):
            t0 = time.perf_counter_ns()
            oid = client.put(arr)
            got = client.get(oid)
            lat.append(time.perf_counter_ns() - t0)
            assert len(got) == len(arr)
            ids.append(oid)
        total = time.perf_counter_ns() - start
        for i in range(0, len(ids), 1000):
            client.delete(ids[i:i + 1000])
        lat.sort()
        out["small"].append({
            "bytes": size, "iterations": iterations,
            "p50_us": lat[len(lat) // 2] / 1000,
            "p99_us": lat[min(len(lat) - 1, len(lat) * 99 // 100)] / 1000,
            "ops_per_s": iterations / (total / 1e9),
        })
    for size in large:
        src = np.empty(size, dtype=np.uint8)
        src[::4096] = (np.arange(0, size, 4096) >> 12).astype(np.uint8)
        puts, gets = [], []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter_ns()
            oid = client.put(src)
            t1 = time.perf_counter_ns()
            got = client.get(oid)
            t2 = time.perf_counter_ns()
            assert got.shape == (size,) and got[4096 % size] == src[4096 % size]
            del got
            puts.append(t1 - t0)
            gets.append(t2 - t1)
            client.delete(oid)
        puts.sort()
        gets.sort()
        put = puts[len(puts) // 2] / 1e9
        out["large"].append({"bytes": size, "repeats": len(puts), "put_s": put,
                             "put_gbps": size / put / 1e9, "get_us": gets[len(gets) // 2] / 1000})
    client.close()
    return out


# ---------------------------------------------------------------- driver

def start_daemon(trellis: str, size: str) -> Daemon:
    tmp = tempfile.mkdtemp(prefix="trcb", dir="/tmp")
    sock = os.path.join(tmp, "d.sock")
    return Daemon([trellis, "serve", "--socket", sock, "--size", size, "--norpc"], sock,
                  os.path.join(tmp, "daemon.log"), label="trellis serve").start()


def run_python(args, socket: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_python-worker", "--socket", socket,
           "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
           "--small", *map(str, args.small), "--large", *map(str, args.large)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "VINEYARD_IPC_SKIP_RETRY": "1"})
    if res.returncode != 0:
        sys.exit("client_bench: the Python client failed:\n" + res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_swift(args, trellis: str, socket: str) -> dict:
    cmd = [trellis, "bench-client", "--socket", socket, "--iterations", str(args.iterations),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats),
           "--small", *map(str, args.small), "--large", *map(str, args.large)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit("client_bench: trellis bench-client failed:\n" + res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def human(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return "%d %s" % (n // size, unit)
    return "%d B" % n


def report(swift: dict, python: dict, trellis: str) -> str:
    lines = ["Client benchmark: Swift client vs Python client (vineyard 0.24.2), same trellis daemon",
             "daemon binary: %s" % trellis, "",
             "| small put+get | client | p50 | p99 | pairs/s |", "|---|---|---:|---:|---:|"]
    ratios = []
    for s, p in zip(swift["small"], python["small"]):
        for name, r in (("Swift", s), ("Python", p)):
            lines.append("| %s | %s | %.1f us | %.1f us | %s |" % (
                human(r["bytes"]), name, r["p50_us"], r["p99_us"], format(int(r["ops_per_s"]), ",")))
        ratios.append((s["bytes"], s["ops_per_s"] / p["ops_per_s"]))
    lines += ["", "| large | client | put | put GB/s | get |", "|---|---|---:|---:|---:|"]
    for s, p in zip(swift["large"], python["large"]):
        for name, r in (("Swift", s), ("Python", p)):
            lines.append("| %s | %s | %.1f ms | %.2f | %.1f us |" % (
                human(r["bytes"]), name, r["put_s"] * 1000, r["put_gbps"], r["get_us"]))
    lines.append("")
    for size, ratio in ratios:
        verdict = "meets" if ratio >= 2 else "MISSES"
        lines.append("Swift/Python small put+get pairs/s at %s: %.2fx (%s the 2x target)" % (human(size), ratio, verdict))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", help="use this running daemon instead of starting one")
    ap.add_argument("--trellis", help="the trellis binary (daemon and Swift client)")
    ap.add_argument("--size", default="3Gi", help="arena size of the daemon started here")
    ap.add_argument("--iterations", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small", type=int, nargs="+", default=[8, 1024])
    ap.add_argument("--large", type=int, nargs="+", default=[MiB, 64 * MiB, GiB])
    ap.add_argument("--quick", action="store_true", help="1000 pairs, large sizes up to 64 MiB")
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--_python-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._python_worker:
        print(json.dumps(python_worker(args.socket, args.small, args.large, args.iterations, args.warmup,
                                       args.repeats)))
        return 0
    if args.quick:
        args.iterations, args.warmup, args.large = 1000, 100, [MiB, 64 * MiB]

    try:
        trellis = find_trellis(args.trellis)
        daemon = None if args.socket else start_daemon(trellis, args.size)
    except DaemonError as e:
        sys.exit(f"client_bench: {e}")
    socket = args.socket or daemon.socket
    try:
        python = run_python(args, socket)
        swift = run_swift(args, trellis, socket)
    finally:
        if daemon:
            daemon.stop()
            shutil.rmtree(os.path.dirname(daemon.socket), ignore_errors=True)
    print(report(swift, python, trellis))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"swift": swift, "python": python, "trellis": trellis}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
