"""The worker protocol of the benchmarks.

A benchmark measures in child processes of its own script, started as
``python SCRIPT --_worker KIND '<json args>'``. A worker prepares (imports, connects,
builds its data), prints ``READY``, waits for ``GO`` on stdin, measures, and prints
``RESULT <json>``. The parent starts any number of them, waits until all are ready, and
releases them at once; nothing before ``GO`` is timed. ``GO`` may carry one line of text
for the worker (``Worker.go(payload)``), e.g. a handle another worker produced. A worker
may run under another interpreter (``python=``: a command prefix such as another venv's
python, or one entered into a namespace); it must then import nothing the parent's venv
alone has before it reaches its worker function.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- worker side


def ready_then_wait_go() -> str:
    """In a worker: report READY and block until the parent says GO (exit on anything else).

    Returns the payload the parent sent with GO ("" if none)."""
    print("READY", flush=True)
    word, _, payload = sys.stdin.readline().strip().partition(" ")
    if word != "GO":
        sys.exit(3)
    return payload


def result(obj):
    """In a worker: report the result."""
    print("RESULT " + json.dumps(obj), flush=True)


def serve(workers: dict, argv: list) -> bool:
    """If argv is ``--_worker KIND ARGS``, run ``workers[KIND](args)`` and return True."""
    if argv[:1] != ["--_worker"]:
        return False
    workers[argv[1]](json.loads(argv[2]))
    return True


# --------------------------------------------------------------------------- parent side


def _main_script() -> str:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        raise BenchError("workers run the main script again: start the benchmark as a script")
    return os.path.abspath(path)


class Worker:
    """A child process running `script` (default: the running program) with --_worker KIND,
    under `python` (a command prefix; default this interpreter)."""

    live: list = []
    counter = 0

    def __init__(self, kind: str, args: dict, tmpdir: str, timeout: float = 900, script: str | None = None,
                 python: list | None = None):
        self.kind, self.timeout = kind, timeout
        Worker.counter += 1
        self.errpath = os.path.join(tmpdir, f"w{Worker.counter}-{kind}.err")
        self.err = open(self.errpath, "w")
        self.proc = subprocess.Popen(
            list(python or [sys.executable])
            + [os.path.abspath(script or _main_script()), "--_worker", kind, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            bufsize=1,
        )
        Worker.live.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def _line(self) -> str:
        r, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if r else ""
        if not line:
            tail = self.stderr_tail()  # before kill() closes the file
            self.kill()
            raise BenchError(f"worker {self.kind} failed:\n{tail}")
        return line

    def stderr_tail(self, n=2000):
        self.err.flush()
        with open(self.errpath) as f:
            return f.read()[-n:]

    def wait_ready(self):
        line = self._line()
        if line.strip() != "READY":
            raise BenchError(f"worker {self.kind}: unexpected {line!r}")

    def go(self, payload: str = ""):
        if "\n" in payload:
            raise ValueError("a GO payload is one line")
        try:
            self.proc.stdin.write(f"GO {payload}\n" if payload else "GO\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise BenchError(f"worker {self.kind} is gone ({e}):\n{self.stderr_tail()}")

    def result(self) -> dict:
        while True:
            line = self._line()
            if line.startswith("RESULT "):
                return json.loads(line[7:])  # reaped later: exit time is not timed

    def finish(self, timeout=60):
        """Wait for a normal exit (kill after timeout); reap."""
        try:
            self.proc.stdin.close()  # a worker still waiting for GO exits on EOF
        except Exception:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self):
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass
        self.err.close()
        if self in Worker.live:
            Worker.live.remove(self)

    @classmethod
    def kill_all(cls):
        for w in list(cls.live):
            w.kill()


def run_together(kind, args_list, tmpdir, script=None):
    """Start workers, wait until all are READY, release them at once, collect results."""
    ws = [Worker(kind, a, tmpdir, script=script) for a in args_list]
    ok = False
    try:
        for w in ws:
            w.wait_ready()
        for w in ws:
            w.go()
        out = [w.result() for w in ws]
        ok = True
        return out
    finally:
        for w in ws:
            w.finish() if ok else w.kill()


def run_one(kind, args, tmpdir, script=None):
    return run_together(kind, [args], tmpdir, script)[0]
