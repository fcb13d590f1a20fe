"""Trellis flow step bootstrap (written by the runner; do not edit).

python3 trellis_step.py --file F [--function FN]   import F and call FN(), or run F as __main__
python3 -m trellis_step script.py [ARGS...]        run a script as __main__
import trellis_step; trellis_step.install()         only apply the run's object names

With TRELLIS_NAME_PREFIX=<run>/ the upstream vineyard client's name calls (put_name,
get_name, drop_name, list_names on vineyard.Client, which put(name=...) and
get(name=...) use) see the name "x" as "<run>/x", so steps written for vineyard run
unchanged and runs never collide. Seconds spent in Client.put / Client.get are
appended to $TRELLIS_METRICS as one JSON line at exit. With TRELLIS_FETCH=1 (steps
on Kubernetes) Client.get defaults to fetch=True: a remote input is migrated here.
TRELLIS_PIP_INSTALL (requirements, one per line; a step's kubernetes.packages) are pip
installed first, from TRELLIS_PIP_INDEX_URL when set.
"""
import atexit
import importlib.util
import json
import os
import re
import runpy
import subprocess
import sys
import time

_state = {"installed": False, "depth": 0}
_metrics = {"put_seconds": 0.0, "get_seconds": 0.0, "put_count": 0, "get_count": 0}


def _write_metrics():
    path = os.environ.get("TRELLIS_METRICS")
    if not path or not (_metrics["put_count"] or _metrics["get_count"]):
        return
    try:
        with open(path, "a") as f:
            f.write(json.dumps(_metrics) + "\n")
    except OSError:
        pass


def _timed(kind, original):
    def wrapper(self, *args, **kwargs):
        if _state["depth"]:
            return original(self, *args, **kwargs)
        _state["depth"] += 1
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            _state["depth"] -= 1
            _metrics[kind + "_seconds"] += time.perf_counter() - start
            _metrics[kind + "_count"] += 1
    wrapper.__wrapped__ = original
    return wrapper


def install(prefix=None):
    """Apply the run's name prefix to vineyard.Client; True if vineyard was found."""
    if _state["installed"]:
        return True
    if prefix is None:
        prefix = os.environ.get("TRELLIS_NAME_PREFIX", "")
    try:
        from vineyard.core.client import Client
    except Exception:
        return False
    _state["installed"] = True
    # The accelerated builders (trellis.accel, when the trellis package is installed in the
    # step's environment): the same objects, written in a few requests; TRELLIS_ACCEL=0
    # leaves the upstream builders alone.
    # TRELLIS_ZERO_COPY=1 (a step's env or the flow's): numpy builds large arrays in the
    # daemon's arena and put seals them in place (trellis.accel.zero_copy).
    if os.environ.get("TRELLIS_ACCEL", "1") != "0":
        try:
            accel = importlib.import_module("trellis.accel")  # registers them on import
            accel.zero_copy_from_env()
        except Exception:
            pass

    def q(name):
        if prefix and isinstance(name, str) and not name.startswith(prefix):
            return prefix + name
        return name

    def unq(name):
        if prefix and isinstance(name, str) and name.startswith(prefix):
            return name[len(prefix):]
        return name

    put_name, get_name = Client.put_name, Client.get_name
    drop_name, list_names = Client.drop_name, Client.list_names

    def _put_name(self, object, name):
        forget(name)
        return put_name(self, object, q(name))

    replica = os.environ.get("TRELLIS_REPLICA")
    # The names the runner moved a copy of onto this step's replica (a runner that does not
    # say: any name may have one). Asking for a copy that is not there costs a lookup (in
    # a cluster, a read of the cluster's metadata), so only these are asked for.
    try:
        copies = json.loads(os.environ["TRELLIS_LOCAL_COPIES"])
        copies = None if not isinstance(copies, list) else {n for n in copies if isinstance(n, str)}
    except (KeyError, ValueError):
        copies = None

    # The ids the step's inputs resolved to on its replica when the runner placed it (the
    # copy's, when one was there): looking one of them up again would only ask the same
    # question of the daemon (in a cluster, of etcd) a moment later.
    try:
        ids = json.loads(os.environ["TRELLIS_INPUT_IDS"])
        ids = {n: int(v) for n, v in ids.items() if isinstance(n, str) and isinstance(v, str) and v.isdigit()}
    except (KeyError, ValueError, AttributeError):
        ids = {}
    try:
        from vineyard import ObjectID
    except Exception:  # a vineyard without it: every lookup goes to the daemon
        ids = {}

    def forget(name):
        # the step binds or drops an input's name itself: from then on the daemon answers
        if isinstance(name, str):
            ids.pop(unq(name), None)

    def _get_name(self, name, wait=False):
        if isinstance(name, str) and unq(name) in ids:
            return ObjectID(ids[unq(name)])
        # A copy the runner moved onto this step's replica is bound to "<name>@r<replica>":
        # prefer it, so the step's get is local and zero-copy.
        if replica is not None and prefix and isinstance(name, str) and (copies is None or unq(name) in copies):
            try:
                return get_name(self, q(name) + "@r" + replica, False)
            except Exception:
                pass
        return get_name(self, q(name), wait)

    def _drop_name(self, name):
        forget(name)
        return drop_name(self, q(name))

    def _list_names(self, pattern, regex=False, limit=5):
        if prefix:
            if regex:
                pattern = re.escape(prefix) + (pattern[1:] if pattern.startswith("^") else pattern)
            else:
                pattern = prefix + pattern
        found = list_names(self, pattern, regex, limit)
        if isinstance(found, dict):
            return {unq(k): v for k, v in found.items()}
        return [unq(n) for n in found]

    Client.put_name, Client.get_name = _put_name, _get_name
    Client.drop_name, Client.list_names = _drop_name, _list_names
    if os.environ.get("TRELLIS_FETCH") == "1":
        # Kubernetes: the launcher cannot copy inputs between nodes; the step's own get
        # migrates a remote object into this node's daemon.
        plain_get = Client.get

        def _get(self, *args, **kwargs):
            if len(args) < 4:
                kwargs.setdefault("fetch", True)
            return plain_get(self, *args, **kwargs)

        Client.get = _get
    Client.put = _timed("put", Client.put)
    Client.get = _timed("get", Client.get)
    atexit.register(_write_metrics)
    return True


def _pip_install():
    """Installs the step's packages (a pod's image need not carry them); exits with
    pip's status when it fails."""
    wanted = [r.strip() for r in os.environ.get("TRELLIS_PIP_INSTALL", "").splitlines() if r.strip()]
    if not wanted:
        return
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check"]
    if os.environ.get("TRELLIS_PIP_INDEX_URL"):
        argv += ["--index-url", os.environ["TRELLIS_PIP_INDEX_URL"]]
    done = subprocess.run(argv + ["--"] + wanted, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.stderr.write("trellis: pip could not install %s (exit %d)\n" % (", ".join(wanted), done.returncode))
        sys.exit(done.returncode)
    importlib.invalidate_caches()


def _load(path):
    path = os.path.abspath(path)
    sys.path.insert(0, os.path.dirname(path))
    spec = importlib.util.spec_from_file_location("__trellis_step__", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["__trellis_step__"] = module
    spec.loader.exec_module(module)
    return module


def main(argv):
    _pip_install()
    if len(argv) >= 2 and argv[0] == "--file":
        path, function = argv[1], None
        if len(argv) >= 4 and argv[2] == "--function":
            function = argv[3]
        install()
        if function is None:
            sys.argv = [path]
            sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
            runpy.run_path(path, run_name="__main__")
            return 0
        module = _load(path)
        target = getattr(module, function, None)
        if not callable(target):
            sys.stderr.write("trellis: %s has no function %r\n" % (path, function))
            return 2
        target()
        return 0
    if not argv:
        sys.stderr.write("usage: python3 -m trellis_step script.py [ARGS...]\n")
        return 2
    install()
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
    runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

