#!/usr/bin/env python3
"""A DataFrame's put by how pandas lays its columns out, with and without trellis.accel.

    .venv/bin/python bench/frame_layouts.py                  # 600,000 x 46 int64
    .venv/bin/python bench/frame_layouts.py --rows 100000    # smaller frames
    .venv/bin/python bench/frame_layouts.py --json out.json  # also write the raw figures

Two frames of the same values: one made from a dict of columns (each column contiguous:
pandas keeps them as the rows of one block, as a CSV read or the seed's generator makes
them) and one made from a row-major 2-D array (``pd.DataFrame(np.ndarray)``: one block
whose rows are the frame's rows, so each column is every n-th element). Vineyard stores a
column as one contiguous blob either way; the strided columns must be gathered.

Each writer is a fresh worker process connected to a fresh daemon, warmed with one put,
then --rounds timed ``client.put(df)`` (the object deleted after each): Trellis with the
upstream builders, Trellis with trellis.accel's builders (which gather a block's strided
columns straight into their blobs, a band of rows at a time), and upstream vineyardd.
Anchors from a process of their own, same run: a single-threaded copy of the same bytes
from contiguous columns into memory already touched, and numpy's C-ordered copy of each
strided column (``np.ascontiguousarray``: what the upstream builder does before its own
copy). This program is a benchmark: it prints a table, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from benchkit.daemons import Daemon, DaemonError, find_trellis, find_vineyardd  # noqa: E402
from benchkit.machine import machine_info  # noqa: E402
from benchkit.procstats import median  # noqa: E402
from benchkit.workers import BenchError, ready_then_wait_go, result, run_one, serve  # noqa: E402

LAYOUTS = ("columns", "rows")
WRITERS = (
    ("trellis", "trellis", False),
    ("trellis-accel", "trellis", True),
    ("vineyardd", "vineyardd", False),
)


def _frame(layout: str, rows: int, cols: int, seed: int):
    import numpy as np
    import pandas as pd

    values = np.random.default_rng(seed).integers(0, 1_000_000, size=(rows, cols))
    names = [f"c{i}" for i in range(cols)]
    if layout == "rows":
        return pd.DataFrame(values, columns=names)
    return pd.DataFrame({n: np.ascontiguousarray(values[:, i]) for i, n in enumerate(names)})


def worker_put(a: dict) -> None:
    import vineyard

    if a["accel"]:
        sys.path.insert(0, os.path.join(REPO, "python"))
        import trellis.accel

    client = vineyard.connect(a["sock"])
    if a["accel"] and not trellis.accel.warm(client):
        raise RuntimeError("trellis.accel steps aside for this daemon")
    out = {}
    for layout in LAYOUTS:
        df = _frame(layout, a["rows"], a["cols"], a["seed"])
        client.delete(client.put(df), deep=True)  # warm: mapping, imports, arena
        if layout == LAYOUTS[0]:
            ready_then_wait_go()
        before = trellis.accel.stats()["accelerated"] if a["accel"] else 0
        times = []
        for _ in range(a["rounds"]):
            t0 = time.perf_counter()
            oid = client.put(df)
            times.append(time.perf_counter() - t0)
            client.delete(oid, deep=True)
        accelerated = (trellis.accel.stats()["accelerated"] - before) if a["accel"] else 0
        out[layout] = {"put_s": median(times), "all_s": times, "accelerated": accelerated}
        del df
    client.close()
    result(out)


def worker_anchors(a: dict) -> None:
    import numpy as np

    contiguous = _frame("columns", a["rows"], a["cols"], a["seed"])
    strided = _frame("rows", a["rows"], a["cols"], a["seed"])
    src = [contiguous[c].to_numpy() for c in contiguous.columns]
    dst = [np.ones_like(s) for s in src]  # touched: no page faults in the copy
    views = [strided[c].to_numpy() for c in strided.columns]
    assert all(not v.flags["C_CONTIGUOUS"] for v in views) and all(s.flags["C_CONTIGUOUS"] for s in src)
    ready_then_wait_go()
    copy, gather = [], []
    for _ in range(a["rounds"]):
        t0 = time.perf_counter()
        for d, s in zip(dst, src):
            np.copyto(d, s)
        copy.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for v in views:
            np.ascontiguousarray(v)
        gather.append(time.perf_counter() - t0)
    result({"copy_s": median(copy), "ascontiguous_s": median(gather), "nbytes": int(sum(s.nbytes for s in src))})


def table(results: dict, anchors: dict, o) -> str:
    labels = [w for w, _, _ in WRITERS if w in results]
    lines = ["| put of the frame, median (ms) | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for layout in LAYOUTS:
        name = {"columns": "made from columns (contiguous)", "rows": "made from a row-major 2-D array (strided)"}[layout]
        cells = []
        for w in labels:
            r = results[w][layout]
            mark = "" if w != "trellis-accel" or r["accelerated"] == o.rounds else " (stepped aside)"
            cells.append(f"{r['put_s'] * 1e3:.1f}{mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    mb = anchors["nbytes"] / 1e6
    lines.append("")
    lines.append(
        f"Anchors ({mb:.0f} MB, one thread): a copy of the contiguous columns into memory already touched "
        f"{anchors['copy_s'] * 1e3:.1f} ms; numpy's C-ordered copy of each strided column "
        f"(np.ascontiguousarray) {anchors['ascontiguous_s'] * 1e3:.1f} ms."
    )
    return "\n".join(lines)


def main() -> int:
    if serve({"put": worker_put, "anchors": worker_anchors}, sys.argv[1:]):
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--daemons", default="trellis,vineyardd", help="of trellis, vineyardd (trellis runs both writers)")
    p.add_argument("--rows", type=int, default=600_000)
    p.add_argument("--cols", type=int, default=46)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", default="4Gi")
    p.add_argument("--json")
    o = p.parse_args()
    daemons = [d for d in o.daemons.split(",") if d]
    for d in daemons:
        if d not in ("trellis", "vineyardd"):
            raise BenchError(f"unknown daemon {d!r} (trellis, vineyardd)")

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="trfl-", dir="/tmp") as tmp:
        for writer, daemon_kind, accel in WRITERS:
            if daemon_kind not in daemons:
                continue
            argv = [find_trellis(), "serve"] if daemon_kind == "trellis" else [find_vineyardd()]
            sock = os.path.join(tmp, writer + ".sock")
            argv += ["--socket", sock, "--size", o.size, "--meta", "local", "--norpc"]
            daemon = Daemon(argv, sock, os.path.join(tmp, writer + ".log"), label=writer)
            print(f"[frame_layouts] {writer}: {' '.join(argv)}", file=sys.stderr, flush=True)
            daemon.start()
            try:
                results[writer] = run_one(
                    "put",
                    {"sock": sock, "rows": o.rows, "cols": o.cols, "seed": 7, "rounds": o.rounds, "accel": accel},
                    tmp,
                    script=__file__,
                )
            finally:
                daemon.stop()
        anchors = run_one("anchors", {"rows": o.rows, "cols": o.cols, "seed": 7, "rounds": o.rounds}, tmp,
                          script=__file__)

    m = machine_info()
    print(f"Machine: {m}")
    print(f"DataFrame {o.rows:,} x {o.cols} int64, client.put(df); median of {o.rounds} puts.\n")
    print(table(results, anchors, o))
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"machine": m, "results": results, "anchors": anchors, "argv": sys.argv}, f, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, DaemonError) as e:
        print(f"frame_layouts: {e}", file=sys.stderr)
        sys.exit(1)
