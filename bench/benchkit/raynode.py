"""A local Ray head node for benchmarks that compare with Ray's object store.

Ray lives in its own venv (``.venv-ray``, made by ``bench/setup_ray.sh``), never in the
pinned test venv. ``RayHead`` starts ``ray start --head --block`` in a private network
namespace (``unshare --net``: only a loopback interface, brought up first), so

- every Ray listener is reachable from this namespace only. Flags alone cannot do that:
  ``ray start`` replaces ``--node-ip-address 127.0.0.1`` with the machine's outward address
  (``resolve_ip_for_localhost``) and its servers bind to the node address; in a namespace
  whose only interface is ``lo`` the node address is 127.0.0.1 and there is nothing else
  to reach. ``start()`` checks both: ``lo`` is the only interface, and no process of the
  node listens outside loopback;
- the GCS port is free by construction (nothing else lives in that namespace);
- worker processes join the node through ``worker_python()``: ``nsenter --net=`` into the
  head's namespace, then the Ray venv's python.

Stopping is by PID: SIGTERM to the ``ray start --block`` process, which drains the node and
stops every process it started (GCS, raylet, agents, idle workers); whatever of its
session is still alive after that is killed, PID by PID. ``ray stop`` is not used: it kills
every Ray process on the machine by name, including ones this run did not start.
Needs root (the network namespace); ``problem()`` says why Ray can't run, or None.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from .daemons import REPO, DaemonError, Process, non_loopback_listeners

RAY_VENV = os.path.join(REPO, ".venv-ray")
SETUP_HINT = "create it with `bash bench/setup_ray.sh` (a separate venv, ~600 MB)"


def ray_python() -> str:
    return os.environ.get("TRELLIS_RAY_PYTHON") or os.path.join(RAY_VENV, "bin", "python")


def _tool(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def problem() -> str | None:
    """Why a Ray head can't be started here (None if it can)."""
    py = ray_python()
    if not os.access(py, os.X_OK) or not os.access(os.path.join(os.path.dirname(py), "ray"), os.X_OK):
        return f"no Ray venv at {os.path.dirname(os.path.dirname(py))}: {SETUP_HINT}"
    if os.geteuid() != 0:
        return "the Ray node runs in a private network namespace, which needs root"
    for tool in ("unshare", "nsenter", "ip"):
        if _tool(tool) is None:
            return f"{tool} is not installed (Debian: util-linux / iproute2)"
    return None


def session_members(sid: int) -> list:
    """PIDs of the live processes in session `sid` (the head's processes never leave it)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
            out.append(int(entry))
    return sorted(out)


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


class RayHead(Process):
    """``ray start --head --block`` in a private network namespace (see the module doc)."""

    PORT = 6379  # the GCS port: free, since the namespace holds nothing else

    def __init__(self, tmpdir, object_store_bytes: int, num_cpus: int = 2, start_timeout: float = 180.0):
        py = ray_python()
        self.temp_dir = os.path.join(tmpdir, "ray")
        self.ray_argv = [
            os.path.join(os.path.dirname(py), "ray"), "start", "--head", "--block",
            "--port", str(self.PORT), "--node-ip-address", "127.0.0.1",
            "--include-dashboard=false", "--disable-usage-stats",
            "--num-cpus", str(num_cpus), "--object-store-memory", str(object_store_bytes),
            "--temp-dir", self.temp_dir,
        ]
        # unshare(2) then exec: the PID stays the `ray start` process (no --fork)
        argv = [_tool("unshare"), "--net", "sh", "-c", f'{_tool("ip")} link set lo up && exec "$@"', "sh"]
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        super().__init__(argv + self.ray_argv, os.path.join(tmpdir, "ray-head.log"), env=env)
        self.python, self.start_timeout = py, start_timeout
        self.address = f"127.0.0.1:{self.PORT}"

    def start(self):
        self.spawn()
        deadline = time.monotonic() + self.start_timeout
        while "Ray runtime started" not in self.log_tail(100_000):
            if not self.alive():
                raise DaemonError(f"ray start exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonError(f"the Ray head did not start in {self.start_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)
        links = subprocess.run(self.enter() + [_tool("ip"), "-o", "link"], capture_output=True, text=True).stdout
        names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if ":" in line)
        bad = [f"interface {n}" for n in names if n != "lo"]
        bad += [f"{_comm(p)} ({p}): {b}" for p in self.members() for b in non_loopback_listeners(p)]
        if bad or not names:
            self.stop()
            raise DaemonError(f"the Ray node is reachable outside loopback: {bad or 'no interfaces seen'}")
        return self

    def enter(self) -> list:
        """Command prefix that runs a program in the node's network namespace."""
        return [_tool("nsenter"), f"--net=/proc/{self.pid}/ns/net"]

    def worker_python(self) -> list:
        return self.enter() + [self.python]

    def members(self) -> list:
        return session_members(self.pid) if self.alive() else []

    def pid_of(self, comm: str) -> int | None:
        return next((p for p in self.members() if _comm(p) == comm), None)

    def version(self) -> str:
        r = subprocess.run([self.python, "-c", "import ray; print(ray.__version__)"], capture_output=True, text=True)
        return r.stdout.strip() or "?"

    def stop(self, timeout=60.0):
        """SIGTERM to `ray start` (it drains and stops its node), then SIGKILL to whatever of
        its session is left, by PID. Returns the PIDs that had to be killed."""
        if self.proc is None:
            return []
        sid = self.proc.pid
        super().stop(timeout)
        left = session_members(sid)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left
