"""Many clients at once: every put/get/delete returns the right data."""

import threading

import numpy as np

import harness
import workers


def test_four_processes_thousand_ops_each(fresh_daemon):
    d = fresh_daemon
    baseline = d.memory_usage()
    results = harness.run_workers(workers.put_get_delete_worker, [(d.socket, w, 1000) for w in range(4)])
    for r in results:
        assert r["n_errors"] == 0, "worker %d: %s" % (r["worker"], r["errors"])
        assert r["done"] == 1000
    assert d.alive()
    # everything was deleted again
    assert harness.wait_until(lambda: d.memory_usage() == baseline, 5), d.status()
    c = harness.connect(d.socket)
    try:
        assert c.list_objects("*", limit=100) == []
    finally:
        harness.disconnect(c)


def test_threads_with_own_connections(daemon):
    errors = []

    def run(k):
        c = harness.connect(daemon.socket)
        try:
            for i in range(100):
                a = np.full(64 + k, i * 1000 + k, dtype=np.int64)
                oid = c.put(a)
                if not np.array_equal(c.get(oid), a):
                    errors.append((k, i))
                c.delete(oid)
        except Exception as e:
            errors.append((k, repr(e)))
        finally:
            harness.disconnect(c)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
