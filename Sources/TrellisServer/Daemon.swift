import CoreMetrics
import Logging
import ServiceLifecycle
import CTrellisShim
import Synchronization
import TrellisMeta
import TrellisProtocol
import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// The Trellis daemon: an IPC (UNIX socket) front end, and RPC (TCP) when configured,
/// over one ``ObjectStore``. Runs as a ServiceLifecycle `Service`: `run()` returns
/// after a graceful shutdown, with the socket file removed.
public final class Daemon: Service, Sendable {
    public let store: ObjectStore
    public let config: ServerConfig
    let handler: RequestHandler
    let logger: Logger
    private let connections = Mutex<[ConnectionID: Descriptor]>([:])
    /// The daemon's sessions (shared by the root and its children).
    let sessions: Sessions
    /// Set by `drain`: called once when the last connection is gone (a deleted session).
    private let onDrained = Mutex<(@Sendable () -> Void)?>(nil)

    /// - Parameter meta: cluster metadata (`--meta etcd`), already registered; nil for
    ///   a single instance.
    public convenience init(store: ObjectStore, config: ServerConfig, logger: Logger, meta: MetaCore? = nil) {
        let sessions = Sessions(
            root: config, capacity: store.arena.capacity, pages: store.arena.pages, instanceID: store.instanceID, logger: logger)
        self.init(store: store, config: config, logger: logger, meta: meta, sessions: sessions)
        sessions.setRoot(handler)
    }

    /// A session's server (the root's when `config.sessionID` is 0).
    init(store: ObjectStore, config: ServerConfig, logger: Logger, meta: MetaCore? = nil, sessions: Sessions) {
        // At most two malloc arenas: connection threads come and go, and glibc's default
        // (8 per core) keeps their arenas' pages resident after they are gone.
        trellis_limit_malloc_arenas(2)
        self.store = store
        self.config = config
        self.logger = logger
        self.sessions = sessions
        self.handler = RequestHandler(
            store: store, config: config, cluster: meta.map { Cluster(backend: $0, instanceID: store.instanceID) },
            sessions: sessions)
    }

    /// Follows deletions made through other instances of the cluster (`--meta etcd`): an
    /// object of this instance deleted elsewhere is deleted here too, so its memory comes
    /// back (vineyard's meta sync does the same). Runs until cancelled; returns at once
    /// without a cluster.
    public func followClusterDeletions() async {
        guard let cluster = handler.cluster else { return }
        for await raw in cluster.backend.objectRemovals() {
            let deletion = handler.deletedElsewhere(ObjectID(raw))
            // names bound to it here (the records are gone already)
            for name in deletion.droppedNames { _ = try? await cluster.backend.dropName(name) }
            _ = try? await cluster.backend.removeObjects(deletion.unpublished.map(\.rawValue).filter { $0 != raw })
        }
    }

    /// Sets the metrics' gauges (arena, objects, clients, …) from the store's status now;
    /// the exporter calls it before each scrape. Nothing without `config.metrics`.
    public func updateMetrics() {
        guard let metrics = config.metrics else { return }
        metrics.update(status: store.status(), counters: handler.counters.withLock { $0 })
    }

    /// Calls `done` once no connection is left (now, if none is): a deleted session.
    func drain(_ done: @escaping @Sendable () -> Void) {
        let idle = connections.withLock { c in
            if c.isEmpty { return true }
            onDrained.withLock { $0 = done }
            return false
        }
        if idle { done() }
    }

    /// Publishes this instance's persistent objects and names again (after the
    /// metadata service lost them, e.g. an etcd restart).
    public static func republish(store: ObjectStore, to meta: MetaCore) async throws {
        let state = store.ownPersistentState()
        try await meta.publishObjects(state.objects.map { (objectID: $0.id.rawValue, metadata: $0.tree.description) })
        for (name, id) in state.names { try await meta.putName(name, objectID: id.rawValue) }
    }

    /// Binds the IPC listener and, when configured, the RPC listener, so that errors
    /// surface before anything runs. Returns the listeners (IPC first) and the
    /// configuration with the RPC port actually bound (port 0 picks a free one). The RPC
    /// listener is bound first: whoever waits for the IPC socket to accept (a runtime, a
    /// test, a supervisor) then finds the RPC port listening too.
    public static func bind(_ config: ServerConfig) throws(SystemError) -> (listeners: [Listener], config: ServerConfig) {
        var config = config
        var rpc: Listener?
        if let port = config.rpcPort {
            let bound = try Listener.tcp(host: config.rpcHost, port: port)
            config.rpcPort = bound.port
            rpc = bound
        }
        let ipc: Listener
        do {
            ipc = try Listener.unix(path: config.socketPath)
        } catch {
            rpc?.close()
            throw error
        }
        return ([ipc] + (rpc.map { [$0] } ?? []), config)
    }

    public func run() async throws {
        let listeners = try Self.bind(config).listeners
        try run(listeners: listeners)
        logger.info(
            "trellis daemon ready",
            metadata: ["socket": "\(config.socketPath)", "rpc": "\(config.rpcPort.map { "\(config.rpcHost):\($0)" } ?? "off")",
                       "size": "\(store.arena.capacity)", "instance": "\(store.instanceID)"])
        try? await gracefulShutdown()
        stop(listeners)
    }

    /// Starts accept threads on already bound listeners.
    public func run(listeners: [Listener]) throws {
        for l in listeners {
            let isRPC = l.unixPath == nil
            try spawnThread(name: isRPC ? "rpc-accept" : "ipc-accept") { [self] in acceptLoop(l, isRPC: isRPC) }
        }
    }

    /// Stops accepting, disconnects every client and removes the socket file.
    public func stop(_ listeners: [Listener]) {
        // the root takes its sessions down with it (their sockets go too)
        if config.sessionID == 0 { sessions.stopAll() }
        for l in listeners { l.close() }
        let open = connections.withLock { $0 }
        for (_, socket) in open { socket.shutdown() }
        logger.info("trellis daemon stopped")
    }

    private func acceptLoop(_ listener: Listener, isRPC: Bool) {
        while true {
            let sock: StreamSocket
            do {
                sock = try listener.accept()
            } catch {
                return
            }
            if isRPC { sock.setNoDelay() }
            let id = connectionIDs.add(1, ordering: .relaxed).newValue
            let socket = sock.descriptor
            if let metrics = config.metrics { (isRPC ? metrics.rpcConnections : metrics.ipcConnections).increment() }
            let fdBox = FDBox(sock)
            do {
                try spawnThread(name: "conn-\(id)") { [self] in
                    serve(fdBox, socket: socket, id: id, isRPC: isRPC)
                }
            } catch {
                logger.error("cannot start a connection thread", metadata: ["error": "\(error)"])
                fdBox.close()
            }
        }
    }

    private func serve(_ box: FDBox, socket: Descriptor, id: ConnectionID, isRPC: Bool) {
        connections.withLock { $0[id] = socket }
        handler.counters.withLock { isRPC ? ($0.rpcConnections += 1) : ($0.ipcConnections += 1) }
        var loop = ConnectionLoop(
            socket: socket, id: id, isRPC: isRPC, handler: handler, maxMessageSize: config.maxMessageSize, logger: logger)
        loop.run()
        // an RPC connection may have attached to another session: clean up there
        let served = loop.handler
        served.connectionClosed(loop.state)
        let reclaimed = served.store.disconnect(id)
        if reclaimed > 0 {
            logger.info("reclaimed unsealed blobs of a departed client", metadata: ["connection.id": "\(id)", "blobs": "\(reclaimed)"])
        }
        handler.counters.withLock { isRPC ? ($0.rpcConnections -= 1) : ($0.ipcConnections -= 1) }
        let (idle, drained) = connections.withLock { c in
            c[id] = nil
            return (c.isEmpty, c.isEmpty ? onDrained.withLock { d in defer { d = nil }; return d } : nil)
        }
        box.close()
        drained?()
        // The last client left: give the freed heap (request buffers, thread caches) back.
        if idle { trellis_malloc_trim() }
    }
}

/// Carries a socket's ownership to the thread that serves it.
final class FDBox: @unchecked Sendable {
    // Sendable: created by the accept thread and then used by exactly one connection thread.
    private var socket: StreamSocket?

    init(_ socket: consuming StreamSocket) {
        self.socket = consume socket
    }

    func close() {
        socket = nil
    }
}
