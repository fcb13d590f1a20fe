import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Warm Python workers for a run's Python steps.
///
/// `import vineyard` alone costs ~0.75 s (it pulls in pandas, pyarrow and scipy), paid again
/// by every step's fresh interpreter. The runner instead starts one *zygote* per run: a
/// Python process that imports the heavy modules once (`TRELLIS_PRELOAD`, default
/// `vineyard,numpy,pandas,trellis.accel`: the accelerated builders and get are in place
/// before a step starts) and forks a worker per step. The step's supervised process is a
/// thin stub (`python -S`, stdlib only) that hands the zygote its argv, environment, working
/// directory and stdin/stdout/stderr (over a `SOCK_SEQPACKET` socket, descriptors with
/// `SCM_RIGHTS`), forwards SIGTERM/SIGINT to the worker's process group and exits with the
/// worker's status. The worker runs in a session of its own and kills its group when the
/// stub's connection drops (the stub killed by a timeout or SIGKILL), so supervision works
/// as for a plain child. When the zygote is not (yet) listening, the stub simply `exec`s the
/// step's interpreter as before: the zygote only ever makes steps start sooner.
/// `TRELLIS_ZYGOTE=0` turns it off. A zygote started for a run also imports the installed
/// modules its Python steps' files import (never the step files themselves, nor modules
/// beside them): each step then starts with its libraries loaded, and a value one step gets
/// (a model whose unpickling imports scikit-learn) finds the library another step imported.
/// `TRELLIS_PRELOAD_STEPS=0` leaves that out.
public enum PythonZygote {
    public static let zygoteFileName = "trellis_zygote.py"
    /// The step files (`:`-separated) whose imported modules the zygote preloads as well,
    /// unless `TRELLIS_PRELOAD_STEPS=0`.
    static let preloadFromVariable = "TRELLIS_PRELOAD_FROM"
    public static let stubFileName = "trellis_stub.py"

    /// Zygotes are on unless `TRELLIS_ZYGOTE` is `0`.
    public static func isEnabled(environment: [String: String]) -> Bool {
        environment["TRELLIS_ZYGOTE"] != "0"
    }

    /// The zygote server: `python trellis_zygote.py --socket PATH [--detached]`. It serves
    /// while its parent lives, or, `--detached` (a runtime's), until SIGTERM or until its
    /// socket is removed.
    public static let zygoteSource = pythonSource(PackageResources.trellis_zygote_py)

    /// The stub a step's supervised process runs:
    /// `python -S trellis_stub.py --zygote SOCK --pid ZYGOTE_PID -- ARGV…`. While the zygote is
    /// alive but not yet listening (still preloading), the stub waits for it (up to 10 s).
    public static let stubSource = pythonSource(PackageResources.trellis_stub_py)
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
        prefix: [String] = [], stepFiles: [String] = []
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
            // The modules these files import are preloaded too (see trellis_zygote.py).
            if !stepFiles.isEmpty { environment[PythonZygote.preloadFromVariable] = stepFiles.joined(separator: ":") }
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
