import Synchronization
import TrellisMeta
import TrellisProtocol
import TrellisStore
import TrellisSystem

extension Reply.Created {
    init(_ c: CreatedObject) { self.init(id: c.id, signature: c.signature, instanceID: c.instanceID) }
}

/// Per-connection protocol state.
struct ConnectionState {
    let id: ConnectionID
    let isRPC: Bool
    /// The client process (SO_PEERCRED pid) of a UNIX-socket connection; nil over RPC.
    var peer: Int32? = nil
    /// The client's socket, watched while a request of it is parked (nil: none to watch).
    var socket: Descriptor? = nil
    var registered = false
    /// Registered with a user and password the `--htpasswd` database accepts.
    var authenticated = false
    /// Whether this connection already received the arena's descriptor.
    var arenaFDSent = false
    /// Streams this connection pulled from: dropped when it goes away, as upstream does.
    var pulledStreams: Set<ObjectID> = []
}

/// Live counts the daemon reports.
struct ServerCounters: Sendable {
    var ipcConnections = 0
    var rpcConnections = 0
    var deferredRequests = 0
}

/// Turns decoded requests into store calls and replies. No I/O: waiting requests
/// are handed a `cancelled` probe by the connection loop.
final class RequestHandler: Sendable {
    let store: ObjectStore
    let config: ServerConfig
    let counters: Mutex<ServerCounters>
    /// Connections and parked waits per client process, against `config.clientLimits`.
    let clients = Mutex(ClientUsage())
    let hostID: UInt64
    let startTimestamp: UInt64
    /// Cluster metadata (`--meta etcd`); nil for a single instance.
    let cluster: Cluster?
    let migrator: Migrator?
    /// The daemon's sessions (nil in tests that build a bare handler).
    let sessions: Sessions?

    init(store: ObjectStore, config: ServerConfig, cluster: Cluster? = nil, sessions: Sessions? = nil) {
        self.store = store
        self.config = config
        self.cluster = cluster
        self.sessions = sessions
        self.migrator = cluster.map { Migrator(store: store, cluster: $0, metrics: config.metrics) }
        self.counters = Mutex(ServerCounters())
        self.hostID = hostIdentifier()
        self.startTimestamp = ObjectStore.wallClockMillis()
    }

    /// `persist`, and with `name` the `put_name` that follows it, as one request: in a
    /// cluster the records and the name go to etcd in one transaction, the name last. A
    /// publish that fails leaves the object transient and the name as it was.
    private func persist(_ id: ObjectID, naming name: String?) throws(VineyardError) {
        if let cluster { try cluster.sync([id], into: store) }
        // (what put_name refuses, refused before anything is published)
        if name != nil && id.isBlob { throw VineyardError(.invalid, "blobs cannot have name") }
        let persisted = try store.persist(id, trees: cluster != nil)
        if let cluster {
            do {
                try cluster.publish(persisted, naming: name.map { ($0, id) })
            } catch {
                // Not (fully) published: transient again, so that a retry publishes all of it.
                store.revertPersist(persisted)
                cluster.retract(persisted)
                throw error
            }
        }
        if let name { try store.putName(name, for: id) }
    }

    /// The protocol extensions this daemon serves, advertised in the register reply
    /// (`trellis_extensions`; upstream clients ignore the field).
    static let extensions = ["split_buffer", "split_seal", "split_unaligned", "get_objects", "range_buffer", "persist_name", "put_inline"]

    func handle(_ request: Request, _ conn: inout ConnectionState, cancelled: () -> Bool) throws(VineyardError) -> Outcome {
        switch request {
        case .register(let r):
            if let htpasswd = config.htpasswd {
                switch htpasswd.verify(user: r.username, password: r.password) {
                case .accepted:
                    conn.authenticated = true
                case .rejected:
                    conn.authenticated = false
                    throw VineyardError(.connectionError, "Incorrect username and password (--htpasswd)")
                case .unavailable(let why):
                    conn.authenticated = false
                    throw VineyardError(.connectionError, "Cannot verify the username and password: \(why)")
                }
            }
            conn.registered = true
            return .reply(
                .register(
                    Reply.Register(
                        instanceID: store.instanceID, ipcSocket: config.socketPath,
                        rpcEndpoint: conn.isRPC || config.rpcPort != nil ? config.rpcEndpoint : "0.0.0.0:0", sessionID: config.sessionID,
                        storeMatch: r.storeType == 1, supportsRPCCompression: false, version: config.version,
                        extensions: Self.extensions)))
        case .exit:
            return .close
        default:
            if config.htpasswd != nil && !conn.authenticated {
                throw VineyardError(
                    .connectionError, "Authentication required: register with a username and password first (the daemon runs with --htpasswd)")
            }
        }
        switch request {
        case .createBuffer(let size):
            try requireIPC(conn, "create_buffer_request")
            let p = try store.createBlob(size: size, connection: conn.id)
            let send = p.dataSize > 0 && !conn.arenaFDSent
            if send { conn.arenaFDSent = true }
            return .reply(.createBuffer(p, fd: send ? p.storeFD : -1), sendArenaFD: send)
        case .createBuffers(let sizes):
            try requireIPC(conn, "create_buffers_request")
            let ps = try store.createBlobs(sizes: sizes, connection: conn.id)
            let send = ps.contains { $0.dataSize > 0 } && !conn.arenaFDSent
            if send { conn.arenaFDSent = true }
            return .reply(.createBuffers(ps, fds: send ? [store.arena.fd.raw] : []), sendArenaFD: send)
        case .createRangeBuffer(let start, let step, let count):
            try requireIPC(conn, "trellis_create_range_buffer_request")
            let p = try store.createRangeBlob(start: start, step: step, count: count, connection: conn.id)
            let send = p.dataSize > 0 && !conn.arenaFDSent
            if send { conn.arenaFDSent = true }
            return .reply(.createBuffer(p, fd: send ? p.storeFD : -1), sendArenaFD: send)
        case .seal(let id):
            try store.seal(id, connection: conn.id)
            return .reply(.done(.seal))
        case .getBuffers(let ids, let unsafe):
            try requireIPC(conn, "get_buffers_request")
            let ps = try store.getBlobs(ids, unsafe: unsafe, connection: conn.id)
            let send = ps.contains { $0.dataSize > 0 } && !conn.arenaFDSent
            if send { conn.arenaFDSent = true }
            return .reply(.getBuffers(ps, fds: send ? [store.arena.fd.raw] : [], compress: false), sendArenaFD: send)
        case .dropBuffer(let id):
            try store.dropBlob(id, connection: conn.id)
            return .reply(.done(.dropBuffer))
        case .shrinkBuffer(let id, let size):
            try store.shrinkBlob(id, size: size)
            return .reply(.done(.shrinkBuffer))
        case .splitBuffer(let id, let sizes, let seal):
            try requireIPC(conn, "trellis_split_buffer_request")
            return .reply(.splitBuffer(try store.splitBlob(id, sizes: sizes, seal: seal, connection: conn.id)))
        case .increaseReferenceCount(let ids):
            store.addUse(ids, connection: conn.id)
            return .reply(.done(.increaseReferenceCount))
        case .release(let id):
            store.release([id], connection: conn.id)
            return .reply(.done(.release))
        case .createData(let content):
            if let cluster { try cluster.sync(Self.memberIDs(content), into: store) }
            let c = try store.createData(content)
            return .reply(.createData(Reply.Created(c)))
        case .putInline(let content, let blobs):
            // (no file descriptor: served over RPC too)
            if let cluster { try cluster.sync(Self.memberIDs(content), into: store) }
            return .reply(.createData(Reply.Created(try store.putInline(content, blobs: blobs, connection: conn.id))))
        case .createDatas(let contents):
            var made: [CreatedObject] = []
            for content in contents {
                if let cluster { try cluster.sync(Self.memberIDs(content), into: store) }
                made.append(try store.createData(content))
            }
            return .reply(.createDatas(made.map(Reply.Created.init)))
        case .getData(let ids, let syncRemote, let wait):
            if let cluster, syncRemote { try cluster.sync(ids, into: store) }
            if wait {
                _ = try withDeferred(conn) { store.wait(for: ids.map { .object($0) }, watching: conn.socket, cancelled: cancelled) { store.allExist(ids) ? true : nil } }
            }
            return .reply(.data(store.getData(ids).objectValue ?? [:]))
        case .getObjects(var ids, let name, let syncRemote):
            try requireIPC(conn, "trellis_get_objects_request")
            if let name {
                let found: ObjectID?  // (as get_name finds it, without waiting)
                if let cluster { found = try cluster.objectID(forName: name) } else { found = store.getName(name) }
                guard let id = found else { throw VineyardError(.objectNotExists, "failed to find name: \(name)") }
                ids = [id]
            }
            if let cluster, syncRemote { try cluster.sync(ids, into: store) }
            let content = store.getData(ids).objectValue ?? [:]
            let ps = try store.getBlobs(store.localBlobs(of: ids), unsafe: false, connection: conn.id)
            let send = ps.contains { $0.dataSize > 0 } && !conn.arenaFDSent
            if send { conn.arenaFDSent = true }
            return .reply(.objects(content, payloads: ps, fds: send ? [store.arena.fd.raw] : []), sendArenaFD: send)
        case .listData(let pattern, let regex, let limit):
            let store = self.store
            let listing = try store.listData(pattern: pattern, regex: regex, limit: limit) {
                (count, matches) throws(VineyardError) -> [(ObjectID, JSON)] in
                try cluster?.listObjects(count: count, matching: matches, notHeldIn: store) ?? []
            }
            return .reply(.data(listing.objectValue ?? [:]))
        case .exists(let id):
            // Unknown ids are looked up, imported ones re-checked (their owner may have deleted them).
            try cluster?.sync([id], into: store)
            return .reply(.exists(store.exists(id)))
        case .delData(let d):
            if let cluster {
                // Objects of other instances are deleted here too (vineyard's semantics): bring
                // in what they are and what refers to them, so that the store's rules (a
                // referenced object stays unless forced; force takes its referrers) apply
                // to the cluster's objects; their owners follow the removal of the records.
                try cluster.sync(d.ids, into: store)
                // Only persisted objects can be referred to from elsewhere. Best effort: with
                // etcd unreachable the delete still happens here (as its unpublish does).
                let persisted = d.ids.filter { !$0.isBlob && (try? store.isPersistent($0)) == true }
                if !persisted.isEmpty, let referrers = try? cluster.referrers(of: persisted), !referrers.isEmpty {
                    try? cluster.sync(referrers, into: store)
                }
            }
            let result = store.delete(d.ids, force: d.force, deep: d.deep, memoryTrim: d.memoryTrim, connection: conn.id)
            cluster?.unpublish(result)
            if d.wantsFeedback {
                return .reply(.deletedBlobs(result.freedBlobs))
            }
            return .reply(.done(.delData))
        case .persist(let id):
            try persist(id, naming: nil)
            return .reply(.done(.persist))
        case .persistNamed(let id, let name):
            try persist(id, naming: name)
            return .reply(.done(.persist))
        case .ifPersist(let id):
            if let cluster { try cluster.sync([id], into: store) }
            return .reply(.ifPersist(try store.isPersistent(id)))
        case .shallowCopy(let id, let extra):
            let copy = try store.shallowCopy(id, extra: extra)
            return .reply(.shallowCopy(copy))
        case .label(let id, let keys, let values):
            try store.label(id, keys: keys, values: values)
            return .reply(.done(.label))
        case .clear:
            let cleared = store.clear(connection: conn.id)
            cluster?.unpublish(cleared)
            return .reply(.done(.clear))
        case .memoryTrim:
            store.trimFreeMemory()
            return .reply(.memoryTrim(trimmed: false))
        case .putName(let id, let name):
            if let cluster { try cluster.sync([id], into: store) }
            try store.putName(name, for: id)
            try cluster?.putName(name, id)
            return .reply(.done(.putName))
        case .getName(let name, let wait):
            var found: ObjectID?
            if let cluster {
                found = try cluster.objectID(forName: name)
                if found == nil && wait { found = try withDeferred(conn) { cluster.waitForName(name, watching: conn.socket, cancelled: cancelled) } }
            } else {
                found = store.getName(name)
                if found == nil && wait {
                    found = try withDeferred(conn) { store.wait(for: [.name(name)], watching: conn.socket, cancelled: cancelled) { store.getName(name) } }
                }
            }
            guard let id = found else { throw VineyardError(.objectNotExists, "failed to find name: \(name)") }
            return .reply(.getName(id))
        case .listName(let pattern, let regex, let limit):
            let names: [(String, ObjectID)]
            if let cluster {
                let all = try cluster.names().map { ($0.key, ObjectID($0.value)) }
                names = ObjectStore.matchNames(all, pattern: pattern, regex: regex, limit: limit)
            } else {
                names = store.listNames(pattern: pattern, regex: regex, limit: limit)
            }
            return .reply(.listName(Dictionary(names, uniquingKeysWith: { a, _ in a })))
        case .dropName(let name):
            store.dropName(name)
            try cluster?.dropName(name)
            return .reply(.done(.dropName))
        case .clusterMeta:
            guard let cluster else {
                return .reply(.clusterMeta(["i\(store.instanceID)": instanceInfo()]))
            }
            var meta: [String: JSON] = [:]
            for i in try cluster.instances() { meta["i\(i.id)"] = i.clusterMetaJSON }
            return .reply(.clusterMeta(meta))
        case .instanceStatus:
            let st = store.status()
            let c = counters.withLock { $0 }
            var status: [String: JSON] = [
                "instance_id": .number(st.instanceID), "deployment": .string(config.deployment),
                "memory_usage": .number(st.memoryUsage), "memory_limit": .number(st.memoryLimit),
                "deferred_requests": .number(c.deferredRequests), "ipc_connections": .number(c.ipcConnections),
                "rpc_connections": .number(c.rpcConnections),
                // Trellis extras (clients ignore unknown keys):
                "free_bytes": .number(st.freeBytes), "largest_free_block": .number(st.largestFreeBlock),
                "fragmentation": .double(st.fragmentation), "objects": .number(st.objects),
                "blobs": .number(st.blobs), "names": .number(st.names), "spilled_bytes": .number(st.spilledBytes),
                "retired_bytes": .number(st.retiredBytes),
                "pages": .string(store.arena.pages.rawValue),
                // as in cluster_meta (upstream's names): a launcher maps instance_id → node
                "hostname": .string(config.hostname), "nodename": .string(config.nodename),
                "rpc_endpoint": .string(config.rpcEndpoint),
            ]
            // `--metrics_port`: where Prometheus scrapes this daemon (0 until the exporter listens)
            if let metrics = config.metrics { status["metrics_port"] = .number(metrics.port) }
            return .reply(.instanceStatus(.object(status)))
        case .debug:
            return .reply(.debug(.null))
        case .migrateObject(let id):
            if let migrator {
                return .reply(.migrateObject(try migrator.migrate(id)))
            }
            if id.isBlob { throw VineyardError(.invalid, "blobs cannot be directly migrated") }
            guard store.exists(id) else { throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)") }
            return .reply(.migrateObject(id))
        case .evict(let ids):
            try store.evict(ids)
            return .reply(.done(.evict))
        case .load(let ids, let pin):
            try store.load(ids, pin: pin)
            return .reply(.done(.load))
        case .unpin(let ids):
            store.unpin(ids)
            return .reply(.done(.unpin))
        case .isSpilled(let id):
            return .reply(.isSpilled(store.isSpilled(id)))
        case .isInUse(let id):
            return .reply(.isInUse(store.isInUse(id)))
        case .createStream(let id):
            try store.createStream(id)
            return .reply(.done(.createStream))
        case .openStream(let id, let mode):
            try store.openStream(id, mode: mode)
            return .reply(.done(.openStream))
        case .getNextStreamChunk(let id, let size):
            try requireIPC(conn, "get_next_stream_chunk_request")
            let connection = conn.id
            let socket = conn.socket
            let p = try withDeferred(conn) {
                Result { () throws(VineyardError) in
                    try store.nextStreamChunk(id, size: size, connection: connection, watching: socket, cancelled: cancelled)
                }
            }.get()
            let send = p.dataSize > 0 && !conn.arenaFDSent
            if send { conn.arenaFDSent = true }
            return .reply(.nextStreamChunk(p, fd: send ? p.storeFD : -1), sendArenaFD: send)
        case .pushNextStreamChunk(let id, let chunk):
            try store.pushStreamChunk(id, chunk: chunk)
            return .reply(.done(.pushNextStreamChunk))
        case .pullNextStreamChunk(let id):
            conn.pulledStreams.insert(id)
            let connection = conn.id
            let socket = conn.socket
            let (chunk, deletion) = try withDeferred(conn) {
                Result { () throws(VineyardError) in
                    try store.pullStreamChunk(id, connection: connection, watching: socket, cancelled: cancelled)
                }
            }.get()
            cluster?.unpublish(deletion)
            return .reply(.pullStreamChunk(chunk))
        case .stopStream(let id, let failed):
            try store.stopStream(id, failed: failed)
            return .reply(.done(.stopStream))
        case .dropStream(let id):
            let deletion = try store.dropStream(id, connection: conn.id)  // not inside `cluster?.`: it must run without a cluster
            cluster?.unpublish(deletion)
            return .reply(.done(.dropStream))
        case .newSession(let bulkStoreType):
            guard let sessions else { throw VineyardError(.notImplemented, "sessions are not served here") }
            return .reply(.newSession(socketPath: try sessions.create(bulkStoreType: bulkStoreType)))
        case .deleteSession:
            guard config.sessionID != 0 else {
                throw VineyardError(.invalid, "delete_session: the root session cannot be deleted (stop the daemon instead)")
            }
            sessions?.retire(config.sessionID)
            return .replyThenClose(.done(.deleteSession))
        case .moveBuffersOwnership(let moves, let from):
            if from != config.sessionID {
                guard let source = sessions?.handler(from)?.store else {
                    throw VineyardError(.invalid, "Session (sid = \(Sessions.label(from))) not exit")
                }
                try store.adoptBlobs(from: source, moves, connection: conn.id)
            }
            return .reply(.done(.moveBuffersOwnership))
        case .unsupported(let type):
            if type.contains("gpu") { throw VineyardError(.invalid, "GPU support is not enabled") }
            throw VineyardError(.notImplemented, "\(type) is not supported by Trellis")
        case .createRemoteBuffer(let size, _):
            let p = try store.createBlob(size: size, connection: conn.id)
            var shown = p
            shown.isSealed = p.dataSize > 0 || p.isSealed  // upstream reports these sealed at once
            return .receiveBlobBytes(.createBuffer(shown, fd: -1), blobs: [p.objectID], ranges: [(p.dataOffset, p.dataSize)])
        case .createRemoteBuffers(let sizes, _):
            let ps = try store.createBlobs(sizes: sizes, connection: conn.id)
            let shown = ps.map { p -> Payload in
                var q = p
                q.isSealed = p.dataSize > 0 || p.isSealed
                return q
            }
            return .receiveBlobBytes(.createBuffers(shown, fds: []), blobs: ps.map(\.objectID), ranges: ps.map { ($0.dataOffset, $0.dataSize) })
        case .getRemoteBuffers(let ids, let unsafe, _):
            let ps: [Payload]
            do {
                ps = try store.getBlobs(ids, unsafe: unsafe, connection: conn.id)
            } catch {
                throw VineyardError(.keyError, "Failed to get objects")
            }
            return .replyWithBlobBytes(.getBuffers(ps, fds: [], compress: false), ranges: ps.map { ($0.dataOffset, $0.dataSize) })
        case .register, .exit:
            fatalError("handled above")
        }
    }

    /// An object's record was removed from the cluster by another instance: delete it
    /// here (shallow: its members come as records of their own; its blobs go with the
    /// last object that refers to them). Nothing when it is not here.
    func deletedElsewhere(_ id: ObjectID) -> Deletion {
        // only a persisted object (or an import): a persist whose publish failed retracts
        // its records after making the object transient again, and that must not delete it
        guard (try? store.isPersistent(id)) == true else { return Deletion() }
        return store.delete([id], force: false, deep: false, memoryTrim: false)
    }

    /// A connection ended: the streams it read from are dropped (their unread chunks freed),
    /// as upstream's daemon does when a reader leaves.
    func connectionClosed(_ conn: ConnectionState) {
        for id in conn.pulledStreams {
            if let deletion = try? store.dropStream(id, connection: conn.id) { cluster?.unpublish(deletion) }
        }
    }

    /// Ids of the non-blob members a create_data content refers to (placeholders or trees).
    static func memberIDs(_ content: JSON) -> [ObjectID] {
        var out: [ObjectID] = []
        func walk(_ v: JSON) {
            guard case .object(let o) = v else { return }
            for (_, m) in o {
                guard case .object(let mo) = m else { continue }
                if let t = mo["id"]?.stringValue, let id = ObjectID(string: t) {
                    if !id.isBlob && mo["typename"]?.stringValue != "vineyard::Blob" { out.append(id) }
                } else {
                    walk(m)
                }
            }
        }
        walk(content)
        return out
    }

    private func requireIPC(_ conn: ConnectionState, _ type: String) throws(VineyardError) {
        if conn.isRPC { throw VineyardError(.invalid, "\(type) needs an IPC connection (it passes a file descriptor)") }
    }

    /// Parks a request (a wait); refused when its client already has as many parked as
    /// `clientLimits.waits` allows.
    private func withDeferred<T>(_ conn: ConnectionState, _ body: () -> T) throws(VineyardError) -> T {
        if let peer = conn.peer {
            let limits = config.clientLimits
            guard clients.withLock({ $0.admitWait(peer, limits: limits) }) else {
                throw VineyardError(
                    .invalid, "too many waiting requests from this client (pid \(peer)): the limit is \(limits.waits)")
            }
        }
        defer { if let peer = conn.peer { clients.withLock { $0.releaseWait(peer) } } }
        counters.withLock { $0.deferredRequests += 1 }
        defer { counters.withLock { $0.deferredRequests -= 1 } }
        return body()
    }

    /// Counts a new connection of `peer`; false when its client is at `clientLimits.connections`.
    func admitConnection(_ peer: Int32) -> Bool {
        let limits = config.clientLimits
        return clients.withLock { $0.admitConnection(peer, limits: limits) }
    }

    func releaseConnection(_ peer: Int32) { clients.withLock { $0.releaseConnection(peer) } }

    func instanceInfo() -> JSON {
        [
            "hostid": .number(hostID), "hostname": .string(config.hostname), "nodename": .string(config.nodename),
            "ipc_socket": .string(config.socketPath), "rpc_endpoint": .string(config.rpcEndpoint),
            "timestamp": .number(startTimestamp),
        ]
    }
}
