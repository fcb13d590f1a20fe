"""Runs notebook cells the way a kernel does: one ``__main__`` namespace, each cell compiled
from its own file (so ``inspect.getsource`` finds the functions it defines).

    python run_cells.py SNAPSHOT.json CELL.py [CELL.py ...]

Before the last cell (the tutorial's clean-up) it writes SNAPSHOT.json: the Trellis home of
every dataset and, per run, its record and the runtime's state, for the test to check
after the clean-up.
"""

import json
import sys


def snapshot(namespace, path):
    from trellis.fluid import FlowHandle, FluidDataset
    out = {"datasets": [], "runs": {}}
    for value in list(namespace.values()):
        if isinstance(value, FluidDataset):
            status = value.runtime_status()
            out["datasets"].append({"home": value.home, "runtime": status})
        if isinstance(value, FlowHandle):
            out["runs"][value.run_id] = {"home": value.dataset.home, "record": value.run.status()}
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


def main(argv):
    snapshot_path, cells = argv[0], argv[1:]
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    for i, path in enumerate(cells):
        if i == len(cells) - 1:
            snapshot(namespace, snapshot_path)
        with open(path) as f:
            source = f.read()
        sys.stdout.flush()
        exec(compile(source, path, "exec"), namespace)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
