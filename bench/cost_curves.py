#!/usr/bin/env python3
"""Cost as the work grows: Trellis and upstream vineyardd 0.24.2 side by side in one run.

    .venv/bin/pip install -r bench/requirements.txt -c scripts/requirements.txt   # matplotlib, once
    .venv/bin/python bench/cost_curves.py --quick                     # < 2 minutes
    .venv/bin/python bench/cost_curves.py --write docs/BENCHMARKS.md   # full run, ~45 min idle
    .venv/bin/python bench/cost_curves.py --from-json /tmp/c.json --write docs/BENCHMARKS.md

Four measurements, each against both daemons (same flags: ``--size``, ``--meta local``
``--norpc`` for one daemon; ``--meta etcd`` and an RPC port for the cluster):

1. **Objects** — for N = 10³, 10⁴, … ``--max-objects`` small objects (``client.put`` of a
   one-element int64 array: a blob and a Tensor), each N on a freshly started daemon, from
   one upstream-client process: put N (objects/s), get a random sample (``client.get``,
   objects/s), ``list_data`` of the first 5 and of all N (latency of the whole reply, read
   raw from the socket; "all" up to ``--list-all-max``), then delete them one by one
   (objects/s). Daemon memory per object: the growth of the daemon's **anonymous** RSS
   (``RssAnon`` in /proc/PID/status: heap, i.e. the per-object bookkeeping; the arena is
   shared memory and counted apart) divided by N, after the puts and again after the
   gets and lists (caches of expanded trees included); the arena bytes per object
   (``memory_usage`` of ``instance_status``), and what is left after deleting everything.
2. **Clients** — 1, 10, 100, 1,000 (``--max-clients``) concurrent connections, spread over
   up to 4 client processes, each connection a raw registered IPC connection. All send a
   request cycle (create_data of a small tree, get_data, del_data) at once, each process
   keeping every one of its connections busy: aggregate cycles/s and the p50/p99 time of
   one round (every connection of a process served once). Daemon RSS per open connection.
3. **Cluster** — etcd and 4 daemons of the same kind; 4 writer processes (one per daemon)
   put and persist ``--cluster-objects`` objects in all. Then, at the first daemon:
   ``list_data`` of 5 and of all objects (raw), and ``trellis ls --limit 1000000`` (the
   CLI against either daemon: list_data + list_name, rendered).
4. **Churn** — one daemon with a ``--churn-arena`` arena; one client process puts and
   deletes blobs of random sizes (log-uniform 64 B … 256 KiB) around 60 % of the arena,
   ``--churn-ops`` operations. At checkpoints: the largest blob that can still be
   allocated (found by binary search with create_blob, the same probe for both daemons),
   bytes in use, the share of the free space the largest block is (1 − fragmentation),
   operations per second since the last checkpoint, and the daemon's RssAnon.

The load average is read before each section and reported with it (this machine is
shared). ``--json`` keeps the raw results; ``--from-json`` re-renders them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))

from benchkit.daemons import Daemon, DaemonError, find_trellis, find_vineyardd, vineyard_importable_or_reexec  # noqa: E402
from benchkit.machine import machine_info  # noqa: E402
from benchkit.procstats import KiB, MiB, median, parse_size, percentile, proc_cpu_ns, proc_status_kib, proc_ticks  # noqa: E402
from benchkit.report import markers, write_section  # noqa: E402
from benchkit.wire import RawClient  # noqa: E402
from benchkit.workers import BenchError, Worker, ready_then_wait_go, result, run_one, serve  # noqa: E402

TRELLIS, UPSTREAM = "trellis", "vineyardd"
LABELS = (TRELLIS, UPSTREAM)
MARK_BEGIN, MARK_END = markers("cost_curves", "bench/cost_curves.py")


def log(msg):
    print(f"[cost {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def anon_kib(pid) -> int:
    return proc_status_kib(pid).get("RssAnon", 0)


# --------------------------------------------------------------------------- workers
# Everything below `worker_*` runs in a child process.


def _rate(n, seconds):
    return n / seconds if seconds > 0 else float("nan")


def _list_latency(raw, limit, repeats):
    """Median seconds of a list_data of `limit` objects (whole reply read, not parsed) and its size."""
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        body = raw.request_bytes({"type": "list_data_request", "pattern": "*", "regex": False, "limit": limit})
        times.append(time.perf_counter() - t0)
        size = len(body)
    return median(times), size


def worker_objects(a):
    """put N small objects, get a sample, list, delete all; /proc and instance_status between."""
    import numpy as np
    import vineyard

    c = vineyard.connect(a["sock"])
    raw = RawClient(a["sock"])
    pid = a["pid"]
    rng = random.Random(a["seed"])
    arrays = [np.array([i], dtype=np.int64) for i in range(64)]
    ready_then_wait_go()
    out = {"n": a["n"]}

    def snap(key):
        st = raw.status()
        out[key] = {"proc": proc_status_kib(pid), "memory_usage": st["memory_usage"],
                    "status": {k: st[k] for k in ("objects", "blobs", "fragmentation") if k in st}}

    snap("before")
    n = a["n"]
    ids = []
    cpu0, t0 = proc_cpu_ns(pid), time.perf_counter()
    for i in range(n):
        ids.append(c.put(arrays[i & 63]))
    t1, cpu1 = time.perf_counter(), proc_cpu_ns(pid)
    out["put_per_s"] = _rate(n, t1 - t0)
    out["put_daemon_us"] = (cpu1 - cpu0) / n / 1e3
    snap("after_put")

    sample = [ids[rng.randrange(n)] for _ in range(min(n, a["gets"]))]
    cpu0, t0 = proc_cpu_ns(pid), time.perf_counter()
    for oid in sample:
        c.get(oid)
    t1, cpu1 = time.perf_counter(), proc_cpu_ns(pid)
    out["get_per_s"] = _rate(len(sample), t1 - t0)
    out["get_daemon_us"] = (cpu1 - cpu0) / len(sample) / 1e3

    # a short-lived client (a `trellis ls`, a flow step): connect, register, leave; the
    # daemon's CPU per connection, including what it does when the connection goes away
    # (clock ticks of the whole process: the connection threads exit, schedstat loses them)
    cycles = a["connects"]
    hz = os.sysconf("SC_CLK_TCK")
    cpu0, t0 = proc_ticks(pid), time.perf_counter()
    for _ in range(cycles):
        RawClient(a["sock"]).close()
    raw.status()  # the daemon has seen every hang-up once its CPU is read after this
    time.sleep(0.05)
    out["connect_ms"] = (time.perf_counter() - t0) / cycles * 1e3
    out["connect_daemon_us"] = (proc_ticks(pid) - cpu0) / hz / cycles * 1e6

    out["list5_s"], _ = _list_latency(raw, 5, a["list_repeats"])
    if n <= a["list_all_max"]:
        out["list_all_s"], out["list_all_bytes"] = _list_latency(raw, n + 10, max(1, a["list_repeats"] // 3))
    snap("after_list")

    cpu0, t0 = proc_cpu_ns(pid), time.perf_counter()
    for oid in ids:
        c.delete(oid)
    t1, cpu1 = time.perf_counter(), proc_cpu_ns(pid)
    out["delete_per_s"] = _rate(n, t1 - t0)
    out["delete_daemon_us"] = (cpu1 - cpu0) / n / 1e3
    snap("after_delete")
    raw.close()
    c.close()
    result(out)


def worker_conns(a):
    """Holds a["conns"] raw connections; after GO keeps every one busy with
    create_data + get_data + del_data cycles for a["duration"] seconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = [RawClient(a["sock"]) for _ in range(a["conns"])]
    ready_then_wait_go()
    rounds, cycles = [], 0
    deadline = time.perf_counter() + a["duration"]
    while True:
        t0 = time.perf_counter()
        for k, c in enumerate(conns):
            c.send({"type": "create_data_request", "content": {
                "typename": "bench::Small", "instance_id": c.instance_id, "value_": k, "nbytes": 0}})
        made = [c.receive()["id"] for c in conns]
        for c, oid in zip(conns, made):
            c.send({"type": "get_data_request", "id": [oid], "sync_remote": False, "wait": False})
        for c in conns:
            c.receive()
        for c, oid in zip(conns, made):
            c.send({"type": "del_data_request", "id": [oid], "force": False, "deep": True, "memory_trim": False,
                    "fastpath": False})
        for c in conns:
            c.receive()
        t1 = time.perf_counter()
        rounds.append(t1 - t0)
        cycles += len(conns)
        if t1 >= deadline:
            break
    elapsed = sum(rounds)
    for c in conns:
        c.close()
    rounds.sort()
    result({"cycles": cycles, "elapsed_s": elapsed, "round_p50_s": percentile(rounds, 0.5),
            "round_p99_s": percentile(rounds, 0.99)})


def worker_populate(a):
    """put + persist a["n"] small objects at one cluster daemon."""
    import numpy as np
    import vineyard

    c = vineyard.connect(a["sock"])
    arr = np.arange(4, dtype=np.int64)
    ready_then_wait_go()
    t0 = time.perf_counter()
    for _ in range(a["n"]):
        c.put(arr, persist=True)
    result({"n": a["n"], "seconds": time.perf_counter() - t0})


def worker_delete_persisted(a):
    """put + persist a small DataFrame (4 columns: a tree of 11 objects), then time its deep
    delete; a["n"] times (the cluster's other objects stay)."""
    import numpy as np
    import pandas as pd
    import vineyard

    c = vineyard.connect(a["sock"])
    df = pd.DataFrame({f"c{i}": np.arange(4, dtype=np.int64) for i in range(4)})
    ready_then_wait_go()
    times = []
    for _ in range(a["n"]):
        oid = c.put(df, persist=True)
        t0 = time.perf_counter()
        c.delete([oid], deep=True)
        times.append(time.perf_counter() - t0)
    result({"median_s": median(times), "max_s": max(times)})


def _largest_allocatable(c, hi, step):
    """The largest blob create_blob still gives (binary search, multiples of `step`)."""
    lo = 0
    hi = max(step, hi - hi % step)
    while hi - lo > step:
        mid = (lo + hi) // 2
        mid -= mid % step
        if mid <= lo:
            break
        try:
            b = c.create_blob(mid)
        except Exception:
            hi = mid
            continue
        blob = b.seal(c)
        c.delete(blob.id)
        lo = mid
    return lo


def worker_churn(a):
    """Random put/delete of blobs around 60% of the arena; checkpoints with a probe."""
    import vineyard

    c = vineyard.connect(a["sock"])
    raw = RawClient(a["sock"])
    rng = random.Random(a["seed"])
    arena = a["arena"]
    target = int(arena * 0.6)
    lo_exp, hi_exp = math.log(64), math.log(256 * KiB)
    live, live_bytes = [], 0  # (id, size)
    ready_then_wait_go()
    checkpoints = []
    marks = sorted(set(a["marks"]))
    done, t_last, done_last = 0, time.perf_counter(), 0
    failures = 0
    for mark in marks:
        while done < mark:
            grow = live_bytes < target if abs(live_bytes - target) > 256 * KiB else rng.random() < 0.5
            if grow or not live:
                size = int(math.exp(rng.uniform(lo_exp, hi_exp)))
                try:
                    blob = c.create_blob(size).seal(c)
                except Exception:
                    failures += 1
                    grow = False
                else:
                    live.append((blob.id, size))
                    live_bytes += size
            if not grow and live:
                k = rng.randrange(len(live))
                live[k], live[-1] = live[-1], live[k]
                oid, size = live.pop()
                c.delete(oid)
                live_bytes -= size
            done += 1
        now = time.perf_counter()
        rate = (done - done_last) / (now - t_last)
        st = raw.status()
        free = st["memory_limit"] - st["memory_usage"]
        largest = _largest_allocatable(c, free, 4 * KiB)
        checkpoints.append({
            "ops": done, "ops_per_s": rate, "live": len(live), "live_bytes": live_bytes,
            "memory_usage": st["memory_usage"], "memory_limit": st["memory_limit"],
            "largest_allocatable": largest, "free": free, "failures": failures,
            "trellis": {k: st[k] for k in ("fragmentation", "largest_free_block", "free_bytes") if k in st},
            "rss_anon_kib": anon_kib(a["pid"]),
        })
        t_last, done_last = time.perf_counter(), done
    raw.close()
    c.close()
    result({"checkpoints": checkpoints})


WORKERS = {"objects": worker_objects, "conns": worker_conns, "populate": worker_populate, "churn": worker_churn,
           "delete_persisted": worker_delete_persisted}


# --------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, o, tmp):
        self.o, self.tmp = o, tmp
        self.res = {"objects": {}, "clients": {}, "cluster": {}, "churn": {}, "load": {}}
        self.errors = []

    def daemon(self, label, size, tag):
        binary = find_trellis() if label == TRELLIS else find_vineyardd()
        sock = os.path.join(self.tmp, f"{label[0]}{tag}.sock")
        argv = [binary] + (["serve"] if label == TRELLIS else [])
        argv += ["--socket", sock, "--size", size, "--meta", "local", "--norpc"]
        d = Daemon(argv, sock, os.path.join(self.tmp, f"{label}-{tag}.log"), label=label)
        d.start()
        time.sleep(0.3)
        return d

    def note_load(self, section):
        self.res["load"][section] = loadavg()
        log(f"{section}: load average {self.res['load'][section]}")

    # ---- 1. objects
    def objects(self):
        self.note_load("objects")
        for n in self.o.counts:
            for label in self.o.daemons:
                d = self.daemon(label, self.o.arena, f"o{n}")
                try:
                    log(f"objects: {label} N={n}")
                    args = {"sock": d.socket, "pid": d.pid, "n": n, "gets": self.o.gets, "seed": 7,
                            "list_repeats": self.o.list_repeats, "list_all_max": self.o.list_all_max,
                            "connects": self.o.connects}
                    self.res["objects"].setdefault(label, {})[str(n)] = run_one("objects", args, self.tmp)
                except BenchError as e:
                    self.fail(f"objects {label} N={n}", e, d)
                finally:
                    d.stop()

    # ---- 2. clients
    def clients(self):
        self.note_load("clients")
        for label in self.o.daemons:
            d = self.daemon(label, self.o.arena, "c")
            try:
                out = self.res["clients"].setdefault(label, {})
                for k in self.o.client_counts:
                    log(f"clients: {label} {k}")
                    out[str(k)] = self.clients_once(d, k)
            except BenchError as e:
                self.fail(f"clients {label}", e, d)
            finally:
                d.stop()

    def clients_once(self, d, k):
        procs = min(k, 4)
        per = [k // procs + (1 if i < k % procs else 0) for i in range(procs)]
        base = proc_status_kib(d.pid)
        ws = [Worker("conns", {"sock": d.socket, "conns": n, "duration": self.o.client_duration}, self.tmp)
              for n in per]
        ok = False
        try:
            for w in ws:
                w.wait_ready()
            time.sleep(0.2)
            held = proc_status_kib(d.pid)
            threads = len(os.listdir(f"/proc/{d.pid}/task"))
            # clock ticks of the whole process: connection threads exit as the workers leave
            cpu0 = proc_ticks(d.pid)
            for w in ws:
                w.go()
            res = [w.result() for w in ws]
            cpu1 = proc_ticks(d.pid)
            ok = True
        finally:
            for w in ws:
                w.finish() if ok else w.kill()
        cycles = sum(r["cycles"] for r in res)
        return {
            "clients": k, "cycles": cycles,
            "cycles_per_s": sum(r["cycles"] / r["elapsed_s"] for r in res),
            "round_p50_s": median([r["round_p50_s"] for r in res]),
            "round_p99_s": max(r["round_p99_s"] for r in res),
            "daemon_us_per_cycle": (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / max(1, cycles) * 1e6,
            "rss_base_kib": base.get("VmRSS", 0), "rss_held_kib": held.get("VmRSS", 0),
            "anon_per_conn_kib": (held.get("RssAnon", 0) - base.get("RssAnon", 0)) / k,
            "daemon_threads": threads,
        }

    # ---- 3. cluster
    def cluster(self):
        import cluster_lib

        self.note_load("cluster")
        for label in self.o.daemons:
            etcd = cluster_lib.Etcd().start()
            nodes = []
            try:
                log(f"cluster: {label}: etcd and 4 daemons")
                for i in range(4):
                    extra = []
                    nodes.append(cluster_lib.Node(etcd.endpoint, "/cost", kind=label, size=self.o.cluster_arena,
                                                  binary=find_trellis() if label == TRELLIS else None, extra=extra))
                for n in nodes:
                    n.start()
                # an upstream vineyardd sometimes dies right after joining (SIGTRAP, as the
                # cluster suite saw in CI): start it again, as the suite does
                for _ in range(3):
                    time.sleep(1.0)
                    dead = [n for n in nodes if not n.alive()]
                    if not dead:
                        break
                    for n in dead:
                        log(f"cluster: {label} node died after start ({n.process.returncode}); starting it again")
                        n.start()
                per = [self.o.cluster_objects // 4 + (1 if i < self.o.cluster_objects % 4 else 0) for i in range(4)]
                ws = [Worker("populate", {"sock": nd.socket, "n": k}, self.tmp) for nd, k in zip(nodes, per)]
                ok = False
                try:
                    for w in ws:
                        w.wait_ready()
                    t0 = time.monotonic()
                    for w in ws:
                        w.go()
                    pop = [w.result() for w in ws]
                    ok = True
                finally:
                    for w in ws:
                        w.finish() if ok else w.kill()
                populate_s = time.monotonic() - t0
                log(f"cluster: {label}: {self.o.cluster_objects} persisted in {populate_s:.0f} s")
                self.res["cluster"][label] = self.cluster_lists(nodes[0], populate_s, pop)
            except (BenchError, DaemonError, RuntimeError, TimeoutError) as e:
                self.fail(f"cluster {label}", e, None)
                for i, n in enumerate(nodes):
                    if n.process is not None and not n.alive():
                        log(f"cluster: {label} node {i} exited with {n.process.returncode}:\n{n.log_tail(1500)}")
            finally:
                for n in nodes:
                    n.cleanup()
                etcd.cleanup()

    def cluster_lists(self, node, populate_s, pop):
        total = self.o.cluster_objects
        raw = RawClient(node.socket)
        # listing until every object is visible from node 0 (vineyardd syncs its view from etcd)
        deadline = time.monotonic() + 120
        while True:
            listed = len(json.loads(raw.request_bytes(
                {"type": "list_data_request", "pattern": "vineyard::Tensor*", "regex": False,
                 "limit": total + 100}))["content"])
            if listed >= total or time.monotonic() > deadline:
                break
            time.sleep(1)
        list5, _ = _list_latency(raw, 5, self.o.list_repeats)
        list_all, list_bytes = _list_latency(raw, total + 100, 3)
        raw.close()
        ls = []
        for _ in range(3):
            t0 = time.monotonic()
            p = subprocess.run([find_trellis(), "ls", "--socket", node.socket, "--limit", "1000000", "--cluster"],
                               capture_output=True, text=True, timeout=600)
            ls.append(time.monotonic() - t0)
            if p.returncode != 0:
                raise BenchError(f"trellis ls failed: {p.stderr[-500:]}")
        rows = max(0, len(p.stdout.splitlines()) - 1)
        w = Worker("delete_persisted", {"sock": node.socket, "n": self.o.delete_repeats}, self.tmp)
        ok = False
        try:
            w.wait_ready()
            w.go()
            deleted = w.result()
            ok = True
        finally:
            w.finish() if ok else w.kill()
        return {"delete_s": deleted["median_s"], "delete_max_s": deleted["max_s"],"objects": total, "visible": listed, "populate_s": populate_s,
                "persist_per_s": total / populate_s if populate_s else float("nan"),
                "list5_s": list5, "list_all_s": list_all, "list_all_bytes": list_bytes,
                "ls_s": median(ls), "ls_rows": rows, "rss_kib": proc_status_kib(node.pid)}

    # ---- 4. churn
    def churn(self):
        self.note_load("churn")
        for label in self.o.daemons:
            d = self.daemon(label, self.o.churn_arena, "f")
            try:
                log(f"churn: {label}")
                args = {"sock": d.socket, "pid": d.pid, "arena": parse_size(self.o.churn_arena), "seed": 11,
                        "marks": self.o.churn_marks}
                self.res["churn"][label] = run_one("churn", args, self.tmp)
            except BenchError as e:
                self.fail(f"churn {label}", e, d)
            finally:
                d.stop()

    def fail(self, what, e, d):
        msg = str(e).strip().splitlines()
        self.errors.append(f"{what}: {msg[-1] if msg else e}")
        log(f"{what} failed: {e}")
        if d is not None and not d.alive():
            log(f"{d.label} died:\n{d.log_tail()}")

    def run(self):
        self.res["load"]["start"] = loadavg()
        for section in self.o.sections:
            getattr(self, section)()


# --------------------------------------------------------------------------- report


def _fmt(v, digits=0, scale=1.0):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    x = v * scale
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def _per_object(r, key):
    """Growth of the daemon's RssAnon (bytes) per object from `before` to `key`."""
    a, b = r["before"]["proc"].get("RssAnon", 0), r[key]["proc"].get("RssAnon", 0)
    return (b - a) * 1024 / r["n"]


def render(res, info, cmdline, daemons):
    L = []
    o_res = res["objects"]
    load = res.get("load", {})
    if o_res:
        counts = sorted({int(n) for d in o_res.values() for n in d})
        L.append(f"**Objects** (load average at the start of the section: {load.get('objects', '?')})\n")
        head = ["N", "daemon", "put/s", "get/s", "delete/s", "daemon µs/put", "daemon µs/connection",
                "list 5 (ms)", "list all (ms)",
                "RssAnon B/object after put", "… after get+list", "arena B/object", "RssAnon left after delete (KiB)"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for n in counts:
            for label in daemons:
                r = o_res.get(label, {}).get(str(n))
                if not r:
                    continue
                left = r["after_delete"]["proc"].get("RssAnon", 0) - r["before"]["proc"].get("RssAnon", 0)
                L.append("| " + " | ".join([
                    f"{n:,}", label, _fmt(r["put_per_s"]), _fmt(r["get_per_s"]), _fmt(r["delete_per_s"]),
                    _fmt(r["put_daemon_us"], 1), _fmt(r.get("connect_daemon_us"), 0), _fmt(r["list5_s"], 2, 1e3), _fmt(r.get("list_all_s"), 1, 1e3),
                    _fmt(_per_object(r, "after_put")), _fmt(_per_object(r, "after_list")),
                    _fmt((r["after_put"]["memory_usage"] - r["before"]["memory_usage"]) / n), f"{left:,}",
                ]) + " |")
        L.append("")
    c_res = res["clients"]
    if c_res:
        L.append(f"**Concurrent clients** (load average: {load.get('clients', '?')})\n")
        head = ["connections", "daemon", "cycles/s", "round p50 (ms)", "round p99 (ms)", "daemon µs/cycle",
                "daemon threads", "RssAnon KiB/connection"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        ks = sorted({int(k) for d in c_res.values() for k in d})
        for k in ks:
            for label in daemons:
                r = c_res.get(label, {}).get(str(k))
                if not r:
                    continue
                L.append("| " + " | ".join([
                    f"{k:,}", label, _fmt(r["cycles_per_s"]), _fmt(r["round_p50_s"], 2, 1e3),
                    _fmt(r["round_p99_s"], 2, 1e3), _fmt(r["daemon_us_per_cycle"], 1), str(r["daemon_threads"]),
                    _fmt(r["anon_per_conn_kib"], 1),
                ]) + " |")
        L.append("")
    k_res = res["cluster"]
    if k_res:
        L.append(f"**4-instance cluster** (etcd on loopback; load average: {load.get('cluster', '?')})\n")
        head = ["daemon", "persisted objects", "visible at node 0", "put+persist/s (4 writers)", "list 5 (ms)",
                "list all (ms)", "list all reply (MiB)", "`trellis ls --cluster` (s)",
                "delete a persisted frame (ms, median / max)", "node 0 RssAnon (MiB)"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for label in daemons:
            r = k_res.get(label)
            if not r:
                continue
            L.append("| " + " | ".join([
                label, f"{r['objects']:,}", f"{r['visible']:,}", _fmt(r["persist_per_s"]), _fmt(r["list5_s"], 1, 1e3),
                _fmt(r["list_all_s"], 0, 1e3), _fmt(r["list_all_bytes"] / MiB, 1), _fmt(r["ls_s"], 2),
                (_fmt(r["delete_s"], 1, 1e3) + " / " + _fmt(r["delete_max_s"], 1, 1e3)) if "delete_s" in r else "—",
                _fmt(r["rss_kib"].get("RssAnon", 0) / 1024, 0),
            ]) + " |")
        L.append("")
    f_res = res["churn"]
    if f_res:
        L.append(f"**Churn** (random put/delete around 60 % of the arena; load average: {load.get('churn', '?')})\n")
        head = ["operations", "daemon", "ops/s", "in use (MiB)", "free (MiB)", "largest allocatable (MiB)",
                "largest / free", "failed puts", "RssAnon (MiB)"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        marks = sorted({c["ops"] for d in f_res.values() for c in d["checkpoints"]})
        for m in marks:
            for label in daemons:
                cps = [c for c in f_res.get(label, {}).get("checkpoints", []) if c["ops"] == m]
                if not cps:
                    continue
                c = cps[0]
                L.append("| " + " | ".join([
                    f"{m:,}", label, _fmt(c["ops_per_s"]), _fmt(c["memory_usage"] / MiB, 1), _fmt(c["free"] / MiB, 1),
                    _fmt(c["largest_allocatable"] / MiB, 1),
                    _fmt(c["largest_allocatable"] / c["free"] if c["free"] else float("nan"), 2),
                    str(c["failures"]), _fmt(c["rss_anon_kib"] / 1024, 1),
                ]) + " |")
        L.append("")
    L.append(f"Machine: {info.get('cpu')}, {info.get('cores')} cores, {info.get('memory')} RAM, "
             f"Linux {info.get('kernel')}; load average at start {load.get('start', '?')}; "
             f"{info.get('date')}, commit {info.get('commit', '?')}; `{cmdline}`.")
    return "\n".join(L)


def plot(res, daemons, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {TRELLIS: "tab:blue", UPSTREAM: "tab:orange"}
    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    o_res = res["objects"]
    ax2 = None

    def series(label, f):
        d = o_res.get(label, {})
        xs = sorted(int(n) for n in d)
        return xs, [f(d[str(n)]) for n in xs]

    for label in daemons:
        col = colors.get(label)
        for key, style in (("put_per_s", "-o"), ("get_per_s", "--s"), ("delete_per_s", ":^")):
            xs, ys = series(label, lambda r: r[key])
            ax[0, 0].plot(xs, ys, style, color=col, label=f"{label} {key.split('_')[0]}")
        xs, ys = series(label, lambda r: _per_object(r, "after_put"))
        ax[0, 1].plot(xs, ys, "-o", color=col, label=f"{label} after put")
        xs, ys = series(label, lambda r: _per_object(r, "after_list"))
        ax[0, 1].plot(xs, ys, "--s", color=col, label=f"{label} after get+list")
        xs, ys = series(label, lambda r: r["list5_s"] * 1e3)
        ax[0, 2].plot(xs, ys, "-o", color=col, label=f"{label} list 5")
        xs, ys = series(label, lambda r: r.get("list_all_s", float("nan")) * 1e3)
        ax[0, 2].plot(xs, ys, "--s", color=col, label=f"{label} list all")
        c = res["clients"].get(label, {})
        ks = sorted(int(k) for k in c)
        ax[1, 0].plot(ks, [c[str(k)]["cycles_per_s"] for k in ks], "-o", color=col, label=f"{label} cycles/s")
        if ax2 is None:
            ax2 = ax[1, 0].twinx()
        ax2.plot(ks, [c[str(k)]["round_p99_s"] * 1e3 for k in ks], ":^", color=col, label=f"{label} round p99")
        f = res["churn"].get(label, {}).get("checkpoints", [])
        ax[1, 2].plot([p["ops"] for p in f], [p["largest_allocatable"] / p["free"] if p["free"] else float("nan")
                                              for p in f], "-o", color=col, label=f"{label} largest/free")
    ax[0, 0].set(xscale="log", yscale="log", xlabel="objects held (N)", ylabel="objects/s (one client)",
                 title="Throughput vs objects held")
    ax[0, 1].set(xscale="log", xlabel="objects held (N)", ylabel="bytes per object",
                 title="Daemon RssAnon growth per object")
    ax[0, 2].set(xscale="log", yscale="log", xlabel="objects held (N)", ylabel="ms",
                 title="list_data latency (one daemon)")
    ax[1, 0].set(xscale="log", xlabel="concurrent connections", ylabel="cycles/s (all clients)",
                 title="create+get+delete cycles vs connections")
    if ax2 is None:
        ax2 = ax[1, 0].twinx()
    ax2.set_ylabel("round p99 (ms, dotted)")
    ax2.set_yscale("log")
    k = res["cluster"]
    names = [lbl for lbl in daemons if lbl in k]
    xs = range(len(names))
    for i, (key, title) in enumerate((("list5_s", "list 5"), ("list_all_s", "list all"), ("ls_s", "trellis ls"))):
        ax[1, 1].bar([x + i * 0.27 for x in xs], [k[n][key] * 1e3 for n in names], width=0.27, label=title)
    ax[1, 1].set_xticks([x + 0.27 for x in xs], names)
    ax[1, 1].set(yscale="log", ylabel="ms",
                 title=f"4-instance cluster, {next(iter(k.values()))['objects']:,} persisted" if k else "cluster")
    ax[1, 2].set(xscale="log", ylim=(0, 1.05), xlabel="random put/delete operations",
                 ylabel="largest allocatable / free", title="Fragmentation under churn")
    def empty(a):
        lines = [ln for ln in a.get_lines() if any(v == v and v > 0 for v in ln.get_ydata())]
        return not lines and not a.patches

    for a in list(ax.flat) + ([ax2] if ax2 is not None else []):
        if empty(a):  # a section that did not run: no log scale on nothing
            a.set_xscale("linear")
            a.set_yscale("linear")
    for a in ax.flat:
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle("Trellis vs vineyardd 0.24.2: cost as the work grows (load average at start "
                 f"{res.get('load', {}).get('start', '?')})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# --------------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts: the whole run in under 2 minutes")
    p.add_argument("--daemons", default=f"{TRELLIS},{UPSTREAM}")
    p.add_argument("--sections", default="objects,clients,cluster,churn")
    p.add_argument("--max-objects", type=int, help="largest N of the objects section (default 10^6, quick 10^4)")
    p.add_argument("--max-clients", type=int, help="most concurrent connections (default 1000, quick 100)")
    p.add_argument("--cluster-objects", type=int, help="persisted objects in the cluster (default 10^5, quick 1000)")
    p.add_argument("--churn-ops", type=int, help="put/delete operations of the churn (default 10^5, quick 10^4)")
    p.add_argument("--list-all-max", type=int, default=100_000, help="largest N whose full listing is timed")
    p.add_argument("--arena", default="2Gi", help="--size of the objects and clients daemons")
    p.add_argument("--churn-arena", help="--size of the churn daemon (default 256Mi, quick 64Mi)")
    p.add_argument("--cluster-arena", default="512Mi")
    p.add_argument("--write", metavar="MD", help="rewrite the cost_curves section of this markdown file")
    p.add_argument("--png", default=os.path.join(REPO, "docs", "cost-curves.png"), help="the plot (default docs/)")
    p.add_argument("--json", metavar="PATH", help="also dump raw results as JSON")
    p.add_argument("--from-json", metavar="PATH", help="run nothing: re-render a run saved with --json")
    o = p.parse_args(argv)
    q = o.quick
    o.daemons = [d.strip() for d in o.daemons.split(",") if d.strip()]
    o.sections = [s.strip() for s in o.sections.split(",") if s.strip()]
    o.max_objects = o.max_objects or (10_000 if q else 1_000_000)
    o.max_clients = o.max_clients or (100 if q else 1000)
    o.cluster_objects = o.cluster_objects or (1_000 if q else 100_000)
    o.churn_ops = o.churn_ops or (10_000 if q else 100_000)
    o.counts = [10 ** e for e in range(3, 7) if 10 ** e <= o.max_objects] or [o.max_objects]
    o.client_counts = [k for k in (1, 10, 100, 1000) if k <= o.max_clients] or [o.max_clients]
    o.churn_marks = sorted({m for m in (1000, 10_000, 100_000, 1_000_000) if m <= o.churn_ops} | {o.churn_ops})
    o.churn_arena = o.churn_arena or ("64Mi" if q else "256Mi")
    o.gets = 1000 if q else 20_000
    o.connects = 200 if q else 500
    o.list_repeats = 5 if q else 9
    o.delete_repeats = 5 if q else 20
    o.client_duration = 1.0 if q else 3.0
    return o


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if serve(WORKERS, argv):
        return 0
    if not vineyard_importable_or_reexec(__file__, argv):
        print("the vineyard client is not importable; run with the project venv", file=sys.stderr)
        return 2
    o = parse_args(argv)
    cmdline = "bench/cost_curves.py " + " ".join(argv)
    if o.from_json:
        with open(o.from_json) as f:
            data = json.load(f)
        res, info, cmdline = data["results"], data["machine"], data["command"]
        errors = data.get("errors", [])
    else:
        raise_nofile()
        tmp = tempfile.mkdtemp(prefix="tc", dir="/tmp")
        bench = Bench(o, tmp)

        def on_signal(signum, _frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, on_signal)
        info = machine_info()
        t0 = time.monotonic()
        try:
            bench.run()
        except (BenchError, DaemonError, KeyboardInterrupt) as e:
            log(f"aborted: {e}")
            return 1
        finally:
            Worker.kill_all()
            shutil.rmtree(tmp, ignore_errors=True)
        res, errors = bench.res, bench.errors
        res["seconds"] = time.monotonic() - t0
        log(f"done in {res['seconds']:.0f} s")
        if o.json:
            with open(o.json, "w") as f:
                json.dump({"machine": info, "command": cmdline, "results": res, "errors": errors}, f, indent=1)
    body = render(res, info, cmdline, o.daemons)
    if res.get("seconds"):
        body += f" The run took {res['seconds'] / 60:.0f} min."
    if errors:
        body += "\n\nErrors: " + "; ".join(errors)
    print(body)
    if o.png:
        plot(res, o.daemons, o.png)
        log(f"wrote {o.png}")
    if o.write:
        rel = os.path.relpath(o.png, os.path.dirname(os.path.abspath(o.write)))
        write_section(o.write, MARK_BEGIN, MARK_END, f"![cost curves]({rel})\n\n" + body)
        log(f"wrote {o.write}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
