"""Finding and running the daemons: ``trellis serve`` and upstream ``vineyardd``.

Every benchmark and the Python test harnesses (tests/integration/harness.py,
tests/cluster/cluster_lib.py) start daemons through ``Process``/``Daemon``: each in its
own session (a ^C on the run does not reach it first), output in a log file, ready once
its UNIX socket accepts (and, for cluster nodes, its RPC port), stopped by PID: SIGTERM,
then SIGKILL after a timeout.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DaemonError(RuntimeError):
    pass


# --------------------------------------------------------------------------- finders


def find_trellis(explicit: str | None = None, builds=("release", "debug")) -> str:
    """`explicit`, else $TRELLIS_BIN, else the first of .build/<build>/trellis that exists."""
    for candidate in [explicit, os.environ.get("TRELLIS_BIN")]:
        if candidate:
            return candidate
    for build in builds:
        cand = os.path.join(REPO, ".build", build, "trellis")
        if os.access(cand, os.X_OK):
            return cand
    wanted = " or ".join(f".build/{b}/trellis" for b in builds)
    raise DaemonError(f"no trellis binary ({wanted}): build it (swift build -c release) or set TRELLIS_BIN")


def find_vineyardd() -> str:
    """$VINEYARDD_BIN, else the daemon in the pinned vineyard-bdist wheel, else PATH."""
    env = os.environ.get("VINEYARDD_BIN")
    if env:
        return env
    import vineyard

    base = os.path.dirname(vineyard.__file__)
    for cand in (os.path.join(base, "bdist", "vineyardd"), os.path.join(base, "vineyardd")):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("vineyardd")
    if found:
        return found
    raise DaemonError("vineyardd not found (install vineyard-bdist==0.24.2 or set VINEYARDD_BIN)")


# --------------------------------------------------------------------------- probes


def socket_accepts(path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def tcp_accepts(port, host="127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def non_loopback_listeners(pid: int) -> list:
    """TCP/UDP sockets of pid that listen/bind on anything but loopback (read from the
    tables of pid's own network namespace, so a process in another one is checked too)."""
    inodes = set()
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    bad = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{proto}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != "0A":  # only LISTEN matters
                continue
            addr = local.split(":")[0]
            # 127.0.0.1, ::1, and ::ffff:127.0.0.1 (a v6 socket bound to v4 loopback)
            loop = addr in ("0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F")
            if not loop:
                bad.append(f"{proto} {local}")
    return bad


# --------------------------------------------------------------------------- processes


class Process:
    """A child process with its output in a log file; stopped by PID."""

    def __init__(self, argv, log_path, env=None, preexec_fn=None):
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.preexec_fn = preexec_fn
        self.proc = None
        self._log = None
        self.stopped = False  # by stop() or kill(), not on its own

    def spawn(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True, preexec_fn=self.preexec_fn)
        return self

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """Sends `sig` to this process only and reaps it."""
        self.stopped = True
        if self.alive():
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._close_log()

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status (None if never started)."""
        if self.proc is None:
            return None
        self.stopped = True
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test froze it
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.on_stop_timeout()
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def on_stop_timeout(self):
        """Called before the SIGKILL of a process that ignored SIGTERM (for diagnostics)."""

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n=3000):
        try:
            if self._log is not None:
                self._log.flush()
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def diagnostics(self):
        """Thread states and open fds of the live process (for failure messages)."""
        lines = []
        try:
            task_dir = "/proc/%d/task" % self.pid
            for tid in sorted(os.listdir(task_dir)):
                def read(name):
                    try:
                        with open(os.path.join(task_dir, tid, name)) as f:
                            return f.read().strip()
                    except OSError:
                        return "?"
                lines.append("thread %s %s wchan=%s" % (tid, read("comm"), read("wchan")))
            fd_dir = "/proc/%d/fd" % self.pid
            for fd in sorted(os.listdir(fd_dir), key=int):
                try:
                    lines.append("fd %s -> %s" % (fd, os.readlink(os.path.join(fd_dir, fd))))
                except OSError:
                    pass
        except OSError as e:
            lines.append("no diagnostics: %s" % e)
        return "\n".join(lines)


class Daemon(Process):
    """A daemon serving a UNIX socket (and maybe an RPC port): `start()` returns once
    `ready()` holds, and fails with the log's tail if the daemon exits or is not ready
    within `start_timeout`."""

    def __init__(self, argv, socket, log_path, label="daemon", env=None, preexec_fn=None, start_timeout=60.0,
                 rpc_port=None, rpc_host="127.0.0.1"):
        super().__init__(argv, log_path, env, preexec_fn)
        self.label, self.socket, self.start_timeout = label, socket, start_timeout
        self.rpc_port, self.rpc_host = rpc_port, rpc_host

    def ready(self):
        if not socket_accepts(self.socket):
            return False
        return self.rpc_port is None or tcp_accepts(self.rpc_port, self.rpc_host)

    def start(self):
        if not os.path.exists(self.argv[0]):
            raise DaemonError("daemon binary %s does not exist; build it or set TRELLIS_BIN / VINEYARDD_BIN"
                              % self.argv[0])
        self.spawn()
        self.wait_ready()
        return self

    def wait_ready(self, timeout=None):
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while not self.ready():
            if not self.alive():
                log = self.log_tail()
                self._close_log()
                raise DaemonError("%s exited with %s during startup: %s\n%s"
                                  % (self.label, self.proc.returncode, " ".join(self.argv), log))
            if time.monotonic() > deadline:
                log = self.log_tail()
                self.kill()
                raise DaemonError("%s did not listen on %s in time\n%s" % (self.label, self.socket, log))
            time.sleep(0.02)


def vineyard_importable_or_reexec(script: str, argv: list) -> bool:
    """True when the upstream client imports here; otherwise re-executes `script` with
    `argv` under the project venv's python (not returning) when that is another
    interpreter, and returns False when there is none to try."""
    import importlib
    import sys

    try:
        importlib.import_module("vineyard")
    except ImportError:
        venv_py = os.path.join(REPO, ".venv", "bin", "python")
        if os.path.exists(venv_py) and os.path.realpath(sys.executable) != os.path.realpath(venv_py):
            os.execv(venv_py, [venv_py, os.path.abspath(script)] + argv)
        return False
    return True
