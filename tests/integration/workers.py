"""Code that runs in other processes (multiprocessing "spawn" targets).

Kept apart from the test modules so that a spawned child imports only this file,
harness.py, and what it really needs.
"""

import time
import traceback


def _uint64_checksum(arr):
    import numpy as np

    return int(arr.view(np.uint64).sum(dtype=np.uint64))


def mem_snapshot():
    import psutil

    import harness

    full = psutil.Process().memory_full_info()
    return {
        "anon": harness.proc_status_kib("RssAnon") * 1024,
        "shmem": harness.proc_status_kib("RssShmem") * 1024,
        "uss": full.uss,
        "rss": full.rss,
    }


def zero_copy_reader(sock, oid, conn):
    """Get object ``oid``, read every byte, report checksum and memory growth."""
    try:
        import numpy as np  # noqa: F401
        import vineyard

        import harness

        client = harness.connect(sock)
        client.status  # warm up the connection (register) before measuring
        before = mem_snapshot()
        arr = client.get(vineyard.ObjectID(oid))
        checksum = _uint64_checksum(arr)  # touches every page
        after = mem_snapshot()
        conn.send(
            {
                "ok": True,
                "checksum": checksum,
                "nbytes": int(arr.nbytes),
                "shared": bool(client.is_shared_memory(arr.ctypes.data)),
                "before": before,
                "after": after,
            }
        )
        conn.recv()  # keep the mapping alive until the parent is done
        del arr
        harness.disconnect(client)
    except Exception:
        conn.send({"ok": False, "error": traceback.format_exc()})


def blob_peer(sock, conn):
    """Command loop driven by the parent over a Pipe to exercise blob sharing."""
    import numpy as np
    import vineyard

    import harness

    client = harness.connect(sock)
    views = {}
    try:
        while True:
            cmd, *args = conn.recv()
            try:
                if cmd == "quit":
                    conn.send(("ok", None))
                    return
                if cmd == "get_blob":  # (id, unsafe) -> keep a view, return bytes
                    oid, unsafe = args
                    blob = client.get_blob(vineyard.ObjectID(oid), unsafe)
                    views[oid] = (blob, memoryview(blob))
                    conn.send(("ok", bytes(views[oid][1])))
                elif cmd == "reread":  # read the same mapping again, no request
                    (oid,) = args
                    conn.send(("ok", bytes(views[oid][1])))
                elif cmd == "create_sealed":  # (payload) -> blob id
                    (payload,) = args
                    builder = client.create_blob(len(payload))
                    np.frombuffer(memoryview(builder), np.uint8)[:] = np.frombuffer(
                        payload, np.uint8
                    )
                    blob = builder.seal(client)
                    conn.send(("ok", int(blob.id)))
                else:
                    conn.send(("error", "unknown command %r" % cmd))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        views.clear()
        harness.disconnect(client)


def put_get_delete_worker(sock, worker, iterations, conn):
    """``iterations`` rounds of put / get / compare / delete of distinct values."""
    import numpy as np
    import pandas as pd

    import harness

    errors = []
    done = 0
    try:
        client = harness.connect(sock)
        rng = np.random.default_rng(worker)
        dtypes = [np.int8, np.int32, np.int64, np.uint16, np.float32, np.float64, np.bool_]
        for i in range(iterations):
            kind = i % 10
            if kind == 9:
                value = pd.DataFrame(
                    {"w": np.full(5, worker, np.int64), "i": np.arange(5) + i, "f": rng.random(5)}
                )
            else:
                dtype = dtypes[i % len(dtypes)]
                n = int(rng.integers(0, 2048))
                value = (np.arange(n) * (worker + 1) + i).astype(dtype)
            try:
                oid = client.put(value)
                back = client.get(oid)
                if isinstance(value, pd.DataFrame):
                    same = value.equals(back)
                else:
                    same = back.dtype == value.dtype and np.array_equal(back, value)
                del back
                client.delete(oid)
                if client.exists(oid):
                    errors.append("iteration %d: %s still exists after delete" % (i, oid))
                if not same:
                    errors.append("iteration %d: value mismatch" % i)
            except Exception as e:  # keep going, report everything
                errors.append("iteration %d: %s: %s" % (i, type(e).__name__, e))
            done += 1
        harness.disconnect(client)
    except Exception:
        errors.append(traceback.format_exc())
    conn.send({"worker": worker, "done": done, "errors": errors[:20], "n_errors": len(errors)})


def get_name_waiter(sock, name, conn):
    """Block in get_name(wait=True); report the id it returned and when."""
    try:
        import harness

        client = harness.connect(sock)
        client.status
        conn.send(("waiting", time.monotonic()))
        oid = client.get_name(name, wait=True)
        conn.send(("got", int(oid), time.monotonic()))
        harness.disconnect(client)
    except Exception:
        conn.send(("error", traceback.format_exc()))



def spill_worker(sock, worker, rounds, conn):
    """Puts persistent 4 MiB arrays on short-lived connections and reads earlier ones back
    (each read on a fresh connection), so the arena keeps spilling and reloading while
    other workers do the same. Reports mismatches."""
    import numpy as np

    import harness
    errors, ids = [], []
    try:
        for i in range(rounds):
            c = harness.connect(sock)
            ids.append((c.put(np.full(1 << 19, worker * 1000 + i, dtype=np.int64), persist=True), i))
            harness.disconnect(c)
            for oid, j in ids[-3:] + ids[:1]:
                c = harness.connect(sock)
                got = c.get(oid)
                if got.shape != (1 << 19,) or int(got[0]) != worker * 1000 + j or int(got[-1]) != worker * 1000 + j:
                    errors.append((oid, j, int(got[0])))
                del got
                harness.disconnect(c)
        conn.send({"worker": worker, "errors": errors[:5], "n_errors": len(errors), "ids": [int(o) for o, _ in ids]})
    except Exception as e:  # report instead of hanging the parent
        conn.send({"worker": worker, "errors": [repr(e)], "n_errors": 1, "ids": []})


def stream_writer(sock, stream_id, batches, rows, conn):
    """Write ``batches`` record batches of ``rows`` rows to a RecordBatchStream, then stop it."""
    try:
        import pyarrow as pa
        import vineyard
        import vineyard.io  # noqa: F401  (registers the stream types)
        from vineyard.io.recordbatch import RecordBatchStream

        import harness

        client = harness.connect(sock)
        stream = RecordBatchStream(client.get_meta(vineyard.ObjectID(stream_id)))
        writer = stream.open_writer(client)
        sums = []
        for i in range(batches):
            values = pa.array(range(i * rows, (i + 1) * rows), type=pa.int64())
            batch = pa.RecordBatch.from_arrays([values, pa.array([str(i)] * rows)], names=["v", "tag"])
            writer.append(client.put(batch))
            sums.append(sum(range(i * rows, (i + 1) * rows)))
        writer.finish()
        conn.send({"ok": True, "sums": sums})
        harness.disconnect(client)
    except Exception:
        conn.send({"ok": False, "error": traceback.format_exc()})


def stream_reader(sock, stream_id, conn):
    """Read a RecordBatchStream to its end; report each batch's rows, sum and tag."""
    try:
        import vineyard
        import vineyard.io  # noqa: F401
        from vineyard.io.recordbatch import RecordBatchStream

        import harness

        client = harness.connect(sock)
        stream = RecordBatchStream(client.get_meta(vineyard.ObjectID(stream_id)))
        reader = stream.open_reader(client)
        got = []
        while True:
            try:
                batch = reader.next()
            except StopIteration:
                break
            got.append((batch.num_rows, int(batch.column(0).to_pandas().sum()), batch.column(1)[0].as_py()))
        conn.send({"ok": True, "batches": got})
        harness.disconnect(client)
    except Exception:
        conn.send({"ok": False, "error": traceback.format_exc()})
