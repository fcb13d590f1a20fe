import Logging
import Synchronization
import TrellisMeta
import TrellisMetrics
import ServiceLifecycle
import TrellisServer
import TrellisStore
import TrellisSystem
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

enum Serve {
    /// Runs the daemon until SIGTERM/SIGINT; returns the exit status.
    static func run(arguments: [String]) async -> Int32 {
        let options: DaemonOptions
        do {
            options = try DaemonOptions.parse(arguments)
        } catch {
            printError("trellis serve: \(error)\n")
            return 2
        }
        if options.help {
            print(DaemonOptions.helpText)
            return 0
        }
        if options.version {
            print("trellis (vineyard protocol 0.24.2)")
            return 0
        }
        let level = Logger.Level(rawValue: options.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "trellis.daemon")
        // Metrics first: every handle (requests, etcd round trips) binds to the backend
        // bootstrapped when it is made.
        let metricsRegistry = options.metricsListen.map { _ in PrometheusBackend.bootstrap() }
        // Trap SIGTERM/SIGINT before anything is created: one that arrives while starting
        // (waiting for etcd, reserving memory, right after the socket appears) must stop the
        // daemon cleanly (exit 0, socket removed), not kill it with the default action.
        let shutdown = await ShutdownSignals()
        var env: [String: String] = [:]
        for (k, v) in ProcessEnvironment.all() { env[k] = v }

        var htpasswd: Htpasswd?
        if let file = options.htpasswd {
            let h = Htpasswd(path: file)
            do {
                try h.check()
            } catch {
                printError("trellis serve: --htpasswd \(file): \(error)\n")
                return 1
            }
            htpasswd = h
        }
        let socket = options.resolvedSocketPath(environment: env)
        // Before the (possibly long) wait for etcd: a path that is not ours to replace ends it at once.
        do {
            try makeParentDirectory(of: socket)
            _ = try Listener.checkSocketPath(socket)
        } catch {
            printError("trellis serve: \(error)\n")
            return 1
        }
        let size = options.size ?? physicalMemory()

        // Cluster metadata first: the instance id it allocates goes into every object id.
        var meta: MetaCore?
        var instanceID: UInt64 = 0
        if options.meta == "etcd" {
            let timeout = Duration.milliseconds(Int64(options.metaTimeout * 1000))
            // Fluid renders a comma list when etcd has several members: use the first that answers.
            let endpoint = await firstAnsweringEndpoint(options.etcdEndpoint, within: timeout, logger: logger)
            let backend = MetaCore(
                etcd: EtcdConfiguration(
                    endpoint: endpoint, prefix: options.etcdPrefix,
                    leaseTTL: .seconds(max(1, options.leaseTTL)), timeout: timeout),
                logger: Logger(label: "trellis.meta"))
            do {
                guard let id = try await shutdown.unlessRequested({
                    try await backend.connect()
                    return try await backend.allocateInstanceID()
                }) else {
                    logger.info("stopped while waiting for etcd")
                    return 0
                }
                instanceID = id
            } catch {
                printError("trellis serve: etcd at \(options.etcdEndpoint) is not usable: \(error)\n")
                return 1
            }
            meta = backend
        }
        var config = ServerConfig(socketPath: socket)
        config.htpasswd = htpasswd
        config.maxMessageSize = options.maxMessageSize
        config.deployment = options.deployment
        if metricsRegistry != nil { config.metrics = DaemonMetrics() }
        // The advertised RPC host: MY_HOST_NAME, else loopback when RPC binds loopback (so
        // peers reach it whatever the host name resolves to), else the host name.
        let rpcBind = options.resolvedRPCBindHost(environment: env)
        let loopbackBind = rpcBind == "127.0.0.1" || rpcBind == "localhost"
        config.hostname = nonEmpty(env["MY_HOST_NAME"]) ?? (loopbackBind ? "127.0.0.1" : hostName())
        config.nodename = nonEmpty(env["MY_NODE_NAME"]) ?? hostName()
        if options.rpc {
            config.rpcPort = options.rpcPort
            config.rpcHost = rpcBind
        }
        if !options.ignored.isEmpty {
            logger.debug("accepted for compatibility, no effect", metadata: ["flags": "\(options.ignored.joined(separator: ","))"])
        }

        let store: ObjectStore
        do {
            let spill = options.spillPath.isEmpty ? nil : try SpillDirectory(path: options.spillPath)
            store = try ObjectStore(
                capacity: size, instanceID: instanceID, prefault: !options.reserveMemory ? .none : options.reserveInBackground ? .background : .now,
                pages: options.hugePages ? .hugetlb : options.transparentHugePages ? .transparentHuge : .small,
                spill: spill)
        } catch {
            var hint = ""
            if options.hugePages {
                let pages = (size + (2 << 20) - 1) / (2 << 20)
                hint = " (--huge_pages needs \(pages) free 2 MiB pages in the hugetlb pool: see /proc/sys/vm/nr_hugepages and HugePages_Free in /proc/meminfo)"
            }
            printError("trellis serve: cannot create a shared-memory arena of \(size) bytes: \(error)\(hint)\n")
            return 1
        }
        let listeners: [Listener]
        do {
            (listeners, config) = try Daemon.bind(config)
        } catch {
            printError("trellis serve: \(error)\n")
            return 1
        }
        if let meta {
            let info = InstanceInfo(
                id: instanceID, hostname: config.hostname, nodename: config.nodename, rpcEndpoint: config.rpcEndpoint,
                ipcSocket: config.socketPath, hostid: hostIdentifier(),
                timestamp: ObjectStore.wallClockMillis())
            do {
                try await meta.register(info) { _ in try await Daemon.republish(store: store, to: meta) }
            } catch {
                printError("trellis serve: cannot register with etcd: \(error)\n")
                for l in listeners { l.close() }
                return 1
            }
        }
        let daemon = Daemon(store: store, config: config, logger: logger, meta: meta)
        do {
            try daemon.run(listeners: listeners)
        } catch {
            printError("trellis serve: \(error)\n")
            daemon.stop(listeners)
            return 1
        }
        var exporter: RunningExporter?
        if let metricsRegistry, let listen = options.metricsListen {
            do {
                let running = try await MetricsExporter(
                    registry: metricsRegistry, port: listen.port, logger: logger, beforeScrape: { daemon.updateMetrics() }
                ).start()
                config.metrics?.setPort(running.port)
                exporter = running
            } catch {
                guard !listen.required else {
                    printError("trellis serve: \(error)\n")
                    daemon.stop(listeners)
                    store.spill?.removeAll()
                    return 1
                }
                logger.warning("--prometheus/--metrics: \(error); serving without metrics (choose a port with --metrics_port)")
            }
        }
        logger.info(
            "trellis daemon ready",
            metadata: ["socket": "\(socket)", "size": "\(store.arena.capacity)", "meta": "\(meta?.endpointDescription ?? "local")",
                       "instance": "\(instanceID)", "rpc": "\(config.rpcPort.map { "\(config.rpcHost):\($0)" } ?? "off")",
                       "pages": "\(store.arena.pages.rawValue)",
                       "metrics": "\(exporter.map { "http://127.0.0.1:\($0.port)\(MetricsExporter.path)" } ?? "off")"])
        if let reason = store.arena.fallbackReason {
            logger.notice(
                "transparent huge pages unavailable, the arena uses 4 KiB pages (clients take 512× more page faults)",
                metadata: ["reason": "\(reason)"])
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: WaitForShutdown())]
        if let meta {
            services.append(.init(service: MetaKeepalive(backend: meta)))
            services.append(.init(service: ClusterDeletions(daemon: daemon)))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                logger: logger))
        await shutdown.attach(group)
        do {
            try await group.run()
        } catch {
            logger.error("service group failed", metadata: ["error": "\(error)"])
        }
        daemon.stop(listeners)
        await exporter?.stop()
        store.spill?.removeAll()
        return 0
    }

    static func physicalMemory() -> Int {
        Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, 255) == 0 else { return "localhost" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `list` is one endpoint or a comma-separated list. With several, each is asked for
    /// its status in turn until one answers or `within` passes; returns that one (or the
    /// first, whose connect then reports the failure). No failover after start.
    static func firstAnsweringEndpoint(_ list: String, within: Duration, logger: Logger) async -> String {
        let endpoints = list.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) }.filter { !$0.isEmpty }
        guard endpoints.count > 1 else { return endpoints.first ?? list }
        let clock = ContinuousClock()
        let deadline = clock.now + within
        while clock.now < deadline {
            for e in endpoints {
                let client = EtcdClient(endpoint: e, requestTimeout: .seconds(2), logger: logger)
                if (try? await client.status()) != nil {
                    logger.info("using etcd endpoint", metadata: ["endpoint": "\(e)", "of": "\(endpoints.count)"])
                    return e
                }
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
        return endpoints[0]
    }

    static func nonEmpty(_ s: String?) -> String? {
        guard let s, !s.isEmpty else { return nil }
        return s
    }

    /// Creates the socket's missing parent directories (0755, like `mkdir -p`).
    static func makeParentDirectory(of path: String) throws(SystemError) {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false).dropLast()
        var current = path.hasPrefix("/") ? "" : "."
        while !parts.isEmpty {
            let p = parts.removeFirst()
            if p.isEmpty { continue }
            current += "/" + p
            if mkdir(current, 0o755) != 0, errno != EEXIST { throw SystemError("mkdir(\(current))") }
        }
        var st = stat()
        if current != "." && current != "", stat(current, &st) != 0 || st.st_mode & S_IFMT != S_IFDIR {
            throw SystemError("\(current) is not a directory (the socket's parent)", errno: ENOTDIR)
        }
    }
}

/// SIGTERM/SIGINT, trapped from the daemon's first moment: a signal before the service
/// group exists is remembered (and ends a pending etcd wait); once the group is attached,
/// a signal (or a remembered one) triggers its graceful shutdown.
final class ShutdownSignals: Sendable {
    private struct State {
        var requested = false
        var group: ServiceGroup?
    }
    private let state = Mutex(State())
    private let signals: UnixSignalsSequence

    init() async {
        signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let signals = self.signals
        Task { [self] in
            for await _ in signals {
                let group = state.withLock { s -> ServiceGroup? in
                    s.requested = true
                    return s.group
                }
                await group?.triggerGracefulShutdown()
            }
        }
    }

    var requested: Bool { state.withLock { $0.requested } }

    /// From now on signals shut `group` down; one that came earlier does so at once.
    func attach(_ group: ServiceGroup) async {
        let early = state.withLock { s -> Bool in
            s.group = group
            return s.requested
        }
        if early { await group.triggerGracefulShutdown() }
    }

    /// Runs `body` unless a shutdown is requested first (then it is cancelled: nil).
    func unlessRequested<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T? {
        try await withThrowingTaskGroup(of: T?.self) { tasks in
            tasks.addTask { try await body() }
            tasks.addTask { [self] in
                while !requested { try await Task.sleep(for: .milliseconds(100)) }
                return nil
            }
            let first = try await tasks.next()!
            tasks.cancelAll()
            return first
        }
    }
}

/// Keeps this instance's cluster registration alive; on shutdown it deregisters, so
/// the instance leaves `cluster_meta` at once instead of after the lease TTL.
struct MetaKeepalive: Service {
    let backend: MetaCore
    func run() async throws {
        try await withGracefulShutdownHandler {
            try await backend.run()
        } onGracefulShutdown: {
            backend.stop()
        }
    }
}

/// Deletes here what other instances deleted of this instance's objects, until shutdown.
struct ClusterDeletions: Service {
    let daemon: Daemon
    func run() async throws {
        await cancelWhenGracefulShutdown {
            await daemon.followClusterDeletions()
        }
    }
}

/// Keeps the service group alive until a shutdown signal arrives.
struct WaitForShutdown: Service {
    func run() async throws {
        try? await gracefulShutdown()
    }
}

enum ProcessEnvironment {
    static func all() -> [(String, String)] {
        var out: [(String, String)] = []
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") {
                out.append((String(s[..<eq]), String(s[s.index(after: eq)...])))
            }
            p += 1
        }
        return out
    }
}

/// Writes a line to standard error (unbuffered, no shared FILE state).
func printError(_ text: String) {
    var bytes = Array(text.utf8)
    if bytes.last != 10 { bytes.append(10) }
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
