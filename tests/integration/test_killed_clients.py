"""100 clients SIGKILLed while creating blobs: the daemon keeps serving, keeps
what was sealed, and (Trellis) reclaims the unsealed blobs of the dead."""

import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import vineyard

import harness

N_CLIENTS = 100
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw_worker.py")


def pattern(seed, n):
    unit = ("blob %d " % seed).encode()
    return (unit * (n // len(unit) + 1))[:n]


@pytest.fixture(scope="module")
def massacre():
    """Run the scenario once; the tests below look at its aftermath."""
    d = harness.Daemon(size="2Gi").start()
    procs = []
    try:
        baseline = d.status()
        for seed in range(N_CLIENTS):
            procs.append(
                subprocess.Popen(
                    [sys.executable, WORKER, d.socket, str(seed)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                )
            )
        sealed = {}
        pending = {p.stdout.fileno(): (seed, p) for seed, p in enumerate(procs)}
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(list(pending), [], [], 1.0)
            for fd in ready:
                seed, p = pending.pop(fd)
                line = p.stdout.readline().decode()
                if not line.startswith("ready "):
                    err = p.stderr.read().decode() if p.poll() is not None else ""
                    pytest.fail("worker %d: %r %s" % (seed, line, err))
                sealed[seed] = int(line.split()[1])
        assert not pending, "%d workers never got ready" % len(pending)
        during = d.status()
        # kill them all at once, while they are busy creating blobs
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
        # the daemon notices the dead connections (the probe itself counts one); a loaded
        # machine may take a while to run every dead connection's thread to its end
        harness.wait_until(
            lambda: d.status()["ipc_connections"] <= baseline["ipc_connections"], 60
        )
        after = d.status()
        yield dict(daemon=d, baseline=baseline, during=during, after=after, sealed=sealed)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()
        crashed = not d.alive()
        log = d.log_tail() if crashed else ""
        d.cleanup()
        if crashed:
            pytest.fail("daemon died: %s" % log)


def test_daemon_serves_after_mass_kill(massacre):
    d = massacre["daemon"]
    assert d.alive()
    assert massacre["during"]["ipc_connections"] >= N_CLIENTS
    c = harness.connect(d.socket)
    try:
        a = np.arange(1 << 16, dtype=np.int64)
        oid = c.put(a)
        assert np.array_equal(c.get(oid), a)
        c.delete(oid)
        b = c.create_blob(1 << 20)
        b.seal(c)
        c.delete(b.id)
    finally:
        harness.disconnect(c)


def test_connections_of_killed_clients_are_closed(massacre):
    assert massacre["after"]["ipc_connections"] == massacre["baseline"]["ipc_connections"]


def test_sealed_blobs_of_killed_clients_survive(massacre):
    d = massacre["daemon"]
    c = harness.connect(d.socket)
    try:
        for seed, bid in sorted(massacre["sealed"].items()):
            oid = vineyard.ObjectID(bid)
            assert c.exists(oid), "sealed blob of worker %d vanished" % seed
            blob = c.get_blob(oid)
            assert bytes(memoryview(blob)) == pattern(seed, 4096)
    finally:
        harness.disconnect(c)


@pytest.mark.trellis_only
def test_unsealed_blobs_of_killed_clients_are_reclaimed(massacre):
    """Upstream 0.24.2 keeps every unsealed blob of a dead client allocated
    forever (memory_usage stays at the level reached by the workers)."""
    d = massacre["daemon"]
    assert massacre["during"]["memory_usage"] >= N_CLIENTS * 16 * (256 << 10)
    c = harness.connect(d.socket)
    try:
        c.delete([vineyard.ObjectID(b) for b in massacre["sealed"].values()])
        for b in massacre["sealed"].values():
            assert not c.exists(vineyard.ObjectID(b))
    finally:
        harness.disconnect(c)
    base = massacre["baseline"]["memory_usage"]
    assert harness.wait_until(lambda: d.status()["memory_usage"] == base, 10), (
        "memory_usage %d, baseline %d" % (d.status()["memory_usage"], base)
    )
