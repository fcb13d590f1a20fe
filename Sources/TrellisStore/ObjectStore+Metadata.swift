import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// The result of `create_data`.
public struct CreatedObject: Sendable, Equatable {
    public var id: ObjectID
    public var signature: UInt64
    public var instanceID: UInt64
}

/// What a deletion did.
public struct Deletion: Sendable, Equatable {
    public var deletedObjects: [ObjectID] = []
    public var freedBlobs: [ObjectID] = []
    /// Freed blobs that were in the spill directory (their files go too).
    public var spilledBlobs: [ObjectID] = []
    /// Persistent objects that went away (for the cluster metadata to unpublish).
    public var unpublished: [ObjectID] = []
    public var droppedNames: [String] = []

    public init() {}
}

extension ObjectStore {
    static let blobTypename = "vineyard::Blob"

    /// The deepest metadata tree the store accepts (levels of objects, blobs not counted).
    /// Trees are walked recursively (expanding for `get_data`, persisting, deep deletes,
    /// the JSON encoder and parser), so a client must not be able to chain objects without
    /// bound: `create_data` of a deeper tree — nested in one request or built from
    /// existing members — is refused with MetaTreeInvalid. Vineyard's own types nest a
    /// handful of levels; the limit keeps the expanded tree well inside the JSON parser's
    /// nesting limit (``JSONParser/defaultMaxDepth``).
    public static let maxMetadataDepth = 64

    static func blobStub(_ id: ObjectID, instance: UInt64, length: Int = 0) -> JSON {
        .object([
            "id": .string(id.description), "instance_id": .number(instance), "length": .number(length),
            "nbytes": .number(length), "transient": .bool(true), "typename": .string(blobTypename),
        ])
    }

    // The decisions live on ``StoreState`` (StoreState+Metadata.swift); each method here
    // takes the lock once, asks the state, and runs the effects it returns after the lock.

    // MARK: - Create

    /// Validates and stores a metadata tree (members that are new nested trees are
    /// created too), assigning a signature (unless given), an id and a timestamp.
    public func createData(_ content: JSON) throws(VineyardError) -> CreatedObject {
        let now = now()
        let (created, effects) = try withState { (s) throws(VineyardError) in try s.createData(content, now: now) }
        run(effects)
        return created
    }

    // MARK: - Cluster imports

    /// True when the object's metadata is in this store (created here or imported).
    public func hasLocalObject(_ id: ObjectID) -> Bool { locked { $0.objects[id] != nil } }

    /// Stores another instance's persisted object as published (an expanded tree with
    /// ids), keeping its id, signature and members; members are imported too.
    public func importRemote(_ id: ObjectID, tree: JSON) {
        run(locked { $0.importRemote(id, tree: tree) })
    }

    /// The instance an object lives on, whether it is global, and whether it was imported
    /// from the cluster's metadata (another instance published it), if it is known here.
    public func placement(of id: ObjectID) -> (instance: UInt64, global: Bool, imported: Bool)? {
        locked { $0.placement(of: id) }
    }

    // MARK: - Read

    /// `get_data`: the trees of the ids that exist, keyed `"o…"`, or `.null` when none do.
    public func getData(_ ids: [ObjectID]) -> JSON {
        let content = locked { $0.getData(ids) }
        return content.isEmpty ? .null : .object(content)
    }

    /// The blobs of this instance that the trees of `ids` refer to, at any depth, each once
    /// in id order (the `get_objects` extension: a tree and its buffers in one request).
    public func localBlobs(of ids: [ObjectID]) -> [ObjectID] { locked { $0.localBlobs(of: ids) } }

    /// True when every id exists (used by `get_data` with `wait`).
    public func allExist(_ ids: [ObjectID]) -> Bool { locked { $0.allExist(ids) } }

    public func exists(_ id: ObjectID) -> Bool { locked { $0.exists(id) } }

    /// `list_data`: objects whose typename matches (glob or full regex), in id order,
    /// then sealed blobs if the pattern glob-matches `vineyard::Blob`; at most `limit`.
    ///
    /// `remote` holds the trees other instances published (cluster mode): those not
    /// already here are listed too, so that the listing is the cluster's view as
    /// upstream's synced meta tree gives it.
    public func listData(pattern: String, regex: Bool, limit: Int, remote: [(ObjectID, JSON)] = []) -> JSON {
        listData(pattern: pattern, regex: regex, limit: limit) { _, matches in
            remote.filter { (_, tree) in
                if case .string(let typename)? = tree["typename"] { return matches(typename) }
                return false
            }
        }
    }

    /// `list_data` with the cluster's objects from `remote`, asked only when what is here
    /// leaves room: it gets how many more may be listed and the type-name matcher, and
    /// returns matching trees in id order (those already here are skipped).
    public func listData<E: Error>(
        pattern: String, regex: Bool, limit: Int,
        remote: (_ count: Int, _ matches: (String) -> Bool) throws(E) -> [(ObjectID, JSON)]
    ) throws(E) -> JSON {
        // Matching runs outside the store's lock (a slow pattern must not stall other
        // clients): copy a page of typenames in id order under it, match, and go on until
        // `limit` matched; then expand the matches under it. The cost follows what is
        // listed (and skipped), not how many objects the store holds.
        let matcher = PatternMatcher(pattern: pattern, regex: regex)
        let blobsMatch = PatternMatcher(pattern: pattern, regex: false).matches(Self.blobTypename)
        let pageSize = min(max(limit, 64), 4096)
        var matched: [ObjectID] = []
        var after: ObjectID?
        while matched.count < limit {
            let (page, more) = locked { $0.objectPage(after: after, count: pageSize) }
            for (id, typename) in page where matched.count < limit && matcher.matches(typename) { matched.append(id) }
            guard more, let last = page.last else { break }
            after = last.0
        }
        var content = locked { $0.listing(matched: matched, blobsToo: blobsMatch, remote: [], limit: limit) }
        if content.count < limit {
            let extra = try remote(limit - content.count) { matcher.matches($0) }
            if !extra.isEmpty {
                locked { s in
                    for (id, tree) in extra where content.count < limit && s.objects[id] == nil {
                        content[id.description] = tree
                    }
                }
            }
        }
        return content.isEmpty ? .null : .object(content)
    }

    /// Those of `ids` whose metadata is not in this store, in the order given.
    public func notHeld(_ ids: [ObjectID]) -> [ObjectID] {
        guard !ids.isEmpty else { return [] }
        return locked { s in ids.filter { s.objects[$0] == nil } }
    }

    // MARK: - Persist, labels, copies

    /// Marks an object and its transient non-blob members persistent; returns those
    /// that changed, with their trees, so the cluster metadata can publish them.
    /// `trees`: expand each newly persistent object's tree (what a cluster publishes); a
    /// daemon without a cluster has nothing to publish and skips it (`.null` trees).
    public func persist(_ id: ObjectID, trees: Bool = true) throws(VineyardError) -> [PersistedObject] {
        try withState { (s) throws(VineyardError) in try s.persist(id, trees: trees) }
    }

    /// Undoes ``persist(_:)`` for objects whose publication failed: they are transient
    /// again, so that a retried persist publishes them.
    public func revertPersist(_ objects: [PersistedObject]) {
        locked { $0.revertPersist(objects) }
    }

    public func isPersistent(_ id: ObjectID) throws(VineyardError) -> Bool {
        try withState { (s) throws(VineyardError) in try s.isPersistent(id) }
    }

    public func label(_ id: ObjectID, keys: [String], values: [String]) throws(VineyardError) {
        try withState { (s) throws(VineyardError) in try s.label(id, keys: keys, values: values) }
    }

    /// A new object with the same fields and members as `id`, plus `extra` fields.
    public func shallowCopy(_ id: ObjectID, extra: [String: JSON]) throws(VineyardError) -> ObjectID {
        let now = now()
        return try withState { (s) throws(VineyardError) in try s.shallowCopy(id, extra: extra, now: now) }
    }

    // MARK: - Delete

    /// `del_data` with upstream's dependency semantics: a referenced object stays
    /// unless `force` (which deletes its referrers too); blob members go with the last
    /// object that references them; other members go too with `deep` once unreferenced.
    ///
    /// A deleted blob's memory is reused (or trimmed) only once no connection other than
    /// `connection` (the one deleting) uses it; until then it stays allocated as retired.
    @discardableResult
    public func delete(
        _ ids: [ObjectID], force: Bool, deep: Bool, memoryTrim: Bool, connection: ConnectionID? = nil
    ) -> Deletion {
        let (deletion, effects) = locked {
            $0.delete(ids, force: force, deep: deep, memoryTrim: memoryTrim, connection: connection)
        }
        run(effects)
        return deletion
    }

    /// Deletes every object and blob and returns all free pages to the OS. Names are dropped
    /// too. Blobs other connections still use stay allocated (retired) until they let go.
    public func clear(connection: ConnectionID? = nil) -> Deletion {
        let (deletion, effects) = locked { $0.clear(connection: connection) }
        run(effects)
        return deletion
    }

    // MARK: - Names

    public func putName(_ name: String, for id: ObjectID) throws(VineyardError) {
        run(try withState { (s) throws(VineyardError) in try s.putName(name, for: id) })
    }

    public func getName(_ name: String) -> ObjectID? { locked { $0.names[name] } }

    public func dropName(_ name: String) { locked { $0.dropName(name) } }

    /// Names matching a glob or a full regex, at most `limit`, in name order.
    public func listNames(pattern: String, regex: Bool, limit: Int) -> [(String, ObjectID)] {
        let all = locked { s in s.names.map { ($0.key, $0.value) } }
        return Self.matchNames(all, pattern: pattern, regex: regex, limit: limit)
    }

    /// Filters `(name, id)` pairs by a glob or full regex, in name order, at most `limit`.
    public static func matchNames(_ names: [(String, ObjectID)], pattern: String, regex: Bool, limit: Int) -> [(String, ObjectID)] {
        let matcher = PatternMatcher(pattern: pattern, regex: regex)
        var out: [(String, ObjectID)] = []
        for (n, id) in names.sorted(by: { $0.0 < $1.0 }) where matcher.matches(n) {
            if out.count >= limit { break }
            out.append((n, id))
        }
        return out
    }

    /// This instance's own persistent objects (not imported ones) with their trees, and
    /// the names bound to them: what to publish again after the cluster metadata was lost.
    public func ownPersistentState() -> (objects: [PersistedObject], names: [(String, ObjectID)]) {
        locked { $0.ownPersistentState() }
    }

    // MARK: - Waiting
    /// Parks the calling thread until `ready` gives a value (re-checked whenever one of
    /// `keys` is written) or the request is abandoned: the peer of `client` hangs up
    /// (noticed at once: the wait polls the client's socket with its wake-up), or
    /// `cancelled` says so (checked every `pollMilliseconds` when there is no socket to
    /// watch). Returns nil when abandoned.
    public func wait<T>(
        for keys: [WaitKey], watching client: Descriptor? = nil, pollMilliseconds: Int = 200, cancelled: () -> Bool,
        ready: () -> T?
    ) -> T? {
        guard let waiter = try? Waiter() else { return ready() }  // no eventfd to be had: no parking
        let token = locked { $0.waiters.add(waiter, for: keys) }
        defer { locked { $0.waiters.remove(token, for: keys) } }
        let timeout: Duration? = client == nil ? .milliseconds(pollMilliseconds) : nil
        while true {
            if let v = ready() { return v }
            if cancelled() { return nil }
            if waiter.wait(watching: client, timeout: timeout) == .hangUp { return nil }
        }
    }

    /// Parked waiters (for tests and status).
    public var parkedWaiters: Int { locked { $0.waiters.count } }
}

/// Glob (`fnmatch` syntax) or whole-string regex matching for list commands, without
/// backtracking (see ``Pattern``); an invalid or unsupported pattern matches nothing.
struct PatternMatcher: Sendable {
    let compiled: Pattern?
    let matchesEverything: Bool

    init(pattern: String, regex: Bool) {
        matchesEverything = !regex && pattern == "*"
        compiled = matchesEverything ? nil : Pattern(pattern, regex: regex)
    }

    func matches(_ text: String) -> Bool {
        if matchesEverything { return true }
        return compiled?.matches(text) ?? false
    }
}
