#!/usr/bin/env python3
"""Migration benchmark: one 256 MiB tensor moved from instance A to instance B.

In one run, against the same private etcd (127.0.0.1, free ports):

* loopback TCP: a sender process writes 256 MiB to a Python receiver over 127.0.0.1
  (both buffers pre-touched) — the transport's capacity on this machine;
* two Trellis instances (`trellis serve --meta etcd`, release build) and two upstream
  vineyardd 0.24.2 instances (the daemon shipped in vineyard-bdist, started as
  `vineyardd --socket S --size 2Gi --meta etcd --etcd_endpoint URL --etcd_prefix P
  --rpc_socket_port N`, i.e. with its default `--compression=true`; optionally also with
  `--compression=false`). MY_HOST_NAME=127.0.0.1 for both kinds, so endpoints are loopback.

Per repetition a Python client on A puts a fresh random float64 tensor (persist=True; random
data, so compression cannot shortcut), and a Python client on B times

* `client.migrate(id)`: daemon B pulls the blobs from A's RPC endpoint, creates and
  persists the local copy (what `get(fetch=True)` does inside), and
* `client.get(id, fetch=True)` of another fresh tensor: the same plus reading the copy
  back into a numpy array (zero-copy over IPC).

Copies and originals are deleted between repetitions. The table reports the median and
best of the repetitions in GB/s (10^9 bytes/s) and the ratios to loopback TCP and upstream.

    .venv/bin/python bench/migration_bench.py                   # all, 5 repetitions
    .venv/bin/python bench/migration_bench.py --daemons trellis --repeat 3
    .venv/bin/python bench/migration_bench.py --write docs/BENCHMARKS.md

TRELLIS_BIN overrides the Trellis binary (default .build/release/trellis), VINEYARDD_BIN the
upstream one, ETCD_BIN etcd. The process helpers come from tests/cluster/cluster_lib.py.
Exit status 1 when a daemon failed, 2 when Trellis is below a target (>= 0.7x loopback TCP
and >= upstream).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))

from benchkit import machine as benchmachine  # noqa: E402
from benchkit.daemons import DaemonError, find_trellis  # noqa: E402
from benchkit.report import write_section as write_marked_section  # noqa: E402
import cluster_lib  # noqa: E402

MIB = 1 << 20
MARK_BEGIN = "<!-- migration:begin -->"
MARK_END = "<!-- migration:end -->"
TARGET_TCP_RATIO = 0.7


def log(msg):
    print("[migration %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def gbps(nbytes, seconds):
    return nbytes / seconds / 1e9


# -- loopback TCP ------------------------------------------------------------------------

SENDER = r"""
import socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
buf = bytearray(n)
for i in range(0, n, 4096):
    buf[i] = 1  # touch every page before the clock starts
s = socket.create_connection(("127.0.0.1", port))
s.sendall(memoryview(buf))
s.close()
"""


def loopback_tcp(nbytes):
    """Seconds to move `nbytes` from a sender process to this process over 127.0.0.1,
    from accept() to the last byte."""
    import numpy as np

    buf = np.ones(nbytes, dtype=np.uint8)  # pre-touched receive buffer
    view = memoryview(buf).cast("B")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        sender = subprocess.Popen([sys.executable, "-c", SENDER, str(nbytes), str(listener.getsockname()[1])])
        try:
            conn, _ = listener.accept()
            start = time.perf_counter()
            got = 0
            with conn:
                while got < nbytes:
                    n = conn.recv_into(view[got:], nbytes - got)
                    if n == 0:
                        raise RuntimeError("sender closed early")
                    got += n
            seconds = time.perf_counter() - start
        finally:
            sender.wait()
    return seconds


# -- daemons -------------------------------------------------------------------------------


def trellis_binary():
    try:
        return find_trellis(builds=("release",))
    except DaemonError as e:
        raise SystemExit(str(e))


def start_pair(etcd, kind, binary, extra, prefix):
    """Two instances on `prefix`, both listed in cluster_meta; retried once (upstream
    occasionally fails to come up when two instances join at nearly the same time)."""
    for attempt in (1, 2):
        nodes = []
        try:
            for _ in range(2):
                node = cluster_lib.Node(etcd.endpoint, prefix + "-%d" % attempt, kind=kind, size="2Gi",
                                        binary=binary, extra=extra)
                nodes.append(node)
                node.start()
            cluster_lib.wait_until(
                lambda: all(len(n.cluster_meta()) == 2 for n in nodes), 30, interval=0.1,
                what="both instances in cluster_meta")
            return nodes
        except Exception as e:
            logs = "\n".join(n.log_tail(1500) for n in nodes)
            for n in nodes:
                n.cleanup()
            if attempt == 2:
                raise RuntimeError("%s pair did not start: %s\n%s" % (kind, e, logs))
            log("%s pair did not start (%s); retrying" % (kind, e))


def measure_pair(label, nodes, nbytes, repeat):
    import numpy as np
    import vineyard

    a, b = nodes
    ca, cb = vineyard.connect(a.socket), vineyard.connect(b.socket)
    rng = np.random.default_rng(42)
    value = rng.random(nbytes // 8)
    migrate_s, fetch_s = [], []
    for i in range(repeat + 1):  # the first round warms both daemons up and is dropped
        value[0] = i  # a different object each time
        m_id = ca.put(value, persist=True)
        f_id = ca.put(value, persist=True)

        start = time.perf_counter()
        copy = cb.migrate(m_id)
        t_migrate = time.perf_counter() - start
        assert copy != m_id and cb.get_meta(copy).instance_id == cb.instance_id

        start = time.perf_counter()
        got = cb.get(f_id, fetch=True)
        t_fetch = time.perf_counter() - start
        assert got.shape == value.shape and got[0] == i and got[-1] == value[-1]
        fcopy = cb.migrate(f_id)  # cached: the copy get(fetch=True) made
        del got

        for client, ids in ((cb, [copy, fcopy]), (ca, [m_id, f_id])):
            for oid in ids:
                try:
                    client.delete(oid)
                except Exception as e:  # best effort: memory is 2 GiB per instance
                    log("%s: delete %s failed: %s" % (label, oid, e))
        if i > 0:
            migrate_s.append(t_migrate)
            fetch_s.append(t_fetch)
        log("%s round %d: migrate %.3f s (%.2f GB/s), get(fetch=True) %.3f s (%.2f GB/s)%s" % (
            label, i, t_migrate, gbps(nbytes, t_migrate), t_fetch, gbps(nbytes, t_fetch),
            " (warm-up, dropped)" if i == 0 else ""))
    return {"migrate": migrate_s, "fetch": fetch_s}


# -- machine and report --------------------------------------------------------------------


def cpu_busy():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def wait_idle(limit, threshold=15.0, window=3.0):
    """Waits until less than `threshold` % of the CPUs were busy during `window` seconds."""
    deadline = time.monotonic() + limit
    while True:
        t0, i0 = cpu_busy()
        time.sleep(window)
        t1, i1 = cpu_busy()
        busy = 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))
        if busy < threshold:
            log("CPUs %.0f%% busy: starting" % busy)
            return
        if time.monotonic() > deadline:
            log("CPUs still %.0f%% busy after %.0f s: starting anyway" % (busy, limit))
            return
        log("CPUs %.0f%% busy: waiting" % busy)


def machine_info():
    info = benchmachine.machine_info()
    try:
        info["etcd"] = subprocess.run([cluster_lib.find_etcd(), "--version"], capture_output=True,
                                      text=True).stdout.split("\n")[0]
    except Exception:
        pass
    return info


def render(results, tcp, nbytes, repeat, info, busy_pct, extra_rows):
    """The markdown section (without the markers)."""
    tcp_med = statistics.median(tcp)
    upstream = results.get("vineyardd")
    lines = []
    lines.append("Moving one %d MiB float64 tensor (random values) from instance A to instance B of one "
                 "cluster; median of %d repetitions after a warm-up round (best in parentheses); "
                 "GB/s = 10^9 bytes/s." % (nbytes // MIB, repeat))
    lines.append("")
    lines.append("| transfer | seconds | GB/s | vs loopback TCP | vs upstream |")
    lines.append("|---|---|---|---|---|")
    lines.append("| loopback TCP, Python sender → receiver (transport capacity) | %.3f (%.3f) | %.2f (%.2f) | 1.00x | |"
                 % (tcp_med, min(tcp), gbps(nbytes, tcp_med), gbps(nbytes, min(tcp))))
    order = [k for k in ("trellis", "vineyardd") if k in results] + [k for k in results if k not in ("trellis", "vineyardd")]
    names = {"trellis": "Trellis", "vineyardd": "vineyardd 0.24.2"}
    names.update({k: v for k, v in extra_rows.items()})
    for kind in order:
        r = results[kind]
        if r is None:
            lines.append("| %s | failed | | | |" % names.get(kind, kind))
            continue
        for op, what in (("migrate", "`client.migrate(id)`"), ("fetch", "`client.get(id, fetch=True)`")):
            med, best = statistics.median(r[op]), min(r[op])
            vs_up = ""
            if upstream and kind != "vineyardd":
                vs_up = "%.2fx" % (statistics.median(upstream[op]) / med)
            lines.append("| %s %s | %.3f (%.3f) | %.2f (%.2f) | %.2fx | %s |" % (
                names.get(kind, kind), what, med, best, gbps(nbytes, med), gbps(nbytes, best),
                tcp_med / med, vs_up))
    lines.append("")
    lines.append("Machine: %s, %s usable cores, %s RAM, Linux %s; Python %s; %s; commit %s; measured %s. "
                 "Other processes used %.0f%% of the CPUs during the run." % (
                     info.get("cpu"), info.get("cores_usable"), info.get("memory"), info.get("kernel"),
                     info.get("python"), info.get("etcd", "etcd"), info.get("commit", "?"), info.get("date"),
                     busy_pct))
    return "\n".join(lines)


def write_section(path, body, command):
    write_marked_section(path, MARK_BEGIN, MARK_END, "## Migration between instances\n\nGenerated by `%s`; edits "
                         "between the markers are overwritten.\n\n%s" % (command, body))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="tensor size (default 256)")
    ap.add_argument("--repeat", type=int, default=5, help="timed repetitions per daemon (default 5)")
    ap.add_argument("--daemons", default="trellis,vineyardd",
                    help="comma-separated: trellis, vineyardd (default both)")
    ap.add_argument("--no-upstream-uncompressed", action="store_true",
                    help="skip the extra upstream row with --compression=false")
    ap.add_argument("--write", metavar="FILE", help="replace the migration section of FILE (docs/BENCHMARKS.md)")
    ap.add_argument("--json", metavar="FILE", help="raw timings as JSON")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the CPUs to be mostly idle (shared machines)")
    o = ap.parse_args()
    if o.wait_idle > 0:
        wait_idle(o.wait_idle)
    nbytes = o.size_mib * MIB
    kinds = [k.strip() for k in o.daemons.split(",") if k.strip()]
    info = machine_info()

    t0, idle0 = cpu_busy()
    own0 = os.times()
    etcd = cluster_lib.Etcd().start()
    log("etcd at %s" % etcd.endpoint)
    results, extra_rows, failed = {}, {}, []
    try:
        log("loopback TCP")
        tcp = [loopback_tcp(nbytes) for _ in range(o.repeat + 1)][1:]
        log("loopback TCP: median %.2f GB/s" % gbps(nbytes, statistics.median(tcp)))
        runs = []
        if "trellis" in kinds:
            runs.append(("trellis", "trellis", trellis_binary(), []))
        if "vineyardd" in kinds:
            runs.append(("vineyardd", "vineyardd", cluster_lib.vineyardd_bin(), []))
            if not o.no_upstream_uncompressed:
                runs.append(("vineyardd-nocompress", "vineyardd", cluster_lib.vineyardd_bin(), ["--compression=false"]))
                extra_rows["vineyardd-nocompress"] = "vineyardd 0.24.2 `--compression=false`"
        for label, kind, binary, extra in runs:
            log("%s: %s %s" % (label, binary, " ".join(extra)))
            nodes = []
            try:
                nodes = start_pair(etcd, kind, binary, extra, "/migration-bench-" + label)
                results[label] = measure_pair(label, nodes, nbytes, o.repeat)
            except Exception as e:
                log("%s failed: %s" % (label, e))
                results[label] = None
                failed.append(label)
            finally:
                for n in nodes:
                    n.cleanup()
    finally:
        etcd.cleanup()
    t1, idle1 = cpu_busy()
    own1 = os.times()
    # Busy share of all CPUs not explained by this process and its children (daemons, etcd, senders).
    total = max(1, t1 - t0)
    busy = (total - (idle1 - idle0))
    hz = os.sysconf("SC_CLK_TCK")
    own = sum(own1[k] - own0[k] for k in range(4)) * hz
    busy_pct = max(0.0, 100.0 * (busy - own) / total)

    body = render(results, tcp, nbytes, o.repeat, info, busy_pct, extra_rows)
    print(body)
    if busy_pct > 10:
        log("warning: other processes used %.0f%% of the CPUs; figures may be low" % busy_pct)
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"bytes": nbytes, "tcp": tcp, "results": results, "machine": info}, f, indent=1)
    if o.write:
        write_section(o.write, body, "python bench/migration_bench.py " + " ".join(sys.argv[1:]))
        log("wrote %s" % o.write)
    if failed:
        return 1
    tr, up = results.get("trellis"), results.get("vineyardd")
    if tr:
        med = statistics.median(tr["migrate"])
        ok = statistics.median(tcp) / med >= TARGET_TCP_RATIO
        if up:
            ok = ok and med <= statistics.median(up["migrate"])
        if not ok:
            log("Trellis migration is below target (>= %.1fx loopback TCP and >= upstream)" % TARGET_TCP_RATIO)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
