import Logging
import Synchronization
import TrellisProtocol
import TrellisSystem

/// This daemon's copy of the cluster's published objects, in id order, kept current by a
/// watch on the objects' keys: listing walks it from the smallest id and stops at its
/// limit, however many objects the cluster holds.
///
/// Read-your-writes across instances: every write of object records (``MetaCore``'s
/// publish and remove) also rewrites a marker key in the same etcd transaction, as its
/// last operation. Before a read, ``sync(timeout:)`` gets the marker (one small request)
/// and waits until the watch has applied the marker's revision, so whatever any
/// instance's publish or remove had returned before is in the copy. A broken watch
/// (etcd restarted or gone, the watch cancelled, its start revision compacted) makes the
/// copy stale: reads wait while it is read again in full (in pages, at one revision) and
/// the watch reopened after it; a store answering with a lower revision than the last
/// full read lost its data and is read again too.
final class ObjectMirror: Sendable {
    /// One published object as listing needs it.
    struct Record: Sendable {
        var owner: UInt64
        var typename: String
        var metadata: String
        /// The other objects its metadata names (``referencedIDs(in:except:)``).
        var references: [UInt64] = []
    }

    private struct Waiter {
        var revision: Int64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var records: [UInt64: Record] = [:]
        var order = IDOrder()
        /// For each object id, the published objects whose metadata names it: a delete
        /// looks up its objects' referrers here instead of searching every record's text
        /// (which made deleting k objects among n published ones cost k × n searches).
        var referrers: [UInt64: Set<UInt64>] = [:]

        mutating func index(_ id: UInt64, _ record: Record) {
            for r in record.references { referrers[r, default: []].insert(id) }
        }

        mutating func unindex(_ id: UInt64, _ record: Record) {
            for r in record.references {
                referrers[r]?.remove(id)
                if referrers[r]?.isEmpty == true { referrers[r] = nil }
            }
        }
        /// The copy is complete as of `applied` (false before the first full read and
        /// after the watch broke, until the next full read).
        var ready = false
        /// Every change of the objects up to this store revision is applied.
        var applied: Int64 = 0
        /// The store revision of the last full read.
        var readRevision: Int64 = 0
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0
        var started = false
        var stopped = false
        var maintainer: Task<Void, Never>?
        var cycle: Task<Void, Never>?
        /// Why the copy is stale, for the timeout's error.
        var lastError: String?
    }

    let kv: any MetaKV
    let logger: Logger
    /// Object records: `<prefix>/objects/<16 hex>`.
    let objectsPrefix: String
    /// Rewritten by every write of object records; `<prefix>/objects.changed`.
    let markerKey: String
    /// Covers both of the above: what the watch follows.
    let watchPrefix: String
    let retryInterval: Duration
    /// Records per page of a full read.
    let pageSize: Int

    private let state = Mutex(State())

    init(kv: any MetaKV, prefix: String, retryInterval: Duration, logger: Logger, pageSize: Int = 2000) {
        self.kv = kv
        self.logger = logger
        self.objectsPrefix = prefix + "/objects/"
        self.markerKey = prefix + "/objects.changed"
        self.watchPrefix = prefix + "/objects"
        self.retryInterval = retryInterval
        self.pageSize = pageSize
    }

    deinit { stop() }

    /// Ends the watch; waiting readers fail.
    func stop() {
        let (maintainer, waiters) = state.withLock { s in
            s.stopped = true
            defer { s.waiters = [:] }
            return (s.maintainer, Array(s.waiters.values))
        }
        maintainer?.cancel()
        for w in waiters { w.continuation.resume(throwing: MetaError.unavailable("object listing stopped")) }
    }

    // MARK: Reads

    /// Waits until the copy holds every change of the objects made before this call
    /// (starting the watch on first use); throws ``MetaError/unavailable(_:)`` if the
    /// metadata service does not answer or the copy does not catch up within `timeout`.
    func sync(timeout: Duration) async throws {
        startIfNeeded()
        let (entry, revision) = try await kv.get(markerKey)
        let target = entry?.modRevision ?? 0
        let lost = state.withLock { s -> Bool in
            guard s.ready, revision < s.readRevision else { return false }
            s.ready = false
            s.lastError = "store revision went back from \(s.readRevision) to \(revision) (data lost)"
            return true
        }
        if lost {
            logger.notice("metadata service lost its data; reading the published objects again")
            restartCycle()
        }
        try await waitApplied(target, timeout: timeout)
    }

    /// Up to `count` objects with ids greater than `after` (from the smallest when nil), in
    /// id order, with their type names; and whether the walk stopped short of the end.
    func page(after: UInt64?, count: Int) -> (page: [(id: UInt64, typename: String)], more: Bool) {
        state.withLock { s in
            let (ids, more) = s.order.page(after: after.map(ObjectID.init(rawValue:)), count: count) {
                s.records[$0.rawValue] != nil
            }
            return (ids.compactMap { id in s.records[id.rawValue].map { (id.rawValue, $0.typename) } }, more)
        }
    }

    /// The records of those of `ids` still published, in the order given.
    func records(_ ids: [UInt64]) -> [(id: UInt64, record: Record)] {
        state.withLock { s in ids.compactMap { id in s.records[id].map { (id, $0) } } }
    }

    /// The published objects, other than `ids` themselves, whose metadata names one of
    /// `ids` (as a member, at any depth), in id order.
    func referrers(of ids: Set<UInt64>) -> [UInt64] {
        state.withLock { s in
            var out = Set<UInt64>()
            for id in ids { out.formUnion(s.referrers[id] ?? []) }
            return out.subtracting(ids).sorted()
        }
    }

    /// Every record in id order.
    func all() -> [(id: UInt64, record: Record)] {
        var out: [(id: UInt64, record: Record)] = []
        var after: UInt64?
        while true {
            let (ids, more) = page(after: after, count: 4096)
            out += records(ids.map(\.id))
            guard more, let last = ids.last else { return out }
            after = last.id
        }
    }

    // MARK: Waiting

    private func waitApplied(_ revision: Int64, timeout: Duration) async throws {
        if state.withLock({ $0.ready && $0.applied >= revision }) { return }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.waitUntil(revision) }
            group.addTask {
                try await Task.sleep(for: timeout)
                let why = self.state.withLock { $0.lastError }.map { "; \($0)" } ?? ""
                throw MetaError.unavailable(
                    "the published-object listing did not catch up with revision \(revision) within \(timeout)\(why)")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private func waitUntil(_ revision: Int64) async throws {
        let id = state.withLock { s in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let immediate: Result<Void, any Error>? = state.withLock { s in
                    if s.stopped { return .failure(MetaError.unavailable("object listing stopped")) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if s.ready && s.applied >= revision { return .success(()) }
                    s.waiters[id] = Waiter(revision: revision, continuation: continuation)
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Resumes the waiters the copy now satisfies (called with the lock held; returns them
    /// to resume outside).
    private static func satisfied(_ s: inout State) -> [CheckedContinuation<Void, any Error>] {
        guard s.ready else { return [] }
        let done = s.waiters.filter { $0.value.revision <= s.applied }
        for key in done.keys { s.waiters[key] = nil }
        return done.values.map(\.continuation)
    }

    // MARK: Maintenance

    private func startIfNeeded() {
        let start = state.withLock { s in
            defer { s.started = true }
            return !s.started && !s.stopped
        }
        guard start else { return }
        // The watch's feeder runs on the blocking pool's executor, not the cooperative pool:
        // readers wait on it with a deadline, and on a 2-core machine the cooperative pool's
        // two threads can be held for seconds by work that blocks or computes (a CI run
        // saw a reader's 20 s deadline pass with the feeder never scheduled).
        let task = Task(executorPreference: Blocking.executor) { [weak self] in
            while let self, !Task.isCancelled {
                let cycle = Task(executorPreference: Blocking.executor) { await self.cycle() }
                self.state.withLock { $0.cycle = cycle }
                await withTaskCancellationHandler { await cycle.value } onCancel: { cycle.cancel() }
                let restarted = self.state.withLock { s -> Bool in
                    s.ready = false
                    // restartCycle() cancelled it: read again at once
                    defer { s.cycle = nil }
                    return s.cycle?.isCancelled ?? false
                }
                if Task.isCancelled { return }
                if !restarted { try? await Task.sleep(for: self.retryInterval) }
            }
        }
        state.withLock { $0.maintainer = task }
    }

    /// Ends the current watch so that the copy is read again at once.
    private func restartCycle() {
        state.withLock { $0.cycle }?.cancel()
    }

    /// One full read, then the watch from the revision after it, until the watch breaks.
    private func cycle() async {
        do {
            var records: [UInt64: Record] = [:]
            var revision: Int64 = 0
            var start = objectsPrefix
            while true {
                let page = try await kv.listPage(prefix: objectsPrefix, from: start, limit: pageSize, revision: revision)
                revision = page.revision
                for entry in page.entries {
                    if let (id, record) = parse(entry.key, entry.value) { records[id] = record }
                }
                guard page.more, let last = page.entries.last else { break }
                start = last.key + "\u{0}"
            }
            try Task.checkCancellation()
            var order = IDOrder()
            for id in records.keys.sorted() { order.insert(ObjectID(rawValue: id)) }
            let wake = state.withLock { s in
                s.records = records
                s.order = order
                s.referrers = [:]
                for (id, record) in records { s.index(id, record) }
                s.applied = revision
                s.readRevision = revision
                s.ready = true
                s.lastError = nil
                return Self.satisfied(&s)
            }
            for w in wake { w.resume() }
            logger.debug(
                "read the published objects", metadata: ["objects": "\(records.count)", "revision": "\(revision)"])
            for try await event in kv.watch(watchPrefix, prefix: true, fromRevision: revision + 1) {
                apply(event)
            }
            if !Task.isCancelled { state.withLock { $0.lastError = "the object watch ended" } }
        } catch {
            if Task.isCancelled { return }
            state.withLock { $0.lastError = "\(error)" }
            logger.debug("object watch interrupted; reading again", metadata: ["error": "\(error)"])
        }
    }

    private func apply(_ event: KVEvent) {
        switch event.change {
        case .put(let key, _) where key == markerKey:
            // The marker is the last operation of each write: the write is all applied.
            let wake = state.withLock { s in
                s.applied = max(s.applied, event.revision)
                return Self.satisfied(&s)
            }
            for w in wake { w.resume() }
        case .put(let key, let value):
            guard let (id, record) = parse(key, value) else { return }
            state.withLock { s in
                if let old = s.records.updateValue(record, forKey: id) {
                    s.unindex(id, old)
                } else {
                    s.order.insert(ObjectID(rawValue: id))
                }
                s.index(id, record)
            }
        case .delete(let key):
            guard let id = objectID(key) else { return }
            state.withLock { s in
                if let old = s.records.removeValue(forKey: id) {
                    s.unindex(id, old)
                    s.order.remove(ObjectID(rawValue: id)) { s.records[$0.rawValue] != nil }
                }
            }
        }
    }

    private func objectID(_ key: String) -> UInt64? {
        guard key.hasPrefix(objectsPrefix) else { return nil }
        return UInt64(key.dropFirst(objectsPrefix.count), radix: 16)
    }

    private func parse(_ key: String, _ value: String) -> (UInt64, Record)? {
        guard let id = objectID(key), let object = PersistedObject(objectID: id, storedText: value) else {
            logger.warning("skipping corrupt object record", metadata: ["key": "\(key)"])
            return nil
        }
        var typename = ""
        if let tree = try? JSONParser.parse(object.metadata), case .string(let t)? = tree["typename"] { typename = t }
        return (id, Record(
            owner: object.owner, typename: typename, metadata: object.metadata,
            references: Self.referencedIDs(in: object.metadata, except: id)))
    }

    /// The object ids `metadata` names, other than `own`: every JSON string that is an
    /// object id as vineyard prints one (`"o"` and 16 lowercase hex digits), wherever it
    /// stands — member ids, nested members' ids, blob ids. One pass over the bytes.
    static func referencedIDs(in metadata: String, except own: UInt64) -> [UInt64] {
        var out: [UInt64] = []
        var text = metadata
        text.withUTF8 { b in
            let n = b.count
            var i = 0
            // a match is 19 bytes: quote, 'o', 16 hex digits, quote
            while i + 19 <= n {
                guard b[i] == 0x22, b[i + 1] == 0x6F, b[i + 18] == 0x22 else {
                    i += 1
                    continue
                }
                var value: UInt64 = 0
                var ok = true
                for k in 2..<18 {
                    let c = b[i + k]
                    let d: UInt8
                    switch c {
                    case 0x30...0x39: d = c - 0x30
                    case 0x61...0x66: d = c - 0x61 + 10
                    default: d = 0xFF
                    }
                    if d == 0xFF {
                        ok = false
                        break
                    }
                    value = value << 4 | UInt64(d)
                }
                if ok {
                    if value != own { out.append(value) }
                    i += 19
                } else {
                    i += 1
                }
            }
        }
        var seen = Set<UInt64>()
        return out.filter { seen.insert($0).inserted }
    }
}
