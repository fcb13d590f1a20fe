/// A stored key with the revision it was last written at.
struct KVEntry: Sendable, Hashable {
    var key: String
    var value: String
    var modRevision: Int64
}

/// One change seen by a watch.
enum KVChange: Sendable, Hashable {
    case put(key: String, value: String)
    case delete(key: String)

    var key: String {
        switch self {
        case .put(let key, _), .delete(let key): return key
        }
    }
}

/// A change with the store revision it happened at (the changes of one write share it
/// and arrive in the write's order).
struct KVEvent: Sendable, Hashable {
    var change: KVChange
    var revision: Int64
}

/// The result of refreshing a lease.
struct KVKeepAlive: Sendable, Hashable {
    /// Whether the lease still exists.
    var alive: Bool
    /// Identifies one life of the store: changes when etcd restarts or starts over.
    var epoch: String
}

/// The key-value service a ``MetaCore`` runs on: etcd, or the in-process
/// ``LocalMetaStore``. Implementations throw ``MetaError`` only.
protocol MetaKV: Sendable {

    /// For logs and errors.
    var endpointDescription: String { get }

    /// Checks that the service answers within `timeout`; returns a version string.
    func ping(timeout: Duration) async throws -> String

    func get(_ key: String) async throws -> (entry: KVEntry?, revision: Int64)
    func list(prefix: String) async throws -> (entries: [KVEntry], revision: Int64)
    /// At most `limit` entries under `prefix` from key `start` on (inclusive), read at store
    /// revision `revision` (0: the current one, returned), and whether more follow.
    /// Throws when `revision` was compacted away.
    func listPage(prefix: String, from start: String, limit: Int, revision: Int64) async throws
        -> (entries: [KVEntry], revision: Int64, more: Bool)
    /// The keys under `prefix` with their modification revisions, values left out.
    func listKeys(prefix: String) async throws -> [(key: String, modRevision: Int64)]
    func put(_ key: String, _ value: String, lease: Int64) async throws
    /// Writes every entry, attached to `lease`, in as few round trips as the store allows
    /// (each batch atomically). With a `marker` key, each batch also rewrites it (empty
    /// value, no lease) as its last operation: the marker's modification revision is then
    /// that of the last batch written.
    func putAll(_ entries: [(key: String, value: String)], lease: Int64, marker: String?) async throws
    func delete(_ key: String) async throws -> Bool
    /// Deletes `keys` and rewrites `marker` (empty value, no lease) in as few round trips
    /// as the store allows, each batch atomically with the marker's rewrite as its last
    /// operation (as ``putAll(_:lease:marker:)``); returns how many of the keys were there.
    func delete(_ keys: [String], marker: String) async throws -> Int
    /// Writes `value` if the key's modification revision is `expectedModRevision`
    /// (0: the key must not exist); returns whether it wrote.
    func swap(_ key: String, expectedModRevision: Int64, value: String) async throws -> Bool

    /// Grants a lease; returns its id and the store's current epoch.
    func grantLease(ttlSeconds: Int64) async throws -> (lease: Int64, epoch: String)
    /// Refreshes a lease, failing if no answer comes within `timeout`.
    func keepAlive(_ lease: Int64, timeout: Duration) async throws -> KVKeepAlive
    func revoke(_ lease: Int64) async throws

    /// Changes of `key` (or of keys under it with `prefix`) from `fromRevision` on.
    /// Iteration throws when the watch breaks (including when `fromRevision` was
    /// compacted away) and ends when the task is cancelled.
    func watch(_ key: String, prefix: Bool, fromRevision: Int64) -> any AsyncSequence<KVEvent, any Error>
    /// As ``watch(_:prefix:fromRevision:)``, for a reader of deletions only: the store may
    /// leave puts out (etcd does, sparing every publish the encoding and sending of its
    /// records to this watcher); a store that does not delivers them too.
    func watchDeletions(_ key: String, prefix: Bool, fromRevision: Int64) -> any AsyncSequence<KVEvent, any Error>
}

extension MetaKV {
    /// Deletes `key` and rewrites `marker` in one atomic write, the marker last; returns
    /// whether the key was there.
    func delete(_ key: String, marker: String) async throws -> Bool {
        try await delete([key], marker: marker) > 0
    }

    func watchDeletions(_ key: String, prefix: Bool, fromRevision: Int64) -> any AsyncSequence<KVEvent, any Error> {
        watch(key, prefix: prefix, fromRevision: fromRevision)
    }
}
