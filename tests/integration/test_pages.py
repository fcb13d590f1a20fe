"""The arena's pages as the upstream client sees them.

By default Trellis backs its arena with 2 MiB transparent huge pages (a file on a private
tmpfs with huge=within_size): the client's mapping of it is 2 MiB-aligned and its writes
fault once per 2 MiB. These tests read the *client's* own /proc/self/smaps after a put
through the upstream vineyard client, so they show what the client process really got.
"""

import os
import re

import numpy as np
import pytest

import harness

MB = 1 << 20


ARENA_NAME = re.compile(r"^(/memfd:trellis.*|/#\d+ \(deleted\))$")


def daemon_arena(daemon):
    """(device "maj:min" in hex, inode) of the daemon's arena file, as smaps prints them."""
    for fd in os.listdir("/proc/%d/fd" % daemon.pid):
        path = "/proc/%d/fd/%s" % (daemon.pid, fd)
        try:
            if not ARENA_NAME.match(os.readlink(path)):
                continue
            st = os.stat(path)
        except OSError:
            continue
        return "%02x:%02x" % (os.major(st.st_dev), os.minor(st.st_dev)), st.st_ino
    raise AssertionError("the daemon has no arena file open")


def client_mapping_of(arena):
    """This process's mapping of the arena file: name, start address, Size and PMD-mapped kB
    (other daemons' arenas, still mapped by earlier tests' clients, do not count)."""
    device, inode = arena
    found, current = None, None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = re.match(r"^([0-9a-f]+)-[0-9a-f]+ \S+ \S+ (\S+) (\d+)\s*(.*)$", line)
            if head:
                current = None
                if head.group(2) == device and int(head.group(3)) == inode:
                    current = {"name": head.group(4), "start": int(head.group(1), 16), "size": 0, "pmd": 0}
                    if found is None or current["size"] >= found["size"]:
                        found = current
                continue
            field = re.match(r"^(\w+):\s+(\d+) kB", line)
            if current is not None and field:
                if field.group(1) == "Size":
                    current["size"] = int(field.group(2))
                elif field.group(1) in ("ShmemPmdMapped", "FilePmdMapped"):
                    current["pmd"] += int(field.group(2))
    return found


def client_arena_after_put(daemon, nbytes):
    """Puts nbytes through the upstream client and returns its mapping of the arena."""
    arena = daemon_arena(daemon)
    c = harness.connect(daemon.socket)
    try:
        oid = c.put(np.ones(nbytes // 8, dtype=np.int64))
        mapping = client_mapping_of(arena)
        assert mapping, "the client has no mapping of the arena"
        back = c.get(oid)
        assert int(back[-1]) == 1 and back.nbytes == nbytes
        del back
        return mapping
    finally:
        harness.disconnect(c)


@pytest.mark.trellis_only
def test_default_arena_gives_the_client_huge_pages():
    with harness.Daemon(size="256Mi", extra=["--reserve_memory"]) as d:
        m = client_arena_after_put(d, 64 * MB)
        assert re.match(r"^/#\d+ \(deleted\)$", m["name"]), m
        assert m["start"] % (2 * MB) == 0, "client mapping not 2 MiB-aligned: %#x" % m["start"]
        # The 64 MiB the client wrote are mapped by PMDs (2 MiB each), not 16,384 PTEs.
        assert m["pmd"] * 1024 >= 64 * MB, "PMD-mapped: %d kB" % m["pmd"]


@pytest.mark.trellis_only
def test_without_transparent_huge_pages_the_arena_is_a_4k_memfd():
    with harness.Daemon(size="256Mi", extra=["--reserve_memory", "--notransparent_huge_pages"]) as d:
        m = client_arena_after_put(d, 64 * MB)
        assert m["name"].startswith("/memfd:trellis"), m
        assert m["pmd"] == 0, m


@pytest.mark.trellis_only
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the daemon as another user")
def test_an_unprivileged_daemon_gets_huge_pages_through_a_user_namespace():
    with open("/proc/sys/user/max_user_namespaces") as f:
        if int(f.read()) == 0:
            pytest.skip("user namespaces are disabled on this machine")
    with harness.Daemon(size="128Mi", extra=["--reserve_memory"], uid=65534) as d:
        with open("/proc/%d/status" % d.pid) as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert uids == ["65534"] * 4, uids
        m = client_arena_after_put(d, 32 * MB)
        assert re.match(r"^/#\d+ \(deleted\)$", m["name"]), m
        assert m["pmd"] * 1024 >= 32 * MB, m
