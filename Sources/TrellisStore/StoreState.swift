import TrellisProtocol

/// Identifies a client connection to the store (assigned by the server).
public typealias ConnectionID = UInt64

/// One blob in the arena.
struct BlobRecord: Sendable {
    var offset: Int
    var size: Int
    var sealed: Bool
    /// The connection that created it, while it is unsealed (reclaimed if that connection dies).
    var creator: ConnectionID?
    /// Connections that sealed or fetched it (for `is_in_use`; deletion ignores it).
    /// A blob with users is never spilled.
    var users: Set<ConnectionID> = []
    /// Written to the spill directory and out of the arena (`offset` is -1 meanwhile).
    var spilled = false
    /// When it was last sealed or fetched (the store's tick), for least-recently-used spilling.
    var lastUse: UInt64 = 0
    /// `load(pin: true)`: kept in the arena (never spilled) until `unpin`.
    var pinned = false

    /// `connection` uses it as of `tick`; true when it is a new user.
    mutating func use(by connection: ConnectionID, tick: UInt64) -> Bool {
        lastUse = tick
        return users.insert(connection).inserted
    }

    /// Sealed by `connection` (a user from now on) as of `tick`; true when a new user.
    mutating func seal(by connection: ConnectionID, tick: UInt64) -> Bool {
        sealed = true
        creator = nil
        return use(by: connection, tick: tick)
    }
}

/// One object's stored metadata: plain fields, and members by id.
struct ObjectRecord: Sendable {
    var fields: [String: JSON]
    var members: [String: ObjectID]
    /// The instance that owns each blob member.
    var blobInstances: [ObjectID: UInt64]
    /// Imported from the cluster's metadata (another instance's persisted object).
    var imported = false
    /// Levels of the tree below and including this object (1 + its deepest non-blob
    /// member; blobs count 0). Bounded by ``ObjectStore/maxMetadataDepth`` so that every
    /// walk over a tree (get, persist, delete, encoding the reply) has a fixed recursion depth.
    var depth = 1

    var isTransient: Bool { fields["transient"]?.boolValue ?? true }
    var typename: String { fields["typename"]?.stringValue ?? "" }
    var instanceID: UInt64 { fields["instance_id"]?.uint64Value ?? 0 }
}

/// Everything the store knows, as a value. All mutation happens on this struct, under
/// the store's one lock; methods return what must happen outside it.
struct StoreState: Sendable {
    var allocator: Allocator
    var blobs: [ObjectID: BlobRecord] = [:]
    var objects: [ObjectID: ObjectRecord] = [:]
    /// member → objects that have it as a member.
    var parents: [ObjectID: Set<ObjectID>] = [:]
    var names: [String: ObjectID] = [:]
    var ids: ObjectIDGenerator
    /// Expanded trees of objects, dropped when the object or a member changes.
    var treeCache: [ObjectID: JSON] = [:]
    /// Waiters for names / objects to appear, resumed outside the lock.
    var waiters = WaiterTable()
    /// Bumped on every seal and fetch; orders blobs for spilling.
    var tick: UInt64 = 0
    /// Bytes of blobs currently in the spill directory.
    var spilledBytes = 0
    /// Deleted blobs whose memory other connections still use (they fetched or sealed it
    /// and have not released it): the memory is freed only when the last of them releases
    /// it or disconnects, so no reader ever sees its bytes reused by another blob.
    var retired: [ObjectID: RetiredBlob] = [:]
    var retiredBytes = 0
    /// Open streams (`vineyard.io`) by the id of their metadata object.
    var streams: [ObjectID: StreamRecord] = [:]
    /// Object ids and blob ids in ascending order, for `list_data` (walks stop at the limit).
    var objectOrder = IDOrder()
    var blobOrder = IDOrder()
    /// Per connection, the blobs it created (unsealed) or uses, retired ones too: what its
    /// departure must look at, so that a disconnect costs the connection's own blobs, not
    /// every blob of the store. May hold ids that are gone since (checked when used).
    var held: [ConnectionID: Set<ObjectID>] = [:]

    /// This store's instance (blob members without their own instance belong to it).
    let instanceID: UInt64

    init(capacity: Int, instance: UInt64) {
        instanceID = instance
        allocator = Allocator(capacity: capacity)
        ids = ObjectIDGenerator(instance: instance)
    }

    /// Where a removed blob's bytes were: in a spill file (no longer counted; the caller
    /// removes the file) or at an arena offset (the caller frees or quarantines it).
    enum ReleasedBlob {
        case spillFile
        case arena(offset: Int)
        /// Other connections still use its memory: kept in ``retired`` until they let go.
        case retired
    }

    /// Takes blob `id` out of the table; nil when there is none. The one place that decides
    /// between "spilled", "in the arena" and "still used by others" for every way a blob
    /// goes away. `by` is the connection deleting it: its own use does not keep the memory.
    mutating func removeBlob(_ id: ObjectID, by deleter: ConnectionID? = nil) -> ReleasedBlob? {
        guard let b = blobs.removeValue(forKey: id) else { return nil }
        blobOrder.remove(id) { blobs[$0] != nil }
        if let creator = b.creator { unhold(id, creator) }
        if b.spilled {
            for u in b.users { unhold(id, u) }
            spilledBytes -= b.size
            return .spillFile
        }
        var others = b.users
        if let deleter, others.remove(deleter) != nil { unhold(id, deleter) }
        if !others.isEmpty {
            retired[id] = RetiredBlob(offset: b.offset, size: b.size, users: others)
            retiredBytes += b.size
            return .retired
        }
        return .arena(offset: b.offset)
    }

    /// A new blob record (unsealed, or adopted): indexed for listing and for its creator.
    mutating func addBlob(_ id: ObjectID, _ record: BlobRecord) {
        blobs[id] = record
        blobOrder.insert(id)
        if let creator = record.creator { hold(id, creator) }
    }

    /// `connection` uses blob `id` (sealed or fetched it).
    mutating func addUser(_ id: ObjectID, _ connection: ConnectionID) {
        guard blobs[id] != nil else { return }
        if blobs[id]!.users.insert(connection).inserted { hold(id, connection) }
    }

    mutating func hold(_ id: ObjectID, _ connection: ConnectionID) {
        held[connection, default: []].insert(id)
    }

    mutating func unhold(_ id: ObjectID, _ connection: ConnectionID) {
        guard var set = held.removeValue(forKey: connection) else { return }
        set.remove(id)
        if !set.isEmpty { held[connection] = set }
    }

    /// Gives the tables' spare capacity back once they are mostly empty (removing entries
    /// keeps a dictionary's capacity: a store that held 100,000s of objects would keep
    /// megabytes of empty slots, and the heap behind them). True when it rebuilt any.
    /// Amortized O(1) per removal: a table is rebuilt only after losing 7/8 of its capacity.
    mutating func shrinkTablesIfSparse() -> Bool {
        func sparse<K: Hashable, V>(_ d: [K: V]) -> Bool { d.capacity > 4096 && d.count < d.capacity / 8 }
        guard sparse(objects) || sparse(blobs) || sparse(treeCache) || sparse(parents) else { return false }
        func rebuilt<K: Hashable, V>(_ d: [K: V]) -> [K: V] {
            guard d.capacity > 256, d.count < d.capacity / 4 else { return d }
            var fresh = [K: V](minimumCapacity: d.count)
            for (k, v) in d { fresh[k] = v }
            return fresh
        }
        objects = rebuilt(objects)
        blobs = rebuilt(blobs)
        treeCache = rebuilt(treeCache)
        parents = rebuilt(parents)
        names = rebuilt(names)
        held = rebuilt(held)
        allocator.releaseSpareCapacity()
        return true
    }

    /// A new object record: indexed for listing.
    mutating func addObject(_ id: ObjectID, _ record: ObjectRecord) {
        objects[id] = record
        objectOrder.insert(id)
    }

    /// `connection` no longer uses retired blob `id` (released it or left); its memory is
    /// freed when nobody does. True when it was freed.
    @discardableResult
    mutating func releaseRetired(_ id: ObjectID, by connection: ConnectionID) -> Bool {
        guard var r = retired[id], r.users.remove(connection) != nil else { return false }
        unhold(id, connection)
        guard r.users.isEmpty else {
            retired[id] = r
            return false
        }
        retired[id] = nil
        retiredBytes -= r.size
        allocator.free(r.offset)
        return true
    }
}

/// A deleted blob whose memory is still used by other connections.
struct RetiredBlob: Sendable {
    var offset: Int
    var size: Int
    var users: Set<ConnectionID>
}
