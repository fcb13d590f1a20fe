import Foundation
import Testing
import TrellisProtocol
@testable import TrellisStore

/// `--spill_path`: a full arena moves idle blobs to files and reads them back on demand.
@Suite("Spill")
struct SpillTests {
    let directory: String
    let store: ObjectStore
    let spill: SpillDirectory

    init() throws {
        directory = NSTemporaryDirectory() + "trspill-" + UUID().uuidString
        spill = try SpillDirectory(path: directory)
        store = try ObjectStore(capacity: 4 << 20, spill: spill)
    }

    func files() -> Set<String> { Set((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []) }

    /// A sealed 1 MiB blob filled with `byte`, whose writer (connection `conn`) then leaves.
    func idleBlob(_ byte: UInt8, conn: ConnectionID) throws -> ObjectID {
        let p = try store.createBlob(size: 1 << 20, connection: conn)
        store.arena.address(p.dataOffset).initializeMemory(as: UInt8.self, repeating: byte, count: 1 << 20)
        try store.seal(p.objectID, connection: conn)
        store.disconnect(conn)
        return p.objectID
    }

    func bytes(_ p: Payload) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: store.arena.address(p.dataOffset), count: p.dataSize))
    }

    @Test("idle blobs spill least recently used first and come back intact on get")
    func spillAndReload() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Five 1 MiB blobs in a 4 MiB arena: the oldest idle ones go to files.
        var ids: [ObjectID] = []
        for i in 0..<3 { ids.append(try idleBlob(UInt8(i + 1), conn: ConnectionID(10 + i))) }
        // Touch blob 0 so blob 1 becomes the least recently used.
        _ = try store.getBlobs([ids[0]], unsafe: false, connection: 50)
        store.disconnect(50)
        for i in 3..<5 { ids.append(try idleBlob(UInt8(i + 1), conn: ConnectionID(10 + i))) }
        #expect(store.isSpilled(ids[1]))
        #expect(!store.isSpilled(ids[4]))
        let spilled = ids.filter { store.isSpilled($0) }
        #expect(files() == Set(spilled.map(\.description)))
        #expect(store.status().spilledBytes == spilled.count << 20)
        #expect(store.status().memoryUsage <= store.status().memoryLimit)

        // Every blob reads back with its bytes, one at a time (reloading spills others).
        for (i, id) in ids.enumerated() {
            let p = try #require(try store.getBlobs([id], unsafe: false, connection: 60).first)
            #expect(!store.isSpilled(id))
            #expect(bytes(p) == [UInt8](repeating: UInt8(i + 1), count: 1 << 20))
            store.disconnect(60)
        }
    }

    @Test("blobs in use are never spilled; with nothing idle a full arena is NotEnoughMemory")
    func usedBlobsStay() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var held: [ObjectID] = []
        for _ in 0..<4 {
            let p = try store.createBlob(size: 1 << 20, connection: 7)
            try store.seal(p.objectID, connection: 7)  // connection 7 stays: it uses them
            held.append(p.objectID)
        }
        #expect(throws: VineyardError.self) { try store.createBlob(size: 1 << 20, connection: 8) }
        #expect(held.allSatisfy { !store.isSpilled($0) } && files().isEmpty)
        store.disconnect(7)
        let p = try store.createBlob(size: 1 << 20, connection: 8)
        #expect(p.dataSize == 1 << 20)
        #expect(held.contains { store.isSpilled($0) })
    }

    @Test("deleting a spilled blob removes its file; clear removes all")
    func deleteRemovesFiles() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var ids: [ObjectID] = []
        for i in 0..<6 { ids.append(try idleBlob(UInt8(i), conn: ConnectionID(20 + i))) }
        let spilled = try #require(ids.first { store.isSpilled($0) })
        store.delete([spilled], force: false, deep: true, memoryTrim: false)
        #expect(!files().contains(spilled.description))
        #expect(!files().isEmpty)
        _ = store.clear()
        #expect(files().isEmpty)
        #expect(store.status().spilledBytes == 0 && store.status().memoryUsage == 0)
    }
}
