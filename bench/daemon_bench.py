#!/usr/bin/env python3
"""Side-by-side benchmark of the Trellis daemon and upstream vineyardd 0.24.2.

One run starts every selected daemon (each with its own 4 GiB arena, UNIX socket only),
drives them with the pinned upstream Python client (vineyard==0.24.2) from separate
worker processes, and prints one markdown comparison table plus a table of
daemon-independent anchors (socket round trip, memcpy, pickle).

    .venv/bin/python bench/daemon_bench.py                      # trellis + vineyardd
    .venv/bin/python bench/daemon_bench.py --daemons vineyardd  # upstream only
    .venv/bin/python bench/daemon_bench.py --quick              # CI smoke (~1 min)
    .venv/bin/python bench/daemon_bench.py --daemons trellis,trellis-accel,trellis-zc,vineyardd --ray
    .venv/bin/python bench/daemon_bench.py --write docs/BENCHMARKS.md --json /tmp/b.json
    .venv/bin/python bench/daemon_bench.py --only large --daemons trellis,trellis-accel,trellis-zc,vineyardd

What is measured, per daemon, in this order (see docs/BENCHMARKS.md for the results):

1. small put+get pairs (8 B and 1 KiB int64 arrays): p50/p99 latency of one pair, pairs/s
   with one client process, aggregate pairs/s with two client processes at once;
2. daemon CPU per trivial request: N x ``client.exists(id)`` and N x ``client.get_name``,
   daemon CPU read from /proc/PID/task/*/schedstat (first field, ns) before and after;
3. the seed DataFrame handoff (600,000 x 46 int64): writer process ``put(df, name=,
   persist=True)``, then a separate reader process ``get(name=)`` and a sum over every
   column; minor page faults of writer and reader;
4. large arrays (1 MiB, 64 MiB, 1 GiB): put throughput and zero-copy get latency, each put
   beside a single-threaded memcpy of the same bytes (into a written buffer, timed in the
   writer right after the put; into fresh memory, an anchor process), issue 14's target at
   1 GiB; trellis-accel copies through trellis.accel, trellis-zc builds the source in the
   arena so its put only seals it;
5. daemon RSS (VmRSS) right after start and at the end with everything deleted.

Then the daemon-independent anchors (socket echo, memcpy, memfd faults, a pickle handoff)
and, with ``--ray``, the same DataFrame handoff through Ray's object store: a Ray head node
started for the run (``ray start --head --block --num-cpus 2 --object-store-memory
<--arena> --include-dashboard=false``) from ``.venv-ray`` (``bench/setup_ray.sh``; without
it the Ray row is skipped with a note), inside a private network namespace whose only
interface is loopback (benchkit.raynode: ``ray start`` turns ``--node-ip-address
127.0.0.1`` into the machine's outward address, so no flag keeps it on loopback), stopped
by PID at the end. Its workers are this file run by ``.venv-ray``'s python inside that
namespace: the writer builds the same frame (``_make_df``), connects (``ray.init``) before
``GO``, then times ``ray.put(df)`` plus cloudpickling the ObjectRef; the reader gets that ref
with its ``GO`` and times ``ray.get(ref)`` and the same sum over every column
(``_df_checksum``). Under Ray's ownership model the writer owns the object (it is freed
when its owner exits), so unlike the daemons' rounds the writer stays alive until the
reader is done: its exit is not in Ray's "writer start → reader end" time. The handoff
table shows every daemon, Ray, the pickle handoff and a memcpy of the same bytes side by
side (medians of the same number of rounds), with issue 14's targets.
Worker processes are this same file run with ``--_worker KIND`` (benchkit.workers); they
print ``READY``, wait for ``GO`` on stdin (so several of them can start at the same instant
and the interpreter start-up is never timed), then print ``RESULT <json>``. The report and
its section of docs/BENCHMARKS.md are written by daemon_report.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from benchkit.daemons import Daemon, DaemonError, find_trellis, find_vineyardd, non_loopback_listeners, vineyard_importable_or_reexec  # noqa: E402
from benchkit.machine import HUGE_PAGE, HugePageError, HugePagePool, machine_info  # noqa: E402
from benchkit import raynode  # noqa: E402
from benchkit.procstats import (  # noqa: E402
    MiB, NoiseMeter, median, parse_size, percentile, pinned, proc_cpu_ns, proc_minflt, proc_status_kib,
    proc_ticks,
)
from benchkit.workers import BenchError, Worker, ready_then_wait_go, result, run_one, run_together, serve  # noqa: E402
from daemon_report import (  # noqa: E402
    EXISTS_REP_BODY, EXISTS_REQ_BODY, NOISE_WARN_PCT, TRELLIS, TRELLIS_4K, TRELLIS_ACCEL, TRELLIS_HP, TRELLIS_LABELS, TRELLIS_ZC, UPSTREAM,
    publish, summarize_handoff,
)


# --------------------------------------------------------------------------- workers
# Everything below `worker_*` runs in a child process.

def _pin_self(a):
    if a.get("cpu") is not None:
        os.sched_setaffinity(0, {a["cpu"]})


def _connect(sock):
    import vineyard

    c = vineyard.connect(sock)
    if os.environ.get("TRELLIS_BENCH_ACCEL") == "1":
        # trellis-accel: this worker writes through trellis.accel's builders (the source
        # tree's copy), its connection opened now, before anything is timed
        sys.path.insert(0, os.path.join(REPO, "python"))
        import trellis.accel

        if not trellis.accel.warm(c):
            raise RuntimeError("trellis.accel steps aside for this daemon")
    return c


def _make_array(nbytes: int):
    import numpy as np

    if nbytes % 8 == 0:
        return np.arange(nbytes // 8, dtype=np.int64)
    return np.arange(nbytes, dtype=np.uint8)


def _make_df(rows: int, cols: int, seed: int):
    import numpy as np
    import pandas as pd

    np.random.seed(seed)
    return pd.DataFrame({f"c{i}": np.random.randint(0, 1_000_000, size=rows) for i in range(cols)})


def _df_checksum(df) -> int:
    # touches every byte of every column, never copies
    return int(sum(int(df[c].to_numpy().sum()) for c in df.columns))


def worker_pairs(a):
    """put(arr) + get(id) pairs in a loop for a fixed duration."""
    _pin_self(a)
    import numpy as np

    c = _connect(a["sock"])
    arr = _make_array(a["size"])
    ids = []
    for _ in range(a["warmup"]):
        oid = c.put(arr)
        back = c.get(oid)
        ids.append(oid)
    assert np.array_equal(back, arr), "get returned different data"
    del back
    c.delete(ids)
    ids = []
    ready_then_wait_go()
    samples = []
    perf = time.perf_counter_ns
    d0, c0 = proc_cpu_ns(a["pid"]), time.process_time_ns()
    start = perf()
    deadline = start + int(a["duration"] * 1e9)
    while True:
        t0 = perf()
        oid = c.put(arr)
        c.get(oid)
        t1 = perf()
        samples.append(t1 - t0)
        ids.append(oid)
        if t1 >= deadline:
            break
    elapsed = (perf() - start) / 1e9
    d1, c1 = proc_cpu_ns(a["pid"]), time.process_time_ns()
    for i in range(0, len(ids), 1000):
        c.delete(ids[i : i + 1000])
    c.close()
    samples.sort()
    result(
        {
            "count": len(samples),
            "elapsed_s": elapsed,
            "pairs_per_s": len(samples) / elapsed,
            "p50_us": percentile(samples, 0.50) / 1e3,
            "p99_us": percentile(samples, 0.99) / 1e3,
            "mean_us": sum(samples) / len(samples) / 1e3,
            # with several clients at once the daemon figure covers all of them
            "daemon_cpu_us_per_pair": (d1 - d0) / len(samples) / 1e3,
            "client_cpu_us_per_pair": (c1 - c0) / len(samples) / 1e3,
        }
    )


def _cpu_loop(fn, n, pid):
    perf = time.perf_counter_ns
    d0, k0, c0, w0 = proc_cpu_ns(pid), proc_ticks(pid), time.process_time_ns(), perf()
    for _ in range(n):
        fn()
    w1, c1, d1, k1 = perf(), time.process_time_ns(), proc_cpu_ns(pid), proc_ticks(pid)
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "n": n,
        "wall_us": (w1 - w0) / n / 1e3,
        "daemon_cpu_us": (d1 - d0) / n / 1e3,
        "daemon_cpu_us_ticks": (k1 - k0) / hz * 1e6 / n,
        "client_cpu_us": (c1 - c0) / n / 1e3,
    }


def worker_trivial(a):
    """N x exists(id) and N x get_name(name); daemon CPU from schedstat."""
    _pin_self(a)
    c = _connect(a["sock"])
    oid = c.put(_make_array(8), persist=True, name=a["name"])
    for _ in range(min(1000, a["n"])):
        c.exists(oid)
        c.get_name(a["name"])
    ready_then_wait_go()
    pid = a["pid"]
    res = {
        "exists": _cpu_loop(lambda: c.exists(oid), a["n"], pid),
        "get_name": _cpu_loop(lambda: c.get_name(a["name"]), a["n"], pid),
    }
    c.drop_name(a["name"])
    c.delete(oid, force=True)
    c.close()
    result(res)


def _recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def worker_echo_server(a):
    """Minimal Python server speaking the vineyard framing (u64le length + body)."""
    _pin_self(a)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a["path"])
    srv.listen(1)
    print("READY", flush=True)
    conn, _ = srv.accept()
    reply = (a["rep"]).to_bytes(8, "little") + b"x" * a["rep"]
    while True:
        hdr = _recv_exact(conn, 8)
        if hdr is None:
            break
        if _recv_exact(conn, int.from_bytes(hdr, "little")) is None:
            break
        conn.sendall(reply)
    conn.close()
    srv.close()


def worker_native_echo_server(a):
    """bench/echo_server.c, compiled: this process becomes it (same pid, same CPU)."""
    _pin_self(a)
    os.execv(a["binary"], [a["binary"], a["path"], str(a["rep"])])


def build_native_echo(tmpdir):
    """Compiles bench/echo_server.c with the first C compiler found; None if none works."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo_server.c")
    out = os.path.join(tmpdir, "echo_server")
    for cc in ("cc", "gcc", "clang"):
        if shutil.which(cc) is None:
            continue
        r = subprocess.run([cc, "-O2", "-o", out, src], capture_output=True, text=True)
        if r.returncode == 0:
            return out
        log(f"anchors: {cc} could not build {src}: {r.stderr.strip()[:300]}")
    log("anchors: no C compiler; the native echo anchor is left out")
    return None


def worker_echo_client(a):
    _pin_self(a)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(a["path"])
    req = a["req"].to_bytes(8, "little") + b"y" * a["req"]
    rep_len = 8 + a["rep"]

    def once():
        s.sendall(req)
        _recv_exact(s, rep_len)

    for _ in range(1000):
        once()
    ready_then_wait_go()
    res = _cpu_loop(once, a["n"], a["server_pid"])
    s.close()
    result(res)


def _zero_copy_or_fail(sock):
    """trellis-zc: from now on numpy places big buffers in the daemon's arena."""
    sys.path.insert(0, os.path.join(REPO, "python"))
    import trellis.accel

    if not trellis.accel.zero_copy(sock):
        raise RuntimeError("zero-copy put is not available (is trellis._zerocopy built?)")


def worker_large(a):
    """put throughput and zero-copy get latency of large arrays; delete in between.

    The source is written (filled) before timing. trellis-zc allocates it in the arena
    (numpy through trellis._zerocopy) and fills it there, a new one each round (a put
    publishes its array read-only, in place): its put seals it where it is."""
    import numpy as np

    zc = os.environ.get("TRELLIS_BENCH_ZC") == "1"
    if zc:
        _zero_copy_or_fail(a["sock"])
    c = _connect(a["sock"])
    c.delete(c.put(np.zeros(1)))  # map the arena before timing anything
    ready_then_wait_go()
    out = {}
    pid = a["pid"]

    def source(size):
        arr = np.empty(size, dtype=np.uint8)
        arr.fill(7)  # fault the source in before timing
        return arr

    for size, reps in zip(a["sizes"], a["repeats"]):
        arr = None if zc else source(size)
        # the paired anchor: each round also times a single-threaded memcpy of the same
        # bytes into this written buffer, so put and memcpy see the same machine load
        pair = np.empty(size, dtype=np.uint8)
        pair.fill(1)
        rows = []
        for _ in range(reps):
            if zc:
                arr = source(size)
            f0, d0, s0 = proc_minflt(), proc_cpu_ns(pid), _sys_s()
            t0 = time.perf_counter_ns()
            oid = c.put(arr)
            t1 = time.perf_counter_ns()
            f1, d1, s1 = proc_minflt(), proc_cpu_ns(pid), _sys_s()
            gets = []
            for _ in range(a["gets"]):
                g0 = time.perf_counter_ns()
                back = c.get(oid)
                g1 = time.perf_counter_ns()
                gets.append((g1 - g0) / 1e3)
                assert back.nbytes == size
                del back
            back = c.get(oid)
            if int(back[0]) != 7 or int(back[-1]) != 7:
                raise RuntimeError("get returned different bytes")
            del back
            c.delete(oid)
            m0 = time.perf_counter_ns()
            np.copyto(pair, arr)
            m1 = time.perf_counter_ns()
            if zc:
                arr = None  # its memory goes back to the arena
            rows.append(
                {
                    "put_s": (t1 - t0) / 1e9,
                    "put_gbps": size / ((t1 - t0) / 1e9) / 1e9,
                    "memcpy_s": (m1 - m0) / 1e9,
                    "put_minflt": f1 - f0,
                    # the writer's kernel time: page faults, the kernel allocating and
                    # zeroing the pages the copy lands in
                    "put_sys_ms": (s1 - s0) * 1e3,
                    "put_daemon_cpu_ms": (d1 - d0) / 1e6,
                    "get_us": gets,
                }
            )
        del arr, pair
        out[str(size)] = {
            # put speed / memcpy speed of the same round, median over the repeat puts
            "put_vs_memcpy_warm": median([r["memcpy_s"] / r["put_s"] for r in rows[1:]]) if len(rows) > 1 else None,
            "rounds": rows,
            "put_gbps_first": rows[0]["put_gbps"],
            "put_gbps_warm": median([r["put_gbps"] for r in rows[1:]]) if len(rows) > 1 else None,
            "put_minflt_first": rows[0]["put_minflt"],
            "put_sys_ms_first": rows[0]["put_sys_ms"],
            "put_sys_ms_warm": median([r["put_sys_ms"] for r in rows[1:]]) if len(rows) > 1 else None,
            "put_minflt_warm": median([r["put_minflt"] for r in rows[1:]]) if len(rows) > 1 else None,
            "get_us_median": median([g for r in rows for g in r["get_us"]]),
            "get_us_first": rows[0]["get_us"][0],
        }
    c.close()
    result(out)


def _sys_s():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def worker_memcpy_large(a):
    """The anchor of the large puts: a single-threaded memcpy (np.copyto) of the same
    bytes from the same kind of source, into fresh memory (a new allocation: its page
    faults, the kernel allocating and zeroing the pages, then the copy) and into a
    destination already written (the copy alone). Fresh: the first round (this process's
    first allocation of the size, as a daemon's first put of it) and the median of all;
    written: the median."""
    import numpy as np

    out = {}
    ready_then_wait_go()
    for size in a["sizes"]:
        src = np.empty(size, dtype=np.uint8)
        src.fill(7)
        # memory the sections before freed a moment ago would be recycled, cheaper than
        # what a put's first write meets after a worker's start-up (on a VM that reports
        # free pages to its host they cost a host fault again once reported): let it settle
        time.sleep(a["settle_s"])
        fresh, faults, sys_ms, warm = [], [], [], []
        for _ in range(a["repeats"]):
            f0, s0, t0 = proc_minflt(), _sys_s(), time.perf_counter()
            dst = np.empty(size, dtype=np.uint8)
            np.copyto(dst, src)
            t1, s1, f1 = time.perf_counter(), _sys_s(), proc_minflt()
            fresh.append(t1 - t0)
            faults.append(f1 - f0)
            sys_ms.append((s1 - s0) * 1e3)
            w0 = time.perf_counter()
            np.copyto(dst, src)
            warm.append(time.perf_counter() - w0)
            del dst
        del src
        out[str(size)] = {
            "fresh_s": median(fresh),
            "fresh_minflt": median(faults),
            "fresh_sys_ms": median(sys_ms),
            "fresh_s_first": fresh[0],
            "fresh_sys_ms_first": sys_ms[0],
            "fresh_gbps_first": size / fresh[0] / 1e9,
            "warm_s": median(warm),
            "fresh_gbps": size / median(fresh) / 1e9,
            "warm_gbps": size / median(warm) / 1e9,
        }
    result(out)


def worker_df_writer(a):
    if os.environ.get("TRELLIS_BENCH_ZC") == "1" and a.get("sock"):
        # trellis-zc: numpy builds the frame in the daemon's arena; put seals it in place
        _zero_copy_or_fail(a["sock"])
    df = _make_df(a["rows"], a["cols"], a["seed"])
    checksum = _df_checksum(df)
    nbytes = int(sum(df[c].to_numpy().nbytes for c in df.columns))
    c = _connect(a["sock"]) if a.get("sock") else None
    ready_then_wait_go()
    # (the daemon's CPU is read just outside the timed span: reading it costs ~0.1-0.3 ms)
    d0 = proc_cpu_ns(a["pid"]) if c is not None else 0
    f0, t0 = proc_minflt(), time.monotonic()
    if c is not None:
        oid = c.put(df, name=a["name"], persist=True)
        t1 = time.monotonic()
        d1 = proc_cpu_ns(a["pid"])
        extra = {"id": int(oid), "daemon_cpu_ms": (d1 - d0) / 1e6}
    else:  # pickle baseline
        import pickle

        with open(a["path"], "wb") as f:
            pickle.dump(df, f, protocol=5)
        t1 = time.monotonic()
        extra = {}
    f1 = proc_minflt()
    if c is not None:
        c.close()
    result(
        dict(
            extra,
            t_start=t0,
            t_end=t1,
            put_s=t1 - t0,
            minflt=f1 - f0,
            checksum=checksum,
            nbytes=nbytes,
        )
    )


def worker_df_reader(a):
    import pandas  # noqa: F401  (import before timing)

    c = _connect(a["sock"]) if a.get("sock") else None
    ready_then_wait_go()
    d0 = proc_cpu_ns(a["pid"]) if c is not None else 0
    f0, t0 = proc_minflt(), time.monotonic()
    if c is not None:
        df = c.get(name=a["name"])
    else:
        import pickle

        with open(a["path"], "rb") as f:
            df = pickle.load(f)
    t1 = time.monotonic()
    f1 = proc_minflt()
    d1 = proc_cpu_ns(a["pid"]) if c is not None else 0
    checksum = _df_checksum(df)
    t2 = time.monotonic()
    f2 = proc_minflt()
    res = {
        "t_start": t0,
        "t_end": t2,
        "get_s": t1 - t0,
        "touch_s": t2 - t1,
        "get_minflt": f1 - f0,
        "touch_minflt": f2 - f1,
        "checksum": checksum,
        "shape": list(df.shape),
    }
    del df
    if c is not None:
        res["daemon_cpu_ms"] = (d1 - d0) / 1e6
        oid = c.get_name(a["name"])
        c.drop_name(a["name"])
        c.delete(oid, force=True, deep=True)
        c.close()
    result(res)


def _ray_connect(a):
    """In a Ray worker (.venv-ray's python, in the Ray node's network namespace): connect
    to the node as a driver and warm the put/get path with a small object."""
    import numpy as np
    import ray

    ray.init(address=a["address"], logging_level="ERROR", log_to_driver=False)
    assert ray.get(ray.put(np.arange(4))).sum() == 6
    return ray


def worker_ray_writer(a):
    """Ray's object store: ray.put(df); the ObjectRef leaves out of band (cloudpickled) in
    the result; this process, the object's owner, lives on until the parent closes stdin."""
    df = _make_df(a["rows"], a["cols"], a["seed"])
    checksum = _df_checksum(df)
    nbytes = int(sum(df[c].to_numpy().nbytes for c in df.columns))
    ray = _ray_connect(a)
    import ray.cloudpickle

    ready_then_wait_go()
    d0 = proc_cpu_ns(a["pid"])  # (outside the timed span, as for the daemons)
    f0, t0 = proc_minflt(), time.monotonic()
    ref = ray.put(df)
    token = ray.cloudpickle.dumps(ref).hex()  # what the reader needs to find it
    t1, f1 = time.monotonic(), proc_minflt()
    d1 = proc_cpu_ns(a["pid"])
    result(
        {
            "t_start": t0,
            "t_end": t1,
            "put_s": t1 - t0,
            "minflt": f1 - f0,
            "daemon_cpu_ms": (d1 - d0) / 1e6,  # the raylet (it runs the plasma store)
            "checksum": checksum,
            "nbytes": nbytes,
            "ref": token,
        }
    )
    sys.stdin.readline()  # the owner keeps the object alive until the reader is done
    del ref
    ray.shutdown()


def worker_ray_reader(a):
    """Ray's object store: ray.get(ref) of the writer's ObjectRef (sent with GO), then the
    same sum over every column as worker_df_reader."""
    import pandas  # noqa: F401  (import before timing)

    ray = _ray_connect(a)
    import ray.cloudpickle

    token = ready_then_wait_go()
    d0 = proc_cpu_ns(a["pid"])
    f0, t0 = proc_minflt(), time.monotonic()
    df = ray.get(ray.cloudpickle.loads(bytes.fromhex(token)))
    t1, f1 = time.monotonic(), proc_minflt()
    d1 = proc_cpu_ns(a["pid"])
    checksum = _df_checksum(df)
    t2 = time.monotonic()
    f2 = proc_minflt()
    res = {
        "t_start": t0,
        "t_end": t2,
        "get_s": t1 - t0,
        "touch_s": t2 - t1,
        "get_minflt": f1 - f0,
        "touch_minflt": f2 - f1,
        "daemon_cpu_ms": (d1 - d0) / 1e6,
        "checksum": checksum,
        "shape": list(df.shape),
    }
    del df
    result(res)
    ray.shutdown()


def worker_memcpy(a):
    import numpy as np

    np.random.seed(a["seed"])
    src = np.random.randint(0, 1_000_000, size=(a["cols"], a["rows"]))
    ready_then_wait_go()
    f0 = proc_minflt()
    t0 = time.perf_counter()
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t1 = time.perf_counter()
    f1 = proc_minflt()
    warm = []
    for _ in range(a["repeats"]):
        w0 = time.perf_counter()
        np.copyto(dst, src)
        warm.append(time.perf_counter() - w0)
    result(
        {
            "nbytes": int(src.nbytes),
            "fresh_s": t1 - t0,
            "fresh_minflt": f1 - f0,
            "warm_s": median(warm),
        }
    )


def worker_memfd(a):
    """What any memfd-arena daemon costs the unchanged client: page faults on the mapping.

    Writer side: copy the DataFrame's bytes into a new MAP_SHARED mapping of a memfd
    (first time: the kernel allocates and zeroes the shmem pages; second time, through a
    fresh mapping of the same now-populated memfd, as after a delete and re-put). Reader
    side: a fresh mapping, sum everything (read faults map up to 16 pages at once).
    """
    import mmap

    import numpy as np

    np.random.seed(a["seed"])
    src = np.random.randint(0, 1_000_000, size=(a["cols"], a["rows"]))
    n = src.nbytes
    fd = os.memfd_create("tb-anchor")
    os.ftruncate(fd, n)
    ready_then_wait_go()

    def copy_in():
        m = mmap.mmap(fd, n, flags=mmap.MAP_SHARED)
        f0, t0 = proc_minflt(), time.perf_counter()
        dst = np.frombuffer(m, dtype=src.dtype).reshape(src.shape)
        np.copyto(dst, src)
        t1, f1 = time.perf_counter(), proc_minflt()
        del dst
        m.close()
        return t1 - t0, f1 - f0

    fresh_s, fresh_f = copy_in()
    again_s, again_f = copy_in()
    m = mmap.mmap(fd, n, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    f0, t0 = proc_minflt(), time.perf_counter()
    view = np.frombuffer(m, dtype=src.dtype).reshape(src.shape)
    total = int(sum(int(row.sum()) for row in view))
    t1, f1 = time.perf_counter(), proc_minflt()
    assert total == int(src.sum())
    del view
    m.close()
    os.close(fd)
    result(
        {
            "nbytes": int(n),
            "write_fresh_s": fresh_s,
            "write_fresh_minflt": fresh_f,
            "write_again_s": again_s,
            "write_again_minflt": again_f,
            "read_s": t1 - t0,
            "read_minflt": f1 - f0,
        }
    )


WORKERS = {
    "memfd": worker_memfd,
    "pairs": worker_pairs,
    "trivial": worker_trivial,
    "echo_server": worker_echo_server,
    "echo_client": worker_echo_client,
    "native_echo_server": worker_native_echo_server,
    "large": worker_large,
    "df_writer": worker_df_writer,
    "df_reader": worker_df_reader,
    "memcpy": worker_memcpy,
    "memcpy_large": worker_memcpy_large,
    "ray_writer": worker_ray_writer,
    "ray_reader": worker_ray_reader,
}


# --------------------------------------------------------------------------- orchestration


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, opts, tmpdir):
        self.o, self.tmp = opts, tmpdir
        self.daemons: dict[str, Daemon] = {}
        self.res: dict[str, dict] = {}
        self.errors: dict[str, list] = {}
        self.anchors: dict = {}
        self.noise: dict = {}
        self.pool = HugePagePool()
        self.ray_head = None

    # ---- daemons
    def start_daemons(self):
        for label in self.o.daemons:
            binary = find_trellis() if label in TRELLIS_LABELS else find_vineyardd()
            sock = os.path.join(self.tmp, label.replace("-", "") + ".sock")
            argv = [binary]
            if label in TRELLIS_LABELS:
                argv.append("serve")
            argv += ["--socket", sock, "--size", self.o.arena, "--meta", "local", "--norpc"]
            if label == TRELLIS_HP:
                try:
                    self.pool.ensure(-(-parse_size(self.o.arena) // HUGE_PAGE))
                except HugePageError as e:
                    raise BenchError(f"{TRELLIS_HP}: {e}")
                argv += ["--huge_pages", "--reserve_memory"]
            elif self.o.reserve_memory:
                argv.append("--reserve_memory")
            if label == TRELLIS_4K:
                argv.append("--notransparent_huge_pages")
            d = Daemon(argv, sock, os.path.join(self.tmp, label + ".log"), label=label)
            d.accel = label in (TRELLIS_ACCEL, TRELLIS_ZC)
            d.zero_copy = label == TRELLIS_ZC
            log(f"starting {label}: {' '.join(argv)}")
            self.daemons[label] = d
            d.start()
            bad = non_loopback_listeners(d.pid)
            if bad:
                raise BenchError(f"{label} listens outside loopback/UNIX: {bad}")
            self.res[label] = {"binary": binary, "argv": argv}
            self.errors[label] = []
        time.sleep(0.5)
        for label, d in self.daemons.items():
            self.res[label]["rss_start"] = proc_status_kib(d.pid)

    def stop_daemons(self):
        self.stop_ray()
        for d in self.daemons.values():
            try:
                d.stop()
            except Exception as e:  # keep cleaning up
                log(f"stopping {d.label}: {e}")
        problem = self.pool.restore()
        if problem:
            log(problem)

    def section(self, name, fn):
        """Run fn(label, daemon) for every daemon; a failure marks that daemon, not the run."""
        for label, d in self.daemons.items():
            if not d.alive():
                self.errors[label].append(f"{name}: daemon not running")
                continue
            log(f"{name}: {label}")
            meter = NoiseMeter([x.pid for x in self.daemons.values() if x.alive()])
            os.environ["TRELLIS_BENCH_ACCEL"] = "1" if getattr(d, "accel", False) else "0"
            os.environ["TRELLIS_BENCH_ZC"] = "1" if getattr(d, "zero_copy", False) else "0"
            try:
                fn(label, d)
            except BenchError as e:
                msg = str(e).strip().splitlines()
                self.errors[label].append(f"{name}: {msg[-1] if msg else e}")
                log(f"{name} failed on {label}: {e}")
                if not d.alive():
                    log(f"{label} died:\n{d.log_tail()}")
            self.note_noise(f"{name} / {label}", meter.stop())

    def note_noise(self, what, n):
        self.noise[what] = n
        if n["foreign_pct"] > NOISE_WARN_PCT or n["steal_pct"] > NOISE_WARN_PCT:
            log(f"warning: during {what} other processes used {n['foreign_pct']:.0f}% "
                f"and the hypervisor stole {n['steal_pct']:.0f}% of the machine's CPU")

    # ---- sections
    def small_pairs(self, label, d):
        out = self.res[label].setdefault("pairs", {})
        for size in self.o.small_sizes:
            a = {"sock": d.socket, "pid": d.pid, "size": size, "duration": self.o.duration, "warmup": self.o.warmup}
            one = run_one("pairs", a, self.tmp)
            with pinned(d.pid, self.o.pin_cpu):
                one_cpu = run_one("pairs", dict(a, cpu=self.o.pin_cpu), self.tmp)
            two = run_together("pairs", [a, a], self.tmp)
            agg = sum(r["pairs_per_s"] for r in two)
            out[str(size)] = {
                "one": one,
                "one_cpu": one_cpu,
                "two": two,
                "two_agg_per_s": agg,
                "scaling": agg / one["pairs_per_s"],
            }

    def trivial(self, label, d):
        a = {"sock": d.socket, "pid": d.pid, "n": self.o.requests, "name": "bench-trivial"}
        self.res[label]["trivial"] = run_one("trivial", a, self.tmp)
        with pinned(d.pid, self.o.pin_cpu):
            self.res[label]["trivial_cpu"] = run_one("trivial", dict(a, cpu=self.o.pin_cpu), self.tmp)

    def df_handoff(self, label, d):
        rounds = []
        for r in range(self.o.df_rounds):
            rounds.append(self._handoff({"sock": d.socket, "pid": d.pid, "name": "seed"}))
        self.res[label]["df"] = {"rounds": rounds, **summarize_handoff(rounds)}

    def _handoff(self, common):
        wa = dict(common, rows=self.o.df_rows, cols=self.o.df_cols, seed=self.o.seed)
        writer, reader = Worker("df_writer", wa, self.tmp), Worker("df_reader", common, self.tmp)
        ok = False
        try:
            writer.wait_ready()
            reader.wait_ready()
            writer.go()
            wres = writer.result()
            t0 = time.monotonic()
            writer.finish()  # the writer step ends before the reader step starts
            wres["exit_s"] = time.monotonic() - t0
            reader.go()
            rres = reader.result()
            ok = True
        finally:
            for w in (writer, reader):
                w.finish() if ok else w.kill()
        return self._handoff_round(wres, rres)

    def _handoff_round(self, wres, rres):
        """One round's record, after checking the reader saw the writer's frame."""
        if rres["checksum"] != wres["checksum"]:
            raise BenchError(f"DataFrame checksum mismatch: wrote {wres['checksum']}, read {rres['checksum']}")
        if rres["shape"] != [self.o.df_rows, self.o.df_cols]:
            raise BenchError(f"DataFrame shape mismatch: {rres['shape']}")
        return {
            "writer": wres,
            "reader": rres,
            "total_s": wres["put_s"] + rres["get_s"] + rres["touch_s"],
            "wall_s": rres["t_end"] - wres["t_start"],  # also includes writer exit and signalling
        }

    def large(self, label, d):
        a = {
            "sock": d.socket,
            "pid": d.pid,
            "sizes": self.o.large_sizes,
            "repeats": [self.o.large_repeats(s) for s in self.o.large_sizes],
            "gets": 5,
        }
        self.res[label]["large"] = run_one("large", a, self.tmp)

    def memcpy_large(self):
        """The large puts' anchor: memcpy of the same sizes, fresh and warm destination."""
        log("anchors: memcpy of the large sizes")
        meter = NoiseMeter([d.pid for d in self.daemons.values() if d.alive()])
        self.anchors["memcpy_large"] = run_one(
            "memcpy_large",
            {"sizes": self.o.large_sizes, "repeats": max(self.o.large_repeats(s) for s in self.o.large_sizes), "settle_s": 3.0},
            self.tmp,
        )
        self.note_noise("anchors: memcpy of the large sizes", meter.stop())

    def rss_end(self, label, d):
        time.sleep(1.0)
        self.res[label]["rss_end"] = proc_status_kib(d.pid)
        import vineyard

        c = vineyard.connect(d.socket)
        self.res[label]["memory_usage_end"] = int(c.status.memory_usage)
        c.close()

    # ---- Ray's object store (an anchor: its own node, its own venv)
    def run_ray(self):
        why = raynode.problem()
        if why:
            log(f"ray: skipped: {why}")
            self.anchors["ray"] = {"skipped": why}
            return
        self.errors.setdefault("ray", [])
        head = self.ray_head = raynode.RayHead(self.tmp, object_store_bytes=parse_size(self.o.arena))
        log(f"ray: starting a head node in a private network namespace: {' '.join(head.ray_argv)}")
        try:
            head.start()
            raylet = head.pid_of("raylet")
            if raylet is None:
                raise BenchError("the Ray node has no raylet process")
            meter = NoiseMeter([d.pid for d in self.daemons.values() if d.alive()] + head.members())
            log("ray: DataFrame handoff")
            rounds = [self._ray_handoff(head, {"address": head.address, "pid": raylet}) for _ in range(self.o.df_rounds)]
            self.note_noise("Ray handoff", meter.stop())
            self.anchors["ray"] = {
                "rounds": rounds,
                **summarize_handoff(rounds),
                "argv": head.ray_argv,
                "version": head.version(),
                "object_store_memory": parse_size(self.o.arena),
            }
        except (BenchError, DaemonError) as e:
            msg = str(e).strip().splitlines()
            self.errors["ray"].append(f"DataFrame handoff: {msg[-1] if msg else e}")
            log(f"ray failed: {e}")
        finally:
            self.stop_ray()

    def _ray_handoff(self, head, common):
        """Like _handoff, but the writer (the object's owner under Ray's ownership model)
        stays alive until the reader is done; the ObjectRef reaches the reader with GO."""
        wa = dict(common, rows=self.o.df_rows, cols=self.o.df_cols, seed=self.o.seed)
        py = head.worker_python()
        writer = Worker("ray_writer", wa, self.tmp, python=py)
        reader = Worker("ray_reader", common, self.tmp, python=py)
        ok = False
        try:
            writer.wait_ready()
            reader.wait_ready()
            writer.go()
            wres = writer.result()
            reader.go(wres.pop("ref"))
            rres = reader.result()
            t0 = time.monotonic()
            writer.finish()  # the owner goes, and with it the object
            wres["exit_s"] = time.monotonic() - t0
            ok = True
        finally:
            for w in (writer, reader):
                w.finish() if ok else w.kill()
        return self._handoff_round(wres, rres)

    def stop_ray(self):
        head, self.ray_head = self.ray_head, None
        if head is None:
            return
        left = head.stop()
        if left:
            log(f"ray: killed {len(left)} process(es) still running after `ray start` exited: {left}")

    # ---- anchors (no daemon involved)
    def run_anchors(self):
        meter = NoiseMeter([d.pid for d in self.daemons.values() if d.alive()])
        self._run_anchors()
        self.note_noise("anchors", meter.stop())

    def _run_anchors(self):
        log("anchors: UNIX socket echo")
        native = build_native_echo(self.tmp)
        servers = [("echo", "echo_server", {}), ("native_echo", "native_echo_server", {"binary": native})]
        for (base, kind, extra), (suffix, cpu) in itertools.product(servers, (("", None), ("_cpu", self.o.pin_cpu))):
            if kind == "native_echo_server" and native is None:
                continue
            key = base + suffix
            path = os.path.join(self.tmp, key + ".sock")
            srv = Worker(kind, {"path": path, "rep": EXISTS_REP_BODY, "cpu": cpu, **extra}, self.tmp)
            ok = False
            try:
                srv.wait_ready()
                args = {"path": path, "n": self.o.requests, "server_pid": srv.pid, "cpu": cpu}
                args.update(req=EXISTS_REQ_BODY, rep=EXISTS_REP_BODY)
                self.anchors[key] = run_one("echo_client", args, self.tmp)
                ok = True
            finally:
                srv.finish() if ok else srv.kill()
        log("anchors: memcpy")
        self.anchors["memcpy"] = run_one(
            "memcpy", {"rows": self.o.df_rows, "cols": self.o.df_cols, "seed": self.o.seed, "repeats": 3}, self.tmp
        )
        log("anchors: memfd page faults")
        self.anchors["memfd"] = run_one(
            "memfd", {"rows": self.o.df_rows, "cols": self.o.df_cols, "seed": self.o.seed}, self.tmp
        )
        log("anchors: pickle handoff")
        rounds = []
        for r in range(self.o.df_rounds):
            p = os.path.join(self.tmp, "seed.pkl")
            rounds.append(self._handoff({"path": p, "name": "seed"}))
            os.unlink(p)
        self.anchors["pickle"] = {"rounds": rounds, **summarize_handoff(rounds)}

    def wait_idle(self):
        """Wait (up to --wait-idle seconds) until other processes leave the CPUs alone."""
        deadline = time.monotonic() + self.o.wait_idle
        while True:
            meter = NoiseMeter([])
            time.sleep(2.0)
            n = meter.stop()
            if n["foreign_pct"] <= NOISE_WARN_PCT:
                return
            if time.monotonic() >= deadline:
                log(f"machine still busy ({n['foreign_pct']:.0f}% CPU used by others); running anyway")
                return
            log(f"waiting for an idle machine: others use {n['foreign_pct']:.0f}% of the CPUs")

    def run(self):
        if self.o.wait_idle > 0:
            self.wait_idle()
        self.start_daemons()
        only = self.o.only
        if "small" in only:
            self.section("small put+get", self.small_pairs)
        if "trivial" in only:
            self.section("daemon CPU per request", self.trivial)
        if "df" in only:
            self.section("DataFrame handoff", self.df_handoff)
        if "large" in only:
            self.section("large put/get", self.large)
            self.memcpy_large()
        if "rss" in only:
            self.section("idle RSS at end", self.rss_end)
        if "anchors" in only:
            self.run_anchors()
        if self.o.ray and "df" in only:
            self.run_ray()



# --------------------------------------------------------------------------- main

# what --only chooses from, in the order they run
SECTIONS = ("small", "trivial", "df", "large", "rss", "anchors")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--daemons", default=f"{TRELLIS},{UPSTREAM}",
                   help=f"comma list of {TRELLIS},{TRELLIS_ACCEL},{TRELLIS_ZC},{TRELLIS_4K},{TRELLIS_HP},{UPSTREAM} "
                   f"(default {TRELLIS},{UPSTREAM}); {TRELLIS_ACCEL} is {TRELLIS}'s daemon with clients writing "
                   f"through trellis.accel's builders, {TRELLIS_ZC} the same with the DataFrame writer's frame "
                   "built in the arena (zero-copy put); "
                   f"{TRELLIS} runs with its defaults (transparent huge pages where available), {TRELLIS_4K} "
                   f"with --notransparent_huge_pages, {TRELLIS_HP} with --huge_pages --reserve_memory "
                   "(reserves a hugetlb pool of --arena for the run: root)")
    p.add_argument("--quick", action="store_true", help="small iteration counts and sizes (CI smoke)")
    p.add_argument("--only", metavar="SECTIONS",
                   help=f"comma list of the sections to run, of {','.join(SECTIONS)} (default: all); "
                   "large includes its memcpy anchor")
    p.add_argument("--ray", action="store_true",
                   help="also hand the DataFrame over through Ray's object store (a local Ray node started for "
                   "the run from .venv-ray, made by bench/setup_ray.sh; skipped with a note if it is missing)")
    p.add_argument("--small-sizes", help="put+get sizes (default 8,1Ki)")
    p.add_argument("--large-sizes", help="large put/get sizes (default 1Mi,64Mi,1Gi; quick 1Mi,64Mi)")
    p.add_argument("--large-rounds", type=int,
                   help="puts of each large size (default 20 up to 16 MiB, 5 up to 512 MiB, 3 above; quick fewer)")
    p.add_argument("--duration", type=float, help="seconds per put+get measurement (default 3, quick 0.5)")
    p.add_argument("--requests", type=int, help="exists/get_name calls (default 20000, quick 2000)")
    p.add_argument("--df-rows", type=int, help="DataFrame rows (default 600000, quick 60000)")
    p.add_argument("--df-cols", type=int, default=46, help="DataFrame int64 columns (default 46)")
    p.add_argument("--df-rounds", type=int, help="DataFrame handoff rounds (default 3, quick 1)")
    p.add_argument("--arena", default="4Gi", help="--size given to every daemon (default 4Gi)")
    p.add_argument("--reserve-memory", action="store_true", help="pass --reserve_memory to the daemons")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--pin-cpu", type=int, default=0, help="CPU used for the one-CPU (pinned) variants (default 0)")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes (builds) to stop using the CPUs",
    )
    p.add_argument("--write", metavar="MD", help="rewrite the daemon_bench section of this markdown file")
    p.add_argument("--json", metavar="PATH", help="also dump raw results as JSON")
    p.add_argument("--from-json", metavar="PATH", help="run nothing: re-render (and --write) a run saved with --json")
    o = p.parse_args(argv)
    q = o.quick
    o.daemons = [d.strip() for d in o.daemons.split(",") if d.strip()]
    o.only = [s.strip() for s in o.only.split(",") if s.strip()] if o.only else list(SECTIONS)
    for s in o.only:
        if s not in SECTIONS:
            p.error(f"unknown section {s!r} (of {','.join(SECTIONS)})")
    if o.write and set(o.only) != set(SECTIONS):
        p.error("--write replaces the whole generated section: run every section (no --only)")
    for d in o.daemons:
        if d not in (TRELLIS, TRELLIS_4K, TRELLIS_HP, TRELLIS_ACCEL, TRELLIS_ZC, UPSTREAM):
            p.error(f"unknown daemon {d!r}")
    o.small_sizes = [parse_size(s) for s in (o.small_sizes or "8,1Ki").split(",")]
    o.large_sizes = [parse_size(s) for s in (o.large_sizes or ("1Mi,64Mi" if q else "1Mi,64Mi,1Gi")).split(",")]
    o.duration = o.duration or (0.5 if q else 3.0)
    o.warmup = 50 if q else 300
    o.requests = o.requests or (2000 if q else 20000)
    o.df_rows = o.df_rows or (60_000 if q else 600_000)
    o.df_rounds = o.df_rounds or (1 if q else 3)

    def large_repeats(size):
        if o.large_rounds:
            return max(1, o.large_rounds)
        if size >= 512 * MiB:
            return 1 if q else 3
        if size >= 16 * MiB:
            return 2 if q else 5
        return 5 if q else 20

    o.large_repeats = large_repeats
    return o


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if serve(WORKERS, argv):
        return 0
    if not vineyard_importable_or_reexec(__file__, argv):
        print("the vineyard client is not importable; run with the project venv", file=sys.stderr)
        return 2
    o = parse_args(argv)
    if o.from_json:
        return report_from_json(o)
    tmp = tempfile.mkdtemp(prefix="tb", dir="/tmp")
    bench = Bench(o, tmp)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    try:
        bench.run()
    except (BenchError, DaemonError, KeyboardInterrupt) as e:
        log(f"aborted: {e}")
        return 1
    finally:
        Worker.kill_all()
        bench.stop_daemons()
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"done in {time.monotonic() - t0:.0f} s")
    info = machine_info()
    cmdline = "bench/daemon_bench.py " + " ".join(argv)
    if o.json:
        with open(o.json, "w") as f:
            data = {"machine": info, "command": cmdline, "daemons": bench.res, "anchors": bench.anchors, "only": o.only}
            json.dump(dict(data, errors=bench.errors, noise=bench.noise), f, indent=1)
    publish(bench, info, cmdline)
    return 0 if not any(bench.errors.values()) else 1


def report_from_json(o):
    """Re-render (and --write) the report of an earlier run saved with --json."""
    with open(o.from_json) as f:
        data = json.load(f)
    if o.write and set(data.get("only", SECTIONS)) != set(SECTIONS):
        print("--write: that run left sections out (--only); it cannot replace the whole generated section",
              file=sys.stderr)
        return 2
    bench = Bench(o, "")
    bench.res, bench.anchors = data["daemons"], data.get("anchors", {})
    bench.errors = data.get("errors") or {label: [] for label in bench.res}
    bench.noise = data.get("noise", {})
    for r in list(bench.res.values()) + [bench.anchors]:  # summaries may predate a newer layout
        for key in ("df", "pickle", "ray"):
            if key in r and r[key].get("rounds"):
                r[key].update(summarize_handoff(r[key]["rounds"]))
    # the sizes and counts of that run, not the command-line defaults
    first = next(iter(bench.res.values()))
    if "pairs" in first:
        o.small_sizes = sorted(int(k) for k in first["pairs"])
    if "large" in first:
        o.large_sizes = sorted(int(k) for k in first["large"])
    if "df" in first:
        o.df_rows, o.df_cols = first["df"]["rounds"][0]["reader"]["shape"]
        o.df_rounds = len(first["df"]["rounds"])
    if "trivial" in first:
        o.requests = first["trivial"]["exists"]["n"]
    argv = first.get("argv", [])
    if "--size" in argv:
        o.arena = argv[argv.index("--size") + 1]
    cmd = data.get("command", "bench/daemon_bench.py (command not recorded)")
    publish(bench, data["machine"], cmd, " (table re-rendered from its `--json` output with `--from-json`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
