"""Trellis flow zygote (written by the runner; do not edit): preloads modules, forks step workers."""
import atexit
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback


def _worker(conn, request, fds):
    try:
        os.setsid()
        sys.stdout.flush()
        sys.stderr.flush()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        # Fresh stdio objects on the step's descriptors, line-buffered like a step
        # started with PYTHONUNBUFFERED (the zygote's were made for its own log).
        sys.stdin = os.fdopen(0, "r", closefd=False)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for entry in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
            if entry and entry not in sys.path:
                sys.path.insert(0, entry)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

        def watch():
            # The stub left (killed, or its supervisor gave up): the step goes with it.
            try:
                while conn.recv(16):
                    pass
            except OSError:
                pass
            os.killpg(0, signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
        # The run's own bootstrap (its lib is first on PYTHONPATH), not the copy the
        # zygote preloaded, which may be older when the zygote is a runtime's.
        sys.modules.pop("trellis_step", None)
        import trellis_step
        argv = request["argv"]
        sys.argv = list(argv)
        try:
            code = trellis_step.main(argv[1:])
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = 1
        if code is None:
            code = 0
        elif not isinstance(code, int):
            sys.stderr.write("%s\n" % code)
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except BaseException:
        traceback.print_exc()
        os._exit(70)


def step_imports(files):
    """The absolute modules the Python files import, at any depth, in order, each once:
    ``import a.b`` gives ``a.b``; ``from a.b import c`` gives ``a.b`` and, when ``c`` is a
    submodule rather than a name in ``a.b``, ``a.b.c`` (marked optional: tried only if it
    exists). Files that cannot be read or parsed add nothing. Returns (name, optional)."""
    import ast
    found = {}
    for path in files:
        try:
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [(alias.name, False) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [(node.module, False)] + [
                    (node.module + "." + alias.name, True) for alias in node.names if alias.name != "*"]
            else:
                continue
            for name, optional in names:
                if name.split(".")[0] != "__future__":
                    found[name] = found.get(name, True) and optional
    return list(found.items())


def installed(name, beside):
    """Whether module ``name`` resolves to an installed module (standard library or
    site-packages), not to one in the directories ``beside`` (the steps' own, which a step
    may change between runs and which the step's environment decides)."""
    import importlib.util
    top = name.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    places = list(spec.submodule_search_locations or []) + ([spec.origin] if spec.origin else [])
    for place in places:
        if place in ("built-in", "frozen"):
            continue
        real = os.path.realpath(place)
        if any(real == d or real.startswith(d + os.sep) for d in beside):
            return False
    return True


def preload(names, optional=()):
    import importlib.util
    for name in names:
        name = name.strip()
        if not name:
            continue
        try:
            if name in optional and importlib.util.find_spec(name) is None:
                continue  # `from a import b` where b is a name in a, not a module
            __import__(name)
        except Exception as e:  # a missing module only costs the step its import
            if name not in optional:
                sys.stderr.write("trellis zygote: cannot preload %s: %s\n" % (name, e))


def preload_step_imports(files):
    """Imports the installed modules the step files import (``step_imports``, ``installed``):
    never modules beside the files or in the working directory."""
    beside = {os.path.realpath(os.path.dirname(f)) for f in files} | {os.path.realpath(os.getcwd())}
    wanted = [(n, optional) for n, optional in step_imports(files) if installed(n, beside)]
    preload([n for n, _ in wanted], optional={n for n, optional in wanted if optional})


def main():
    path = sys.argv[sys.argv.index("--socket") + 1]
    detached = "--detached" in sys.argv
    parent = os.getppid()
    preload(os.environ.get("TRELLIS_PRELOAD", "vineyard,numpy,pandas,trellis.accel").split(","))
    files = [f for f in os.environ.get("TRELLIS_PRELOAD_FROM", "").split(":") if f]
    if files and os.environ.get("TRELLIS_PRELOAD_STEPS", "1") != "0":
        preload_step_imports(files)
    __import__("trellis_step")  # preloaded: a forked worker finds it in sys.modules

    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except OSError:
        pass
    server.bind(tmp)
    os.chmod(tmp, 0o600)  # it runs whatever a peer sends: its owner only
    server.listen(64)
    os.rename(tmp, path)  # appears only when ready
    ident = os.stat(path).st_ino

    def serving():
        if not detached:
            return os.getppid() == parent
        try:
            return os.stat(path).st_ino == ident
        except OSError:
            return False
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # A worker's exit wakes the loop at once (SIGCHLD through a pipe), so the stub
    # learns its status without polling delay.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {}
    try:
        while serving():
            ready, _, _ = select.select([server, wake_r], [], [], 0.5)
            if wake_r in ready:
                os.read(wake_r, 512)
            if server in ready:
                conn, _ = server.accept()
                try:
                    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                    request = json.loads(message)
                except (OSError, ValueError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(wake_r)
                    os.close(wake_w)
                    server.close()
                    for other in children.values():
                        other.close()
                    _worker(conn, request, fds)
                for fd in fds:
                    os.close(fd)
                try:
                    conn.send(b"%d" % pid)
                except OSError:
                    pass
                children[pid] = conn
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                conn = children.pop(pid, None)
                try:
                    os.killpg(pid, signal.SIGKILL)  # what the step left behind
                except OSError:
                    pass
                if conn is not None:
                    try:
                        conn.send(b"%d" % os.waitstatus_to_exitcode(status))
                    except OSError:
                        pass
                    conn.close()
    finally:
        for pid in list(children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    main()
