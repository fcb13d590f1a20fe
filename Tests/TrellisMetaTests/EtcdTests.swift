import AsyncHTTPClient
import NIOCore
import Testing

@testable import TrellisMeta
import TrellisProtocol
import TrellisSystem
import TrellisTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// etcd's gauge of open watchers (`etcd_debugging_mvcc_watcher_total` on /metrics).
func openWatchers(_ server: EtcdServer) async throws -> Int {
    let request = HTTPClientRequest(url: server.endpoint + "/metrics")
    let response = try await EtcdClient.sharedHTTPClient.execute(request, timeout: .seconds(5))
    let text = String(buffer: try await response.body.collect(upTo: 32 << 20))
    let name = "etcd_debugging_mvcc_watcher_total "
    let line = try #require(text.split(separator: "\n").first { $0.hasPrefix(name) })
    return try #require(Int(line.dropFirst(name.count)))
}

@Suite("etcd client and failure handling", .serialized, .onBlockingPool)
struct EtcdTests {
    @Test("etcd unreachable at start fails within meta_timeout")
    func unreachableAtStart() async throws {
        let port = try freeLoopbackPort()  // nothing listens there
        let backend = MetaCore(
                etcd: EtcdConfiguration(endpoint: "http://127.0.0.1:\(port)", prefix: "/t", timeout: .seconds(1)),
            logger: testLogger)
        let clock = ContinuousClock()
        let start = clock.now
        let error = await #expect(throws: MetaError.self) { try await backend.allocateInstanceID() }
        let elapsed = clock.now - start
        guard case .unreachable(let endpoint, let timeout, let reason) = error else {
            Issue.record("expected .unreachable, got \(String(describing: error))")
            return
        }
        #expect(endpoint.contains("127.0.0.1:\(port)"))
        #expect(timeout == .seconds(1))
        #expect(!reason.isEmpty)
        // It waited out the timeout; the upper bound only catches a hang (a busy machine is slow).
        #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(60), "failed after \(elapsed)")
        #expect(error?.description.contains("unreachable within") == true)
    }

    @Test("client primitives: range, put with lease, delete prefix, txn, leases, watch",
        .enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func clientPrimitives() async throws {
        try await withEtcd { server in
            let client = EtcdClient(endpoint: server.endpoint + "/", logger: testLogger)
            #expect(client.endpoint == server.endpoint)
            try await client.put("/p/a", value: "1")
            try await client.put("/p/b", value: "héllo")
            try await client.put("/q", value: "x")
            let range = try await client.range("/p/", prefix: true)
            #expect(range.kvs.map(\.key) == ["/p/a", "/p/b"])
            #expect(range.kvs.map(\.value) == ["1", "héllo"])
            #expect(range.count == 2)
            #expect(try await client.range("/nothing").kvs.isEmpty)

            // Compare-and-swap.
            let absent = try await client.txn(
                compare: [.absent("/cas")], success: [.put(key: "/cas", value: "0", lease: 0)],
                failure: [.range(key: "/cas", prefix: false)])
            #expect(absent.succeeded)
            let again = try await client.txn(
                compare: [.absent("/cas")], success: [.put(key: "/cas", value: "1", lease: 0)],
                failure: [.range(key: "/cas", prefix: false)])
            #expect(!again.succeeded)
            guard case .range(let current) = again.responses.first else {
                Issue.record("failure branch should return the range")
                return
            }
            #expect(current.first?.value == "0")
            let swapped = try await client.txn(
                compare: [EtcdCompare(key: "/cas", .modRevision(current[0].modRevision))],
                success: [.put(key: "/cas", value: "1", lease: 0), .delete(key: "/p/", prefix: true)])
            #expect(swapped.succeeded)
            #expect(swapped.responses == [.put, .delete(deleted: 2)])
            #expect(try await client.range("/cas").kvs.first?.value == "1")

            // Leases.
            let lease = try await client.grantLease(ttl: 5)
            #expect(lease.ttl == 5)
            try await client.put("/leased", value: "v", lease: lease.id)
            #expect(try await client.range("/leased").kvs.first?.lease == lease.id)
            #expect(try await client.keepAlive(lease: lease.id).ttl == 5)
            try await client.revokeLease(lease.id)
            #expect(try await client.range("/leased").kvs.isEmpty)
            #expect(try await client.keepAlive(lease: lease.id).ttl == 0)
            try await client.revokeLease(lease.id)  // unknown lease: no error
            let leaseError = await #expect(throws: EtcdError.self) {
                try await client.put("/leased", value: "v", lease: lease.id)
            }
            #expect(leaseError?.isLeaseNotFound == true)

            #expect(try await client.delete("/q") == 1)
            #expect(try await client.delete("/q") == 0)

            // Watch a prefix from a past revision: replays, then streams.
            let start = try await client.put("/w/1", value: "a").revision
            try await client.delete("/w/1")
            let events = try await withTimeout(.seconds(60), "watch events") {
                var seen: [EtcdEvent] = []
                for try await event in client.watch("/w/", prefix: true, fromRevision: start, prevKV: true) {
                    seen.append(event)
                    if seen.count == 2 { try await client.put("/w/2", value: "b") }
                    if seen.count == 3 { break }
                }
                return seen
            }
            #expect(events.map(\.kind) == [.put, .delete, .put])
            #expect(events.map(\.kv.key) == ["/w/1", "/w/1", "/w/2"])
            #expect(events[1].prevKV?.value == "a")
            #expect(events[2].kv.value == "b")

            // A watch of deletions only: etcd leaves the puts out.
            let from = try await client.put("/d/1", value: "a").revision
            try await client.put("/d/2", value: "b")
            try await client.delete("/d/1")
            let deletions = try await withTimeout(.seconds(60), "deletion events") {
                var seen: [EtcdEvent] = []
                for try await event in client.watch("/d/", prefix: true, fromRevision: from, deletionsOnly: true) {
                    seen.append(event)
                    if seen.count == 1 {
                        try await client.put("/d/3", value: "c")
                        try await client.delete("/d/2")
                    }
                    if seen.count == 2 { break }
                }
                return seen
            }
            #expect(deletions.map(\.kind) == [.delete, .delete])
            #expect(deletions.map(\.kv.key) == ["/d/1", "/d/2"])
        }
    }

    @Test("the test etcd gives up at once, saying why, when its port was taken before it could listen",
        .enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func takenPortIsReportedAtOnce() async throws {
        // a listener on the port the etcd will be given
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(fd, p, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, p, &length) == 0
            }
        }
        try #require(listening)
        let server = try EtcdServer(extraArguments: [], clientPort: Int(UInt16(bigEndian: address.sin_port)))
        defer { server.stop() }
        try server.launch()
        let start = ContinuousClock.now
        let exited = await #expect(throws: EtcdExited.self) { try await server.waitHealthy(.seconds(60)) }
        #expect(exited?.portTaken == true, "\(exited.map(String.init(describing:)) ?? "")")
        #expect(ContinuousClock.now - start < .seconds(50))
    }

    @Test("connect waits for an etcd that comes up within the timeout",
        .enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func connectWaitsForLateEtcd() async throws {
        try await withEtcd { server in
            server.kill()
            let backend = MetaCore(
                etcd: EtcdConfiguration(endpoint: server.endpoint, prefix: "/late", timeout: .seconds(30)),
                logger: testLogger)
            async let id = backend.allocateInstanceID()
            try await Task.sleep(for: .milliseconds(500))
            try server.launch()
            #expect(try await id == 0)
        }
    }

    /// Every wait holds one watch; released and cancelled waits close theirs.
    @Test(.enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func waitsCloseTheirWatches() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend()
            try await registerSample(a, "a")
            #expect(try await openWatchers(server) == 0)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<3 { group.addTask { _ = try await a.waitForName("w\(i)") } }
                try await eventually(.seconds(60), "3 watchers") { try await openWatchers(server) == 3 }
                for i in 0..<3 { try await a.putName("w\(i)", objectID: 1) }
                try await group.waitForAll()
            }
            try await eventually(.seconds(60), "released waits to close their watches") {
                try await openWatchers(server) == 0
            }
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<3 { group.addTask { _ = try? await a.waitForName("never\(i)") } }
                try? await eventually(.seconds(60), "3 more watchers") { try await openWatchers(server) == 3 }
                group.cancelAll()
            }
            try await eventually(.seconds(60), "cancelled waits to close their watches") {
                try await openWatchers(server) == 0
            }
        }
    }

    /// Many objects at once (a DataFrame and its columns) go out in transactions of at
    /// most 128 operations; all of them land, owned by the publisher, and stay when it
    /// deregisters (they are not attached to its lease).
    @Test(.enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func publishManyObjectsInBatches() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend()
            let b = cluster.backend()
            let infoA = try await registerSample(a, "a")
            _ = try await registerSample(b, "b")
            let big = String(repeating: "x", count: 6000)  // 300 × 6 KB: more than one 1 MiB batch too
            let objects = (1...300).map { (objectID: UInt64($0), metadata: "{\"i\":\($0),\"pad\":\"\(big)\"}") }
            try await a.publishObjects(objects)
            let seen = try await b.objects()
            #expect(seen.count == 300)
            #expect(Set(seen.map(\.objectID)) == Set(1...300))
            #expect(seen.allSatisfy { $0.owner == infoA.id })
            #expect(try await b.object(300)?.metadata == objects[299].metadata)
            try await a.deregister()
            #expect(try await b.instances().map(\.id).contains(infoA.id) == false)
            #expect(try await b.objects().count == 300)
        }
    }

    /// `objects()` caches records by revision and reads only keys when nothing changed: it
    /// still sees every new, rewritten and removed record, from this instance or another,
    /// whether few changed (single reads) or many (one full read).
    @Test(.enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func objectListingFollowsChanges() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend()
            let b = cluster.backend()
            let infoA = try await registerSample(a, "a")
            let infoB = try await registerSample(b, "b")
            func seen() async throws -> [UInt64: String] {
                Dictionary(uniqueKeysWithValues: try await b.objects().map { ($0.objectID, $0.metadata) })
            }
            try await a.publishObjects((1...20).map { (objectID: UInt64($0), metadata: "{\"v\":1}") })
            #expect(try await seen().count == 20)  // many new: one full read
            try await a.publishObject(3, metadata: "{\"v\":2}")  // rewritten
            try await b.publishObject(21, metadata: "{\"v\":1}")  // new, by the reader itself
            try await a.removeObject(5)
            var now = try await seen()
            #expect(now.count == 20 && now[3] == "{\"v\":2}" && now[21] == "{\"v\":1}" && now[5] == nil)
            #expect(try await b.objects().first { $0.objectID == 21 }?.owner == infoB.id)
            #expect(try await b.objects().first { $0.objectID == 3 }?.owner == infoA.id)
            // Many rewritten at once, and a listing with nothing changed.
            try await a.publishObjects((1...20).map { (objectID: UInt64($0), metadata: "{\"v\":3}") })
            now = try await seen()
            #expect(now.count == 21 && now.filter { $0.value == "{\"v\":3}" }.count == 20)
            #expect(try await seen() == now)
            #expect(try await b.objects().map(\.objectID) == (1...21).map(UInt64.init))
        }
    }

    /// An etcd configured with lower transaction limits than the defaults rejects a
    /// 128-operation batch; publication then goes in smaller transactions and still lands.
    @Test(.enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func publishUnderLowerEtcdLimits() async throws {
        try await withEtcd(extraArguments: ["--max-txn-ops", "10"]) { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend()
            _ = try await registerSample(a, "a")
            let objects = (1...100).map { (objectID: UInt64($0), metadata: "{\"i\":\($0)}") }
            try await a.publishObjects(objects)
            #expect(Set(try await a.objects().map(\.objectID)) == Set(1...100))
        }
    }

    /// etcd killed and started again on the same data directory and port: the
    /// backend notices, registers again and republishes; watches resume.
    @Test(.enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func restartOnSameDataDirectory() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend(ttl: .seconds(3))
            let b = cluster.backend(ttl: .seconds(3))
            let calls = CallCounter()
            let infoA = try await registerSample(a, "a") { [weak a] _ in
                calls.increment()
                try await a?.publishObject(1, metadata: "{\"republished\":true}")
            }
            let infoB = try await registerSample(b, "b")
            try await a.publishObject(1, metadata: "{}")
            try await withRunning([a, b]) {
                async let late = withTimeout(.seconds(60), "waitForName across restart") {
                    try await b.waitForName("late")
                }
                try await Task.sleep(for: .milliseconds(300))
                server.kill()
                try await Task.sleep(for: .milliseconds(1500))
                try server.launch()
                try await server.waitHealthy()
                try await eventually(.seconds(60), "republish after restart") {
                    guard calls.count >= 1 else { return false }
                    return try await b.object(1)?.metadata == "{\"republished\":true}"
                }
                #expect(try await b.instances() == [infoA, infoB])
                try await a.putName("late", objectID: 1)
                #expect(try await late == 1)
            }
        }
    }

    /// etcd comes back empty (new data directory, same port): both instances
    /// register again under their old ids, republish, and ids are not handed out twice.
    @Test(.enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func restartWithLostData() async throws {
        try await withEtcd { server in
            let cluster = EtcdCluster(server: server)
            let a = cluster.backend(ttl: .seconds(3))
            let b = cluster.backend(ttl: .seconds(3))
            let callsA = CallCounter()
            let callsB = CallCounter()
            let infoA = try await registerSample(a, "a") { [weak a] _ in
                callsA.increment()
                try await a?.publishObject(10, metadata: "{\"of\":\"a\"}")
                try await a?.putName("a-name", objectID: 10)
            }
            let infoB = try await registerSample(b, "b") { _ in callsB.increment() }
            try await a.publishObject(10, metadata: "{\"of\":\"a\"}")
            try await a.putName("a-name", objectID: 10)
            try await withRunning([a, b]) {
                server.kill()
                try server.wipeData()
                try server.launch()
                try await server.waitHealthy()
                try await eventually(.seconds(60), "both instances re-registered and A republished") {
                    guard callsA.count >= 1, callsB.count >= 1 else { return false }
                    guard try await b.instances() == [infoA, infoB] else { return false }
                    return try await b.objectID(forName: "a-name") == 10
                }
                #expect(try await b.object(10)?.owner == infoA.id)
                let c = cluster.backend()
                #expect(try await c.allocateInstanceID() == 2)
            }
        }
    }
}

@Suite("pieces")
struct PiecesTests {
    @Test func base64RoundTrips() {
        for text in ["", "f", "fo", "foo", "foob", "fooba", "foobar", "/vineyard/names/é✓"] {
            #expect(Base64.decode(Base64.encode(text)) == Array(text.utf8))
        }
        #expect(Base64.encode("foobar") == "Zm9vYmFy")
        #expect(Base64.encode("fo") == "Zm8=")
        #expect(Base64.decode("YQ==") == [0x61])
        #expect(Base64.decode("not base64!") == nil)
    }

    @Test func prefixEnd() {
        #expect(EtcdClient.prefixEnd(Array("/a/".utf8)) == Array("/a0".utf8))
        #expect(EtcdClient.prefixEnd([0x61, 0xFF]) == [0x62])
        #expect(EtcdClient.prefixEnd([0xFF]) == [0])
        #expect(EtcdClient.prefixEnd([]) == [0])
    }

    @Test func streamScannerSplitsMessages() {
        var scanner = JSONStreamScanner()
        scanner.append(Array(#"{"result":{"a":"}{\"x"}}"#.utf8))
        scanner.append(Array("\n{\"b\":[1,".utf8))
        #expect(scanner.nextMessage() == Array(#"{"result":{"a":"}{\"x"}}"#.utf8))
        #expect(scanner.nextMessage() == nil)
        scanner.append(Array("2]}\r\n{}".utf8))
        #expect(scanner.nextMessage() == Array(#"{"b":[1,2]}"#.utf8))
        #expect(scanner.nextMessage() == Array("{}".utf8))
        #expect(scanner.nextMessage() == nil)
    }

    @Test("a stray closer, quote or junk between messages is skipped; later messages still come")
    func streamScannerStrayBytes() {
        var scanner = JSONStreamScanner()
        scanner.append(Array("}]}\"\n{\"a\":1}".utf8))
        #expect(scanner.nextMessage() == Array(#"{"a":1}"#.utf8))
        scanner.append(Array("]x]\u{0}{\"b\":\"}\"}".utf8))
        #expect(scanner.nextMessage() == Array(#"{"b":"}"}"#.utf8))
        #expect(scanner.nextMessage() == nil)
        #expect(scanner.bufferedBytes == 0)
        // Junk alone is not kept.
        scanner.append([UInt8](repeating: UInt8(ascii: "}"), count: 10_000))
        #expect(scanner.nextMessage() == nil)
        #expect(scanner.bufferedBytes == 0)
    }

    @Test("an unterminated message is dropped at the limit; the scanner resynchronises")
    func streamScannerBounded() {
        var scanner = JSONStreamScanner(limit: 1024)
        scanner.append(Array("{\"never\": \"closed".utf8))
        for _ in 0..<100 {
            scanner.append([UInt8](repeating: UInt8(ascii: "x"), count: 100))
            #expect(scanner.nextMessage() == nil)
            #expect(scanner.bufferedBytes <= 1024 + 100)
        }
        #expect(scanner.overflows >= 1)
        scanner.append(Array("\"}{\"ok\":true}".utf8))  // the tail of the dropped one, then a good one
        var got: [[UInt8]] = []
        while let m = scanner.nextMessage() { got.append(m) }
        #expect(got.last == Array(#"{"ok":true}"#.utf8))
    }

    @Test("property: any byte sequence keeps the scanner bounded and well-formed, and it recovers")
    func streamScannerProperty() {
        var rng = SplitMix64(seed: 0x7e11_15)
        let limit = 512
        let alphabet = Array("{}[]\"\\ :,ab0\n".utf8) + [0, 0xFF]
        let good = Array(#"{"result":{"events":[{"kv":{"key":"a"}}]}}"#.utf8)
        for _ in 0..<300 {
            var scanner = JSONStreamScanner(limit: limit)
            let length = Int(rng.next() % 4096)
            let bytes = (0..<length).map { _ in
                rng.next() % 4 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : alphabet[Int(rng.next() % UInt64(alphabet.count))]
            }
            var i = 0
            while i < bytes.count {
                let n = min(bytes.count - i, 1 + Int(rng.next() % 200))
                scanner.append(bytes[i..<(i + n)])
                i += n
                while let m = scanner.nextMessage() {
                    // Every message is a bracketed span of at most `limit` bytes.
                    #expect(m.count <= limit)
                    #expect(m.first == UInt8(ascii: "{") || m.first == UInt8(ascii: "["))
                    #expect(m.last == UInt8(ascii: "}") || m.last == UInt8(ascii: "]"))
                }
                #expect(scanner.bufferedBytes <= limit + 200)
            }
            // Whatever came before, `limit` + 1 bytes of filler (closing or overflowing any open
            // message) and a good message get through.
            scanner.append([UInt8](repeating: UInt8(ascii: " "), count: limit + 1))
            while scanner.nextMessage() != nil {}
            scanner.append(Array("\"]}".utf8) + good)
            var last: [UInt8]? = nil
            while let m = scanner.nextMessage() { last = m }
            #expect(last == good)
        }
    }

    @Test func storedRecordsRoundTrip() {
        let info = sampleInfo(3, "x")
        #expect(InstanceInfo(storedText: info.storedText) == info)
        let object = PersistedObject(objectID: UInt64.max, owner: 2, metadata: #"{"k":"v\"q"}"#)
        #expect(PersistedObject(objectID: UInt64.max, storedText: object.storedText) == object)
        #expect(InstanceInfo(storedText: "garbage") == nil)
    }

    /// A tensor's tree as the daemon stores it (~440 bytes) and a 45-column frame's.
    static func tensorTree(_ i: Int) -> String {
        #"{"__timestamp":1796413867963,"buffer_":{"id":"oe890a711ee8000\#(String(i, radix: 16))","instance_id":0,"#
            + #""length":0,"nbytes":0,"transient":true,"typename":"vineyard::Blob"},"global":false,"#
            + #""id":"o6890a711eec000\#(String(i, radix: 16))","instance_id":0,"nbytes":3687528,"order_":""C"","#
            + #""partition_index_":"[]","shape_":"[460941]","signature":75347058720526\#(i),"transient":false,"#
            + #""typename":"vineyard::Tensor<int64>","value_type_":"int64","value_type_meta_":"<i8"}"#
    }

    @Test func largeTreesAreStoredDeflatedAndReadBackExactly() throws {
        let small = PersistedObject(objectID: 1, owner: 2, metadata: #"{"typename":"t"}"#)
        #expect(small.storedText.contains(#""meta""#))  // below the threshold: as it was
        let tensor = PersistedObject(objectID: 2, owner: 3, metadata: Self.tensorTree(7))
        let text = tensor.storedText
        #expect(text.contains(#""z":"#) && !text.contains("vineyard::Tensor"))
        #expect(text.utf8.count * 2 < tensor.metadata.utf8.count)  // the dictionary's work
        #expect(PersistedObject(objectID: 2, storedText: text) == tensor)
        let frame = "{" + (0..<45).map { #""__values_-value-\#($0)":"# + Self.tensorTree($0) }.joined(separator: ",") + "}"
        let big = PersistedObject(objectID: 3, owner: 0, metadata: frame)
        #expect(big.storedText.utf8.count * 10 < frame.utf8.count)
        #expect(PersistedObject(objectID: 3, storedText: big.storedText) == big)
        // not ASCII, and incompressible text: read back exactly either way
        var rng = SplitMix64(seed: 9)
        // (no quote or backslash: 0x23...0x5b)
        let noise = #"{"k":""# + String((0..<600).map { _ in Character(UnicodeScalar(UInt8.random(in: 0x23...0x5b, using: &rng))) })
            + #"é中"}"#
        let odd = PersistedObject(objectID: 4, owner: 1, metadata: noise)
        #expect(PersistedObject(objectID: 4, storedText: odd.storedText) == odd)
    }

    @Test("a record is deflated with a window as large as it and the dictionary need, and reads back exactly")
    func deflateWindowFitsTheRecord() throws {
        func windowBits(_ record: PersistedObject) throws -> Int {
            let json = try JSONParser.parse(record.storedText)
            let text = try #require(json["z"]?.stringValue)
            let z = try #require(Base64.decode(text))
            return Int(z[0] >> 4) + 8  // zlib header: CINFO is log2(window) - 8
        }
        let small = PersistedObject(objectID: 2, owner: 3, metadata: Self.tensorTree(1))
        let needed = small.metadata.utf8.count + PersistedObject.dictionary.count
        let fits = (9...15).first { 1 << $0 >= needed }
        #expect(try windowBits(small) == fits)
        #expect((fits ?? 15) < 15)
        #expect(PersistedObject(objectID: 2, storedText: small.storedText) == small)
        // a DataFrame-sized tree: the full window
        let big = PersistedObject(
            objectID: 5, owner: 3, metadata: "[" + (0..<120).map { Self.tensorTree($0) }.joined(separator: ",") + "]")
        #expect(big.metadata.utf8.count > 1 << 15)
        #expect(try windowBits(big) == 15)
        #expect(PersistedObject(objectID: 5, storedText: big.storedText) == big)
        // every size around the window steps round-trips
        var rng = SplitMix64(seed: 11)
        for size in [256, 300, 511, 512, 513, 1024 - PersistedObject.dictionary.count, 4095, 4096, 20_000, 40_000] {
            let text = #"{"k":""# + String((0..<size).map { _ in Character(UnicodeScalar(UInt8.random(in: 0x23...0x5b, using: &rng))) }) + #""}"#
            let r = PersistedObject(objectID: 6, owner: 1, metadata: text)
            #expect(PersistedObject(objectID: 6, storedText: r.storedText) == r, "size \(size)")
        }
    }

    @Test func corruptDeflatedRecordsAreRejected() throws {
        let good = PersistedObject(objectID: 2, owner: 3, metadata: Self.tensorTree(1))
        let json = try JSONParser.parse(good.storedText)
        let z = try #require(json["z"]?.stringValue)
        let n = try #require(json["n"]?.uint64Value)
        func record(_ z: String, _ n: UInt64) -> String {
            JSON.object(["owner": .number(3), "z": .string(z), "n": .number(n)]).description
        }
        #expect(PersistedObject(objectID: 2, storedText: record(z, n)) == good)
        #expect(PersistedObject(objectID: 2, storedText: record(z, n - 1)) == nil)  // inflates further
        #expect(PersistedObject(objectID: 2, storedText: record(z, n + 1)) == nil)  // inflates short
        #expect(PersistedObject(objectID: 2, storedText: record("!!not base64", n)) == nil)
        var bytes = try #require(Base64.decode(z))
        bytes[bytes.count / 2] ^= 0xff
        #expect(PersistedObject(objectID: 2, storedText: record(Base64.encode(bytes), n)) == nil)
        #expect(PersistedObject(objectID: 2, storedText: record(Base64.encode(Array(bytes.prefix(10))), n)) == nil)
        // a bomb announcing more than any record may hold is refused before inflating
        let zeros = try #require(Deflate.compress([UInt8](repeating: 0x20, count: 1 << 20), dictionary: []))
        #expect(PersistedObject(objectID: 2, storedText: record(Base64.encode(zeros), 1 << 40)) == nil)
        // made with another dictionary (or none)
        let plain = try #require(Deflate.compress(Array(good.metadata.utf8), dictionary: []))
        #expect(PersistedObject(objectID: 2, storedText: record(Base64.encode(plain), n)) == good)
        let other = try #require(Deflate.compress(Array(good.metadata.utf8), dictionary: Array("{\"x\":1}".utf8)))
        #expect(PersistedObject(objectID: 2, storedText: record(Base64.encode(other), n)) == nil)
        // invalid UTF-8 inside
        let bad = try #require(Deflate.compress([0x7b, 0xff, 0xfe, 0x7d], dictionary: PersistedObject.dictionary))
        #expect(PersistedObject(objectID: 2, storedText: record(Base64.encode(bad), 4)) == nil)
    }
}

/// A small deterministic generator for property tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
