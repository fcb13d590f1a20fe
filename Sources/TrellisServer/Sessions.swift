import Logging
import Synchronization
import TrellisProtocol
import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// Connection ids are unique across the daemon's sessions: an RPC connection that
/// attaches to a session keeps its id in that session's store.
let connectionIDs = Atomic<UInt64>(0)

/// The daemon's sessions (`new_session`): the root session (id 0, the daemon itself)
/// and isolated child servers, each with its own store (arena, metadata, names), its own
/// IPC socket `<root socket>.S<16 hex>` and no RPC listener, as vineyardd's. RPC clients
/// attach to a child by registering with its session id.
final class Sessions: Sendable {
    struct Entry: Sendable {
        let daemon: Daemon
        let listeners: [Listener]
    }

    /// Most child sessions at once: each holds an arena's address space and a listener.
    static let maxSessions = 64

    private let root: ServerConfig
    private let capacity: Int
    private let pages: Arena.Pages
    private let instanceID: UInt64
    private let logger: Logger
    private let table = Mutex<[UInt64: Entry]>([:])
    private let rootHandler = Mutex<RequestHandler?>(nil)

    init(root: ServerConfig, capacity: Int, pages: Arena.Pages, instanceID: UInt64, logger: Logger) {
        self.root = root
        self.capacity = capacity
        self.pages = pages
        self.instanceID = instanceID
        self.logger = logger
    }

    func setRoot(_ handler: RequestHandler) { rootHandler.withLock { $0 = handler } }

    /// The handler serving session `id` (0: the root).
    func handler(_ id: UInt64) -> RequestHandler? {
        if id == 0 { return rootHandler.withLock { $0 } }
        return table.withLock { $0[id]?.daemon.handler }
    }

    static func label(_ id: UInt64) -> String {
        let hex = String(id, radix: 16)
        return "S" + String(repeating: "0", count: max(0, 16 - hex.count)) + hex
    }

    /// Starts a child session; returns its socket path.
    func create(bulkStoreType: Int) throws(VineyardError) -> String {
        guard bulkStoreType == 1 else {
            throw VineyardError(.invalid, "new_session: bulk store type \(bulkStoreType) is not served (Trellis has the default store only)")
        }
        guard table.withLock({ $0.count }) < Self.maxSessions else {
            throw VineyardError(.invalid, "too many sessions (\(Self.maxSessions)): delete some first")
        }
        var id: UInt64 = 0
        repeat { id = UInt64.random(in: 1...UInt64(Int64.max)) } while table.withLock({ $0[id] != nil })
        var config = root
        config.socketPath = root.socketPath + "." + Self.label(id)
        config.rpcPort = nil
        config.sessionID = id
        let store: ObjectStore
        do {
            store = try ObjectStore(capacity: capacity, instanceID: instanceID, pages: pages)
        } catch {
            throw VineyardError(.notEnoughMemory, "new_session: cannot create the session's memory: \(error)")
        }
        var l = logger
        l[metadataKey: "session"] = "\(Self.label(id))"
        let daemon = Daemon(store: store, config: config, logger: l, sessions: self)
        let listeners: [Listener]
        do {
            listeners = try Daemon.bind(config).listeners
            try daemon.run(listeners: listeners)
        } catch {
            throw VineyardError(.ioError, "new_session: cannot listen on \(config.socketPath): \(error)")
        }
        table.withLock { $0[id] = Entry(daemon: daemon, listeners: listeners) }
        logger.info("session created", metadata: ["session": "\(Self.label(id))", "socket": "\(config.socketPath)"])
        return config.socketPath
    }

    /// `delete_session`: the session stops accepting (its socket goes) and is removed once
    /// its last connection is gone.
    func retire(_ id: UInt64) {
        guard let entry = table.withLock({ $0[id] }) else { return }
        for l in entry.listeners { l.close() }
        entry.daemon.drain { [self] in
            table.withLock { _ = $0.removeValue(forKey: id) }
            logger.info("session deleted", metadata: ["session": "\(Self.label(id))"])
        }
    }

    /// Stops every child session (the daemon is stopping).
    func stopAll() {
        let all = table.withLock { t in
            defer { t.removeAll() }
            return Array(t.values)
        }
        for e in all { e.daemon.stop(e.listeners) }
    }

    var count: Int { table.withLock { $0.count } }
}
