#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import TrellisProtocol

@testable import TrellisMeta
import TrellisTestSupport

/// What `list_data` reads from ``MetaCore``: ``MetaCore/syncObjects(timeout:)``, then
/// ``MetaCore/objectPage(after:count:)`` and ``MetaCore/objectMetadata(_:)`` from the
/// mirrored copy.
enum Listing {
    static func tensor(_ i: Int) -> String { #"{"typename":"vineyard::Tensor<int64>","i":\#(i)}"# }
    static func frame(_ i: Int) -> String { #"{"typename":"vineyard::DataFrame","i":\#(i)}"# }

    /// The first `count` ids in the copy, after a sync.
    static func firstIDs(_ backend: MetaCore, _ count: Int) async throws -> [UInt64] {
        try await backend.syncObjects(timeout: .seconds(30))
        return backend.objectPage(after: nil, count: count).page.map(\.id)
    }

    /// Every id, walking the copy in pages of `step`.
    static func walk(_ backend: MetaCore, step: Int) async throws -> [UInt64] {
        try await backend.syncObjects(timeout: .seconds(30))
        var out: [UInt64] = []
        var after: UInt64?
        while true {
            let (page, more) = backend.objectPage(after: after, count: step)
            out += page.map(\.id)
            guard more, let last = page.last else { return out }
            after = last.id
        }
    }

    /// A publish (or removal) through A is in B's listing as soon as it returned,
    /// every time, with no waiting in between.
    static func readYourWrites(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        try await registerSample(a, "a")
        try await registerSample(b, "b")
        #expect(try await firstIDs(b, 10) == [])  // starts the copy
        for i in 1...25 {
            try await a.publishObject(UInt64(1000 + i), metadata: tensor(i))
            let seen = try await walk(b, step: 7)
            #expect(seen == (1...i).map { UInt64(1000 + $0) }, "after publish \(i)")
        }
        for i in stride(from: 25, through: 1, by: -3) {
            try await a.removeObject(UInt64(1000 + i))
            let seen = try await walk(b, step: 7)
            #expect(!seen.contains(UInt64(1000 + i)), "after removal of \(i)")
        }
        // a rewrite replaces the record (type name and metadata)
        try await a.publishObject(1002, metadata: frame(2))
        try await b.syncObjects(timeout: .seconds(30))
        #expect(b.objectPage(after: 1001, count: 1).page.first?.typename == "vineyard::DataFrame")
        #expect(b.objectMetadata([1002, 1025, 1003]).map(\.id) == [1002, 1003])
        #expect(b.objectMetadata([1002]).first?.metadata == frame(2))
    }

    /// Ids published out of order, in batches, by two instances: pages give the id order,
    /// a limit gives the smallest ids, type names come along for filtering.
    static func orderAndFilter(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        try await registerSample(a, "a")
        try await registerSample(b, "b")
        var rng = SystemRandomNumberGenerator()
        let ids = (1...600).map { UInt64($0) * 7919 % 1_000_003 }.shuffled(using: &rng)
        let half = ids.count / 2
        try await a.publishObjects(ids[..<half].map { (objectID: $0, metadata: $0 % 3 == 0 ? frame(Int($0)) : tensor(Int($0))) })
        #expect(try await firstIDs(b, 5) == Array(ids[..<half].sorted().prefix(5)))
        try await b.publishObjects(ids[half...].map { (objectID: $0, metadata: $0 % 3 == 0 ? frame(Int($0)) : tensor(Int($0))) })
        let sorted = ids.sorted()
        #expect(try await firstIDs(a, 5) == Array(sorted.prefix(5)))
        #expect(try await firstIDs(b, 100) == Array(sorted.prefix(100)))
        #expect(try await walk(a, step: 64) == sorted)
        #expect(try await a.objects().map(\.objectID) == sorted)
        // the type names let a reader filter while walking
        try await b.syncObjects(timeout: .seconds(30))
        var frames: [UInt64] = []
        var after: UInt64?
        while frames.count < 10 {
            let (page, more) = b.objectPage(after: after, count: 16)
            frames += page.filter { $0.typename == "vineyard::DataFrame" }.map(\.id).prefix(10 - frames.count)
            guard more, let last = page.last else { break }
            after = last.id
        }
        #expect(frames == Array(sorted.filter { $0 % 3 == 0 }.prefix(10)))
        // removals leave the order intact
        for id in sorted.prefix(50) { try await a.removeObject(id) }
        #expect(try await firstIDs(b, 5) == Array(sorted.dropFirst(50).prefix(5)))
        #expect(try await walk(b, step: 33) == Array(sorted.dropFirst(50)))
    }
}

@Suite("Mirrored object listing, local backend", .onBlockingPool)
struct LocalListingTests {
    @Test func readYourWrites() async throws { try await Listing.readYourWrites(LocalCluster()) }
    @Test func orderAndFilter() async throws { try await Listing.orderAndFilter(LocalCluster()) }

    /// The copy is kept current off the cooperative pool: with every thread of that pool
    /// held (as blocking or busy tests can hold both of a 2-core machine's), a reader's
    /// sync still sees a write made before it. (The feeder once ran there, and a CI run
    /// under load saw a sync's 20 s deadline pass.)
    @Test func catchesUpWhileTheCooperativePoolIsHeld() async throws {
        let cluster = LocalCluster()
        let a = cluster.backend()
        let b = cluster.backend()
        try await registerSample(a, "a")
        try await registerSample(b, "b")
        try await b.publishObject(1, metadata: Listing.tensor(1))
        let width = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        final class Hold: Sendable {
            let started = Atomic<Int>(0)
            let release = Atomic<Bool>(false)
        }
        let hold = Hold()
        defer { hold.release.store(true, ordering: .releasing) }
        for _ in 0..<width {
            Task.detached {  // the global (cooperative) executor
                hold.started.add(1, ordering: .acquiringAndReleasing)
                while !hold.release.load(ordering: .acquiring) { usleep(1000) }
            }
        }
        // (this test runs on the blocking pool: waiting here holds none of the pool's threads)
        let waitStart = ContinuousClock.now
        while hold.started.load(ordering: .acquiring) < width {
            try #require(ContinuousClock.now - waitStart < .seconds(600), "the cooperative pool's threads never all came free")
            usleep(1000)
        }
        try await b.publishObject(2, metadata: Listing.tensor(2))
        try await a.syncObjects(timeout: .seconds(60))
        #expect(a.objectPage(after: nil, count: 10).page.map(\.id) == [1, 2])
    }
}

/// A real etcd, read through a wrapper that compacts etcd's history right after the
/// first page of the first full read, so that reading the next page at that revision
/// fails as it would if a compaction came at that moment.
final class CompactingKV: MetaKV, Sendable {
    let inner: EtcdKV
    let fullReads = Mutex(0)
    private let compacted = Mutex(false)

    init(_ inner: EtcdKV) { self.inner = inner }

    var endpointDescription: String { inner.endpointDescription }
    func ping(timeout: Duration) async throws -> String { try await inner.ping(timeout: timeout) }
    func get(_ key: String) async throws -> (entry: KVEntry?, revision: Int64) { try await inner.get(key) }
    func list(prefix: String) async throws -> (entries: [KVEntry], revision: Int64) { try await inner.list(prefix: prefix) }
    func listPage(prefix: String, from start: String, limit: Int, revision: Int64) async throws
        -> (entries: [KVEntry], revision: Int64, more: Bool)
    {
        if revision == 0 { fullReads.withLock { $0 += 1 } }
        let page = try await inner.listPage(prefix: prefix, from: start, limit: limit, revision: revision)
        if revision == 0 && page.more && !compacted.withLock({ $0 }) {
            compacted.withLock { $0 = true }
            // a write after the read's revision, then the history up to now goes
            try await inner.put(prefix + "ffffffffffffffff", PersistedObject(objectID: .max, owner: 0, metadata: "{}").storedText, lease: 0)
            let now = try await inner.get(prefix).revision
            try await inner.client.compact(revision: now)
        }
        return page
    }
    func listKeys(prefix: String) async throws -> [(key: String, modRevision: Int64)] { try await inner.listKeys(prefix: prefix) }
    func put(_ key: String, _ value: String, lease: Int64) async throws { try await inner.put(key, value, lease: lease) }
    func putAll(_ entries: [(key: String, value: String)], lease: Int64, marker: String?) async throws {
        try await inner.putAll(entries, lease: lease, marker: marker)
    }
    func delete(_ key: String) async throws -> Bool { try await inner.delete(key) }
    func delete(_ keys: [String], marker: String) async throws -> Int { try await inner.delete(keys, marker: marker) }
    func swap(_ key: String, expectedModRevision: Int64, value: String) async throws -> Bool {
        try await inner.swap(key, expectedModRevision: expectedModRevision, value: value)
    }
    func grantLease(ttlSeconds: Int64) async throws -> (lease: Int64, epoch: String) {
        try await inner.grantLease(ttlSeconds: ttlSeconds)
    }
    func keepAlive(_ lease: Int64, timeout: Duration) async throws -> KVKeepAlive {
        try await inner.keepAlive(lease, timeout: timeout)
    }
    func revoke(_ lease: Int64) async throws { try await inner.revoke(lease) }
    func watch(_ key: String, prefix: Bool, fromRevision: Int64) -> any AsyncSequence<KVEvent, any Error> {
        inner.watch(key, prefix: prefix, fromRevision: fromRevision)
    }
}

@Suite("Mirrored object listing, etcd", .serialized, .enabled(if: EtcdBinary.available, EtcdBinary.skipMessage), .onBlockingPool)
struct EtcdListingTests {
    @Test func readYourWrites() async throws {
        try await withEtcd { try await Listing.readYourWrites(EtcdCluster(server: $0)) }
    }

    @Test func orderAndFilter() async throws {
        try await withEtcd { try await Listing.orderAndFilter(EtcdCluster(server: $0)) }
    }

    /// etcd killed (listing fails with a clear error meanwhile, the copy stays) and
    /// started again on its data: the copy is read again and follows changes as before.
    @Test func etcdRestart() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend()
            let b = cluster.backend()
            try await registerSample(a, "a")
            try await registerSample(b, "b")
            try await a.publishObjects((1...40).map { (objectID: UInt64($0), metadata: Listing.tensor($0)) })
            try await a.publishObject(100, metadata: #"{"m":{"id":"o0000000000000001"}}"#)
            #expect(try await Listing.walk(b, step: 16) == (1...40).map(UInt64.init) + [100])
            #expect(try await b.referrers(of: [1]) == [100])
            server.kill()
            let error = await #expect(throws: MetaError.self) { try await b.syncObjects(timeout: .seconds(2)) }
            #expect("\(error.map { "\($0)" } ?? "")".contains("metadata service request failed"))
            try server.launch()
            try await server.waitHealthy()
            for i in 41...45 { try await a.publishObject(UInt64(i), metadata: Listing.tensor(i)) }
            try await a.removeObject(3)
            #expect(try await Listing.walk(b, step: 16) == (1...45).filter { $0 != 3 }.map(UInt64.init) + [100])
            // the copy read again after the restart knows the referrers again
            #expect(try await b.referrers(of: [1]) == [100])
            try await a.removeObject(4)
            try await a.removeObject(100)
            #expect(try await Listing.walk(b, step: 16) == (1...45).filter { $0 != 3 && $0 != 4 }.map(UInt64.init))
            #expect(try await b.referrers(of: [1]) == [])
        }
    }

    /// etcd comes back empty: the copy drops what etcd no longer holds and shows what
    /// is published afterwards.
    @Test func etcdLostData() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend()
            let b = cluster.backend()
            try await registerSample(a, "a")
            try await registerSample(b, "b")
            try await a.publishObjects((1...30).map { (objectID: UInt64($0), metadata: Listing.tensor($0)) })
            try await a.publishObject(31, metadata: #"{"m":{"id":"o0000000000000001"}}"#)
            #expect(try await Listing.walk(b, step: 8).count == 31)
            #expect(try await b.referrers(of: [1]) == [31])
            server.kill()
            try server.wipeData()
            try server.launch()
            try await server.waitHealthy()
            // a daemon that joins the empty etcd publishes
            let c = cluster.backend()
            try await registerSample(c, "c")
            try await c.publishObject(500, metadata: Listing.tensor(500))
            #expect(try await Listing.walk(b, step: 8) == [500])
            #expect(try await b.referrers(of: [1]) == [])  // the references went with the records
        }
    }

    /// The history the copy reads at is compacted in the middle of a full read: the read
    /// starts over and the copy is complete.
    @Test func compactionDuringFullRead() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend()
            try await registerSample(a, "a")
            try await a.publishObjects((1...50).map { (objectID: UInt64($0), metadata: Listing.tensor($0)) })
            let etcd = try #require(a.kv as? EtcdKV)
            let kv = CompactingKV(etcd)
            let mirror = ObjectMirror(kv: kv, prefix: cluster.prefix, retryInterval: .milliseconds(50), logger: testLogger, pageSize: 10)
            defer { mirror.stop() }
            try await mirror.sync(timeout: .seconds(30))
            #expect(kv.fullReads.withLock { $0 } >= 2)
            #expect(mirror.all().map(\.id) == (1...50).map(UInt64.init) + [.max])
            try await a.publishObject(51, metadata: Listing.tensor(51))
            try await mirror.sync(timeout: .seconds(30))
            #expect(mirror.all().count == 52)
        }
    }

    /// With etcd gone for good, a listing fails within its bound with an error naming the
    /// metadata service.
    @Test func etcdGone() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let b = cluster.backend()
            try await registerSample(b, "b")
            #expect(try await Listing.firstIDs(b, 5) == [])
            server.kill()
            let clock = ContinuousClock()
            let start = clock.now
            await #expect(throws: MetaError.self) { try await b.syncObjects(timeout: .seconds(3)) }
            #expect(clock.now - start < .seconds(30))
        }
    }
}

@Suite("Object ids named in metadata")
struct ReferencedIDTests {
    @Test("every quoted vineyard id at any depth, once each, except the object's own")
    func ids() {
        let text = #"{"id":"o0000000000000014","a":{"b":{"id":"o00aa00bb00cc00dd"},"c":["o00aa00bb00cc00dd"]},"#
            + #""blob":{"id":"o8000000000000001"},"x":"o0000000000000002""o0000000000000003"}"#
        #expect(ObjectMirror.referencedIDs(in: text, except: 0x14) == [0x00aa_00bb_00cc_00dd, 0x8000_0000_0000_0001, 2, 3])
    }

    @Test("what only looks like an id is not one")
    func lookalikes() {
        for text in [
            #"{"id":"o00AA00BB00CC00DD"}"#,  // upper case: vineyard prints lower case
            #"{"id":"o00aa00bb00cc00d"}"#,  // 15 digits
            #"{"id":"o00aa00bb00cc00ddd"}"#,  // 17 digits
            #"{"id":"x00aa00bb00cc00dd"}"#,
            #"{"id":o00aa00bb00cc00dd}"#,  // not a string
            #"{"id":"o00aa00bb00cc00dg"}"#,
            #""o00aa00bb0"#,  // cut short
            "",
        ] {
            #expect(ObjectMirror.referencedIDs(in: text, except: 0).isEmpty, "\(text)")
        }
        // a false start does not hide a real id right after it
        #expect(ObjectMirror.referencedIDs(in: #""o12"o0000000000000005""#, except: 0) == [5])
    }
}
