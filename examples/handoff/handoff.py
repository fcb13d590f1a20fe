"""The seed's handoff: one process puts a 600,000 x 46 int64 DataFrame under a name,
another process gets it by name, zero-copy, from the same daemon.

    python handoff.py writer|reader   (VINEYARD_IPC_SOCKET names the daemon)
"""
import os
import sys
import time

import numpy as np
import pandas as pd
import vineyard

ROWS = int(os.environ.get("HANDOFF_ROWS", "600000"))
COLS = 46
NAME = "seed_dataframe"


def writer():
    rng = np.random.default_rng(7)
    df = pd.DataFrame(rng.integers(0, 100_000, size=(ROWS, COLS), dtype=np.int64),
                      columns=[f"c{i}" for i in range(COLS)])
    client = vineyard.connect(os.environ["VINEYARD_IPC_SOCKET"])
    start = time.perf_counter()
    client.put(df, name=NAME, persist=True)
    put = time.perf_counter() - start
    print(f"writer: put {df.shape[0]:,} x {df.shape[1]} int64 ({df.values.nbytes / 1e6:.0f} MB) in {put * 1e3:.1f} ms "
          f"(checksum {int(df.values.sum())})")
    print(f"put_seconds={put:.6f}")


def reader():
    client = vineyard.connect(os.environ["VINEYARD_IPC_SOCKET"])
    start = time.perf_counter()
    df = client.get(name=NAME, fetch=True)
    got = time.perf_counter() - start
    total = int(sum(df[c].values.sum() for c in df.columns))  # touch every value
    touched = time.perf_counter() - start
    column = df[df.columns[0]].values
    print(f"reader: got {df.shape[0]:,} x {df.shape[1]} in {got * 1e3:.2f} ms, read all values in "
          f"{touched * 1e3:.1f} ms (checksum {total}); column 0 writable={column.flags.writeable}, "
          f"owns its data={column.flags.owndata}")
    print(f"get_seconds={got:.6f}")
    client.delete(client.get_name(NAME), deep=True)
    client.drop_name(NAME)


if __name__ == "__main__":
    {"writer": writer, "reader": reader}[sys.argv[1]]()
