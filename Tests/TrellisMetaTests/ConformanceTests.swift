import Synchronization
import Testing
import TrellisProtocol

@testable import TrellisMeta
import TrellisTestSupport

/// The behaviour every ``MetaCore`` must have, written once against a
/// ``TestCluster`` and run for the local and the etcd backend.
enum Conformance {
    static func instanceIDs(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        #expect(try await a.allocateInstanceID() == 0)
        let ids = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for backend in [a, b] {
                group.addTask {
                    var ids: [UInt64] = []
                    for _ in 0..<6 { ids.append(try await backend.allocateInstanceID()) }
                    return ids
                }
            }
            return try await group.reduce(into: [UInt64]()) { $0 += $1 }
        }
        #expect(ids.sorted() == Array(1...12))
    }

    static func registration(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        #expect(a.registeredInstance == nil)
        let infoA = try await registerSample(a, "a")
        let infoB = try await registerSample(b, "b")
        #expect(a.registeredInstance == infoA)
        #expect(try await a.instances() == [infoA, infoB])
        #expect(try await b.instances() == [infoA, infoB])
        // Registering again updates the record in place.
        var moved = infoA
        moved.rpcEndpoint = "127.0.0.1:4242"
        try await a.register(moved, republish: { _ in })
        #expect(try await b.instances() == [moved, infoB])
        #expect(infoA.clusterMetaJSON["rpc_endpoint"]?.stringValue == infoA.rpcEndpoint)
        #expect(infoA.clusterMetaJSON["timestamp"]?.uint64Value == infoA.timestamp)
    }

    static func objects(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        await #expect(throws: MetaError.notRegistered) { try await a.publishObject(1, metadata: "{}") }
        let infoA = try await registerSample(a, "a")
        let infoB = try await registerSample(b, "b")
        let blobLike: UInt64 = 0x8000_0000_0000_0001
        let meta = #"{"id":"o0000000000000007","typename":"vineyard::Tensor<int64>","nested":{"a":[1,2,"\u00e9"]}}"#
        try await a.publishObject(7, metadata: meta)
        try await b.publishObject(blobLike, metadata: "{\"b\":true}")
        #expect(try await b.object(7) == PersistedObject(objectID: 7, owner: infoA.id, metadata: meta))
        #expect(try await a.object(blobLike)?.owner == infoB.id)
        #expect(try await a.object(8) == nil)
        #expect(try await a.objects().map(\.objectID) == [7, blobLike])
        // Replace.
        try await a.publishObject(7, metadata: "{\"v\":2}")
        #expect(try await b.object(7)?.metadata == "{\"v\":2}")
        // Remove, from the other instance too.
        #expect(try await b.removeObject(7))
        #expect(try await b.removeObject(7) == false)
        #expect(try await a.objects().map(\.objectID) == [blobLike])
        // Many at once (a deep delete of a DataFrame): more than one etcd transaction
        // holds (127 deletes each); ids not published, or named twice, count once or not at all.
        let many = (1...300).map { UInt64(1000 + $0) }
        try await a.publishObjects(many.map { (objectID: $0, metadata: "{}") })
        #expect(try await b.objects().count == 301)
        let removed = try await b.removeObjects(Array(many[..<200]) + [5, 6, 1001])
        #expect(removed == 200)
        #expect(try await a.objects().map(\.objectID) == Array(many[200...]) + [blobLike])
        #expect(try await a.removeObjects([many[250], many[250]]) == 1)
        #expect(try await a.removeObjects(Array(many[200...])) == 99)
        #expect(try await b.objects().map(\.objectID) == [blobLike])
        #expect(try await b.removeObjects([]) == 0)
        // Records and a name in one write: another instance finds both.
        try await a.publishObjects([(objectID: 30, metadata: "{}"), (objectID: 31, metadata: "{}")], naming: (name: "thirty", objectID: 30))
        #expect(try await b.objectID(forName: "thirty") == 30)
        #expect(try await b.object(31) != nil)
        // a name only (the objects were published before), replacing the binding
        try await b.publishObjects([], naming: (name: "thirty", objectID: 31))
        #expect(try await a.objectID(forName: "thirty") == 31)
        // a name the store refuses: nothing is written
        await #expect(throws: MetaError.self) { try await a.publishObjects([(objectID: 32, metadata: "{}")], naming: (name: "", objectID: 32)) }
        #expect(try await b.object(32) == nil)
        _ = try await a.dropName("thirty")
        try await a.removeObjects([30, 31])
    }

    static func names(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        await #expect(throws: MetaError.notRegistered) { try await a.putName("x", objectID: 1) }
        try await registerSample(a, "a")
        try await registerSample(b, "b")
        try await a.putName("shared_arr", objectID: 7_531_269_789_520_494_594)
        try await b.putName("with/slash and space", objectID: 2)
        #expect(try await b.objectID(forName: "shared_arr") == 7_531_269_789_520_494_594)
        #expect(try await a.objectID(forName: "missing") == nil)
        #expect(try await a.names() == ["shared_arr": 7_531_269_789_520_494_594, "with/slash and space": 2])
        try await b.putName("shared_arr", objectID: 3)
        #expect(try await a.objectID(forName: "shared_arr") == 3)
        #expect(try await a.dropName("shared_arr"))
        #expect(try await b.dropName("shared_arr") == false)
        #expect(try await b.names() == ["with/slash and space": 2])
        await #expect(throws: MetaError.invalidArgument("empty name")) { try await a.putName("", objectID: 1) }
    }

    static func waitForName(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        try await registerSample(a, "a")
        try await registerSample(b, "b")
        try await a.putName("early", objectID: 11)
        #expect(try await b.waitForName("early") == 11)

        let clock = ContinuousClock()
        let start = clock.now
        async let waited = withTimeout(.seconds(60), "waitForName(late)") { try await b.waitForName("late") }
        try await Task.sleep(for: .milliseconds(300))
        try await a.putName("other", objectID: 1)  // not the awaited name
        try await a.putName("late", objectID: 12)
        #expect(try await waited == 12)
        #expect(clock.now - start >= .milliseconds(300))

        // Cancellation ends a wait promptly.
        let cancelled = CallCounter()
        try await withTimeout(.seconds(60), "cancelled waitForName to end") {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        _ = try await b.waitForName("never")
                    } catch {
                        if error is CancellationError { cancelled.increment() }
                    }
                }
                try? await Task.sleep(for: .milliseconds(200))
                group.cancelAll()
            }
        }
        #expect(cancelled.count == 1)
    }

    /// Many pending waits (each a watch) neither starve other requests nor each other.
    static func manyConcurrentWaits(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        try await registerSample(a, "a")
        try await registerSample(b, "b")
        let count = 24
        try await withTimeout(.seconds(60), "\(count) concurrent waits to be released") {
            try await withThrowingTaskGroup(of: (Int, UInt64).self) { group in
                for i in 0..<count {
                    group.addTask { (i, try await b.waitForName("many-\(i)")) }
                }
                try await Task.sleep(for: .milliseconds(500))
                // Other requests still go through while the watches are open.
                #expect(try await b.instances().count == 2)
                for i in 0..<count { try await a.putName("many-\(i)", objectID: UInt64(1000 + i)) }
                var released = 0
                for try await (i, id) in group {
                    #expect(id == UInt64(1000 + i))
                    released += 1
                }
                #expect(released == count)
            }
        }
    }

    /// A dead instance (keepalive stopped, no deregistration) leaves the listing
    /// within the lease TTL, and its objects and names go with it.
    static func deadInstanceExpires(_ cluster: some TestCluster) async throws {
        let ttl = Duration.seconds(3)
        let a = cluster.backend(ttl: ttl)
        let b = cluster.backend(ttl: ttl)
        let infoA = try await registerSample(a, "a")
        let infoB = try await registerSample(b, "b")
        // Both run (and so refresh their leases) before anything else is done: the time a
        // loaded machine takes for the setup must not eat into the TTL.
        try await withRunning([b]) {
            // A keeps its lease alive past the TTL while it runs ...
            let runA = Task.onBlockingPool { try await a.run() }
            try await a.publishObject(100, metadata: "{}")
            try await a.putName("of-a", objectID: 100)
            try await b.publishObject(200, metadata: "{}")
            try await b.putName("of-b", objectID: 200)
            try await Task.sleep(for: ttl + .seconds(1))
            #expect(try await b.instances().map(\.id) == [infoA.id, infoB.id])
            #expect(try await b.object(100) != nil)
            // ... and dies without deregistering.
            runA.cancel()
            _ = await runA.result
            let clock = ContinuousClock()
            let died = clock.now
            try await withTimeout(.seconds(60), "instance \(infoA.id) to expire") {
                try await b.waitForInstanceExit(infoA.id)
            }
            let gone = clock.now - died
            // It went because its lease expired, not sooner: its last refresh was at most a
            // keepalive interval (TTL/3) before it died, so no sooner than 2/3 TTL after (half
            // the TTL as the bound; a deregistration would take milliseconds). The upper bound
            // above only catches a hang: a loaded machine may sweep late.
            #expect(gone >= ttl / 2, "expired after \(gone) with TTL \(ttl)")
            #expect(try await b.instances() == [infoB])
            // its objects and names stay until deleted (vineyard keeps the metadata of a
            // stopped instance readable; only its blobs are gone)
            #expect(try await b.objects().map(\.objectID) == [100, 200])
            #expect(try await b.object(100)?.owner == infoA.id)
            #expect(try await b.names() == ["of-a": 100, "of-b": 200])
        }
        // Waiting for an instance that is not there returns at once.
        try await withTimeout(.seconds(60), "exit of unknown instance") { try await b.waitForInstanceExit(999) }
    }

    /// Removals of published objects, by any backend, reach a watcher (how an owner learns
    /// that its object was deleted through another instance); referrers are found by member id.
    static func removalsAndReferrers(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        try await registerSample(a, "a")
        try await registerSample(b, "b")
        let member: UInt64 = 0x0123_4567_89ab_cdef
        try await a.publishObjects([
            (objectID: 11, metadata: "{\"typename\":\"t\"}"),
            (objectID: 12, metadata: "{\"m\":{\"id\":\"o0123456789abcdef\",\"typename\":\"t\"}}"),
        ])
        #expect(try await b.referrers(of: [member]) == [12])
        #expect(try await b.referrers(of: [11]) == [])
        // a member at any depth, through another instance; the asked ids themselves are
        // not their own referrers; a republished tree that no longer names the member
        // and a removed one stop referring to it
        let deep: UInt64 = 0x00aa_00bb_00cc_00dd
        try await b.publishObjects([
            (objectID: 20, metadata: "{\"a\":{\"b\":{\"id\":\"o00aa00bb00cc00dd\"}},\"id\":\"o0000000000000014\"}"),
            (objectID: 21, metadata: "{\"x\":{\"id\":\"o00aa00bb00cc00dd\"},\"y\":{\"id\":\"o0123456789abcdef\"}}"),
        ])
        #expect(try await a.referrers(of: [deep]) == [20, 21])
        #expect(try await a.referrers(of: [deep, member]) == [12, 20, 21])
        #expect(try await a.referrers(of: [deep, 21]) == [20])
        #expect(try await a.referrers(of: [20]) == [])  // its own id is no reference
        try await a.publishObject(21, metadata: "{\"x\":{\"typename\":\"t\"}}")
        #expect(try await b.referrers(of: [deep]) == [20])
        #expect(try await b.referrers(of: [member]) == [12])
        _ = try await a.removeObject(20)
        #expect(try await b.referrers(of: [deep]) == [])
        _ = try await a.removeObject(21)
        let seen = Mutex<[UInt64]>([])
        let watcher = Task.onBlockingPool {
            for await id in a.objectRemovals() {
                seen.withLock { $0.append(id) }
            }
        }
        defer { watcher.cancel() }
        // the watch is open once a removal made now is reported
        try await eventually(.seconds(60), "the first removal to reach the watcher") {
            try await b.publishObject(13, metadata: "{}")
            _ = try await b.removeObject(13)
            return seen.withLock { $0.contains(13) }
        }
        _ = try await b.removeObject(12)
        _ = try await b.removeObject(11)
        try await eventually(.seconds(60), "both removals") { seen.withLock { $0.contains(11) && $0.contains(12) } }
    }

    /// `stop()` makes `run()` deregister: the instance goes at once, its data stays.
    static func stopDeregisters(_ cluster: some TestCluster) async throws {
        let a = cluster.backend()
        let b = cluster.backend()
        await #expect(throws: MetaError.notRegistered) { try await a.run() }
        let infoA = try await registerSample(a, "a")
        try await registerSample(b, "b")
        try await a.publishObject(5, metadata: "{}")
        try await a.putName("n", objectID: 5)
        let runA = Task.onBlockingPool { try await a.run() }
        try await Task.sleep(for: .milliseconds(200))
        a.stop()
        try await withTimeout(.seconds(60), "run() to return after stop()") { try await runA.value }
        #expect(a.registeredInstance == nil)
        #expect(try await b.instances().contains { $0.id == infoA.id } == false)
        // its objects and names stay until someone deletes them
        #expect(try await b.object(5)?.owner == infoA.id)
        #expect(try await b.objectID(forName: "n") == 5)
        let removed = try await b.removeObject(5)
        let dropped = try await b.dropName("n")
        #expect(removed && dropped)
        #expect(try await a.object(5) == nil)
        #expect(try await a.objectID(forName: "n") == nil)
    }

    /// When the lease is lost, `run()` registers again with a new lease and calls
    /// the republish handler, which publishes the instance's data again.
    static func lostLeaseRepublishes(_ cluster: some TestCluster) async throws {
        let ttl = Duration.seconds(3)
        let a = cluster.backend(ttl: ttl)
        let b = cluster.backend(ttl: ttl)
        let calls = CallCounter()
        let infoA = try await registerSample(a, "a") { [weak a] info in
            calls.increment()
            try await a?.publishObject(42, metadata: "{\"again\":\(info.id)}")
            try await a?.putName("answer", objectID: 42)
        }
        try await registerSample(b, "b")
        try await a.publishObject(42, metadata: "{}")
        try await a.putName("answer", objectID: 42)
        try await withRunning([a, b]) {
            try await cluster.revokeLease(of: a)
            #expect(try await b.instances().contains { $0.id == infoA.id } == false)
            // objects are not attached to the lease (republish may have rewritten it already)
            #expect(try await b.object(42) != nil)
            try await eventually(.seconds(60), "re-registration and republish") {
                guard calls.count >= 1 else { return false }
                return try await b.object(42)?.metadata == "{\"again\":\(infoA.id)}"
            }
            #expect(try await b.instances().contains(infoA))
            #expect(try await b.object(42)?.metadata == "{\"again\":\(infoA.id)}")
            #expect(try await b.objectID(forName: "answer") == 42)
        }
    }
}

@Suite("Local backend conformance", .onBlockingPool)
struct LocalConformanceTests {
    @Test func instanceIDsAreUniqueAcrossBackends() async throws { try await Conformance.instanceIDs(LocalCluster()) }
    @Test func registrationIsVisibleToOthers() async throws { try await Conformance.registration(LocalCluster()) }
    @Test func objectsAreShared() async throws { try await Conformance.objects(LocalCluster()) }
    @Test func namesAreShared() async throws { try await Conformance.names(LocalCluster()) }
    @Test func waitForNameIsReleasedByOtherBackend() async throws { try await Conformance.waitForName(LocalCluster()) }
    @Test func manyConcurrentWaits() async throws { try await Conformance.manyConcurrentWaits(LocalCluster()) }
    @Test func deadInstanceExpiresItsDataStays() async throws { try await Conformance.deadInstanceExpires(LocalCluster()) }
    @Test func stopDeregisters() async throws { try await Conformance.stopDeregisters(LocalCluster()) }
    @Test func removalsAndReferrers() async throws { try await Conformance.removalsAndReferrers(LocalCluster()) }
    @Test func lostLeaseReregistersAndRepublishes() async throws {
        try await Conformance.lostLeaseRepublishes(LocalCluster())
    }

    @Test func separateStoresAreSeparateClusters() async throws {
        let a = MetaCore(local: LocalMetaStore(), logger: testLogger)
        let b = MetaCore(local: LocalMetaStore(), logger: testLogger)
        #expect(try await a.allocateInstanceID() == 0)
        #expect(try await b.allocateInstanceID() == 0)
        #expect(a.endpointDescription == "local")
    }
}

@Suite("etcd backend conformance", .serialized, .enabled(if: EtcdBinary.available, EtcdBinary.skipMessage), .onBlockingPool)
struct EtcdConformanceTests {
    @Test func instanceIDsAreUniqueAcrossBackends() async throws {
        try await withEtcd { try await Conformance.instanceIDs(EtcdCluster(server: $0)) }
    }
    @Test func registrationIsVisibleToOthers() async throws {
        try await withEtcd { try await Conformance.registration(EtcdCluster(server: $0)) }
    }
    @Test func objectsAreShared() async throws {
        try await withEtcd { try await Conformance.objects(EtcdCluster(server: $0)) }
    }
    @Test func namesAreShared() async throws {
        try await withEtcd { try await Conformance.names(EtcdCluster(server: $0)) }
    }
    @Test func waitForNameIsReleasedByOtherBackend() async throws {
        try await withEtcd { try await Conformance.waitForName(EtcdCluster(server: $0)) }
    }
    @Test func manyConcurrentWaits() async throws {
        try await withEtcd { try await Conformance.manyConcurrentWaits(EtcdCluster(server: $0)) }
    }
    @Test func deadInstanceExpiresItsDataStays() async throws {
        try await withEtcd { try await Conformance.deadInstanceExpires(EtcdCluster(server: $0)) }
    }
    @Test func stopDeregisters() async throws {
        try await withEtcd { try await Conformance.stopDeregisters(EtcdCluster(server: $0)) }
    }
    @Test func removalsAndReferrers() async throws {
        try await withEtcd { try await Conformance.removalsAndReferrers(EtcdCluster(server: $0)) }
    }
    @Test func lostLeaseReregistersAndRepublishes() async throws {
        try await withEtcd { try await Conformance.lostLeaseRepublishes(EtcdCluster(server: $0)) }
    }
}
