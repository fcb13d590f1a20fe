import Testing
import TrellisProtocol
@testable import TrellisStore
import TrellisSystem
import TrellisTestSupport

@Suite("Object store", .onBlockingPool)
struct StoreTests {
    let store: ObjectStore

    init() throws {
        let clock = ClockBox()
        store = try ObjectStore(capacity: 16 << 20, clock: { clock.tick() })
    }

    func tensor(_ blob: ObjectID, typename: String = "vineyard::Tensor<int64>") -> JSON {
        [
            "typename": .string(typename), "instance_id": 0, "transient": true, "global": false, "nbytes": 8,
            "buffer_": ["id": .string(blob.description), "typename": "vineyard::Blob", "instance_id": 0, "length": 8, "nbytes": 8, "transient": true],
        ]
    }

    func sealedBlob(_ size: Int = 8, conn: ConnectionID = 1) throws -> ObjectID {
        let p = try store.createBlob(size: size, connection: conn)
        try store.seal(p.objectID, connection: conn)
        return p.objectID
    }

    @Test("blob lifecycle: created unsealed, sealed, fetched; unknown ids skipped")
    func blobs() throws {
        let p = try store.createBlob(size: 100, connection: 1)
        #expect(p.objectID.isBlob && !p.isSealed && p.dataOffset % 64 == 0)
        #expect(p.mapSize == store.arena.capacity + 8)
        #expect(throws: VineyardError.self) { try store.getBlobs([p.objectID], unsafe: false, connection: 2) }
        #expect(try store.getBlobs([p.objectID], unsafe: true, connection: 2).count == 1)
        try store.seal(p.objectID, connection: 1)
        try store.seal(p.objectID, connection: 1)  // twice is fine
        let got = try store.getBlobs([ObjectID(1 << 63 | 12345), p.objectID, .emptyBlob], unsafe: false, connection: 2)
        #expect(got.map(\.objectID) == [p.objectID, .emptyBlob])
        #expect(got[1] == .empty)
        do {
            try store.seal(ObjectID(1 << 63 | 0x123), connection: 1)
            Issue.record("sealed a missing blob")
        } catch {
            #expect(error.code == .objectNotExists && error.message == "seal: id = o8000000000000123")
        }
    }

    @Test("out of memory is NotEnoughMemory and allocates nothing")
    func outOfMemory() throws {
        let before = store.status().memoryUsage
        do {
            _ = try store.createBlobs(sizes: [1 << 20, 1 << 40], connection: 1)
            Issue.record("allocated beyond capacity")
        } catch {
            #expect(error.code == .notEnoughMemory)
            #expect(error.message.hasPrefix("Failed to allocate memory of size 1099511627776"))
        }
        #expect(store.status().memoryUsage == before)
    }

    @Test("a departed connection's unsealed blobs are reclaimed, sealed ones stay")
    func disconnectReclaims() throws {
        let kept = try sealedBlob(4096, conn: 7)
        for _ in 0..<10 { _ = try store.createBlob(size: 4096, connection: 7) }
        #expect(store.status().blobs == 11)
        #expect(store.disconnect(7) == 10)
        #expect(store.status().blobs == 1)
        #expect(store.exists(kept))
        #expect(store.status().memoryUsage == 4096)
    }

    @Test("create_data validation codes")
    func validation() throws {
        func code(_ content: JSON) -> Int? {
            do { _ = try store.createData(content); return nil } catch { return error.code.rawValue }
        }
        #expect(code(["instance_id": 0]) == 21)
        #expect(code(["typename": "x"]) == 7)
        #expect(code(["typename": "vineyard::Blob", "instance_id": 0]) == 7)
        #expect(code(["typename": "x", "instance_id": 0, "m": ["id": "o8000000000000001"]]) == 21)  // blob placeholder
        #expect(code(["typename": "x", "instance_id": 0, "m": ["id": "o0000000000000123"]]) == 12)  // missing member
        #expect(code(["typename": "x", "instance_id": 0, "b": ["id": "o8000000000000001", "typename": "vineyard::Blob", "instance_id": 5]]) == 51)
    }

    @Test("create_data refuses blob members that are not blobs here (never allocated, deleted, retired)")
    func blobMembersMustBeLive() throws {
        func code(_ content: JSON) -> Int? {
            do { _ = try store.createData(content); return nil } catch { return error.code.rawValue }
        }
        let live = try sealedBlob()
        // deleted while its sealer (connection 1) still uses it: retired, memory kept
        let retired = try sealedBlob()
        store.delete([try store.createData(tensor(retired)).id], force: false, deep: true, memoryTrim: false)
        #expect(!store.exists(retired) && store.status().retiredBytes == 8)
        // deleted by its only user: freed
        let freed = try sealedBlob()
        store.delete([try store.createData(tensor(freed)).id], force: false, deep: true, memoryTrim: false, connection: 1)
        #expect(!store.exists(freed))
        let objects = store.status().objects
        #expect(code(tensor(retired)) == 12)
        #expect(code(tensor(freed)) == 12)
        #expect(code(tensor(ObjectID(1 << 63 | 0x4242))) == 12)
        // nested: nothing of the tree is inserted when one column refers to a dead blob
        #expect(code(["typename": "vineyard::DataFrame", "instance_id": 0, "a": tensor(live), "b": tensor(retired)]) == 12)
        #expect(store.status().objects == objects)
        // the empty blob, a live blob and an unsealed one of this instance are fine
        #expect(code(tensor(.emptyBlob)) == nil)
        #expect(code(tensor(live)) == nil)
        #expect(code(tensor(try store.createBlob(size: 8, connection: 2).objectID)) == nil)
    }

    @Test("get_data expands members; blob members read back with zero sizes")
    func readBack() throws {
        let blob = try sealedBlob()
        let t = try store.createData(tensor(blob))
        #expect(t.signature != t.id.rawValue)
        let df = try store.createData([
            "typename": "vineyard::DataFrame", "instance_id": 0, "col": ["id": .string(t.id.description)],
        ])
        let content = store.getData([df.id, ObjectID(0x123)])
        let tree = content[df.id.description]!
        #expect(tree["id"]?.stringValue == df.id.description)
        #expect(tree["col"]?["buffer_"] == ObjectStore.blobStub(blob, instance: 0))
        #expect(tree["col"]?["signature"]?.uint64Value == t.signature)
        #expect(tree["__timestamp"] != nil && tree["transient"] == true)
        #expect(content[ObjectID(0x123).description] == nil)
        #expect(store.getData([ObjectID(0x123)]) == .null)
        // A blob id directly: a synthesized tree with the real length.
        #expect(store.getData([blob])[blob.description]?["length"] == 8)
    }

    @Test("delete: referenced objects stay without force; blobs go with their parent even when not deep")
    func deleteSemantics() throws {
        let b1 = try sealedBlob()
        let t1 = try store.createData(tensor(b1)).id
        store.delete([t1], force: false, deep: false, memoryTrim: false, connection: 1)  // the blob's sealer
        #expect(!store.exists(t1) && !store.exists(b1))

        let e1 = try store.createData(["typename": "vineyard::Scalar<int>", "instance_id": 0, "value_": 1]).id
        let e2 = try store.createData(["typename": "vineyard::Scalar<int>", "instance_id": 0, "value_": 2]).id
        let seq = try store.createData([
            "typename": "vineyard::Sequence", "instance_id": 0,
            "__elements_-0": ["id": .string(e1.description)], "__elements_-1": ["id": .string(e2.description)],
        ]).id
        store.delete([e1], force: false, deep: true, memoryTrim: false)
        #expect(store.exists(e1))  // referenced by seq
        store.delete([e1], force: true, deep: true, memoryTrim: false)
        // force takes the referrer (shallowly, as vineyardd: its other members stay)
        #expect(!store.exists(e1) && !store.exists(seq) && store.exists(e2))
        store.delete([e2], force: false, deep: true, memoryTrim: false)

        let e3 = try store.createData(["typename": "vineyard::Scalar<int>", "instance_id": 0, "value_": 3]).id
        let seq2 = try store.createData(["typename": "vineyard::Sequence", "instance_id": 0, "a": ["id": .string(e3.description)]]).id
        store.delete([seq2], force: false, deep: false, memoryTrim: false)
        #expect(!store.exists(seq2) && store.exists(e3))  // shallow delete keeps non-blob members
        #expect(store.status().memoryUsage == 0)
    }

    @Test("names: only persistent objects; overwrite, drop, and deletion removes the name")
    func names() throws {
        let b = try sealedBlob()
        let t = try store.createData(tensor(b)).id
        #expect(throws: VineyardError.self) { try store.putName("x", for: t) }
        #expect(throws: VineyardError.self) { try store.putName("x", for: b) }
        #expect(throws: VineyardError.self) { try store.putName("x", for: ObjectID(0x123)) }
        let persisted = try store.persist(t)
        #expect(persisted.map(\.id) == [t])
        #expect(try store.isPersistent(t))
        try store.putName("x", for: t)
        #expect(store.getName("x") == t)
        #expect(store.getData([t])[t.description]?["__name"] == "x")
        #expect(store.listNames(pattern: "x*", regex: false, limit: 10).map(\.0) == ["x"])
        #expect(store.listNames(pattern: "y.*", regex: true, limit: 10).isEmpty)
        store.delete([t], force: false, deep: true, memoryTrim: false)
        #expect(store.getName("x") == nil)
    }

    @Test("list_data by glob and regex, with blobs and a limit")
    func listing() throws {
        let b = try sealedBlob()
        _ = try store.createData(tensor(b))
        _ = try store.createData(["typename": "vineyard::DataFrame", "instance_id": 0])
        #expect(store.listData(pattern: "vineyard::Tensor*", regex: false, limit: 10).objectValue?.count == 1)
        #expect(store.listData(pattern: "vineyard::(Tensor|DataFrame).*", regex: true, limit: 10).objectValue?.count == 2)
        #expect(store.listData(pattern: "*", regex: false, limit: 10).objectValue?.count == 3)  // + the blob
        #expect(store.listData(pattern: "*", regex: false, limit: 1).objectValue?.count == 1)
        #expect(store.listData(pattern: "nothing", regex: false, limit: 10) == .null)
        #expect(store.listData(pattern: "([", regex: true, limit: 10) == .null)
    }

    @Test("waiting for a name wakes when it is put")
    func waitForName() async throws {
        let b = try sealedBlob()
        let t = try store.createData(tensor(b)).id
        _ = try store.persist(t)
        let s = store
        // Parked on the blocking pool, as every blocking wait should be: never on a thread
        // of the cooperative pool, which the other suites need.
        async let waited: ObjectID? = Blocking.run { s.wait(for: [.name("later")], cancelled: { false }) { s.getName("later") } }
        try await Task.sleep(for: .milliseconds(50))
        try store.putName("later", for: t)
        #expect(await waited == t)
        #expect(store.wait(for: [.name("never")], cancelled: { true }) { s.getName("never") } == nil)
    }

    @Test("a blob larger than the arena, or of a hostile size, is NotEnoughMemory, not a trap")
    func oversizedBlob() throws {
        for size in [store.arena.capacity + 1, 1 << 62, Int.max, -1] {
            #expect(throws: VineyardError.self) { try store.createBlob(size: size, connection: 3) }
        }
        #expect(store.status().memoryUsage == 0)
    }

    @Test("a write wakes only the waiters of what it wrote")
    func keyedWaiters() async throws {
        let b = try sealedBlob()
        let t = try store.createData(tensor(b)).id
        _ = try store.persist(t)
        let s = store
        // Parked with a poll interval far beyond the test, so only a wake-up ends the wait.
        async let waited = Blocking.run { s.wait(for: [.name("mine")], pollMilliseconds: 600_000, cancelled: { false }) { s.getName("mine") } }
        while store.parkedWaiters < 1 { try await Task.sleep(for: .milliseconds(5)) }
        let before = store.wakeUpCount
        try store.putName("other", for: t)
        _ = try store.createData(tensor(b))
        #expect(store.wakeUpCount == before)  // writes elsewhere wake nobody
        try store.putName("mine", for: t)
        #expect(store.wakeUpCount == before + 1)
        #expect(await waited == t)
        #expect(store.parkedWaiters == 0)
    }
}

/// A monotonically ticking fake clock.
final class ClockBox: @unchecked Sendable {
    // Sendable: only touched under the store's lock, one tick at a time.
    private var now: UInt64 = 1_795_595_242_226
    func tick() -> UInt64 {
        now += 1
        return now
    }
}
