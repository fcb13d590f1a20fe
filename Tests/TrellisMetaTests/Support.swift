import Foundation
import Logging
import Synchronization
import Testing

@testable import TrellisMeta

#if canImport(Glibc)
import Glibc
#endif

/// Logs of the code under test: silent unless `TRELLIS_META_TEST_LOG` names a level
/// (e.g. `debug`).
let testLogger: Logger = {
    var logger = Logger(label: "trellis.meta.test") { StreamLogHandler.standardError(label: $0) }
    if let level = getenv("TRELLIS_META_TEST_LOG").map({ String(cString: $0) }),
        let parsed = Logger.Level(rawValue: level)
    {
        logger.logLevel = parsed
    } else {
        logger.logLevel = .critical
    }
    return logger
}()

struct TimeoutError: Error, CustomStringConvertible {
    let what: String
    let limit: Duration
    var description: String { "timed out after \(limit): \(what)" }
}

/// Runs `body`, failing with ``TimeoutError`` if it takes longer than `limit`.
func withTimeout<R: Sendable>(
    _ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else {
            throw TimeoutError(what: what, limit: limit)
        }
        return result
    }
}

/// Polls `condition` every 100 ms until it holds; fails after `limit`.
func eventually(
    _ limit: Duration = .seconds(10), _ what: String, _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + limit
    while true {
        if (try? await condition()) == true { return }
        if clock.now >= deadline { throw TimeoutError(what: what, limit: limit) }
        try await Task.sleep(for: .milliseconds(100))
    }
}

/// Runs `body` while the backends' `run()` loops keep their leases alive.
func withRunning<R>(_ backends: [MetaCore], _ body: () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for backend in backends { group.addTask { try await backend.run() } }
        defer { group.cancelAll() }
        return try await body()
    }
}

/// Counts calls of a republish handler.
final class CallCounter: Sendable {
    private let calls = Mutex(0)
    var count: Int { calls.withLock { $0 } }
    func increment() { calls.withLock { $0 += 1 } }
}

func sampleInfo(_ id: UInt64, _ tag: String = "node") -> InstanceInfo {
    InstanceInfo(
        id: id, hostname: "host-\(tag)", nodename: "node-\(tag)", rpcEndpoint: "127.0.0.1:\(19600 + id)",
        ipcSocket: "/tmp/\(tag)-\(id).sock", hostid: 5_175_628_471_803 + id, timestamp: UInt64.max - id)
}

/// Allocates an id and registers a sample instance for it.
@discardableResult
func registerSample(
    _ backend: MetaCore, _ tag: String = "node", republish: @escaping MetaRepublishHandler = { _ in }
) async throws -> InstanceInfo {
    let id = try await backend.allocateInstanceID()
    let info = sampleInfo(id, tag)
    try await backend.register(info, republish: republish)
    return info
}

/// Backends sharing one metadata namespace, as the daemons of one cluster.
protocol TestCluster: Sendable {
    func backend(ttl: Duration) -> MetaCore
    /// Revokes the backend's current lease behind its back (as if it expired).
    func revokeLease(of backend: MetaCore) async throws
}

extension TestCluster {
    func backend() -> MetaCore { backend(ttl: .seconds(10)) }
}

struct LocalCluster: TestCluster {
    let store = LocalMetaStore()
    let prefix = "/test-\(UInt32.random(in: 0...UInt32.max))"

    func backend(ttl: Duration) -> MetaCore {
        MetaCore(local: store, prefix: prefix, leaseTTL: ttl, logger: testLogger)
    }

    func revokeLease(of backend: MetaCore) async throws {
        try await backend.kv.revoke(backend.currentLease)
    }
}

struct EtcdCluster: TestCluster {
    let server: EtcdServer
    let prefix = "/test-\(UInt32.random(in: 0...UInt32.max))"

    func backend(ttl: Duration) -> MetaCore {
        MetaCore(
                etcd: EtcdConfiguration(endpoint: server.endpoint, prefix: prefix, leaseTTL: ttl, timeout: .seconds(5)),
            logger: testLogger)
    }

    func revokeLease(of backend: MetaCore) async throws {
        try await backend.kv.revoke(backend.currentLease)
    }
}

// MARK: - A real etcd child process

enum EtcdBinary {
    /// `$TRELLIS_ETCD`, else `etcd` on PATH or in /usr/bin, /usr/local/bin.
    static let path: String? = {
        if let explicit = getenv("TRELLIS_ETCD").map({ String(cString: $0) }), access(explicit, X_OK) == 0 {
            return explicit
        }
        let path = getenv("PATH").map { String(cString: $0) } ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"]
        for directory in directories where access(directory + "/etcd", X_OK) == 0 {
            return directory + "/etcd"
        }
        return nil
    }()

    static var available: Bool { path != nil }
    static let skipMessage: Comment = "no etcd binary found (run scripts/setup-etcd.sh or set TRELLIS_ETCD)"
}

struct SpawnError: Error, CustomStringConvertible {
    let description: String
}

/// A free TCP port on 127.0.0.1 (bound to port 0, read back, released).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SpawnError(description: "socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw SpawnError(description: "bind: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Spawns `argv` with stdin from /dev/null and stdout+stderr appended to `logPath`.
func spawn(_ argv: [String], logPath: String) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
    cArgs.append(nil)
    defer { for arg in cArgs { free(arg) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
    guard result == 0 else { throw SpawnError(description: "posix_spawn \(argv[0]): \(result)") }
    return pid
}

/// A single-member etcd on loopback ports with its data in a temporary directory,
/// started as a child process and stopped by PID.
final class EtcdServer: Sendable {
    let binary: String
    let directory: String
    let clientPort: Int
    let peerPort: Int
    private let pid = Mutex<pid_t>(0)

    /// Flags added to every launch (e.g. lower limits).
    let extraArguments: [String]
    var endpoint: String { "http://127.0.0.1:\(clientPort)" }
    var dataDirectory: String { directory + "/data" }
    var logPath: String { directory + "/etcd.log" }

    /// Starts etcd and waits until it answers. The ports are free when chosen, but another
    /// process (a client's ephemeral port, a test beside this one) may take one before etcd
    /// binds it: etcd then exits at once, and it starts again on other ports.
    static func start(extraArguments: [String] = []) async throws -> EtcdServer {
        var attempt = 1
        while true {
            let server = try EtcdServer(extraArguments: extraArguments)
            do {
                try server.launch()
                try await server.waitHealthy()
                return server
            } catch let exited as EtcdExited where attempt < 4 && exited.portTaken {
                server.stop()
                attempt += 1
            } catch {
                server.stop()
                throw error
            }
        }
    }

    init(extraArguments: [String], clientPort chosen: Int? = nil) throws {
        binary = try #require(EtcdBinary.path, EtcdBinary.skipMessage)
        self.extraArguments = extraArguments
        var template = Array("/tmp/trellis-etcd-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SpawnError(description: "mkdtemp: errno \(errno)") }
        directory = String(cString: made)
        clientPort = try chosen ?? freeLoopbackPort()
        var peer = try freeLoopbackPort()
        while peer == clientPort { peer = try freeLoopbackPort() }
        peerPort = peer
    }

    /// Starts the process (again) on the same data directory and ports.
    func launch() throws {
        let client = "http://127.0.0.1:\(clientPort)"
        let peer = "http://127.0.0.1:\(peerPort)"
        let argv = [
            binary, "--name", "default", "--data-dir", dataDirectory,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "default=\(peer)",
        ] + extraArguments
        let child = try spawn(argv, logPath: logPath)
        pid.withLock { $0 = child }
    }

    /// Waits until etcd serves requests; throws ``EtcdExited`` as soon as the process is gone.
    func waitHealthy(_ limit: Duration = .seconds(30)) async throws {
        let client = EtcdClient(endpoint: endpoint, requestTimeout: .seconds(1), logger: testLogger)
        let deadline = ContinuousClock.now + limit
        while true {
            let child = pid.withLock { $0 }
            if child != 0 {
                var status: Int32 = 0
                if waitpid(child, &status, WNOHANG) == child {
                    pid.withLock { $0 = 0 }
                    throw EtcdExited(log: (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")
                }
                if (try? await client.status()) != nil { return }
            }
            if ContinuousClock.now >= deadline {
                throw TimeoutError(what: "etcd at \(endpoint) to become healthy (log: \(logPath))", limit: limit)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    func kill() {
        let child = pid.withLock { pid in
            defer { pid = 0 }
            return pid
        }
        guard child > 0 else { return }
        _ = Glibc.kill(child, SIGKILL)
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
    }

    /// Deletes the data directory (etcd must be stopped): the next launch starts a new cluster.
    func wipeData() throws {
        let rm = try spawn(["/bin/rm", "-rf", dataDirectory], logPath: "/dev/null")
        var status: Int32 = 0
        while waitpid(rm, &status, 0) < 0 && errno == EINTR {}
    }

    /// Kills etcd and removes its directory.
    func stop() {
        kill()
        if let rm = try? spawn(["/bin/rm", "-rf", directory], logPath: "/dev/null") {
            var status: Int32 = 0
            while waitpid(rm, &status, 0) < 0 && errno == EINTR {}
        }
    }
}

/// etcd exited while it was expected to come up.
struct EtcdExited: Error, CustomStringConvertible {
    let log: String
    /// It could not listen: a port chosen for it was taken meanwhile.
    var portTaken: Bool { log.contains("address already in use") }
    var description: String { "etcd exited while starting; its log ends: \(log.suffix(1500))" }
}

/// Runs `body` with a fresh etcd, stopped afterwards whatever happens.
func withEtcd<R>(extraArguments: [String] = [], _ body: (EtcdServer) async throws -> R) async throws -> R {
    let server = try await EtcdServer.start(extraArguments: extraArguments)
    defer { server.stop() }
    return try await body(server)
}
