"""Benchmark: the house-prices flow through Trellis vs the same pipeline exchanging pickle files.

    TRELLIS_BIN=/path/to/trellis python bench.py [--rows N] [--repeat 3] [--out results.json]

Reports, for each mode, total wall time and the time spent handing data between steps
(Trellis: vineyard put + get inside the steps, measured by the runner's bootstrap, plus input
moves between replicas; files: pickle write+fsync and read, cold and warm page cache). Both
sides import what the steps import before a step starts (Trellis's zygote; the baseline's
step processes likewise), so no module import lands inside a timed read; the files' run
without that (the model's read then imports scikit-learn) is shown beside. Checks
the targets: handoff >= 10x faster than the file baseline; every step whose inputs all live
on one replica runs there; runner overhead <= 50 ms per step. Best of --repeat runs.
`--files-only` runs just the baseline (no Trellis needed).
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "..", "bench"))

import baseline_files  # noqa: E402
import report  # noqa: E402
from benchkit.machine import HUGE_PAGE, HugePageError, HugePagePool  # noqa: E402


def run_trellis(rows, replicas, size, huge_pages=False, zero_copy=False):
    import flow as house
    os.environ["HOUSE_ROWS"] = str(rows)
    # the steps inherit the runner's environment: TRELLIS_ZERO_COPY=1 makes their frames in
    # the arena (trellis.accel zero-copy put)
    os.environ["TRELLIS_ZERO_COPY"] = "1" if zero_copy else "0"
    start = time.perf_counter()
    record = house.build(replicas, size, huge_pages).run(quiet=True).wait()
    end_to_end = time.perf_counter() - start
    summary = report.summarize(record)
    summary["end_to_end_seconds"] = end_to_end  # includes starting/stopping an ephemeral runtime
    return summary


def best(results, key="handoff_seconds"):
    return min(results, key=lambda r: r[key])


def main():
    ap = argparse.ArgumentParser(description="house-prices: Trellis vs file exchange")
    ap.add_argument("--rows", type=int, default=600000)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--size", default="2Gi")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None, help="write all results as JSON here")
    ap.add_argument("--files-only", action="store_true")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--no-huge-pages", action="store_true",
                    help="skip the run with replica arenas in huge pages (it reserves a hugetlb pool as root)")
    args = ap.parse_args()

    import flow as house
    results = {"rows": args.rows, "replicas": args.replicas, "files-cold": [], "files-warm": [],
               "files-cold-imports": [], "trellis": [], "trellis-zc": [], "trellis-hp": []}
    pool = HugePagePool()
    huge = False
    if not args.files_only and not args.no_huge_pages:
        try:
            pool.ensure(args.replicas * house.size_bytes(args.size) // HUGE_PAGE)
            huge = True
        except (HugePageError, OSError) as e:
            print("huge pages: %s; skipping the huge-page run" % e, file=sys.stderr)
    try:
        for _ in range(args.repeat):
            results["files-cold"].append(baseline_files.run(args.rows, cache="cold"))
            results["files-warm"].append(baseline_files.run(args.rows, cache="warm"))
            # as the seed's steps: nothing imported ahead, the model's read imports scikit-learn
            results["files-cold-imports"].append(baseline_files.run(args.rows, cache="cold", preload_imports=False))
            if not args.files_only:
                results["trellis"].append(run_trellis(args.rows, args.replicas, args.size))
                results["trellis-zc"].append(run_trellis(args.rows, args.replicas, args.size, zero_copy=True))
                if huge:
                    results["trellis-hp"].append(run_trellis(args.rows, args.replicas, args.size, huge_pages=True))
    finally:
        problem = pool.restore()
        if problem:
            print(problem, file=sys.stderr)

    cold, warm = best(results["files-cold"]), best(results["files-warm"])
    raw = best(results["files-cold-imports"])
    print("house-prices, %d rows, best of %d" % (args.rows, args.repeat))
    print("  %-22s %8s %10s %8s %8s" % ("mode", "wall s", "handoff s", "put s", "get s"))
    for name, r in (("files (cold cache)", cold), ("files (warm cache)", warm), ("files (cold, no preload)", raw)):
        put = sum(s["put_seconds"] for s in r["steps"])
        get = sum(s["get_seconds"] for s in r["steps"])
        print("  %-22s %8.2f %10.3f %8.3f %8.3f" % (name, r["wall_seconds"], r["handoff_seconds"], put, get))
    ok = True
    labels = {"trellis-hp": " (huge pages)", "trellis-zc": " (zero-copy put)"}
    for mode in ("trellis", "trellis-zc", "trellis-hp"):
        if results[mode]:
            t = best(results[mode])
            print("  %-22s %8.2f %10.3f %8.3f %8.3f   (+ moves %.3fs; end to end %.2fs)"
                  % (mode + labels.get(mode, ""), t["wall_seconds"] or 0,
                     t["handoff_seconds"], t["put_seconds"], t["get_seconds"], t["move_seconds"],
                     t["end_to_end_seconds"]))
    for mode in ("trellis", "trellis-zc", "trellis-hp"):
        if not results[mode]:
            continue
        t = best(results[mode])
        print("  %s:" % mode)
        ratio = cold["handoff_seconds"] / max(t["handoff_seconds"], 1e-9)
        ratio_get = sum(s["get_seconds"] for s in cold["steps"]) / max(t["get_seconds"] + t["move_seconds"], 1e-9)
        checks = [
            ("handoff >= 10x faster than files (cold)", ratio >= 10, "%.1fx" % ratio),
            ("handoff vs files (cold, steps' modules not preloaded)", True,
             "%.1fx" % (raw["handoff_seconds"] / max(t["handoff_seconds"], 1e-9))),
            ("handoff vs files (warm page cache)", True,
             "%.1fx" % (warm["handoff_seconds"] / max(t["handoff_seconds"], 1e-9))),
            ("total wall time below the files' (cold)", (t["wall_seconds"] or 1e9) < cold["wall_seconds"],
             "%.2fs vs %.2fs" % (t["wall_seconds"] or 0, cold["wall_seconds"])),
            ("reads (get + moves) vs file reads", True, "%.1fx" % ratio_get),
            ("steps run where all their inputs are", not t["affinity_violations"],
             ", ".join(t["affinity_violations"]) or "all"),
            ("runner overhead <= 50 ms per step", t["max_overhead_seconds"] <= 0.05,
             "max %.1f ms" % (t["max_overhead_seconds"] * 1000)),
            ("same MSE as the baseline", t["mse"] is not None and abs(t["mse"] - cold["mse"]) <= 1e-6 * abs(cold["mse"]),
             "%s vs %s" % (t["mse"], cold["mse"])),
        ]
        for label, passed, detail in checks:
            print("    [%s] %s: %s" % ("PASS" if passed else "MISS", label, detail))
            ok = ok and passed
        report.print_summary(t)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    if args.strict and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
