import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Warm Python workers for a run's Python steps.
///
/// `import vineyard` alone costs ~0.75 s (it pulls in pandas, pyarrow and scipy), paid again
/// by every step's fresh interpreter. The runner instead starts one *zygote* per run: a
/// Python process that imports the heavy modules once (`TRELLIS_PRELOAD`, default
/// `vineyard,numpy,pandas`) and forks a worker per step. The step's supervised process is a
/// thin stub (`python -S`, stdlib only) that hands the zygote its argv, environment, working
/// directory and stdin/stdout/stderr (over a `SOCK_SEQPACKET` socket, descriptors with
/// `SCM_RIGHTS`), forwards SIGTERM/SIGINT to the worker's process group and exits with the
/// worker's status. The worker runs in a session of its own and kills its group when the
/// stub's connection drops (the stub killed by a timeout or SIGKILL), so supervision works
/// as for a plain child. When the zygote is not (yet) listening, the stub simply `exec`s the
/// step's interpreter as before: the zygote only ever makes steps start sooner.
/// `TRELLIS_ZYGOTE=0` turns it off.
public enum PythonZygote {
    public static let zygoteFileName = "trellis_zygote.py"
    public static let stubFileName = "trellis_stub.py"

    /// Zygotes are on unless `TRELLIS_ZYGOTE` is `0`.
    public static func isEnabled(environment: [String: String]) -> Bool {
        environment["TRELLIS_ZYGOTE"] != "0"
    }

    /// The zygote server: `python trellis_zygote.py --socket PATH [--detached]`. It serves
    /// while its parent lives, or, `--detached` (a runtime's), until SIGTERM or until its
    /// socket is removed.
    public static let zygoteSource: String = #"""
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


        def main():
            path = sys.argv[sys.argv.index("--socket") + 1]
            detached = "--detached" in sys.argv
            parent = os.getppid()
            for name in os.environ.get("TRELLIS_PRELOAD", "vineyard,numpy,pandas").split(","):
                name = name.strip()
                if name:
                    try:
                        __import__(name)
                    except Exception as e:  # a missing module only costs the step its import
                        sys.stderr.write("trellis zygote: cannot preload %s: %s\n" % (name, e))
            import trellis_step  # noqa: F401

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
        """#

    /// The stub a step's supervised process runs:
    /// `python -S trellis_stub.py --zygote SOCK --pid ZYGOTE_PID -- ARGV…`. While the zygote is
    /// alive but not yet listening (still preloading), the stub waits for it (up to 10 s).
    public static let stubSource: String = #"""
        """Trellis step stub (written by the runner; do not edit): runs ARGV in a worker forked by the zygote."""
        import json
        import os
        import signal
        import socket
        import sys
        import time


        def main():
            split = sys.argv.index("--")
            path = sys.argv[sys.argv.index("--zygote") + 1]
            argv = sys.argv[split + 1:]
            interpreter = os.environ.get("TRELLIS_STUB_PYTHON") or sys.executable
            zygote = int(sys.argv[sys.argv.index("--pid") + 1]) if "--pid" in sys.argv[:split] else 0
            # A zygote still preloading is as fast as a cold start: wait for it while it lives.
            deadline = time.monotonic() + 10
            while zygote and not os.path.exists(path) and time.monotonic() < deadline:
                try:
                    os.kill(zygote, 0)
                except OSError:
                    break
                time.sleep(0.01)
            try:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                conn.connect(path)
                message = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
                socket.send_fds(conn, [message], [0, 1, 2])
                pid = int(conn.recv(64))
            except (OSError, ValueError):
                os.execv(interpreter, [interpreter] + argv)  # no zygote: start the step cold

            def forward(signum, _frame):
                try:
                    os.killpg(pid, signum)
                except OSError:
                    pass

            signal.signal(signal.SIGTERM, forward)
            signal.signal(signal.SIGINT, forward)
            reply = conn.recv(64)
            if not reply:
                sys.stderr.write("trellis: the zygote went away while the step ran\n")
                sys.exit(70)
            code = int(reply)
            if code < 0:
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            sys.exit(code)


        main()
        """#
}

/// A running zygote: where it listens, on which interpreter, and how to stop it.
///
/// The runner starts one per run; ``FlowLauncher`` starts it before the runtime instead, so
/// that the interpreter's imports overlap the replicas' start-up rather than the first step.
public struct WarmZygote: Sendable {
    /// The zygote's socket.
    public let socket: String
    /// The interpreter it runs on; only steps on the same interpreter use it.
    public let interpreter: String
    /// Its directory (the scripts).
    public let directory: String
    /// Its stdout and stderr.
    public let logPath: String
    /// Its pid (also its session and process group).
    public let pid: Int32
    /// Our child when we started it (nil when attached to a runtime's zygote).
    let process: ChildProcess?

    /// The zygote a runtime keeps (started by another process).
    public init(attachingTo info: ZygoteInfo) {
        socket = info.socket
        interpreter = info.interpreter
        directory = info.directory
        logPath = info.process.log
        pid = info.process.pid
        process = nil
    }

    init(socket: String, interpreter: String, directory: String, logPath: String, process: ChildProcess) {
        self.socket = socket
        self.interpreter = interpreter
        self.directory = directory
        self.logPath = logPath
        self.pid = process.pid
        self.process = process
    }

    /// Writes the zygote, stub and step bootstrap scripts into `directory` (first on the
    /// zygote's `PYTHONPATH`: it preloads the bootstrap) and starts
    /// `interpreter trellis_zygote.py --socket …` in a session of its own. The socket is
    /// `<directory>/z.sock`, or a short path under `/tmp` when that would not fit a socket
    /// address (108 bytes). Nil when it cannot start: steps then start cold.
    public static func launch(
        interpreter: String, directory: String, log: String, environment: [String: String], detached: Bool = false,
        prefix: [String] = []
    ) -> WarmZygote? {
        var socket = directory + "/z.sock"
        if socket.utf8.count > 100 {
            socket = "/tmp/trellis-z\(getuid())-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try PythonZygote.zygoteSource.write(
                toFile: directory + "/" + PythonZygote.zygoteFileName, atomically: true, encoding: .utf8)
            try PythonZygote.stubSource.write(
                toFile: directory + "/" + PythonZygote.stubFileName, atomically: true, encoding: .utf8)
            try PythonBootstrap.source.write(
                toFile: directory + "/" + PythonBootstrap.fileName, atomically: true, encoding: .utf8)
            var environment = environment
            prependPythonPath(directory, to: &environment)
            unlink(socket)
            // `prefix` (`ip netns exec NS`) starts it elsewhere; it execs, so the pid stays the zygote's.
            let argv = prefix + [interpreter, directory + "/" + PythonZygote.zygoteFileName, "--socket", socket]
                + (detached ? ["--detached"] : [])
            let process = try ChildProcess.spawn(
                executable: argv[0], arguments: Array(argv.dropFirst()),
                environment: environment, workingDirectory: directory, stdout: .file(log), stderr: .file(log),
                newSession: true)
            return WarmZygote(
                socket: socket, interpreter: interpreter, directory: directory, logPath: log, process: process)
        } catch {
            return nil
        }
    }

    /// Stops a zygote we started (its workers are in sessions of their own) and removes its
    /// socket; an attached one belongs to its runtime and is left alone.
    public func stop() {
        guard let process else { return }
        _ = process.signalGroup(SIGTERM)
        unlink(socket)
        Task.detached { _ = await process.wait() }  // reap it
    }
}

/// Puts `directory` first on the environment's `PYTHONPATH`.
func prependPythonPath(_ directory: String, to env: inout [String: String]) {
    env["PYTHONPATH"] = env["PYTHONPATH"].map { $0.isEmpty ? directory : "\(directory):\($0)" } ?? directory
}

/// `name` as a path, found on the environment's `PATH` as a spawn would (symlinks kept: a
/// venv's `python3` is not its base interpreter); `name` itself when not found. Zygotes are
/// matched to steps by this, so that a step never runs on another interpreter.
func resolveExecutable(_ name: String, environment: [String: String]) -> String {
    (try? ChildProcess.resolve(name, environment: environment, workingDirectory: nil)) ?? name
}

extension ZygoteInfo {
    /// Its process is alive and still this zygote (not a reused pid).
    public var isRunning: Bool {
        guard isAlive(process.pid),
            let cmdline = FileManager.default.contents(atPath: "/proc/\(process.pid)/cmdline")
        else { return false }
        return String(decoding: cmdline, as: UTF8.self).contains(directory + "/" + PythonZygote.zygoteFileName)
    }
}
