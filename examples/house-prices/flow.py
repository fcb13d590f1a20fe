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
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))  # trellis_flow from this checkout

from trellis_flow import Flow, FlowFailed, Runtime  # noqa: E402

import report  # noqa: E402
from pipeline import generate, preprocess, test, train  # noqa: E402


def build(replicas=2, size="2Gi"):
    return Flow(runtime=Runtime(replicas=replicas, size=size), name="house-prices") \
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
    args = ap.parse_args()
    if args.rows:
        os.environ["HOUSE_ROWS"] = str(args.rows)
    run = build(args.replicas, args.size).run(run_id=args.run_id, keep=args.keep)
    try:
        record = run.wait()
    except FlowFailed as e:
        print("flow failed: %s" % e, file=sys.stderr)
        sys.exit(1)
    report.print_summary(report.summarize(record))


if __name__ == "__main__":
    main()
