"""Baseline: the same pipeline exchanging pickles through files on disk.

Each step runs as its own Python process (as each step is its own process under Trellis),
writes its results with pandas/pickle to a directory and the next step reads them back —
the seed's file-based exchange (``df.to_pickle`` / ``pd.read_pickle``, joblib for the model).
Times spent writing and reading those files are the handoff.

    python baseline_files.py [--rows N] [--dir DIR] [--cache cold|warm] [--json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _timed(kind, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - start
    with open(os.environ["BASELINE_METRICS"], "a") as f:
        f.write(json.dumps({"step": os.environ["BASELINE_STEP"], kind: elapsed}) + "\n")
    return result


def _save(obj, name):
    import pickle
    path = os.path.join(os.environ["BASELINE_DIR"], name + ".pkl")

    def write():
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())  # on disk, as a file handed to another pod would be
    _timed("put_seconds", write)


def _load(name):
    import pickle
    path = os.path.join(os.environ["BASELINE_DIR"], name + ".pkl")

    def read():
        with open(path, "rb") as f:
            if os.environ.get("BASELINE_CACHE", "cold") == "cold":
                # The next step runs elsewhere (another pod, as in the seed, whose benchmark
                # dropped the page cache before reading): its read comes from disk, not from
                # this machine's page cache. Evicts only this file's pages.
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            return pickle.load(f)
    return _timed("get_seconds", read)


def generate():
    import numpy as np
    import pandas as pd
    import pipeline
    # Same data as the Trellis flow: reuse the generator, capturing the put.
    captured = {}

    class _Capture:
        @staticmethod
        def put(value, name=None, **_):
            captured[name] = value
    sys.modules["vineyard"] = _Capture
    try:
        pipeline.generate()
    finally:
        del sys.modules["vineyard"]
    _save(captured["df"], "df")
    del np, pd


def preprocess():
    from sklearn.model_selection import train_test_split
    df = _load("df")
    df = df.drop(df[(df['GrLivArea'] > 4800)].index)
    X = df.drop('SalePrice', axis=1)
    y = df['SalePrice']
    del df
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    del X, y
    _save(X_train, "x_train")
    _save(X_test, "x_test")
    _save(y_train, "y_train")
    _save(y_test, "y_test")


def train():
    from sklearn.linear_model import LinearRegression
    x = _load("x_train")
    y = _load("y_train")
    model = LinearRegression()
    model.fit(x, y)
    _save(model, "model")


def test():
    from sklearn.metrics import mean_squared_error
    x = _load("x_test")
    y = _load("y_test")
    model = _load("model")
    err = mean_squared_error(y, model.predict(x))
    print("MSE: %.6f" % err)


STEPS = ["generate", "preprocess", "train", "test"]
ZYGOTE = os.path.join(HERE, "..", "..", "Sources", "TrellisFlow", "Python", "trellis_zygote.py")


def preload():
    """Imports what the pipeline's steps import before a step starts, as Trellis's zygote
    does for the flow's steps: reading the model then does not import scikit-learn inside
    the timed read, on either side. The zygote's own rules (its file, from the source tree)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("trellis_zygote_rules", ZYGOTE)
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    rules.preload_step_imports([os.path.join(HERE, "pipeline.py")])


def run(rows=None, directory=None, python=sys.executable, cache="cold", preload_imports=True):
    """Runs the four steps as separate processes; returns a result dict.

    ``cache="cold"`` reads each file from disk (the consumer is not on the producer's
    page cache); ``"warm"`` lets reads hit the page cache (same machine, best case).
    ``preload_imports``: each step process first imports what the steps import (see
    ``preload``), as Trellis's zygote does; without it the model's read in ``test`` also
    imports scikit-learn."""
    own = directory is None
    directory = directory or tempfile.mkdtemp(prefix="house-files-")
    metrics = os.path.join(directory, "metrics.jsonl")
    open(metrics, "w").close()
    env = dict(os.environ, BASELINE_DIR=directory, BASELINE_METRICS=metrics, BASELINE_CACHE=cache)
    if rows:
        env["HOUSE_ROWS"] = str(rows)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    steps, mse = [], None
    wall_start = time.perf_counter()
    for name in STEPS:
        env["BASELINE_STEP"] = name
        start = time.perf_counter()
        code = "import baseline_files as b; %sb.%s()" % ("b.preload(); " if preload_imports else "", name)
        out = subprocess.run([python, "-c", code], env=env, cwd=HERE,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("baseline step %s failed:\n%s" % (name, out.stderr))
        for line in out.stdout.splitlines():
            if line.startswith("MSE: "):
                mse = float(line.split()[1])
        steps.append({"name": name, "seconds": time.perf_counter() - start})
    wall = time.perf_counter() - wall_start
    per_step = {s["name"]: {"put_seconds": 0.0, "get_seconds": 0.0} for s in steps}
    with open(metrics) as f:
        for line in f:
            m = json.loads(line)
            for k in ("put_seconds", "get_seconds"):
                per_step[m["step"]][k] += m.get(k, 0.0)
    for s in steps:
        s.update(per_step[s["name"]])
    sizes = {n[:-4]: os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory) if n.endswith(".pkl")}
    if own:
        for n in os.listdir(directory):
            os.remove(os.path.join(directory, n))
        os.rmdir(directory)
    handoff = sum(s["put_seconds"] + s["get_seconds"] for s in steps)
    return {"mode": "files-" + cache, "preloaded_imports": preload_imports, "wall_seconds": wall,
            "handoff_seconds": handoff, "mse": mse, "steps": steps, "bytes": sizes}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--cache", choices=["cold", "warm"], default="cold",
                    help="cold: evict each file from the page cache before reading it (default)")
    ap.add_argument("--no-preload", action="store_true",
                    help="steps do not import the pipeline's modules first (the model's read then imports scikit-learn)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.rows, args.dir, cache=args.cache, preload_imports=not args.no_preload)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print("MSE: %.6f" % result["mse"])
    for s in result["steps"]:
        print("  %-10s %6.2fs  write %.3fs  read %.3fs" % (s["name"], s["seconds"], s["put_seconds"], s["get_seconds"]))
    print("total %.2fs, handoff (pickle files) %.3fs" % (result["wall_seconds"], result["handoff_seconds"]))


if __name__ == "__main__":
    main()
