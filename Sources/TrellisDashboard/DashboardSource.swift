import Foundation
import Synchronization
import TrellisClient
import TrellisFlow
import TrellisProtocol
import TrellisSystem

/// What one replica daemon said about itself, or why it said nothing.
public enum ReplicaProbe: Sendable, Equatable {
    /// Its `instance_status` reply, and what it said when the connection registered.
    case answered(InstanceStatus, ServerInfo)
    /// Connecting or asking failed, or no answer came in time.
    case unreachable(String)

    /// The status, when it answered.
    public var status: InstanceStatus? {
        if case .answered(let s, _) = self { return s }
        return nil
    }

    /// What `trellis status --socket … --json` prints for this replica; nil when unreachable.
    public var statusJSON: JSON? {
        if case .answered(let s, let server) = self { return s.json(server: server) }
        return nil
    }
}

/// One replica of the runtime as the dashboard shows it.
public struct ReplicaView: Sendable, Equatable {
    /// Where it is.
    public var replica: Replica
    /// Its daemon's pid, from the runtime's state.
    public var pid: Int32?
    /// Whether `trellis runtime status` counts it alive (process alive, socket accepting).
    public var alive: Bool
    /// Its answer to `instance_status`.
    public var probe: ReplicaProbe

    /// Creates a view.
    public init(replica: Replica, pid: Int32?, alive: Bool, probe: ReplicaProbe) {
        self.replica = replica
        self.pid = pid
        self.alive = alive
        self.probe = probe
    }

    /// Up: alive and answering.
    public var isUp: Bool { alive && probe.status != nil }

    /// One element of `/api/runtimes/replicas`: `index`, `socket`, `up`, and either `status`
    /// (exactly `trellis status --json` of that replica) or `error`.
    public var json: JSON {
        var o: [String: JSON] = [
            "index": .int(Int64(replica.index)), "socket": .string(replica.socket), "up": .bool(isUp),
        ]
        if let pid { o["pid"] = .int(Int64(pid)) }
        if let node = replica.node { o["node"] = .string(node) }
        switch probe {
        case .answered: o["status"] = probe.statusJSON
        case .unreachable(let why): o["error"] = .string(why)
        }
        return .object(o)
    }
}

/// The runtime as the dashboard shows it: `trellis runtime status` plus each replica's
/// `instance_status`.
public struct RuntimeView: Sendable, Equatable {
    /// What `runtime status` reads.
    public var status: RuntimeStatus
    /// Each recorded replica, in index order.
    public var replicas: [ReplicaView]

    /// Creates a view.
    public init(status: RuntimeStatus, replicas: [ReplicaView]) {
        self.status = status
        self.replicas = replicas
    }
}

/// A log chosen for a page: its last bytes, and how many came before them.
public struct LogExcerpt: Sendable, Equatable {
    /// The text shown.
    public var text: String
    /// Bytes of the file before ``text`` (0: the whole log).
    public var omittedBytes: Int

    /// Creates an excerpt.
    public init(text: String, omittedBytes: Int) {
        self.text = text
        self.omittedBytes = omittedBytes
    }
}

/// The dashboard's read side: everything it shows comes from here, and all of it is what the
/// CLI reads — the runtime's state file, run records and step logs under `TRELLIS_HOME`, and
/// the replica daemons' `instance_status`. Nothing here writes.
public struct DashboardSource: Sendable {
    /// The Trellis home (`$TRELLIS_HOME`, else `~/.trellis`).
    public var home: TrellisHome
    /// How long a replica may take to answer `instance_status` before it shows as down.
    public var probeTimeout: Duration
    /// The most of one log a page shows (its end); the plain-text endpoints serve all of it.
    public var logPageBytes: Int

    private let inFlight = ProbeFlights()

    /// A source reading `home`.
    public init(home: TrellisHome, probeTimeout: Duration = .seconds(2), logPageBytes: Int = 256 << 10) {
        self.home = home
        self.probeTimeout = probeTimeout
        self.logPageBytes = logPageBytes
    }

    /// The run store.
    public var store: RunStore { RunStore(home: home) }

    /// `trellis runtime status` (off the cooperative pool: it connects to each socket).
    public func runtimeStatus() async -> RuntimeStatus {
        let directory = home.runtimeDirectory
        return await Blocking.run { LocalRuntime(directory: directory, trellisBinary: "").status() }
    }

    /// The runtime and every replica's `instance_status`, asked of all replicas at once.
    public func runtime() async -> RuntimeView {
        let status = await runtimeStatus()
        guard let state = status.state else { return RuntimeView(status: status, replicas: []) }
        let probes = await withTaskGroup(of: (Int, ReplicaProbe).self) { group in
            for (i, r) in state.replicas.enumerated() {
                group.addTask { (i, await probe(socket: r.socket)) }
            }
            var out: [Int: ReplicaProbe] = [:]
            for await (i, p) in group { out[i] = p }
            return out
        }
        let replicas = state.replicas.enumerated().map { i, r in
            ReplicaView(
                replica: r, pid: i < state.processes.count ? state.processes[i].pid : nil,
                alive: i < status.replicasAlive.count && status.replicasAlive[i],
                probe: probes[i] ?? .unreachable("not asked"))
        }
        return RuntimeView(status: status, replicas: replicas)
    }

    /// Asks the daemon at `socket` for `instance_status`, giving up after ``probeTimeout``.
    ///
    /// A daemon that accepts but never answers (stopped, wedged) would hold the asking thread
    /// until it answers or goes away; at most one such question per socket is outstanding —
    /// later page loads wait on the same one (up to the timeout) instead of piling up threads.
    public func probe(socket: String) async -> ReplicaProbe {
        let task = inFlight.task(for: socket) {
            await Blocking.run { () -> ReplicaProbe in
                do throws(ClientError) {
                    let client = try Client(socket: socket, maxReplySize: 1 << 20)
                    defer { client.close() }
                    return .answered(try client.instanceStatus(), client.server)
                } catch {
                    return .unreachable(error.description)
                }
            }
        }
        let seconds = Double(probeTimeout.components.seconds) + Double(probeTimeout.components.attoseconds) / 1e18
        return await firstOf(task, timeout: probeTimeout)
            ?? .unreachable("no answer to instance_status within \(seconds.formatted())s")
    }

    /// `trellis flow ls`.
    public func runs() -> [RunSummary] { store.list() }

    /// A run's record (`trellis flow status RUN`); nil when there is no such run.
    public func run(_ runID: String) -> RunRecord? {
        guard RunStore.isValidRunID(runID) else { return nil }
        return try? store.load(runID)
    }

    /// A run's report page, as `trellis flow report RUN` writes it; nil when there is no such run.
    public func report(_ runID: String) -> String? {
        guard let record = run(runID) else { return nil }
        return store.reportHTML(for: record)
    }

    /// The whole of one of a step's logs, as `trellis flow logs` prints it; nil when the run or
    /// step does not exist.
    public func log(run runID: String, step: String, stream: LogStream) -> String? {
        guard let record = run(runID), record.step(step) != nil else { return nil }
        let path = store.logPath(run: runID, step: step, stream: stream)
        return FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    /// The last ``logPageBytes`` of a step's log (for a page).
    public func logExcerpt(run runID: String, step: String, stream: LogStream) -> LogExcerpt {
        let path = store.logPath(run: runID, step: step, stream: stream)
        guard let h = FileHandle(forReadingAtPath: path) else { return LogExcerpt(text: "", omittedBytes: 0) }
        defer { try? h.close() }
        let size = (try? h.seekToEnd()) ?? 0
        let skip = size > UInt64(logPageBytes) ? size - UInt64(logPageBytes) : 0
        try? h.seek(toOffset: skip)
        var data = (try? h.readToEnd()) ?? Data()
        if skip > 0 {
            // Start at a line (or at least a character) boundary.
            if let nl = data.firstIndex(of: 10), nl - data.startIndex < 4096 {
                data = data[(nl + 1)...]
            } else {
                while let b = data.first, b & 0xC0 == 0x80 { data = data.dropFirst() }
            }
        }
        return LogExcerpt(text: String(decoding: data, as: UTF8.self), omittedBytes: Int(size) - data.count)
    }
}

/// The outstanding `instance_status` question per socket.
private final class ProbeFlights: Sendable {
    private let tasks = Mutex<[String: Task<ReplicaProbe, Never>]>([:])

    func task(for socket: String, _ make: @escaping @Sendable () async -> ReplicaProbe) -> Task<ReplicaProbe, Never> {
        tasks.withLock { tasks in
            if let t = tasks[socket] { return t }
            let t = Task {
                let result = await make()
                self.done(socket)
                return result
            }
            tasks[socket] = t
            return t
        }
    }

    private func done(_ socket: String) {
        _ = tasks.withLock { $0.removeValue(forKey: socket) }
    }
}

/// The task's value, or nil if `timeout` passes first (the task keeps running).
private func firstOf<T: Sendable>(_ task: Task<T, Never>, timeout: Duration) async -> T? {
    let slot = OneShot<T?>()
    return await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
        slot.set(continuation)
        let timer = Task {
            try? await Task.sleep(for: timeout)
            slot.resume(nil)
        }
        Task {
            let value = await task.value
            timer.cancel()
            slot.resume(value)
        }
    }
}

/// A continuation resumed once, by whoever comes first.
private final class OneShot<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T, Never>?>(nil)

    func set(_ c: CheckedContinuation<T, Never>) { continuation.withLock { $0 = c } }

    func resume(_ value: T) { continuation.withLock { $0.take() }?.resume(returning: value) }
}
