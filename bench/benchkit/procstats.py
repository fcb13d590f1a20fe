"""Readings from /proc for the benchmarks: CPU time of a process and of the machine, page
faults, RSS; a meter of the CPU other processes used during a measurement; pinning a
process to one CPU; sizes and percentiles."""

from __future__ import annotations

import glob
import math
import os
import resource
import statistics
import time

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def parse_size(text: str) -> int:
    """'8', '1Ki', '64Mi', '1G', '1GiB' -> bytes (all suffixes binary)."""
    t = text.strip().lower().rstrip("b").rstrip("i")
    mult = {"k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def proc_cpu_ns(pid: int) -> int:
    """Sum of on-CPU time (ns) of all live threads of pid, from schedstat."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # thread exited between glob and open
    return total


def proc_ticks(pid: int) -> int:
    """utime+stime of the whole process (includes exited threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_minflt(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def proc_status_kib(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(val.split()[0])
    return out


def machine_ticks() -> tuple:
    """(busy, steal, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


class NoiseMeter:
    """CPU used by processes outside this benchmark (builds, other jobs) while it runs.

    foreign = machine busy time - (this process + reaped workers + live daemons).
    """

    def __init__(self, pids):
        self.pids = pids
        self.t0 = self._snap()

    def _snap(self):
        hz = os.sysconf("SC_CLK_TCK")
        me = resource.getrusage(resource.RUSAGE_SELF)
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = (me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime) * hz
        for pid in self.pids:
            try:
                own += proc_ticks(pid)
            except OSError:
                pass
        return machine_ticks(), own, time.monotonic()

    def stop(self) -> dict:
        (b0, st0, tot0), own0, w0 = self.t0
        (b1, st1, tot1), own1, w1 = self._snap()
        total = max(1, tot1 - tot0)
        foreign = max(0.0, (b1 - b0) - (own1 - own0))
        return {
            "seconds": w1 - w0,
            "foreign_pct": 100.0 * foreign / total,
            "steal_pct": 100.0 * (st1 - st0) / total,
        }


def percentile(sorted_vals: list, q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[k]


def median(vals):
    return statistics.median(vals) if vals else float("nan")


# --------------------------------------------------------------------------- workers
# Everything below `worker_*` runs in a child process.


class pinned:
    """Context manager: every thread of pid (None: no-op) runs on cpu only, then is restored."""

    def __init__(self, pid, cpu):
        self.pid, self.cpu, self.saved = pid, cpu, {}

    def __enter__(self):
        if self.pid is None:
            return self
        for task in glob.glob(f"/proc/{self.pid}/task/*"):
            tid = int(os.path.basename(task))
            try:
                self.saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {self.cpu})
            except OSError:
                pass  # thread exited
        return self

    def __exit__(self, *exc):
        everything = os.sched_getaffinity(0)
        for task in glob.glob(f"/proc/{self.pid}/task/*") if self.pid else []:
            tid = int(os.path.basename(task))
            try:
                os.sched_setaffinity(tid, self.saved.get(tid, everything))
            except OSError:
                pass
        return False

