import Foundation
import TrellisSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A set of replica daemons flows run on.
public protocol ReplicaRuntime: Sendable {
    /// Starts the replicas described by `spec`; fails if the runtime is already up.
    /// - Parameter ephemeral: started by `flow run` for one run (stopped after it unless kept).
    func up(_ spec: RuntimeSpec, ephemeral: Bool) async throws -> RuntimeState
    /// Stops every replica (and etcd) and removes the state; a no-op when nothing is up.
    func down() async throws
    /// What is recorded and what is actually alive.
    func status() -> RuntimeStatus
}

/// One started process of a runtime.
public struct RuntimeProcess: Codable, Sendable, Equatable {
    /// Its pid (also its session and process-group id).
    public var pid: Int32
    /// Its log file.
    public var log: String

    /// Describes a started process.
    public init(pid: Int32, log: String) {
        self.pid = pid
        self.log = log
    }
}

/// The runtime's warm Python zygote (``LocalRuntime/zygoteInterpreter``).
public struct ZygoteInfo: Codable, Sendable, Equatable {
    /// The process (its log is the zygote's).
    public var process: RuntimeProcess
    /// Where it listens.
    public var socket: String
    /// The interpreter it runs on.
    public var interpreter: String
    /// Its directory (scripts).
    public var directory: String
}

/// The private etcd of a multi-replica runtime.
public struct EtcdInfo: Codable, Sendable, Equatable {
    /// The process.
    public var process: RuntimeProcess
    /// Client port on 127.0.0.1.
    public var clientPort: Int
    /// Peer port on 127.0.0.1.
    public var peerPort: Int
    /// Data directory (removed by `down`).
    public var dataDirectory: String
    /// The client UNIX socket (the runtime's etcd listens on no TCP port: only its owner,
    /// who can write the socket file, reaches it); nil in state written before it did.
    public var clientSocket: String? = nil
    /// `unix://<clientSocket>`, or `http://127.0.0.1:<clientPort>` for an older state.
    public var endpoint: String { clientSocket.map { "unix://" + $0 } ?? "http://127.0.0.1:\(clientPort)" }
}

/// What `runtime up` wrote to `<runtime dir>/state.json`.
public struct RuntimeState: Codable, Sendable, Equatable {
    /// Format version.
    public var version: Int = 1
    /// A random id; also the etcd prefix of the replicas' metadata.
    public var id: String
    /// What was asked for.
    public var spec: RuntimeSpec
    /// The replicas as steps reach them.
    public var replicas: [Replica]
    /// The replica daemons, by index.
    public var processes: [RuntimeProcess]
    /// The private etcd, with more than one replica.
    public var etcd: EtcdInfo?
    /// Started by `flow run` for a run rather than by `runtime up`.
    public var ephemeral: Bool
    /// Runs whose intermediates this ephemeral runtime was kept up for (failed/cancelled runs).
    public var keptFor: [String] = []
    /// When it started.
    public var startedAt: Date
    /// The binary the replicas run.
    public var trellisBinary: String
    /// The warm Python zygote runs' steps fork from, when the runtime keeps one.
    public var zygote: ZygoteInfo?
    /// The virtual network of a runtime whose replicas are network-namespace nodes
    /// (`runtime up --netns`); nil for replicas on this machine's loopback.
    public var netns: NetnsNetwork?
    /// A warm zygote inside each node's namespace, by node name (nodes only).
    public var nodeZygotes: [String: ZygoteInfo]?

    /// A fresh state, as `up` starts recording it.
    public init(
        id: String, spec: RuntimeSpec, replicas: [Replica], processes: [RuntimeProcess], etcd: EtcdInfo?,
        ephemeral: Bool, startedAt: Date, trellisBinary: String
    ) {
        self.id = id
        self.spec = spec
        self.replicas = replicas
        self.processes = processes
        self.etcd = etcd
        self.ephemeral = ephemeral
        self.startedAt = startedAt
        self.trellisBinary = trellisBinary
    }
}

/// ``RuntimeState`` plus liveness.
public struct RuntimeStatus: Sendable, Equatable {
    /// The recorded state, `nil` when no runtime was started.
    public var state: RuntimeState?
    /// Whether each replica daemon is alive, by index.
    public var replicasAlive: [Bool]
    /// Whether etcd is alive (`nil`: no etcd).
    public var etcdAlive: Bool?

    /// A status as ``LocalRuntime/status()`` reads it.
    public init(state: RuntimeState?, replicasAlive: [Bool], etcdAlive: Bool?) {
        self.state = state
        self.replicasAlive = replicasAlive
        self.etcdAlive = etcdAlive
    }

    /// A runtime is recorded and all of it is alive.
    public var isUp: Bool {
        state != nil && !replicasAlive.isEmpty && replicasAlive.allSatisfy { $0 } && etcdAlive != false
    }

    /// `trellis runtime status --json` (and the dashboard's `/api/runtimes`):
    /// `{"up": BOOL, "state": RuntimeState or null}`.
    public var json: String {
        let state = state.flatMap { try? RunRecord.encoder().encode($0) }.map { String(decoding: $0, as: UTF8.self) }
        return #"{"up": \#(isUp), "state": \#(state ?? "null")}"#
    }

    /// Lines for `trellis runtime status`.
    public var summary: String {
        guard let s = state else { return "runtime: down" }
        var lines = [
            "runtime \(s.id): \(isUp ? "up" : "degraded")\(s.ephemeral ? " (started for a run)" : ""), "
                + "\(s.replicas.count) replica(s) of \(s.spec.size), medium \(s.spec.medium.rawValue)"
        ]
        if let n = s.netns { lines.append("  network: bridge \(n.bridge) \(n.subnet).0/24, gateway \(n.gateway)") }
        for (i, r) in s.replicas.enumerated() {
            let alive = i < replicasAlive.count && replicasAlive[i]
            let node = s.netns.map { " node \(r.node ?? "?") netns \($0.nodes[i].namespace) address \(r.host ?? "?")" } ?? ""
            lines.append(
                "  r\(r.index): \(alive ? "up" : "DOWN")\(node) pid \(s.processes[i].pid) socket \(r.socket)"
                    + (r.rpcEndpoint.map { " rpc \($0)" } ?? ""))
        }
        if let e = s.etcd {
            lines.append("  etcd: \(etcdAlive == true ? "up" : "DOWN") pid \(e.process.pid) \(e.endpoint)")
        }
        if let z = s.zygote {
            lines.append("  python zygote: \(z.isRunning ? "up" : "DOWN") pid \(z.process.pid) \(z.interpreter)")
        }
        if !s.keptFor.isEmpty { lines.append("  holding intermediates of: \(s.keptFor.joined(separator: ", "))") }
        return lines.joined(separator: "\n")
    }
}

/// An error starting or stopping a runtime.
public struct RuntimeError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong.
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}

/// N replica daemons on this machine (`trellis serve`, each with its own socket and RPC port),
/// plus a private etcd on 127.0.0.1 when there is more than one replica, so they share metadata.
/// One replica needs nothing external (`--meta local`).
///
/// State lives in a directory (default `<TRELLIS_HOME>/runtime`): `state.json`, the sockets
/// `r<i>.sock`, logs `r<i>.log` / `etcd.log`, etcd's data. The daemons run in their own
/// sessions, so `runtime up` returns while they keep running and `runtime status|down` from
/// another invocation find them through `state.json`.
///
/// CLI: `trellis runtime up` → ``up(_:ephemeral:)``, `runtime down` → ``down()``,
/// `runtime status` → ``status()`` (``RuntimeStatus/summary``).
public struct LocalRuntime: ReplicaRuntime {
    /// The runtime directory.
    public var directory: String
    /// Path of the `trellis` binary the replicas run (`trellis serve …`).
    public var trellisBinary: String
    /// Extra arguments placed before the serve flags (default `["serve"]`).
    public var serveCommand: [String]
    /// etcd binary; `nil` looks for `$TRELLIS_ETCD`, `etcd` in `PATH`, `/usr/bin/etcd`.
    /// (A path that is not executable means "no etcd".)
    public var etcdBinary: String?
    /// How long to wait for daemons to accept connections.
    public var startTimeout: Double
    /// Environment of the started processes.
    public var environment: [String: String]
    /// When set, the runtime keeps a warm Python zygote on this interpreter for the Python
    /// steps of every run on it (`trellis runtime up` sets it unless `TRELLIS_ZYGOTE=0`): a
    /// step then starts in milliseconds with vineyard, numpy and pandas already imported,
    /// instead of paying ~0.8 s of imports in the first step of each run.
    public var zygoteInterpreter: String?
    /// Replicas as network-namespace nodes (``NetnsNetwork``): each daemon in a namespace of
    /// its own with its own address, etcd on the bridge. Root only.
    public var networkNamespaces = false

    /// Creates a runtime handle (nothing starts until ``up(_:ephemeral:)``).
    public init(
        directory: String = TrellisHome.fromEnvironment().runtimeDirectory, trellisBinary: String,
        serveCommand: [String] = ["serve"], etcdBinary: String? = nil, startTimeout: Double = 30,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.directory = directory
        self.trellisBinary = trellisBinary
        self.serveCommand = serveCommand
        self.etcdBinary = etcdBinary
        self.startTimeout = startTimeout
        self.environment = environment
    }

    var statePath: String { directory + "/state.json" }

    /// The recorded state, if any.
    public func loadState() -> RuntimeState? {
        guard let data = FileManager.default.contents(atPath: statePath) else { return nil }
        return try? RunRecord.decoder().decode(RuntimeState.self, from: data)
    }

    /// Writes the state atomically.
    public func saveState(_ state: RuntimeState) throws {
        let data = try RunRecord.encoder().encode(state)
        let tmp = statePath + ".tmp.\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: data), rename(tmp, statePath) == 0 else {
            throw RuntimeError("cannot write \(statePath)")
        }
    }

    /// Recorded state and liveness of each process.
    public func status() -> RuntimeStatus {
        guard let s = loadState() else { return RuntimeStatus(state: nil, replicasAlive: [], etcdAlive: nil) }
        return RuntimeStatus(
            state: s,
            replicasAlive: s.processes.indices.map { i in
                isAlive(s.processes[i].pid) && i < s.replicas.count && socketAccepts(s.replicas[i].socket)
            },
            etcdAlive: s.etcd.map { isAlive($0.process.pid) })
    }

    /// The etcd binary to use, or `nil` if none is found.
    public func resolveEtcd() -> String? {
        if let e = etcdBinary { return access(e, X_OK) == 0 ? e : nil }
        if let e = environment["TRELLIS_ETCD"], !e.isEmpty { return access(e, X_OK) == 0 ? e : nil }
        for dir in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/etcd"
            if access(p, X_OK) == 0 { return p }
        }
        return access("/usr/bin/etcd", X_OK) == 0 ? "/usr/bin/etcd" : nil
    }

    /// Starts the runtime and waits until every replica accepts connections.
    public func up(_ spec: RuntimeSpec, ephemeral: Bool = false) async throws -> RuntimeState {
        let current = status()
        if current.state != nil {
            if current.isUp {
                throw RuntimeError("a runtime is already up in \(directory) (trellis runtime status / down)")
            }
            try await down()  // leftovers of a dead runtime
        }
        guard spec.replicas >= 1 else { throw RuntimeError("a runtime needs at least one replica") }
        guard let bytes = spec.sizeInBytes else { throw RuntimeError("runtime size '\(spec.size)' is not a size") }
        try RunPermissions.current.makeDirectory(directory)
        let reserve = Self.reservesMemory(replicas: spec.replicas, bytes: bytes, available: availableMemory())
        let id = "rt-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        var state = RuntimeState(
            id: id, spec: spec, replicas: [], processes: [], etcd: nil, ephemeral: ephemeral, startedAt: Date(),
            trellisBinary: trellisBinary)
        var ip = ""
        if networkNamespaces {
            if let reason = NetnsNetwork.unavailableReason(environment: environment) { throw RuntimeError(reason) }
            ip = NetnsNetwork.findIP(environment: environment)!
            if resolveEtcd() == nil {
                throw RuntimeError("network-namespace nodes share metadata through etcd, and no etcd binary was found (scripts/setup-etcd.sh)")
            }
            let tag = String(format: "%06x", UInt32.random(in: 0...0xff_ffff))
            state.netns = NetnsNetwork.plan(tag: tag, nodes: spec.replicas, octet: NetnsNetwork.freeOctet(ip: ip))
            try saveState(state)  // first: `down` removes what apply() makes even if we die midway
            do { try state.netns!.apply(ip: ip) } catch {
                unlink(statePath)
                throw error
            }
        }
        do {
            // The zygote first: its imports overlap etcd's and the replicas' start-up.
            if let interpreter = zygoteInterpreter, state.netns == nil,
                let z = WarmZygote.launch(
                    interpreter: resolveExecutable(interpreter, environment: environment),
                    directory: directory + "/zygote", log: directory + "/zygote.log", environment: environment,
                    detached: true)
            {
                state.zygote = ZygoteInfo(
                    process: RuntimeProcess(pid: z.pid, log: z.logPath), socket: z.socket, interpreter: z.interpreter,
                    directory: z.directory)
                try saveState(state)
            }
            if spec.replicas > 1 || state.netns != nil {
                guard let etcd = resolveEtcd() else {
                    throw RuntimeError(
                        "\(spec.replicas) replicas share metadata through etcd, and no etcd binary was found "
                            + "(install Debian's etcd-server, e.g. scripts/setup-etcd.sh, or set TRELLIS_ETCD)")
                }
                // Client and peer listeners are UNIX sockets in the runtime directory (etcd
                // wants host:port, taken as a path relative to its working directory), so no
                // other user of the machine can read or write the replicas' metadata.
                let clientName = "etcd-client.sock:0", peerName = "etcd-peer.sock:0"
                // Namespace nodes reach it on the bridge's address as well (their only way out).
                let clientURLs = ["unix://\(clientName)"] + (state.netns.map { ["http://\($0.gateway):2379"] } ?? [])
                let clientSocket = directory + "/" + clientName
                unlink(clientSocket)
                unlink(directory + "/" + peerName)
                let data = Self.etcdDataDirectory(fallback: directory + "/etcd-data")
                let log = directory + "/etcd.log"
                let p = try ChildProcess.spawn(
                    executable: etcd,
                    arguments: [
                        "--name", "trellis", "--data-dir", data,
                        "--listen-client-urls", clientURLs.joined(separator: ","),
                        "--advertise-client-urls", clientURLs.joined(separator: ","),
                        "--listen-peer-urls", "unix://\(peerName)",
                        "--initial-advertise-peer-urls", "unix://\(peerName)",
                        "--initial-cluster", "trellis=unix://\(peerName)",
                        "--initial-cluster-state", "new",
                    ],
                    environment: environment, workingDirectory: directory, stdout: .file(log), stderr: .file(log),
                    newSession: true)
                state.etcd = EtcdInfo(
                    process: RuntimeProcess(pid: p.pid, log: log), clientPort: 0, peerPort: 0,
                    dataDirectory: data, clientSocket: clientSocket)
                try saveState(state)
                try await waitUntil("etcd on \(clientSocket)", pid: p.pid, log: log) { socketAccepts(clientSocket) }
            }
            for i in 0..<spec.replicas {
                let socket = directory + "/r\(i).sock"
                unlink(socket)
                // A namespace node has the port space of its own address to itself.
                let rpc = state.netns == nil ? try freePort() : 9600
                var args = serveCommand + [
                    "--socket", socket, "--size", String(bytes), "--rpc_socket_port", String(rpc),
                ]
                var env = environment
                if let n = state.netns {
                    args += ["--meta", "etcd", "--etcd_endpoint", "http://\(n.gateway):2379", "--etcd_prefix", id]
                    env["MY_NODE_NAME"] = n.nodes[i].name
                    env["MY_HOST_NAME"] = n.nodes[i].address
                } else if let e = state.etcd {
                    args += ["--meta", "etcd", "--etcd_endpoint", e.endpoint, "--etcd_prefix", id]
                } else {
                    args += ["--meta", "local"]
                }
                // A runtime reserves the memory it was given: steps then write into pages
                // that exist (minor faults) rather than fresh ones, several times cheaper
                // per page. Before serving, although populating 2 GiB of huge pages takes
                // 1–5 s on a VM: reserving in the background (--reserve_in_background) while
                // the first steps run doubled their handoff and wall time in the house-prices
                // benchmark, the reservation and the steps' own faults contending.
                // Only when the arenas fit: a notebook asking for 2 × 30 GiB on a laptop gets
                // arenas that fill on demand instead of an out-of-memory kill at start.
                if spec.hugePages {
                    args += ["--huge_pages", "--reserve_memory"]
                } else if reserve {
                    args += ["--reserve_memory"]
                }
                if spec.medium == .spill, let dir = spec.spillDirectory {
                    let d = (dir as NSString).appendingPathComponent("r\(i)")
                    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
                    args += ["--spill_path", d]
                }
                let log = directory + "/r\(i).log"
                // `ip netns exec` enters the namespace and execs the daemon: the pid is the daemon's.
                let argv = (state.netns?.exec(node: i, ip: ip) ?? []) + [trellisBinary] + args
                let p = try ChildProcess.spawn(
                    executable: argv[0], arguments: Array(argv.dropFirst()), environment: env, workingDirectory: directory,
                    stdout: .file(log), stderr: .file(log), newSession: true)
                state.processes.append(RuntimeProcess(pid: p.pid, log: log))
                let node = state.netns?.nodes[i]
                state.replicas.append(Replica(index: i, socket: socket, rpcPort: rpc, host: node?.address, node: node?.name))
                try saveState(state)
            }
            if let n = state.netns, let interpreter = zygoteInterpreter {
                // One per node, inside its namespace: their imports overlap the daemons' start.
                var zygotes: [String: ZygoteInfo] = [:]
                for (k, node) in n.nodes.enumerated() {
                    guard
                        let z = WarmZygote.launch(
                            interpreter: resolveExecutable(interpreter, environment: environment),
                            directory: directory + "/zygote-n\(k)", log: directory + "/zygote-n\(k).log",
                            environment: environment, detached: true, prefix: n.exec(node: k, ip: ip))
                    else { continue }
                    zygotes[node.name] = ZygoteInfo(
                        process: RuntimeProcess(pid: z.pid, log: z.logPath), socket: z.socket, interpreter: z.interpreter,
                        directory: z.directory)
                }
                state.nodeZygotes = zygotes
                try saveState(state)
            }
            for (i, r) in state.replicas.enumerated() {
                let p = state.processes[i]
                try await waitUntil("replica r\(i)", pid: p.pid, log: p.log) { socketAccepts(r.socket) }
            }
        } catch {
            if let z = state.zygote, loadState()?.zygote == nil { _ = kill(-z.process.pid, SIGTERM) }  // not recorded yet
            try? await down()
            throw error
        }
        return state
    }

    /// Whether replicas reserve (pre-fault) their arenas: when all of them together take at
    /// most half of the memory available (`MemAvailable`; unknown counts as fitting), so that
    /// the steps keep room. Otherwise each arena is still `size` bytes, filled on demand.
    public static func reservesMemory(replicas: Int, bytes: Int, available: Int?) -> Bool {
        guard let available else { return true }
        let (total, overflow) = bytes.multipliedReportingOverflow(by: max(replicas, 1))
        return !overflow && total <= available / 2
    }

    /// etcd's data directory. A local runtime's metadata lives exactly as long as the runtime
    /// (`down` removes it), so etcd's fsyncs buy nothing and cost every persist and name ~10–20 ms
    /// on a VM disk: a fresh private directory (0700, `mkdtemp`) on /dev/shm, a tmpfs where
    /// fsync is free, when there is one; else `fallback` (emptied) beside the runtime.
    static func etcdDataDirectory(fallback: String) -> String {
        if FileManager.default.isWritableFile(atPath: "/dev/shm") {
            var template = Array("/dev/shm/trellis-etcd-XXXXXX".utf8CString)
            let made = template.withUnsafeMutableBufferPointer { buf -> String? in
                guard let p = mkdtemp(buf.baseAddress!) else { return nil }
                return String(cString: p)
            }
            if let made { return made }
        }
        try? FileManager.default.removeItem(atPath: fallback)
        return fallback
    }

    /// Stops the replicas (SIGTERM, SIGKILL after 5 s), then etcd, and removes sockets, etcd data
    /// and the state file.
    public func down() async throws {
        guard let s = loadState() else { return }
        for p in s.processes { _ = kill(-p.pid, SIGTERM) }
        for p in s.processes { await stop(p.pid) }
        if let e = s.etcd {
            _ = kill(-e.process.pid, SIGTERM)
            await stop(e.process.pid)
            try? FileManager.default.removeItem(atPath: e.dataDirectory)
            if let c = e.clientSocket {
                unlink(c)
                unlink((c as NSString).deletingLastPathComponent + "/etcd-peer.sock:0")
            }
        }
        for r in s.replicas { unlink(r.socket) }
        for z in (s.nodeZygotes ?? [:]).values {
            if z.isRunning {
                _ = kill(-z.process.pid, SIGTERM)
                await stop(z.process.pid)
            }
            unlink(z.socket)
            try? FileManager.default.removeItem(atPath: z.directory)
        }
        if let n = s.netns, let ip = NetnsNetwork.findIP(environment: environment) { n.remove(ip: ip) }
        if let z = s.zygote {
            if z.isRunning {
                _ = kill(-z.process.pid, SIGTERM)
                await stop(z.process.pid)
            }
            unlink(z.socket)  // a detached zygote also leaves when its socket goes
            try? FileManager.default.removeItem(atPath: z.directory)
        }
        unlink(statePath)
    }

    /// Records that an ephemeral runtime stays up for `runID`'s intermediates (or no longer).
    public func setKept(_ runID: String, _ kept: Bool) throws {
        guard var s = loadState() else { return }
        s.keptFor.removeAll { $0 == runID }
        if kept { s.keptFor.append(runID) }
        try saveState(s)
    }

    private func stop(_ pid: Int32) async {
        let deadline = ContinuousClock.now + .seconds(5)
        while isAlive(pid), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if isAlive(pid) {
            _ = kill(-pid, SIGKILL)
            _ = kill(pid, SIGKILL)
            while isAlive(pid) { try? await Task.sleep(for: .milliseconds(10)) }
        }
    }

    private func waitUntil(_ what: String, pid: Int32, log: String, _ ready: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(startTimeout * 1000))
        while !ready() {
            if !isAlive(pid) {
                throw RuntimeError("\(what) exited during startup; last lines of \(log):\n\(tail(log, lines: 15))")
            }
            if ContinuousClock.now > deadline {
                throw RuntimeError("\(what) did not become ready within \(Int(startTimeout))s; see \(log)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// `MemAvailable` of /proc/meminfo in bytes, if readable.
func availableMemory() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
    }
    return nil
}

/// Whether `pid` is a live (non-zombie) process. Reaps it when it is our exited child.
func isAlive(_ pid: Int32) -> Bool {
    var status: Int32 = 0
    if waitpid(pid, &status, WNOHANG) == pid { return false }
    guard kill(pid, 0) == 0 || errno == EPERM else { return false }
    if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
    return true
}

func tail(_ path: String, lines: Int) -> String {
    guard let data = FileManager.default.contents(atPath: path) else { return "(no log)" }
    return String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        .suffix(lines).joined(separator: "\n")
}

/// A port on 127.0.0.1 that was free a moment ago.
func freePort() throws -> Int {
    do {
        return try Listener.tcp(host: "127.0.0.1", port: 0).port  // closed again at once
    } catch {
        throw RuntimeError("no free port on 127.0.0.1: \(error)")
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func tcpAccepts(port: Int) -> Bool {
    (try? StreamSocket.connect(host: "127.0.0.1", port: port, timeoutSeconds: 5)) != nil
}

/// Whether something accepts connections on the UNIX socket at `path`.
func socketAccepts(_ path: String) -> Bool {
    !path.isEmpty && (try? StreamSocket.connect(unixPath: path)) != nil
}
