"""Steps of the fan-out/fan-in example: data moves only through the object store, with the
upstream vineyard client (`$VINEYARD_IPC_SOCKET`); names are the run's own (the bootstrap
prefixes them with the run id)."""
import os


def _client():
    import vineyard

    return vineyard.connect()


def source():
    import numpy as np

    n = int(os.environ.get("FAN_IN_COUNT", "100000"))
    _client().put(np.arange(n, dtype=np.float64), name="numbers", persist=True)


def square():
    c = _client()
    x = c.get(name="numbers", fetch=True)
    c.put(x * x, name="squares", persist=True)


def cube():
    c = _client()
    x = c.get(name="numbers", fetch=True)
    c.put(x * x * x, name="cubes", persist=True)


def join():
    c = _client()
    s = c.get(name="squares", fetch=True)
    k = c.get(name="cubes", fetch=True)
    c.put(s + k, name="total", persist=True)


def report():
    c = _client()
    total = c.get(name="total", fetch=True)
    n = len(c.get(name="numbers", fetch=True))
    print("n=%d sum(x^2 + x^3)=%.6g" % (n, float(total.sum())))
