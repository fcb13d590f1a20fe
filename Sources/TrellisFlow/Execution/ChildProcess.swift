import Foundation
import TrellisSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a child process ended.
public struct ExitStatus: Codable, Sendable, Equatable {
    /// Exit code when it exited normally.
    public var code: Int32?
    /// Signal number when a signal ended it.
    public var signal: Int32?

    init(waitStatus s: Int32) {
        if s & 0x7f == 0 {
            code = (s >> 8) & 0xff
            signal = nil
        } else {
            code = nil
            signal = s & 0x7f
        }
    }

    /// Creates a status.
    public init(code: Int32?, signal: Int32?) {
        self.code = code
        self.signal = signal
    }

    /// Exited with 0.
    public var succeeded: Bool { code == 0 }

    /// `exit 3` or `signal 9`.
    public var description: String {
        if let c = code { return "exit \(c)" }
        return "signal \(signal ?? 0)"
    }
}

/// An error starting a process.
public struct SpawnError: Error, CustomStringConvertible, Sendable {
    /// What failed.
    public var message: String
    /// The message.
    public var description: String { message }
}

/// A child started with `posix_spawn` in its own process group (or session), with stdin from
/// `/dev/null`, stdout/stderr appended to files, default signal dispositions and an empty
/// signal mask (so a parent that ignores SIGINT/SIGTERM does not pass that on).
///
/// Killing the group (``signalGroup(_:)``) reaches everything the step started, and a Ctrl-C in
/// the runner's terminal reaches only the runner, which then cancels cleanly.
public final class ChildProcess: Sendable {
    /// The child's pid, which is also its process-group id.
    public let pid: pid_t

    private init(pid: pid_t) { self.pid = pid }

    /// Where a child's output goes.
    public enum Output: Sendable {
        /// Append to this file (created if needed).
        case file(String)
        /// Discard.
        case null
    }

    /// Starts a child.
    ///
    /// - Parameters:
    ///   - executable: a path (relative ones are taken relative to `workingDirectory`), or a
    ///     bare name looked up in the child's `PATH`.
    ///   - newSession: start a new session (detached from the terminal: for daemons that must
    ///     outlive the caller); otherwise a new process group.
    public static func spawn(
        executable: String, arguments: [String], environment: [String: String], workingDirectory: String?,
        stdout: Output, stderr: Output, newSession: Bool = false
    ) throws -> ChildProcess {
        let path = try resolve(executable, environment: environment, workingDirectory: workingDirectory)
        var fa = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fa)
        defer { posix_spawn_file_actions_destroy(&fa) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }

        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)
        func redirect(_ fd: Int32, _ o: Output) {
            switch o {
            case .file(let p): posix_spawn_file_actions_addopen(&fa, fd, p, O_WRONLY | O_CREAT | O_APPEND, RunPermissions.current.file)
            case .null: posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", O_WRONLY, 0)
            }
        }
        redirect(1, stdout)
        redirect(2, stderr)
        if let wd = workingDirectory {
            guard let addchdir = ChildProcess.addchdir else {
                throw SpawnError(message: "this C library cannot set a child's working directory")
            }
            let rc = wd.withCString { addchdir(&fa, $0) }
            guard rc == 0 else { throw SpawnError(message: "cannot use working directory \(wd): \(errnoText(rc))") }
        }

        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var flags = Int32(POSIX_SPAWN_SETSIGDEF) | Int32(POSIX_SPAWN_SETSIGMASK)
        #if os(Linux)
        // glibc's POSIX_SPAWN_SETSID (not imported into Swift).
        let setsid: Int32 = 0x80
        #else
        let setsid = Int32(POSIX_SPAWN_SETSID)
        #endif
        if newSession {
            flags |= setsid
        } else {
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attr, 0)
        }
        posix_spawnattr_setflags(&attr, Int16(truncatingIfNeeded: flags))

        let argv = [path] + arguments.map { $0 }
        let env = environment.map { "\($0.key)=\($0.value)" }.sorted()
        var pid: pid_t = 0
        let rc = withCStrings(argv) { cargv in
            withCStrings(env) { cenv in
                posix_spawn(&pid, path, &fa, &attr, cargv, cenv)
            }
        }
        guard rc == 0 else {
            throw SpawnError(message: "cannot start \(executable): \(errnoText(rc))")
        }
        return ChildProcess(pid: pid)
    }

    /// Waits for the child to exit (on the blocking pool, not the cooperative one) and
    /// reaps it. Call once.
    public func wait() async -> ExitStatus {
        let pid = self.pid
        return await Blocking.run { () -> ExitStatus in
            var status: Int32 = 0
            while true {
                let r = waitpid(pid, &status, 0)
                if r == pid { break }
                if r == -1 && errno == EINTR { continue }
                status = 0x7f00  // cannot wait (already reaped): report exit 127
                break
            }
            return ExitStatus(waitStatus: status)
        }
    }

    /// Sends `signal` to the child's whole process group. Returns `false` if none is left.
    @discardableResult
    public func signalGroup(_ signal: Int32) -> Bool {
        kill(-pid, signal) == 0
    }

    /// Whether any process of the group is still alive.
    public var groupAlive: Bool { kill(-pid, 0) == 0 }

    // MARK: - helpers

    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    /// `posix_spawn_file_actions_addchdir_np` (glibc ≥ 2.29, macOS ≥ 10.15), looked up at run
    /// time because Swift does not import it.
    static let addchdir: AddChdir? = {
        #if os(Linux)
        let handle = dlopen(nil, RTLD_NOW)
        #else
        let handle = UnsafeMutableRawPointer(bitPattern: -2)  // RTLD_DEFAULT
        #endif
        guard let sym = dlsym(handle, "posix_spawn_file_actions_addchdir_np") else { return nil }
        return unsafeBitCast(sym, to: AddChdir.self)
    }()

    static func resolve(_ executable: String, environment: [String: String], workingDirectory: String?) throws -> String {
        if executable.contains("/") {
            if executable.hasPrefix("/") || workingDirectory == nil { return executable }
            return (workingDirectory! as NSString).appendingPathComponent(executable)
        }
        let searchPath = environment["PATH"] ?? ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in searchPath.split(separator: ":") where !dir.isEmpty {
            var candidate = String(dir) + "/" + executable
            if !dir.hasPrefix("/"), let wd = workingDirectory { candidate = wd + "/" + candidate }
            if access(candidate, X_OK) == 0 {
                var st = stat()
                if stat(candidate, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { return candidate }
            }
        }
        throw SpawnError(message: "'\(executable)' not found in PATH")
    }
}

func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Calls `body` with a NULL-terminated C array of C strings.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return body(pointers)
}
