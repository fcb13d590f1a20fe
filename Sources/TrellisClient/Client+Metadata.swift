import TrellisProtocol

extension Client {
    /// Creates an object from its metadata (`create_data_request`) and returns the tree
    /// as it now stands: with `id`, `signature` and `instance_id` filled in.
    ///
    /// The client's instance id is written into the tree and into every member that lacks
    /// one (blob members added with ``ObjectMeta/addMember(_:_:)-(_,Blob)``). New objects are
    /// transient; see ``persist(_:)``. When the tree has placeholder members the daemon
    /// resolves them, and the complete tree is read back.
    public func createMetadata(_ meta: ObjectMeta) throws(ClientError) -> ObjectMeta {
        var meta = meta
        meta.stampInstanceID(instanceID)
        let created = try Replies.createData(try call(.createData(meta.json)))
        let (id, signature, instance) = (created.id, created.signature, created.instanceID)
        if meta.hasPlaceholders {
            return try getMetadata(id, syncRemote: false)
        }
        meta["id"] = .string(id.description)
        meta["signature"] = .number(signature)
        meta["instance_id"] = .number(instance)
        return meta
    }

    /// The metadata of `id`, members expanded.
    ///
    /// - Parameters:
    ///   - syncRemote: refresh from the cluster's metadata service first (what Python's `get` does).
    ///   - wait: let the daemon hold the reply until the object exists.
    /// - Throws: ``ClientError`` with code ``StatusCode/objectNotExists`` when there is no such object.
    public func getMetadata(_ id: ObjectID, syncRemote: Bool = true, wait: Bool = false) throws(ClientError) -> ObjectMeta {
        guard let meta = try getMetadata([id], syncRemote: syncRemote, wait: wait).first else {
            throw ClientError(daemon: VineyardError(.objectNotExists, "object \(id) does not exist"))
        }
        return meta
    }

    /// The metadata of those of `ids` that exist, in id order.
    public func getMetadata(_ ids: [ObjectID], syncRemote: Bool = true, wait: Bool = false) throws(ClientError) -> [ObjectMeta] {
        guard !ids.isEmpty else { return [] }
        var out: [ObjectMeta] = []
        for (_, tree) in try Replies.metadata(try call(.getData(ids: ids, syncRemote: syncRemote, wait: wait))) {
            out.append(try ObjectMeta(json: tree))
        }
        return out
    }

    /// Objects whose typename matches `pattern` (a glob, or with `regex` an ECMAScript
    /// regular expression), at most `limit` of them (Python's default is 5). A pattern that
    /// matches `vineyard::Blob` lists sealed blobs too.
    public func listMetadata(pattern: String = "*", regex: Bool = false, limit: Int = 5) throws(ClientError) -> [ObjectMeta] {
        var out: [ObjectMeta] = []
        for (_, tree) in try Replies.metadata(try call(.listData(pattern: pattern, regex: regex, limit: limit))) {
            out.append(try ObjectMeta(json: tree))
        }
        return out
    }

    /// Whether an object or blob `id` exists.
    public func exists(_ id: ObjectID) throws(ClientError) -> Bool {
        try Replies.exists(try call(.exists(id)))
    }

    /// Deletes objects (`del_data_request`). Unknown ids are ignored.
    ///
    /// - Parameters:
    ///   - force: also delete every object that references them.
    ///   - deep: also delete members nobody else references (blob members always go).
    ///   - memoryTrim: return the freed pages to the operating system.
    public func delete(_ ids: [ObjectID], force: Bool = false, deep: Bool = true, memoryTrim: Bool = false) throws(ClientError) {
        try Replies.done(try call(.delete(ids, force: force, deep: deep, memoryTrim: memoryTrim)), .delData)
    }

    /// Deletes one object; see ``delete(_:force:deep:memoryTrim:)-([ObjectID],_,_,_)``.
    public func delete(_ id: ObjectID, force: Bool = false, deep: Bool = true, memoryTrim: Bool = false) throws(ClientError) {
        try delete([id], force: force, deep: deep, memoryTrim: memoryTrim)
    }

    /// Makes an object and its members persistent (visible to other instances, nameable).
    public func persist(_ id: ObjectID) throws(ClientError) {
        try Replies.done(try call(.persist(id)), .persist)
    }

    /// Whether an object is persistent.
    public func isPersistent(_ id: ObjectID) throws(ClientError) -> Bool {
        try Replies.ifPersist(try call(.ifPersist(id)))
    }

    /// Deletes every object and blob of the daemon (names are left as they are, like upstream).
    public func clear() throws(ClientError) {
        try Replies.done(try call(.clear), .clear)
    }

    // MARK: Objects with their blobs

    /// An object with its metadata and the blobs of its members that live on this
    /// instance, fetched in one `get_data` and one `get_buffers`, as Python's `get` does.
    ///
    /// With `fetch`, an object that another instance of the cluster holds is first
    /// migrated here (see ``migrate(_:)``) and the local copy is returned, zero-copy, as
    /// Python's `get(..., fetch=True)` does; without it, only the blobs that live here
    /// are mapped (over RPC, the daemon streams every blob).
    public func getObject(_ id: ObjectID, syncRemote: Bool = true, fetch: Bool = false) throws(ClientError) -> StoredObject {
        var meta = try getMetadata(id, syncRemote: syncRemote)
        if fetch, !isRPC, let owner = meta.instanceID, owner != instanceID, !meta.isGlobal {
            meta = try getMetadata(try migrate(id))
        }
        if meta.isBlob {
            let blob = try getBlob(id)
            return StoredObject(meta: meta, blobs: [id: blob])
        }
        let local = meta.blobReferences.filter { $0.instanceID == nil || $0.instanceID == instanceID }.map(\.id)
        return StoredObject(meta: meta, blobs: try getBlobs(local))
    }

    /// The object a name refers to; see ``getObject(_:syncRemote:fetch:)``.
    public func getObject(name: String, wait: Bool = false, fetch: Bool = false) throws(ClientError) -> StoredObject {
        try getObject(try getName(name, wait: wait), fetch: fetch)
    }

    /// Copies an object held by another instance of the cluster into this one: the
    /// daemon pulls the blobs from the owner's RPC endpoint, recreates and persists the
    /// object, and remembers the copy, so a second migration of the same object costs
    /// one round trip. Returns the local copy's id (the id itself when it is local).
    ///
    /// - Throws: ``StatusCode/objectNotExists`` for unknown ids; the owner's failure
    ///   (for example an unreachable endpoint) as the daemon reports it.
    public func migrate(_ id: ObjectID) throws(ClientError) -> ObjectID {
        try Replies.migrated(try call(.migrateObject(id)))
    }
}

/// An object read from the daemon: its metadata and its local blobs.
///
/// Members are reached with ``member(_:)`` (another `StoredObject` sharing the same
/// blobs) and blob members with ``blob(_:)`` — all zero-copy views.
public struct StoredObject: Sendable {
    /// The object's metadata tree.
    public let meta: ObjectMeta
    /// The blobs fetched for this object and its members, by id.
    public let blobs: [ObjectID: Blob]

    /// Pairs a tree with blobs already fetched (for readers that fetched them together).
    public init(meta: ObjectMeta, blobs: [ObjectID: Blob]) {
        self.meta = meta
        self.blobs = blobs
    }

    /// The object's id.
    public var id: ObjectID { meta.id ?? .invalid }

    /// The object's typename.
    public var typename: String { meta.typename }

    /// Checks that this object is a `typename` (with `generic`, any `typename<…>`): the one
    /// check every typed reader makes, with the one error message.
    func require(_ typename: String, generic: Bool = false) throws(ClientError) {
        let t = meta.typename
        let ok = generic ? t.hasPrefix(typename + "<") : t == typename
        guard ok else { throw .invalidObject("\(t) \(id) is not a \(typename)") }
    }

    /// The member `name`.
    public func member(_ name: String) throws(ClientError) -> StoredObject {
        guard let m = meta.member(name) else {
            throw .invalidObject("\(typename) \(id) has no member \(name)")
        }
        return StoredObject(meta: m, blobs: blobs)
    }

    /// The blob member `name` (the empty blob for `o8000000000000000`).
    public func blob(_ name: String) throws(ClientError) -> Blob {
        let m = try member(name)
        return try m.asBlob()
    }

    /// This object as a blob (for objects that are blob members).
    public func asBlob() throws(ClientError) -> Blob {
        guard meta.isBlob, let id = meta.id else { throw .invalidObject("\(typename) \(self.id) is not a blob") }
        if id == .emptyBlob { return .empty }
        guard let b = blobs[id] else {
            throw ClientError(
                .invalidObject, code: .objectNotExists,
                "blob \(id) is not available on this instance (it lives on instance \(meta.instanceID.map(String.init) ?? "?"))")
        }
        return b
    }
}
