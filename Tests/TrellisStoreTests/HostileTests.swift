import Testing
import TrellisProtocol
@testable import TrellisStore
import TrellisTestSupport

/// What a hostile client must not be able to do to the store (issue 13).
@Suite("Object store: hostile clients", .onBlockingPool)
struct HostileStoreTests {
    let store: ObjectStore

    init() throws {
        let clock = ClockBox()
        store = try ObjectStore(capacity: 16 << 20, clock: { clock.tick() })
    }

    func node(_ level: Int, next: ObjectID?) -> JSON {
        var o: [String: JSON] = ["typename": "hostile::Chain", "instance_id": 0, "level": .number(UInt64(level))]
        if let next { o["next"] = ["id": .string(next.description)] }
        return .object(o)
    }

    @Test("a chain of objects cannot grow past the metadata depth limit; get, persist and deep delete of the deepest work")
    func chainDepthIsBounded() throws {
        var ids: [ObjectID] = []
        var refusal: VineyardError?
        for level in 0..<1000 {
            do {
                ids.append(try store.createData(node(level, next: ids.last)).id)
            } catch {
                refusal = error
                break
            }
        }
        #expect(ids.count == ObjectStore.maxMetadataDepth)
        #expect(refusal?.code == .metaTreeInvalid)
        #expect(refusal?.message.contains("deep") == true)
        let top = try #require(ids.last)
        var tree = try #require(store.getData([top])[top.description])
        var depth = 1
        while let next = tree["next"] {
            tree = next
            depth += 1
        }
        #expect(depth == ObjectStore.maxMetadataDepth)
        #expect(try store.persist(top).count == ids.count)
        let gone = store.delete([top], force: false, deep: true, memoryTrim: false)
        #expect(gone.deletedObjects.count == ids.count)
        #expect(store.status().objects == 0)
    }

    @Test("range blobs: the values written, sealed and used by the creator; refused sizes leave the arena as it was")
    func rangeBlobs() throws {
        let before = store.status().memoryUsage
        let p = try store.createRangeBlob(start: -7, step: 3, count: 1000, connection: 1)
        #expect(p.dataSize == 8000 && p.isSealed)
        let values = store.arena.address(p.dataOffset).bindMemory(to: Int64.self, capacity: 1000)
        #expect(values[0] == -7 && values[1] == -4 && values[999] == -7 + 3 * 999)
        #expect(try store.getBlobs([p.objectID], unsafe: false, connection: 2).first?.dataOffset == p.dataOffset)
        // wrapping, not trapping, on overflow
        let w = try store.createRangeBlob(start: Int64.max - 1, step: 1 << 62, count: 3, connection: 1)
        let wv = store.arena.address(w.dataOffset).bindMemory(to: Int64.self, capacity: 3)
        #expect(wv[1] == (Int64.max - 1) &+ (1 << 62))
        #expect(try store.createRangeBlob(start: 0, step: 1, count: 0, connection: 1).objectID == .emptyBlob)
        let mid = store.status().memoryUsage
        for count in [-1, Int.max / 8 + 1, 1 << 40] {
            #expect(throws: VineyardError.self) { try self.store.createRangeBlob(start: 0, step: 1, count: count, connection: 1) }
        }
        #expect(store.status().memoryUsage == mid)
        try store.dropBlob(p.objectID, connection: 1)
        try store.dropBlob(w.objectID, connection: 1)
        store.release([p.objectID], connection: 2)
        #expect(store.status().memoryUsage == before)
    }

    @Test("put_inline: the bytes written and sealed, the tree's placeholders filled, the object holding its blobs")
    func putInline() throws {
        let before = store.status()
        let tree: JSON = [
            "typename": "vineyard::DataFrame", "instance_id": 0,
            "col": ["typename": "vineyard::Tensor<int64>", "instance_id": 0, "buffer_": [Request.inlineBlobKey: 1]],
            "empty": [Request.inlineBlobKey: 2], "raw": [Request.inlineBlobKey: 0],
        ]
        let bytes: [[UInt8]] = [[1, 2, 3], (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7) }, []]
        let made = try store.putInline(tree, blobs: bytes, connection: 1)
        let got = store.getData([made.id])[made.id.description]
        guard let col = got?["col"]?["buffer_"], let raw = got?["raw"],
            let colID = col["id"]?.stringValue.flatMap(ObjectID.init(string:)), let rawID = raw["id"]?.stringValue.flatMap(ObjectID.init(string:))
        else { Issue.record("no blob members in \(String(describing: got))"); return }
        // (blob members read back as upstream writes them: a link, length and nbytes 0)
        #expect(col["typename"] == "vineyard::Blob" && raw["typename"] == "vineyard::Blob" && colID.isBlob && rawID.isBlob)
        #expect(got?["empty"]?["id"]?.stringValue == ObjectID.emptyBlob.description)
        #expect(store.getData([made.id])[made.id.description]?["col"]?["typename"] == "vineyard::Tensor<int64>")
        // sealed, the bytes as sent, readable by another connection
        let ps = try store.getBlobs([rawID, colID], unsafe: false, connection: 2)
        for (p, b) in zip(ps, bytes) {
            #expect(p.isSealed && p.dataSize == b.count)
            #expect(Array(UnsafeRawBufferPointer(start: store.arena.address(p.dataOffset), count: p.dataSize)) == b)
        }
        store.release([rawID, colID], connection: 2)
        // the writer does not hold them: deleting the object frees their memory
        #expect(!store.isInUse(rawID) && !store.isInUse(colID))
        _ = store.delete([made.id], force: false, deep: true, memoryTrim: false, connection: nil)
        #expect(store.status().memoryUsage == before.memoryUsage && store.status().blobs == before.blobs)
    }

    @Test("put_inline refusals leave nothing behind: bad placeholders, an unreferenced blob, a bad tree, no room")
    func putInlineRefusals() throws {
        let before = store.status()
        let leaf: JSON = ["typename": "t", "instance_id": 0, "b": [Request.inlineBlobKey: 0]]
        let bad: [(JSON, [[UInt8]])] = [
            (leaf, []),  // index out of range
            (["typename": "t", "instance_id": 0, "b": [Request.inlineBlobKey: -1]], [[1]]),
            (["typename": "t", "instance_id": 0, "b": [Request.inlineBlobKey: "0"]], [[1]]),
            (["typename": "t", "instance_id": 0, "b": [Request.inlineBlobKey: 0, "id": "o8000000000000001"]], [[1]]),
            (leaf, [[1], [2]]),  // blob 1 unreferenced
            (["instance_id": 0, "b": [Request.inlineBlobKey: 0]], [[1]]),  // no typename: refused after allocating
            (["typename": "t", "instance_id": 0, "b": [Request.inlineBlobKey: 0],
              "m": ["id": "o0000000000000042"]], [[1]]),  // a missing member: refused after sealing
            (leaf, [[UInt8](repeating: 0, count: 17 << 20)]),  // larger than the arena
            (.array([]), []),
        ]
        for (tree, blobs) in bad {
            #expect(throws: VineyardError.self) { try self.store.putInline(tree, blobs: blobs, connection: 1) }
            let now = store.status()
            #expect(now.memoryUsage == before.memoryUsage && now.blobs == before.blobs && now.objects == before.objects)
        }
        // deeper than the limit, in placeholders' nesting too
        var deep: JSON = ["typename": "leaf", "instance_id": 0, "b": [Request.inlineBlobKey: 0]]
        for _ in 0..<ObjectStore.maxMetadataDepth { deep = ["typename": "nest", "instance_id": 0, "in": deep] }
        #expect(throws: VineyardError.self) { try self.store.putInline(deep, blobs: [[1]], connection: 1) }
        #expect(store.status().blobs == before.blobs && store.status().objects == before.objects)
        #expect(store.parkedWaiters == 0)
    }

    @Test("a tree nested deeper than the limit in one request is refused and leaves nothing behind")
    func nestedDepthIsBounded() throws {
        func nested(_ levels: Int) -> JSON {
            var t: JSON = ["typename": "hostile::Leaf", "instance_id": 0]
            for _ in 1..<levels { t = ["typename": "hostile::Nest", "instance_id": 0, "inner": t] }
            return t
        }
        #expect(throws: VineyardError.self) { try store.createData(nested(ObjectStore.maxMetadataDepth + 1)) }
        #expect(throws: VineyardError.self) { try store.createData(nested(5000)) }
        #expect(store.status().objects == 0)
        let ok = try store.createData(nested(ObjectStore.maxMetadataDepth))
        #expect(store.status().objects == ObjectStore.maxMetadataDepth)
        // Built on the deepest accepted tree, one more level is refused.
        #expect(throws: VineyardError.self) { try store.createData(node(0, next: ok.id)) }
    }

    @Test("memory another connection still uses is not reused after a delete, and is freed when it lets go")
    func deletedMemoryStaysWhileUsed() throws {
        let writer: ConnectionID = 1, reader: ConnectionID = 2
        let blob = try store.createBlob(size: 4096, connection: writer)
        try store.seal(blob.objectID, connection: writer)
        let seen = try store.getBlobs([blob.objectID], unsafe: false, connection: reader)
        #expect(seen.first?.dataOffset == blob.dataOffset)
        store.delete([blob.objectID], force: false, deep: false, memoryTrim: true, connection: writer)
        #expect(!store.exists(blob.objectID))
        // A new blob of the same size does not get the reader's memory.
        let next = try store.createBlob(size: 4096, connection: writer)
        #expect(next.dataOffset != blob.dataOffset)
        #expect(store.status().retiredBytes == 4096)
        #expect(store.status().memoryUsage == 8192)
        // The reader lets go (release, or by leaving): the memory is free again.
        store.release([blob.objectID], connection: reader)
        #expect(store.status().retiredBytes == 0)
        #expect(store.status().memoryUsage == 4096)
        try store.dropBlob(next.objectID, connection: writer)
        #expect(store.status().memoryUsage == 0)
    }

    @Test("the deleting connection's own use does not keep memory; a departed reader frees it")
    func deleterAndDisconnect() throws {
        let a = try store.createBlob(size: 64, connection: 1)
        try store.seal(a.objectID, connection: 1)
        store.delete([a.objectID], force: false, deep: false, memoryTrim: false, connection: 1)
        #expect(store.status().memoryUsage == 0)

        let b = try store.createBlob(size: 64, connection: 1)
        try store.seal(b.objectID, connection: 1)
        _ = try store.getBlobs([b.objectID], unsafe: false, connection: 3)
        _ = store.clear(connection: 1)
        #expect(store.status().memoryUsage == 64)
        store.disconnect(3)
        #expect(store.status().memoryUsage == 0)
        #expect(store.status().retiredBytes == 0)
    }
}
