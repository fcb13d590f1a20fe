import Synchronization

/// An in-process key-value store with etcd's semantics as far as Trellis uses them:
/// revisions, compare-and-swap, leases with a TTL (expired leases delete their
/// keys), and watches that can start at a past revision.
///
/// One store backs a local ``MetaCore``; several may share one store to
/// form an in-process "cluster" (tests). Expired leases are collected whenever the
/// store is used, so a lease ends at the latest on the next request of any backend
/// after its TTL (a running backend refreshes its own lease every TTL/3).
public final class LocalMetaStore: Sendable {
    private struct Entry {
        var value: String
        var modRevision: Int64
        var lease: Int64
    }

    private struct Lease {
        var ttl: Duration
        var deadline: ContinuousClock.Instant
        var keys: Set<String> = []
    }

    private struct Watcher {
        var key: String
        var prefix: Bool
        var continuation: AsyncThrowingStream<KVEvent, any Error>.Continuation

        func matches(_ key: String) -> Bool { prefix ? key.hasPrefix(self.key) : key == self.key }
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var revision: Int64 = 1
        var leases: [Int64: Lease] = [:]
        var nextLease: Int64 = 0x1000
        var watchers: [Int: Watcher] = [:]
        var nextWatcher = 0
        var history: [(revision: Int64, change: KVChange)] = []
        var historyStart = 0
        /// Revisions up to this one are no longer in `history`.
        var compacted: Int64 = 0
    }

    private static let historyLimit = 4096

    private let state = Mutex(State())
    private let clock = ContinuousClock()

    /// Creates an empty store.
    public init() {}

    /// Number of keys currently stored (for tests and diagnostics).
    public var count: Int {
        let now = clock.now
        return state.withLock {
            Self.sweep(&$0, now: now)
            return $0.entries.count
        }
    }

    // MARK: Internals (all under the lock)

    private static func sweep(_ state: inout State, now: ContinuousClock.Instant) {
        let expired = state.leases.filter { $0.value.deadline <= now }
        for (id, lease) in expired.sorted(by: { $0.key < $1.key }) {
            state.leases[id] = nil
            apply(&state, lease.keys.sorted().map { KVChange.delete(key: $0) })
        }
    }

    /// Applies `changes` as one revision and tells the watchers.
    private static func apply(_ state: inout State, _ changes: [KVChange], lease: Int64 = 0) {
        apply(&state, changes.map { ($0, lease) })
    }

    /// Applies `changes`, each with its lease, as one revision and tells the watchers.
    private static func apply(_ state: inout State, _ changes: [(KVChange, Int64)]) {
        guard !changes.isEmpty else { return }
        state.revision += 1
        let revision = state.revision
        for (change, lease) in changes {
            switch change {
            case .put(let key, let value):
                if let old = state.entries[key], old.lease != 0 { state.leases[old.lease]?.keys.remove(key) }
                state.entries[key] = Entry(value: value, modRevision: revision, lease: lease)
                if lease != 0 { state.leases[lease]?.keys.insert(key) }
            case .delete(let key):
                if let old = state.entries.removeValue(forKey: key), old.lease != 0 {
                    state.leases[old.lease]?.keys.remove(key)
                }
            }
            state.history.append((revision, change))
            for watcher in state.watchers.values where watcher.matches(change.key) {
                watcher.continuation.yield(KVEvent(change: change, revision: revision))
            }
        }
        if state.history.count - state.historyStart > historyLimit {
            state.historyStart += state.history.count - state.historyStart - historyLimit
            state.compacted = state.history[state.historyStart].revision - 1
            if state.historyStart > historyLimit {
                state.history.removeFirst(state.historyStart)
                state.historyStart = 0
            }
        }
    }

    private func withState<R>(_ body: (inout State) throws -> R) rethrows -> R {
        let now = clock.now
        return try state.withLock {
            Self.sweep(&$0, now: now)
            return try body(&$0)
        }
    }

    private func removeWatcher(_ id: Int) {
        _ = state.withLock { $0.watchers.removeValue(forKey: id) }
    }
}

extension LocalMetaStore: MetaKV {
    var endpointDescription: String { "local" }

    func ping(timeout: Duration) async throws -> String { "local" }

    func get(_ key: String) async throws -> (entry: KVEntry?, revision: Int64) {
        withState { state in
            (state.entries[key].map { KVEntry(key: key, value: $0.value, modRevision: $0.modRevision) }, state.revision)
        }
    }

    func list(prefix: String) async throws -> (entries: [KVEntry], revision: Int64) {
        withState { state in
            let entries = state.entries.filter { $0.key.hasPrefix(prefix) }
                .map { KVEntry(key: $0.key, value: $0.value.value, modRevision: $0.value.modRevision) }
                .sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            return (entries, state.revision)
        }
    }

    /// Reads the current state whatever `revision` asks for unless it was compacted away:
    /// pages of one listing may mix revisions, which a reader replaying the changes after
    /// `revision` still converges from (each change overwrites or deletes a whole key).
    func listPage(prefix: String, from start: String, limit: Int, revision: Int64) async throws
        -> (entries: [KVEntry], revision: Int64, more: Bool)
    {
        try withState { state in
            if revision > 0 && revision <= state.compacted {
                throw MetaError.unavailable("required revision \(revision) has been compacted")
            }
            let all = state.entries.filter { $0.key.hasPrefix(prefix) && !$0.key.utf8.lexicographicallyPrecedes(start.utf8) }
                .map { KVEntry(key: $0.key, value: $0.value.value, modRevision: $0.value.modRevision) }
                .sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            return (Array(all.prefix(limit)), revision > 0 ? revision : state.revision, all.count > limit)
        }
    }

    func listKeys(prefix: String) async throws -> [(key: String, modRevision: Int64)] {
        try await list(prefix: prefix).entries.map { ($0.key, $0.modRevision) }
    }

    func put(_ key: String, _ value: String, lease: Int64) async throws {
        try await putAll([(key: key, value: value)], lease: lease, marker: nil)
    }

    func putAll(_ entries: [(key: String, value: String)], lease: Int64, marker: String?) async throws {
        try withState { state in
            if lease != 0 && state.leases[lease] == nil { throw MetaError.leaseLost }
            guard !entries.isEmpty else { return }
            // One revision; the marker last and without the lease.
            Self.apply(
                &state,
                entries.map { (KVChange.put(key: $0.key, value: $0.value), lease) }
                    + (marker.map { [(KVChange.put(key: $0, value: ""), Int64(0))] } ?? []))
        }
    }

    func delete(_ keys: [String], marker: String) async throws -> Int {
        withState { state in
            // one revision, the marker last; a key named twice is deleted once
            var seen = Set<String>()
            let present = keys.filter { state.entries[$0] != nil && seen.insert($0).inserted }
            Self.apply(&state, present.map { KVChange.delete(key: $0) } + [.put(key: marker, value: "")])
            return present.count
        }
    }

    func delete(_ key: String) async throws -> Bool {
        withState { state in
            guard state.entries[key] != nil else { return false }
            Self.apply(&state, [.delete(key: key)])
            return true
        }
    }

    func swap(_ key: String, expectedModRevision: Int64, value: String) async throws -> Bool {
        withState { state in
            guard (state.entries[key]?.modRevision ?? 0) == expectedModRevision else { return false }
            Self.apply(&state, [.put(key: key, value: value)])
            return true
        }
    }

    func grantLease(ttlSeconds: Int64) async throws -> (lease: Int64, epoch: String) {
        let now = clock.now
        return withState { state in
            state.nextLease += 1
            let ttl = Duration.seconds(ttlSeconds)
            state.leases[state.nextLease] = Lease(ttl: ttl, deadline: now + ttl)
            return (state.nextLease, "local")
        }
    }

    func keepAlive(_ lease: Int64, timeout: Duration) async throws -> KVKeepAlive {
        let now = clock.now
        return withState { state in
            guard var entry = state.leases[lease] else { return KVKeepAlive(alive: false, epoch: "local") }
            entry.deadline = now + entry.ttl
            state.leases[lease] = entry
            return KVKeepAlive(alive: true, epoch: "local")
        }
    }

    func revoke(_ lease: Int64) async throws {
        withState { state in
            guard let entry = state.leases.removeValue(forKey: lease) else { return }
            Self.apply(&state, entry.keys.sorted().map { KVChange.delete(key: $0) })
        }
    }

    func watch(_ key: String, prefix: Bool, fromRevision: Int64) -> any AsyncSequence<KVEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: KVEvent.self)
        let id = state.withLock {
            $0.nextWatcher += 1
            return $0.nextWatcher
        }
        continuation.onTermination = { [weak self] _ in self?.removeWatcher(id) }
        let registered = withState { state in
            if fromRevision > 0 && fromRevision <= state.compacted { return false }
            let watcher = Watcher(key: key, prefix: prefix, continuation: continuation)
            if fromRevision > 0 {
                for (revision, change) in state.history[state.historyStart...]
                where revision >= fromRevision && watcher.matches(change.key) {
                    continuation.yield(KVEvent(change: change, revision: revision))
                }
            }
            state.watchers[id] = watcher
            return true
        }
        if !registered {
            continuation.finish(throwing: MetaError.unavailable("watch start revision \(fromRevision) was compacted"))
        }
        return stream
    }
}
