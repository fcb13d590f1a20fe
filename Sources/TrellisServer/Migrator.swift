import Synchronization
import TrellisMeta
import TrellisClient
import TrellisProtocol
import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// `migrate_object` (and `get(..., fetch=True)`): copies another instance's object
/// here. The blobs come over the owner's RPC endpoint straight into this arena; the
/// object is rebuilt with the local blobs, persisted, and remembered, so a second
/// migration of the same object is free. If the owner vanishes mid-transfer the
/// partial blobs are freed: no half object is ever created.
final class Migrator: Sendable {
    let store: ObjectStore
    let cluster: Cluster
    /// original → local copy
    private let copies = Mutex<[ObjectID: ObjectID]>([:])
    /// objects being migrated right now; others wanting the same one wait.
    /// Objects being migrated, with the wake-ups of the callers waiting for each.
    private let inFlight = Mutex<[ObjectID: [Wakeup]]>([:])
    /// The connection id the migration's blobs are created under (reclaimed on failure).
    static let connection: ConnectionID = UInt64.max - 1
    /// Seconds a stalled owner may keep a transfer waiting.
    let receiveTimeoutSeconds: Int

    /// Counts migrations and the bytes they pulled (nil: metrics off).
    let metrics: DaemonMetrics?

    init(store: ObjectStore, cluster: Cluster, receiveTimeoutSeconds: Int = 30, metrics: DaemonMetrics? = nil) {
        self.store = store
        self.metrics = metrics
        self.cluster = cluster
        self.receiveTimeoutSeconds = receiveTimeoutSeconds
    }

    func migrate(_ id: ObjectID) throws(VineyardError) -> ObjectID {
        if id.isBlob { throw VineyardError(.invalid, "blobs cannot be directly migrated") }
        try cluster.sync([id], into: store)
        guard let where_ = store.placement(of: id) else {
            throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)")
        }
        if where_.global { throw VineyardError(.invalid, "global objects cannot be directly migrated") }
        if where_.instance == store.instanceID { return id }
        // One migration per object at a time; later callers reuse its result.
        while true {
            if let copy = copies.withLock({ $0[id] }), store.hasLocalObject(copy) { return copy }
            let wakeup = try? Wakeup()
            let mine = inFlight.withLock { m -> Bool in
                guard var waiting = m[id] else {
                    m[id] = []
                    return true
                }
                if let wakeup { waiting.append(wakeup) }
                m[id] = waiting
                return false
            }
            if mine { break }
            // Parked until the migration in flight ends (no eventfd to be had: a short pause).
            if let wakeup { _ = wakeup.wait() } else { usleep(10_000) }
        }
        defer { for w in inFlight.withLock({ $0.removeValue(forKey: id) }) ?? [] { w.signal() } }
        if let copy = copies.withLock({ $0[id] }), store.hasLocalObject(copy) { return copy }
        let start = ConnectionLoop.monotonicNanoseconds()
        var bytes = 0
        let copy: ObjectID
        do {
            copy = try copyHere(id, owner: where_.instance, bytes: &bytes)
        } catch {
            metrics?.recordMigration(bytes: nil, nanoseconds: ConnectionLoop.monotonicNanoseconds() - start)
            throw error
        }
        metrics?.recordMigration(bytes: bytes, nanoseconds: ConnectionLoop.monotonicNanoseconds() - start)
        copies.withLock { $0[id] = copy }
        return copy
    }

    /// Copies the object here; `bytes` is set to the blob bytes pulled from the owner.
    private func copyHere(_ id: ObjectID, owner: UInt64, bytes: inout Int) throws(VineyardError) -> ObjectID {
        guard case .object(let content)? = store.getData([id])[id.description] else {
            throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)")
        }
        guard let endpoint = try cluster.instances().first(where: { $0.id == owner })?.rpcEndpoint else {
            throw VineyardError(.invalid, "cannot migrate \(id): its owner, instance \(owner), is not alive in the cluster")
        }
        var blobIDs = Set<ObjectID>()
        Self.collectBlobs(.object(content), owner: owner, into: &blobIDs)
        let sorted = blobIDs.sorted()
        var local: [ObjectID: (id: ObjectID, size: Int)] = [:]
        do {
            local = try fetch(sorted, from: endpoint)
        } catch {
            throw VineyardError(error.code, "cannot migrate \(id) from instance \(owner) at \(endpoint): \(error.message)")
        }
        bytes = local.values.reduce(0) { $0 + $1.size }
        let tree = rebuild(.object(content), local: local)
        let created: CreatedObject
        let persisted: [TrellisStore.PersistedObject]
        do {
            created = try store.createData(tree)
            persisted = try store.persist(created.id)
        } catch {
            store.delete(local.values.map(\.id), force: true, deep: true, memoryTrim: false, connection: Self.connection)
            throw error
        }
        do {
            try cluster.publish(persisted)
        } catch {
            // Not shared with the cluster: drop the copy (and whatever part of it got
            // published) rather than keep an unrecorded one that a retry would duplicate.
            cluster.unpublish(store.delete([created.id], force: true, deep: true, memoryTrim: false, connection: Self.connection))
            throw error
        }
        return created.id
    }

    static func collectBlobs(_ tree: JSON, owner: UInt64, into out: inout Set<ObjectID>) {
        guard case .object(let o) = tree else { return }
        for (_, v) in o {
            guard case .object(let m) = v else { continue }
            if m["typename"]?.stringValue == "vineyard::Blob", let t = m["id"]?.stringValue, let b = ObjectID(string: t) {
                if b != .emptyBlob && (m["instance_id"]?.uint64Value ?? owner) == owner { out.insert(b) }
            } else {
                collectBlobs(v, owner: owner, into: &out)
            }
        }
    }

    /// The tree with every blob member replaced by its local copy and every level made
    /// a new, transient object of this instance (signatures kept).
    private func rebuild(_ tree: JSON, local: [ObjectID: (id: ObjectID, size: Int)]) -> JSON {
        guard case .object(var o) = tree else { return tree }
        for (k, v) in o {
            guard case .object(let m) = v else { continue }
            if m["typename"]?.stringValue == "vineyard::Blob", let t = m["id"]?.stringValue, let b = ObjectID(string: t) {
                if let copy = local[b] {
                    o[k] = [
                        "id": .string(copy.id.description), "typename": "vineyard::Blob", "nbytes": .number(copy.size),
                        "length": .number(copy.size), "instance_id": .number(store.instanceID), "transient": true,
                    ]
                }
            } else {
                o[k] = rebuild(v, local: local)
            }
        }
        for key in ["id", "__timestamp", "__name"] { o[key] = nil }
        o["instance_id"] = .number(store.instanceID)
        o["transient"] = true
        return .object(o)
    }

    /// Pulls blobs from another daemon's RPC endpoint into fresh local blobs, sealed.
    private func fetch(_ ids: [ObjectID], from endpoint: String) throws(VineyardError) -> [ObjectID: (id: ObjectID, size: Int)] {
        guard !ids.isEmpty else { return [:] }
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]),
            (1...65535).contains(port)
        else {
            throw VineyardError(.invalid, "invalid rpc endpoint '\(endpoint)'")
        }
        let host = String(endpoint[..<colon])
        let sock: StreamSocket
        do {
            sock = try StreamSocket.connect(host: host, port: port, timeoutSeconds: receiveTimeoutSeconds)
        } catch {
            throw VineyardError(.ioError, "connect: \(error)")
        }
        sock.descriptor.setReceiveTimeout(seconds: receiveTimeoutSeconds)
        // The owner is talked to as any client talks to a daemon: the client's frame
        // channel, TrellisProtocol's requests and replies.
        let channel = Channel(socket: sock.descriptor, maxReplySize: Frame.defaultMaxMessageSize)
        var created: [ObjectID] = []
        do throws(VineyardError) {
            // a peer run with --htpasswd: the daemon's own $TRELLIS_USERNAME / $TRELLIS_PASSWORD
            let credentials = Client.defaultCredentials
            _ = try call(
                channel, .register(username: credentials.username, password: credentials.password), expecting: "register_reply")
            let reply = try call(channel, .getRemoteBuffers(ids: ids, unsafe: false, compress: false), expecting: "get_buffers_reply")
            guard case .getBuffers(let payloads, _, _) = reply, payloads.count == ids.count else {
                throw VineyardError(.objectNotExists, "the owner no longer has every blob of the object")
            }
            var out: [ObjectID: (id: ObjectID, size: Int)] = [:]
            let asked = Set(ids)
            for p in payloads {
                guard asked.contains(p.objectID), out[p.objectID] == nil else {
                    throw VineyardError(.invalid, "the owner answered with blob \(p.objectID), which was not asked for")
                }
                guard p.dataSize <= store.arena.capacity else {
                    throw VineyardError(.notEnoughMemory, "the owner announced blob \(p.objectID) of \(p.dataSize) bytes, more than this whole arena (\(store.arena.capacity))")
                }
                let mine = try store.createBlob(size: p.dataSize, connection: Self.connection)
                if mine.objectID != .emptyBlob { created.append(mine.objectID) }
                if p.dataSize > 0 {
                    do throws(ClientError) {
                        try channel.receiveRaw(into: store.arena.address(mine.dataOffset), count: p.dataSize)
                    } catch {
                        throw VineyardError(.ioError, "the transfer broke off: \(error)")
                    }
                    try store.seal(mine.objectID, connection: Self.connection)
                    // Sealing records the sealer as a user; the migration is not one once the
                    // bytes are in (a use it kept would pin the blob against spilling and keep
                    // its memory retired forever after a delete).
                    store.release([mine.objectID], connection: Self.connection)
                }
                out[p.objectID] = (mine.objectID, p.dataSize)
            }
            return out
        } catch {
            for b in created { try? store.dropBlob(b, connection: Self.connection) }
            throw error
        }
    }

    /// One request to the owner and its reply: the owner's error replies are rethrown as
    /// they are, a broken connection or a malformed reply is an I/O error.
    private func call(_ channel: Channel, _ request: Request, expecting type: String) throws(VineyardError) -> Reply {
        do {
            try channel.send(request)
            return try Replies.decode(try channel.receive(), expecting: type)
        } catch {
            if error.kind == .daemon { throw VineyardError(error.code, error.message) }
            throw VineyardError(.ioError, error.description)
        }
    }
}
