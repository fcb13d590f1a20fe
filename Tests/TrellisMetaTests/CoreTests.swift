import Synchronization
import Testing
import TrellisTestSupport

@testable import TrellisMeta

/// A ``LocalMetaStore`` whose epoch (the identity of one life of the service) the
/// test can change, as when etcd restarts between two keepalives.
final class EpochKV: MetaKV {
    let store = LocalMetaStore()
    let epoch = Mutex("one")

    var endpointDescription: String { "epoch-test" }
    func ping(timeout: Duration) async throws -> String { "test" }
    func get(_ key: String) async throws -> (entry: KVEntry?, revision: Int64) { try await store.get(key) }
    func list(prefix: String) async throws -> (entries: [KVEntry], revision: Int64) {
        try await store.list(prefix: prefix)
    }
    func put(_ key: String, _ value: String, lease: Int64) async throws { try await store.put(key, value, lease: lease) }
    func listKeys(prefix: String) async throws -> [(key: String, modRevision: Int64)] {
        try await store.listKeys(prefix: prefix)
    }
    func listPage(prefix: String, from start: String, limit: Int, revision: Int64) async throws
        -> (entries: [KVEntry], revision: Int64, more: Bool)
    {
        try await store.listPage(prefix: prefix, from: start, limit: limit, revision: revision)
    }
    func putAll(_ entries: [(key: String, value: String)], lease: Int64, marker: String?) async throws {
        try await store.putAll(entries, lease: lease, marker: marker)
    }
    func delete(_ key: String) async throws -> Bool { try await store.delete(key) }
    func delete(_ keys: [String], marker: String) async throws -> Int { try await store.delete(keys, marker: marker) }
    func swap(_ key: String, expectedModRevision: Int64, value: String) async throws -> Bool {
        try await store.swap(key, expectedModRevision: expectedModRevision, value: value)
    }
    func grantLease(ttlSeconds: Int64) async throws -> (lease: Int64, epoch: String) {
        // Leases that outlive the test: the only change it makes is the epoch. (With the
        // TTL asked for, 3 s, a CI run with a CPU hog once starved the keepalive loop past
        // it: the lease expired and was re-registered before the epoch changed.)
        (try await store.grantLease(ttlSeconds: ttlSeconds * 1000).lease, epoch.withLock { $0 })
    }
    func keepAlive(_ lease: Int64, timeout: Duration) async throws -> KVKeepAlive {
        KVKeepAlive(alive: try await store.keepAlive(lease, timeout: timeout).alive, epoch: epoch.withLock { $0 })
    }
    func revoke(_ lease: Int64) async throws { try await store.revoke(lease) }
    func watch(_ key: String, prefix: Bool, fromRevision: Int64) -> any AsyncSequence<KVEvent, any Error> {
        store.watch(key, prefix: prefix, fromRevision: fromRevision)
    }
}

@Suite("core", .onBlockingPool)
struct CoreTests {
    @Test("a new epoch without an observed outage still re-registers and republishes")
    func epochChangeRepublishes() async throws {
        let kv = EpochKV()
        let core = MetaCore(kv: kv, prefix: "/e", leaseTTL: .seconds(3), connectTimeout: .seconds(1), logger: testLogger)
        let calls = CallCounter()
        let id = try await core.allocateInstanceID()
        try await core.register(sampleInfo(id)) { _ in calls.increment() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await core.run() }
            defer { group.cancelAll() }
            try await Task.sleep(for: .milliseconds(1500))  // at least one keepalive in the same epoch
            #expect(calls.count == 0)
            kv.epoch.withLock { $0 = "two" }
            try await eventually(.seconds(60), "republish after the epoch changed") { calls.count == 1 }
            try await Task.sleep(for: .milliseconds(1200))
            #expect(calls.count == 1, "no further republish within the same epoch")
        }
    }

    @Test func registeringUnderAnotherIDEndsTheOldRegistration() async throws {
        let backend = MetaCore(local: LocalMetaStore(), logger: testLogger)
        let first = try await backend.allocateInstanceID()
        try await backend.register(sampleInfo(first), republish: { _ in })
        let second = try await backend.allocateInstanceID()
        try await backend.register(sampleInfo(second), republish: { _ in })
        #expect(try await backend.instances().map(\.id) == [second])
    }

    @Test func runTwiceIsRejected() async throws {
        let backend = MetaCore(local: LocalMetaStore(), logger: testLogger)
        try await registerSample(backend)
        // Two concurrent runs, whichever starts first: the other is rejected at once (no
        // sleep deciding which one "surely" started first).
        try await withThrowingTaskGroup(of: (any Error)?.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    do { try await backend.run() } catch { return error }
                    return nil
                }
            }
            let first = try await group.next() ?? nil
            #expect(first as? MetaError == .invalidArgument("run() may be called only once"))
            group.cancelAll()
        }
    }

    @Test func localKeysDisappearWithTheirLease() async throws {
        let store = LocalMetaStore()
        let lease = try await store.grantLease(ttlSeconds: 1).lease
        try await store.put("/k", "v", lease: lease)
        try await store.put("/plain", "v", lease: 0)
        #expect(store.count == 2)
        try await Task.sleep(for: .milliseconds(1200))
        #expect(store.count == 1)
        #expect(try await store.keepAlive(lease, timeout: .seconds(1)).alive == false)
        await #expect(throws: MetaError.leaseLost) { try await store.put("/k", "v", lease: lease) }
    }
}
