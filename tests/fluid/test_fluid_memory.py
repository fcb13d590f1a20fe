"""Fluid gives the worker container a memory limit of MEM quota + 500Mi (kubernetes-fluid.md
§2.3 "Resources", `vineyard.addVineyardMemory`) and always passes --reserve_memory, so the
pre-touched arena counts against the limit: the daemon must fit, or kubelet OOM-kills it.

Runs the worker (Fluid's argv) inside a memory cgroup limited to size + 500Mi, puts and gets
a large array through the upstream client, and checks that the group saw no OOM and its
peak stayed within the limit. cgroup v2 is used where its memory controller can be
delegated to a child group; where the memory controller is only mounted as cgroup v1 (as
on hybrid hosts), the v1 group is used; otherwise the test is skipped with the reason.
"""

import os
import uuid

import pytest

import cluster_lib
import fluid_lib

SIZE = "512Mi"
SIZE_BYTES = 512 << 20
LIMIT = SIZE_BYTES + (500 << 20)


def _read(path):
    with open(path) as f:
        return f.read()


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


class CgroupV2:
    kind = "cgroup v2"

    def __init__(self, root):
        self.path = os.path.join(root, "trellis-fluid-" + uuid.uuid4().hex[:10])

    @staticmethod
    def find():
        """The cgroup2 mount, if its root offers the memory controller to children."""
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    root = fields[4]
                    try:
                        if "memory" not in _read(os.path.join(root, "cgroup.controllers")).split():
                            return None, "cgroup v2 at %s has no memory controller" % root
                        if "memory" not in _read(os.path.join(root, "cgroup.subtree_control")).split():
                            _write(os.path.join(root, "cgroup.subtree_control"), "+memory")
                        return root, None
                    except OSError as e:
                        return None, "cannot delegate memory in cgroup v2 at %s: %s" % (root, e)
        return None, "no cgroup v2 mount"

    def create(self, limit):
        os.mkdir(self.path)
        _write(os.path.join(self.path, "memory.max"), str(limit))
        _write(os.path.join(self.path, "memory.swap.max"), "0") if os.path.exists(
            os.path.join(self.path, "memory.swap.max")) else None

    def procs_file(self):
        return os.path.join(self.path, "cgroup.procs")

    def peak(self):
        p = os.path.join(self.path, "memory.peak")
        return int(_read(p)) if os.path.exists(p) else int(_read(os.path.join(self.path, "memory.current")))

    def ooms(self):
        events = dict(line.split() for line in _read(os.path.join(self.path, "memory.events")).splitlines())
        return int(events.get("oom", 0)), int(events.get("oom_kill", 0))

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


class CgroupV1(CgroupV2):
    kind = "cgroup v1"
    ROOT = "/sys/fs/cgroup/memory"

    @staticmethod
    def find():
        if os.path.exists(os.path.join(CgroupV1.ROOT, "memory.limit_in_bytes")):
            return CgroupV1.ROOT, None
        return None, "no cgroup v1 memory controller"

    def create(self, limit):
        os.mkdir(self.path)
        _write(os.path.join(self.path, "memory.limit_in_bytes"), str(limit))

    def procs_file(self):
        return os.path.join(self.path, "cgroup.procs")

    def peak(self):
        return int(_read(os.path.join(self.path, "memory.max_usage_in_bytes")))

    def ooms(self):
        control = dict(line.split() for line in _read(os.path.join(self.path, "memory.oom_control")).splitlines())
        return int(control.get("under_oom", 0)), int(control.get("oom_kill", 0))


def memory_cgroup():
    if os.geteuid() != 0:
        return None, "needs root to create a memory cgroup"
    reasons = []
    for cls in (CgroupV2, CgroupV1):
        root, why = cls.find()
        if root:
            group = cls(root)
            try:
                group.create(LIMIT)
                return group, None
            except OSError as e:
                group.remove()
                why = "cannot create a %s group under %s: %s" % (cls.kind, root, e)
        reasons.append(why)
    return None, "; ".join(reasons)


PUT_GET = """
import numpy as np, vineyard
c = vineyard.connect(sock)
a = np.random.default_rng(7).integers(0, 1 << 60, size=nbytes // 8, dtype=np.int64)
oid = c.put(a)
b = c.get(oid)
assert (b == a).all()
c.delete(oid)
oid = c.put(a[::-1].copy())
assert (c.get(oid) == a[::-1]).all()
print("ok")
"""


def test_worker_fits_in_size_plus_500Mi(etcd):
    group, reason = memory_cgroup()
    if group is None:
        print("SKIP reason: " + reason)
        pytest.skip(reason)
    w = fluid_lib.Worker(etcd.endpoint, size=SIZE)
    procs = group.procs_file()
    try:
        # Join the group before exec, so --reserve_memory's pages are charged to it.
        w.start(preexec_fn=lambda: _write(procs, str(os.getpid())))
        assert str(w.process.pid) in _read(procs).split()
        # Most of the arena, in one object (the reservation already touched every page).
        rc, out, err, _ = cluster_lib.run_client(PUT_GET, 300, sock=w.socket, nbytes=SIZE_BYTES * 3 // 8)
        assert rc == 0, out + err
        assert w.process.alive()
        peak = group.peak()
        under_oom, oom_kills = group.ooms()
        print("%s peak %.1f MiB of limit %.1f MiB (size %s + 500Mi)" % (group.kind, peak / 2**20, LIMIT / 2**20, SIZE))
        assert oom_kills == 0 and under_oom == 0
        assert peak <= LIMIT
        # the reservation really is in the group: at least the arena
        assert peak >= SIZE_BYTES
        assert w.stop() == 0
    finally:
        w.cleanup()
        group.remove()
