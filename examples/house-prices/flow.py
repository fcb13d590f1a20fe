"""The house-prices pipeline through Trellis, in the seed's chaining style.

    TRELLIS_BIN=/path/to/trellis python flow.py [--rows N] [--replicas 2] [--size 2Gi] [--run-id ID]

Starts an ephemeral 2-replica runtime if none is up (`trellis runtime up` to keep one), runs
generate -> preprocess -> train -> test with every step placed next to its inputs, and prints
the MSE, where each step ran and how long the handoffs took.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from trellis.flow import Flow, FlowFailed, Runtime  # noqa: E402  (pip install ./python; scripts/setup.sh does)

import report  # noqa: E402
from pipeline import generate, preprocess, test, train  # noqa: E402


def size_bytes(size):
    """'2Gi', '512M', '4096' -> bytes (binary suffixes, as the daemons read them)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = size.rstrip("iB")
    mult = units.get(text[-1:].upper())
    return int(float(text[:-1]) * mult) if mult else int(text)


def huge_pages_available(replicas, size):
    """True when the kernel's hugetlb pool has room for every replica's arena."""
    nbytes = size_bytes(size)
    try:
        with open("/proc/meminfo") as f:
            free = next((int(line.split()[1]) for line in f if line.startswith("HugePages_Free:")), 0)
    except OSError:
        return False
    return free * (2 << 20) >= replicas * nbytes


def build(replicas=2, size="2Gi", huge_pages=False):
    runtime = Runtime(replicas=replicas, size=size, huge_pages=huge_pages)
    return Flow(runtime=runtime, name="house-prices") \
        .process(generate) \
        .process(preprocess) \
        .process(train) \
        .process(test, timeout=600)


def main():
    ap = argparse.ArgumentParser(description="house-prices on Trellis")
    ap.add_argument("--rows", type=int, default=None, help="rows to generate (default 600000)")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--size", default="2Gi", help="memory per replica")
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the run's objects in the store")
    ap.add_argument("--huge-pages", choices=("auto", "on", "off"), default="auto",
                    help="arenas in the hugetlb pool (auto: when it has room); otherwise the daemons use "
                         "transparent huge pages where the kernel allows, else 4 KiB pages")
    args = ap.parse_args()
    if args.rows:
        os.environ["HOUSE_ROWS"] = str(args.rows)
    huge = args.huge_pages == "on" or (
        args.huge_pages == "auto" and huge_pages_available(args.replicas, args.size))
    print("replica arenas: %d x %s in %s" % (
        args.replicas, args.size, "hugetlb pages" if huge else "transparent huge pages (4 KiB where unavailable)"),
        flush=True)
    run = build(args.replicas, args.size, huge).run(run_id=args.run_id, keep=args.keep)
    try:
        record = run.wait()
    except FlowFailed as e:
        print("flow failed: %s" % e, file=sys.stderr)
        sys.exit(1)
    report.print_summary(report.summarize(record))


if __name__ == "__main__":
    main()
