#!/usr/bin/env python3
"""Where the upstream client's DataFrame put spends its time, against Trellis and vineyardd.

    .venv/bin/python bench/put_breakdown.py                 # trellis + vineyardd
    .venv/bin/python bench/put_breakdown.py --rows 60000    # smaller frame
    .venv/bin/python bench/put_breakdown.py --json out.json # also write the raw figures

The seed's DataFrame (600,000 x 46 int64 by default) is put with the pinned upstream client,
``client.put(df, persist=True)``, the way every house-prices step hands its outputs on. One
worker process per daemon (started fresh, connected and warmed with one put before timing)
does --rounds timed puts (the object deleted after each), then one more put under cProfile,
which splits the client's time by the extension calls it makes:

* column copies: ``BlobBuilder.copy`` (the extension's concurrent_memcpy into the mapped
  arena);
* requests: ``create_blob`` + ``seal`` + ``create_metadata`` (one round trip each to the
  daemon) and the persist / other client calls that talk to it;
* the rest: the client's Python (builders, JSON of the metadata) and pandas.

Anchors, in the same run, from a process of their own: a plain single-threaded copy of the
same columns into memory already touched (what the copies would cost at memcpy speed), and
the daemon's own CPU during the timed puts (from /proc/PID/task/*/schedstat).

The daemons: ``trellis serve`` ($TRELLIS_BIN, else .build/release or .build/debug) and
upstream vineyardd from the vineyard-bdist wheel ($VINEYARDD_BIN), each with a --size arena
(default 2Gi) and --reserve_memory, as a flow runtime runs them. This program is a
benchmark: it prints a table, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from benchkit.daemons import Daemon, DaemonError, find_trellis, find_vineyardd  # noqa: E402
from benchkit.machine import machine_info  # noqa: E402
from benchkit.procstats import median, proc_cpu_ns  # noqa: E402
from benchkit.workers import BenchError, ready_then_wait_go, result, run_one, serve  # noqa: E402
from daemon_bench import _make_df  # noqa: E402

# Extension calls that are one request to the daemon each (see the module docstring).
REQUEST_CALLS = ("create_blob", "seal", "create_metadata", "persist", "put_name", "get_meta")
COPY_CALLS = ("copy",)


def worker_put(a: dict) -> None:
    import cProfile
    import pstats

    import vineyard

    df = _make_df(a["rows"], a["cols"], a["seed"])
    nbytes = int(sum(df[c].to_numpy().nbytes for c in df.columns))
    client = vineyard.connect(a["sock"])
    client.delete(client.put(df, persist=True), deep=True)  # warm: mapping, imports, arena
    ready_then_wait_go()

    times, daemon_ms = [], []
    for _ in range(a["rounds"]):
        d0 = proc_cpu_ns(a["pid"])
        t0 = time.perf_counter()
        oid = client.put(df, persist=True)
        t1 = time.perf_counter()
        d1 = proc_cpu_ns(a["pid"])
        times.append(t1 - t0)
        daemon_ms.append((d1 - d0) / 1e6)
        client.delete(oid, deep=True)

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    oid = client.put(df, persist=True)
    prof.disable()
    profiled_s = time.perf_counter() - t0
    client.delete(oid, deep=True)
    client.close()

    calls: dict[str, dict] = {}
    for (file, _line, name), (_cc, ncalls, tottime, _ct, _callers) in pstats.Stats(prof).stats.items():
        # Only the extension's own calls ("<built-in method vineyard._C.copy>" and the like,
        # file "~"); the Python wrappers of the same names only pass through.
        if file != "~" or "vineyard._C." not in name:
            continue
        short = name.rsplit(".", 1)[-1].rstrip(">")
        if short in REQUEST_CALLS + COPY_CALLS:
            entry = calls.setdefault(short, {"calls": 0, "s": 0.0})
            entry["calls"] += ncalls
            entry["s"] += tottime
    result({
        "nbytes": nbytes,
        "put_s": median(times),
        "put_all_s": times,
        "daemon_cpu_ms": median(daemon_ms),
        "profiled_s": profiled_s,
        "calls": calls,
    })


def worker_memcpy(a: dict) -> None:
    import numpy as np

    df = _make_df(a["rows"], a["cols"], a["seed"])
    columns = [df[c].to_numpy() for c in df.columns]
    dst = [np.ones_like(col) for col in columns]  # touched: no page faults in the copy
    ready_then_wait_go()
    times = []
    for _ in range(a["rounds"]):
        t0 = time.perf_counter()
        for d, s in zip(dst, columns):
            np.copyto(d, s)
        times.append(time.perf_counter() - t0)
    result({"copy_s": median(times), "nbytes": int(sum(c.nbytes for c in columns))})


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.1f}"


def table(results: dict, anchor: dict, labels: list) -> str:
    rows = []

    def row(name, fn):
        rows.append("| " + name + " | " + " | ".join(fn(results[l]) for l in labels) + " |")

    def share(r, names):
        return sum(r["calls"].get(n, {}).get("s", 0.0) for n in names)

    def count(r, names):
        return sum(r["calls"].get(n, {}).get("calls", 0) for n in names)

    row("put, median (ms)", lambda r: fmt_ms(r["put_s"]))
    row("put under cProfile (ms)", lambda r: fmt_ms(r["profiled_s"]))
    row("— column copies (ms)", lambda r: fmt_ms(share(r, COPY_CALLS)))
    row("— column copies (GB/s)", lambda r: f"{r['nbytes'] / max(share(r, COPY_CALLS), 1e-9) / 1e9:.1f}")
    row("— requests (ms)", lambda r: fmt_ms(share(r, REQUEST_CALLS)))
    row("— requests (count)", lambda r: str(count(r, REQUEST_CALLS)))
    row(
        "— per request (µs)",
        lambda r: f"{share(r, REQUEST_CALLS) / max(count(r, REQUEST_CALLS), 1) * 1e6:.0f}",
    )
    row(
        "— client Python and the rest (ms)",
        lambda r: fmt_ms(r["profiled_s"] - share(r, COPY_CALLS) - share(r, REQUEST_CALLS)),
    )
    row("daemon CPU during a put (ms)", lambda r: f"{r['daemon_cpu_ms']:.1f}")
    header = "| per put of the DataFrame | " + " | ".join(labels) + " |"
    sep = "|---|" + "---:|" * len(labels)
    out = [header, sep] + rows
    out.append("")
    out.append(
        f"Anchor: a single-threaded copy of the same {anchor['nbytes'] / 1e6:.0f} MB "
        f"into memory already touched: {fmt_ms(anchor['copy_s'])} ms "
        f"({anchor['nbytes'] / anchor['copy_s'] / 1e9:.1f} GB/s)."
    )
    return "\n".join(out)


def main() -> int:
    if serve({"put": worker_put, "memcpy": worker_memcpy}, sys.argv[1:]):
        return 0

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--daemons", default="trellis,vineyardd")
    p.add_argument("--rows", type=int, default=600_000)
    p.add_argument("--cols", type=int, default=46)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--size", default="2Gi")
    p.add_argument("--json")
    o = p.parse_args()
    labels = [d for d in o.daemons.split(",") if d]

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="trpb-", dir="/tmp") as tmp:
        for label in labels:
            if label == "trellis":
                argv = [find_trellis(), "serve"]
            elif label == "vineyardd":
                argv = [find_vineyardd()]
            else:
                raise BenchError(f"unknown daemon {label!r} (trellis, vineyardd)")
            sock = os.path.join(tmp, label + ".sock")
            argv += ["--socket", sock, "--size", o.size, "--meta", "local", "--norpc", "--reserve_memory"]
            daemon = Daemon(argv, sock, os.path.join(tmp, label + ".log"), label=label)
            print(f"[put_breakdown] {label}: {' '.join(argv)}", file=sys.stderr, flush=True)
            daemon.start()
            try:
                results[label] = run_one(
                    "put",
                    {"sock": sock, "pid": daemon.pid, "rows": o.rows, "cols": o.cols, "seed": 7, "rounds": o.rounds},
                    tmp,
                    script=__file__,
                )
            finally:
                daemon.stop()
        anchor = run_one("memcpy", {"rows": o.rows, "cols": o.cols, "seed": 7, "rounds": o.rounds}, tmp, script=__file__)

    m = machine_info()
    print(f"Machine: {m}")
    print(f"DataFrame {o.rows:,} x {o.cols} int64, put(df, persist=True); median of {o.rounds} puts.\n")
    print(table(results, anchor, labels))
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"machine": m, "results": results, "anchor": anchor, "argv": sys.argv}, f, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, DaemonError) as e:
        print(f"put_breakdown: {e}", file=sys.stderr)
        sys.exit(1)
