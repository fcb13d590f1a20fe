import Testing
import TrellisClient
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// Paths of the things the tests run.
enum Paths {
    /// The repository root, from this file's location.
    static let repository: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        while let last = parts.last, last != "Tests" { parts.removeLast() }
        parts.removeLast()
        return parts.joined(separator: "/")
    }()

    /// The `trellis` binary: `$TRELLIS_BIN`, else the one built next to these tests.
    static var trellis: String {
        if let p = getenv("TRELLIS_BIN") { return String(cString: p) }
        // The test bundle lives in <scratch>/debug/; the binary beside it.
        for candidate in [".build-client/debug/trellis", ".build/debug/trellis"] {
            let path = repository + "/" + candidate
            if access(path, X_OK) == 0 { return path }
        }
        return repository + "/.build/debug/trellis"
    }

    static var python: String { repository + "/.venv/bin/python" }
    /// The reference daemon shipped in the vineyard wheel (vineyard-bdist), if installed.
    static var vineyardd: String? {
        let path = repository + "/.venv/lib/python3.11/site-packages/vineyard/bdist/vineyardd"
        return access(path, X_OK) == 0 ? path : nil
    }
    static var hasPython: Bool { access(python, X_OK) == 0 }
    static var interop: String { repository + "/tests/interop" }
}

/// What a finished child process left behind.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Spawns and reaps child processes (posix_spawn), by pid only.
enum Subprocess {
    /// Starts `argv` with stdout/stderr going to `outputPath` (or /dev/null); returns the pid.
    static func start(_ argv: [String], outputPath: String? = nil, environment: [String: String] = [:]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let out = outputPath ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        return try spawn(argv, &actions, environment)
    }

    /// Runs `argv` to completion, capturing stdout and stderr.
    static func run(_ argv: [String], environment: [String: String] = [:], input: String? = nil) throws -> ProcessResult {
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw SystemError("pipe") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        for fd in outPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }
        let pid: pid_t
        do {
            pid = try spawn(argv, &actions, environment)
        } catch {
            for fd in outPipe + errPipe { close(fd) }
            throw error
        }
        close(outPipe[1])
        close(errPipe[1])
        // Drain both pipes (stderr on a thread so that neither can fill up and block the child).
        let errBox = Box()
        let errFD = errPipe[0]
        let done = Semaphore()
        try spawnThread(name: "stderr") {
            errBox.text = readAll(errFD)
            done.signal()
        }
        let stdout = readAll(outPipe[0])
        done.wait()
        close(outPipe[0])
        close(errPipe[0])
        return ProcessResult(status: wait(pid), stdout: stdout, stderr: errBox.text)
    }

    private static func spawn(
        _ argv: [String], _ actions: inout posix_spawn_file_actions_t, _ environment: [String: String]
    ) throws -> pid_t {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        for (k, v) in environment { env[k] = v }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for a in cArgs { free(a) }
            for e in cEnv { free(e) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
        guard rc == 0 else { throw SystemError("posix_spawn(\(argv[0]))", errno: rc) }
        return pid
    }

    /// Waits for `pid` and returns its exit status (128 + signal when killed).
    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status & 0x7F == 0 { return (status >> 8) & 0xFF }
        return 128 + (status & 0x7F)
    }

    private static func readAll(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                bytes.append(contentsOf: chunk[0..<n])
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private final class Box: @unchecked Sendable {
        // Sendable: written by one thread before `done.signal()`, read after `done.wait()`.
        var text = ""
    }
}

/// A counting semaphore on a mutex and condition variable.
final class Semaphore: @unchecked Sendable {
    // Sendable: all state is behind the pthread mutex.
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var count = 0

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    func signal() {
        pthread_mutex_lock(&mutex)
        count += 1
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    func wait() {
        pthread_mutex_lock(&mutex)
        while count == 0 { pthread_cond_wait(&cond, &mutex) }
        count -= 1
        pthread_mutex_unlock(&mutex)
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&cond)
    }
}

/// A `trellis serve` child process on a short socket path under /tmp, stopped by pid.
///
/// The daemon runs under a small `sh` guard that also stops it if this test process dies
/// (a crashed test must not leave a daemon behind).
final class DaemonProcess: @unchecked Sendable {
    // Sendable: immutable after init; stop() is called once, by the test that started it.
    /// The guard shell's pid.
    let guardPID: pid_t
    /// The daemon's pid.
    let pid: pid_t
    let directory: String
    let socketPath: String
    let logPath: String

    /// Starts the daemon with an arena of `size` (vineyardd syntax, e.g. "256Mi") and waits
    /// until its socket accepts connections; `upstream` runs the reference vineyardd instead.
    init(size: String = "256Mi", rpc: Bool = false, upstream: Bool = false) throws {
        var template = Array("/tmp/trcXXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SystemError("mkdtemp") }
        directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        socketPath = directory + "/d.sock"
        logPath = directory + "/daemon.log"
        let pidPath = directory + "/daemon.pid"
        let command = upstream ? [Paths.vineyardd ?? "vineyardd", "--meta", "local"] : [Paths.trellis, "serve"]
        let script = """
            "$0" "$@" & d=$!
            echo $d > \(pidPath)
            while kill -0 \(getpid()) 2>/dev/null && kill -0 $d 2>/dev/null; do sleep 0.5; done
            kill $d 2>/dev/null; wait $d
            """
        guardPID = try Subprocess.start(
            ["/bin/sh", "-c", script] + command + ["--socket", socketPath, "--size", size]
                + (rpc ? ["--rpc_socket_port", "0"] : ["--norpc"]),
            outputPath: logPath)
        var daemon: pid_t = 0
        for _ in 0..<400 {
            if daemon == 0, let text = readTextFile(pidPath), let p = pid_t(text.split(separator: "\n").first ?? "") {
                daemon = p
            }
            if daemon != 0, let c = try? Client(socket: socketPath) {
                c.close()
                break
            }
            var status: Int32 = 0
            if waitpid(guardPID, &status, WNOHANG) == guardPID {
                throw SystemError("trellis serve exited early (status \(status)); see \(logPath)", errno: ECHILD)
            }
            usleep(25_000)
        }
        pid = daemon
        guard daemon != 0, access(socketPath, F_OK) == 0 else {
            stop()
            throw SystemError("trellis serve did not open \(socketPath) within 10 s", errno: ETIMEDOUT)
        }
    }

    /// A new connection to this daemon.
    func connect() throws -> Client { try Client(socket: socketPath) }

    /// A new RPC (TCP) connection to this daemon, at the port its registration reports.
    func connectRPC() throws -> Client {
        let ipc = try connect()
        defer { ipc.close() }
        let endpoint = ipc.server.rpcEndpoint
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]), port > 0 else {
            throw SystemError("no RPC endpoint in \(endpoint)", errno: EINVAL)
        }
        return try Client(host: "127.0.0.1", port: port)
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after 5 s), reaps its guard, removes its files.
    func stop() {
        if pid > 0 { kill(pid, SIGTERM) }
        var status: Int32 = 0
        var reaped = false
        for _ in 0..<200 {
            if waitpid(guardPID, &status, WNOHANG) == guardPID {
                reaped = true
                break
            }
            usleep(25_000)
        }
        if !reaped {
            if pid > 0 { kill(pid, SIGKILL) }
            kill(guardPID, SIGKILL)
            _ = Subprocess.wait(guardPID)
        }
        for f in [socketPath, logPath, directory + "/daemon.pid"] { unlink(f) }
        rmdir(directory)
    }

    /// Runs `body` with a fresh daemon, stopping it afterwards whatever happens.
    static func with<R>(
        size: String = "256Mi", rpc: Bool = false, upstream: Bool = false, _ body: (DaemonProcess) throws -> R
    ) throws -> R {
        let d = try DaemonProcess(size: size, rpc: rpc, upstream: upstream)
        defer { d.stop() }
        return try body(d)
    }
}

/// The contents of a small text file, or nil.
func readTextFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// The error `body` throws, or nil (recording an issue) when it succeeds.
func failure(_ body: () throws(ClientError) -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> ClientError? {
    do {
        try body()
        Issue.record("expected a ClientError", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}
