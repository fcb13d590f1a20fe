"""Trellis flows from Python, in the seed's chaining style.

    from trellis.flow import Flow, Runtime

    def preprocess():
        import vineyard
        ...
        vineyard.put(X_train, name="x_train", persist=True)

    def train():
        import vineyard
        x = vineyard.get(name="x_train", fetch=True)
        ...

    run = Flow(runtime=Runtime(replicas=2, size="30Gi")) \\
        .process(preprocess).process(train) \\
        .run(run_id="linear-regression")
    run.wait()

Each function becomes a step: its source is written to a file and run by the Trellis
runner (never pasted into a shell), so imports go inside the function, as in the seed.
The objects a step reads and writes are found in its source (string-literal ``name=`` of
``put``/``get`` calls) so placement can put a step next to its inputs; pass ``inputs=`` /
``outputs=`` to ``process`` to state them yourself. This builds the same flow model as the
YAML file and the Swift API, and runs it with ``trellis flow run``.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ._binary import find_trellis

__all__ = ["Flow", "FlowFailed", "Run", "Runtime", "infer_names"]

_STEP_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class FlowFailed(RuntimeError):
    """The run failed or was cancelled; ``record`` is the run record (a dict)."""

    def __init__(self, message: str, record: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.record = record


class Runtime:
    """Replicas the flow runs on: ``replicas`` daemons of ``size`` each.

    ``medium`` is ``"memory"`` or ``"spill"`` (memory with spill to ``spill_dir``).
    ``huge_pages`` takes each replica's arena from the kernel's hugetlb pool, pre-faulted
    (the pool must hold ``replicas * size``; see /proc/sys/vm/nr_hugepages).
    """

    def __init__(self, replicas: int = 1, size: str = "1Gi", medium: str = "memory",
                 spill_dir: Optional[str] = None, huge_pages: bool = False) -> None:
        if medium not in ("memory", "spill"):
            raise ValueError("medium must be 'memory' or 'spill'")
        if medium == "spill" and not spill_dir:
            raise ValueError("medium 'spill' needs spill_dir")
        self.replicas = int(replicas)
        self.size = str(size)
        self.medium = medium
        self.spill_dir = spill_dir
        self.huge_pages = bool(huge_pages)

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"replicas": self.replicas, "size": self.size, "medium": self.medium}
        if self.huge_pages:
            d["huge_pages"] = True
        if self.spill_dir:
            d["spill_dir"] = os.path.abspath(self.spill_dir)
        return d


def infer_names(source: str) -> Tuple[List[str], List[str]]:
    """Object names a function's source reads and writes: ``(inputs, outputs)``.

    Counts string-literal names only: ``*.put(..., name="x")`` and ``*.put_name(obj, "x")``
    write ``x``; ``*.get(name="x")`` and ``*.get_name("x")`` read it.
    """
    tree = ast.parse(textwrap.dedent(source))
    inputs: List[str] = []
    outputs: List[str] = []

    def literal(node: ast.AST) -> Optional[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return None

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            fname = func.attr
        elif isinstance(func, ast.Name):
            fname = func.id
        else:
            continue
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        name = literal(keywords["name"]) if "name" in keywords else None
        if fname == "put" and name:
            outputs.append(name)
        elif fname == "get" and name:
            inputs.append(name)
        elif fname == "put_name" and len(node.args) >= 2:
            put = literal(node.args[1])
            if put:
                outputs.append(put)
        elif fname == "get_name" and node.args:
            got = literal(node.args[0])
            if got:
                inputs.append(got)

    def unique(names: List[str]) -> List[str]:
        seen: set = set()
        out: List[str] = []
        for n in names:
            if n not in seen:
                seen.add(n)
                out.append(n)
        return out

    outputs = unique(outputs)
    inputs = [n for n in unique(inputs) if n not in outputs]
    return inputs, outputs


class _Step:
    def __init__(self, name: str, function: Optional[Callable[[], Any]] = None,
                 command: Optional[List[str]] = None, file: Optional[str] = None,
                 inputs: Optional[Sequence[str]] = None, outputs: Optional[Sequence[str]] = None,
                 after: Optional[Sequence[str]] = None, env: Optional[Dict[str, str]] = None,
                 retries: int = 0, retry_delay: Optional[float] = None, timeout: Optional[float] = None,
                 chained_after: Optional[str] = None, interpreter: Optional[str] = None,
                 kubernetes: Optional[Dict[str, Any]] = None) -> None:
        self.name = name
        self.kubernetes = dict(kubernetes) if kubernetes else None
        self.function = function
        self.command = command
        self.file = file
        self.declared_inputs = inputs
        self.declared_outputs = outputs
        self.after = list(after) if after is not None else None
        self.chained_after = chained_after
        self.env = dict(env or {})
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.interpreter = interpreter
        self.inferred_inputs: List[str] = []
        self.inferred_outputs: List[str] = []
        self.source: Optional[str]
        if function is not None:
            self.source = textwrap.dedent(inspect.getsource(function))
            self.inferred_inputs, self.inferred_outputs = infer_names(self.source)
        else:
            self.source = None

    @property
    def outputs(self) -> List[str]:
        return list(self.declared_outputs) if self.declared_outputs is not None else self.inferred_outputs


class Flow:
    """A flow built by chaining ``process`` calls (each step runs after the previous one,
    like the seed's ``runAfter``, and next to its inputs)."""

    def __init__(self, runtime: Optional[Runtime] = None, name: str = "flow",
                 max_parallel: Optional[int] = None) -> None:
        self.runtime = runtime or Runtime()
        self.name = name
        self.max_parallel = max_parallel
        self.steps: List[_Step] = []

    def process(self, function: Optional[Callable[[], Any]] = None, *, name: Optional[str] = None,
                command: Optional[Sequence[str]] = None, file: Optional[str] = None,
                inputs: Optional[Sequence[str]] = None, outputs: Optional[Sequence[str]] = None,
                after: Optional[Sequence[str]] = None, env: Optional[Dict[str, str]] = None,
                retries: int = 0, retry_delay: Optional[float] = None, timeout: Optional[float] = None,
                interpreter: Optional[str] = None, kubernetes: Optional[Dict[str, Any]] = None) -> "Flow":
        """Adds a step and returns the flow (for chaining).

        ``function``: a plain module-level function with no arguments (imports inside it); or
        ``command`` (an argument list) or ``file`` (a Python script) instead.
        ``after``: steps to wait for; default: the previous step of the chain (``[]`` for none).
        ``timeout`` and ``retry_delay`` are seconds. ``kubernetes``: what the step's pod adds on
        a cluster — ``image``, ``packages`` (pip requirements installed in the pod first),
        ``pip_index_url``, ``volumes`` and ``volume_mounts`` (Kubernetes objects as dicts);
        local runs ignore it.
        """
        given = [x for x in (function, command, file) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of function, command, file")
        if function is not None:
            if not callable(function) or getattr(function, "__name__", "<lambda>") == "<lambda>":
                raise ValueError("process() takes a named function (def ...), not a lambda")
            if inspect.signature(function).parameters:
                raise ValueError("step function %s must take no arguments" % function.__name__)
        step_name = name or (function.__name__ if function is not None else None)
        if not step_name:
            raise ValueError("a command or file step needs name=")
        if not set(step_name) <= _STEP_NAME_CHARS:
            raise ValueError("step name %r: use letters, digits, '.', '_' and '-'" % step_name)
        if any(s.name == step_name for s in self.steps):
            raise ValueError("step %r is already in the flow (pass name=...)" % step_name)
        chained = self.steps[-1].name if self.steps and after is None else None
        self.steps.append(_Step(
            step_name, function=function, command=list(command) if command is not None else None,
            file=file, inputs=inputs, outputs=outputs, after=after, env=env, retries=retries,
            retry_delay=retry_delay, timeout=timeout, chained_after=chained, interpreter=interpreter,
            kubernetes=kubernetes))
        return self

    def to_dict(self, source_dir: str, base_dir: Optional[str] = None) -> Dict[str, Any]:
        """The flow in the YAML front door's shape; function sources are written to
        ``source_dir/<step>.py``."""
        os.makedirs(source_dir, exist_ok=True)
        base = os.path.abspath(base_dir or os.getcwd())

        def under_base(path: str) -> str:
            # Files inside the base directory are written relative to it: a cluster run ships
            # them with the flow (an absolute path names a file of the step's image).
            rel = os.path.relpath(path, base)
            return path if rel == ".." or rel.startswith("../") else rel

        produced: set = set()
        for s in self.steps:
            produced.update(s.outputs)
        steps = []
        for s in self.steps:
            d: Dict[str, Any] = {"name": s.name}
            if s.function is not None:
                assert s.source is not None
                path = os.path.join(os.path.abspath(source_dir), s.name + ".py")
                with open(path, "w") as f:
                    f.write("# step %r of flow %r, generated by trellis.flow from %s\n\n"
                            % (s.name, self.name, inspect.getsourcefile(s.function)))
                    f.write(s.source)
                d["python"] = {"file": under_base(path), "function": s.function.__name__,
                               "interpreter": s.interpreter or sys.executable}
            elif s.file is not None:
                d["python"] = {"file": under_base(os.path.abspath(s.file)),
                               "interpreter": s.interpreter or sys.executable}
            else:
                d["command"] = s.command
            if s.declared_inputs is not None:
                inputs = list(s.declared_inputs)
            else:
                # Inferred reads of names no step produces are objects from elsewhere: not inputs.
                inputs = [n for n in s.inferred_inputs if n in produced]
            if inputs:
                d["inputs"] = inputs
            if s.outputs:
                d["outputs"] = s.outputs
            after = s.after if s.after is not None else ([s.chained_after] if s.chained_after else [])
            if after:
                d["after"] = after
            if s.env:
                d["env"] = s.env
            if s.retries:
                d["retries"] = s.retries
            if s.retry_delay is not None:
                d["retry_delay"] = float(s.retry_delay)
            if s.timeout is not None:
                d["timeout"] = float(s.timeout)
            if s.kubernetes:
                d["kubernetes"] = s.kubernetes
            steps.append(d)
        out: Dict[str, Any] = {"name": self.name, "runtime": self.runtime.to_dict(), "steps": steps}
        if self.max_parallel:
            out["max_parallel"] = self.max_parallel
        out["base_dir"] = base
        return out

    def save(self, directory: str, base_dir: Optional[str] = None) -> str:
        """Writes ``directory/flow.yaml`` (JSON, which is YAML) and the step sources; returns
        the file's path."""
        spec = self.to_dict(directory, base_dir=base_dir)
        path = os.path.join(directory, "flow.yaml")
        with open(path, "w") as f:
            json.dump(spec, f, indent=2)
            f.write("\n")
        return path

    def run(self, run_id: Optional[str] = None, keep: bool = False, trellis: Optional[str] = None,
            home: Optional[str] = None, quiet: bool = False, log: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, extra_args: Sequence[str] = (),
            base_dir: Optional[str] = None) -> "Run":
        """Starts ``trellis flow run`` on the flow and returns a :class:`Run` (call ``wait()``).

        ``trellis``: the binary (default ``$TRELLIS_BIN``, else ``trellis`` in ``PATH``).
        ``home``: Trellis's state directory (default ``$TRELLIS_HOME`` or ``~/.trellis``).
        ``log``: a file for the runner's own output (progress, the final status) instead of
        this process's stdout/stderr. ``env``: the runner's (and so the steps') environment.
        ``base_dir``: the flow's base directory (default: the current directory).
        """
        binary = find_trellis(trellis)
        home = home or _home()
        run_id = run_id or _run_id(self.name)
        directory = os.path.join(home, "flows", run_id)
        path = self.save(directory, base_dir=base_dir)
        argv = [binary, "flow", "run", path, "--run-id", run_id] + list(extra_args)
        if keep:
            argv.append("--keep")
        run_env = dict(os.environ if env is None else env, TRELLIS_HOME=home)
        out: Union[int, IO[bytes], None] = subprocess.DEVNULL if quiet else None
        err: Union[int, IO[bytes], None] = None
        log_file: Optional[IO[bytes]] = None
        if log is not None:
            log_file = open(log, "ab")
            out = err = log_file
        try:
            proc = subprocess.Popen(argv, env=run_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        finally:
            if log_file is not None:
                log_file.close()
        return Run(run_id, home, proc)


class Run:
    """A started run."""

    def __init__(self, run_id: str, home: Optional[str] = None,
                 process: Optional["subprocess.Popen[bytes]"] = None) -> None:
        self.run_id = run_id
        self.home = home or _home()
        self.process = process
        self.record: Optional[Dict[str, Any]] = None

    @property
    def record_path(self) -> str:
        return os.path.join(self.home, "runs", self.run_id, "record.json")

    def status(self) -> Optional[Dict[str, Any]]:
        """The run record as it is now (a dict), or ``None`` before it exists."""
        try:
            with open(self.record_path) as f:
                record: Dict[str, Any] = json.load(f)
                return record
        except (OSError, ValueError):
            return None

    def wait(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits for the run; returns the final record; raises :class:`FlowFailed` naming the
        failed step and its log if the run did not succeed."""
        if self.process is not None:
            self.process.wait(timeout=timeout)
        else:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                r = self.status()
                if r and r.get("state") != "running":
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("run %s still running" % self.run_id)
                time.sleep(0.2)
        self.record = self.status()
        if self.record is None:
            raise FlowFailed("run %s left no record (did trellis start?)" % self.run_id)
        if self.record.get("state") != "succeeded":
            raise FlowFailed(self.record.get("message") or "run %s %s" % (self.run_id, self.record.get("state")),
                             self.record)
        return self.record

    def step(self, name: str) -> Optional[Dict[str, Any]]:
        """The record of one step (after :meth:`wait` or :meth:`status`)."""
        record = self.record or self.status() or {}
        for s in record.get("steps", []):
            if s["name"] == name:
                step: Dict[str, Any] = s
                return step
        return None


def _home() -> str:
    return os.environ.get("TRELLIS_HOME") or os.path.join(os.path.expanduser("~"), ".trellis")


def _run_id(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "flow"
    return "%s-%s-%04x" % (safe, time.strftime("%Y%m%d-%H%M%S", time.gmtime()), random.getrandbits(16))
