import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TrellisProtocol
import TrellisSystem
@testable import TrellisStore
import TrellisTestSupport

/// `--spill_path`: a full arena moves idle blobs to files and reads them back on demand.
@Suite("Spill", .onBlockingPool)
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
        #expect(files() == Set(spilled.map { spill.fileName($0) }))
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
        #expect(!files().contains(spill.fileName(spilled)))
        #expect(!files().isEmpty)
        _ = store.clear()
        #expect(files().isEmpty)
        #expect(store.status().spilledBytes == 0 && store.status().memoryUsage == 0)
    }

    @Test("a request larger than the arena fails at once and spills nothing; a huge one does not trap")
    func oversizedRequest() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var ids: [ObjectID] = []
        for i in 0..<3 { ids.append(try idleBlob(UInt8(i + 1), conn: ConnectionID(30 + i))) }
        for size in [store.arena.capacity + 1, 1 << 62, Int.max] {
            #expect(throws: VineyardError.self) { try store.createBlob(size: size, connection: 40) }
        }
        #expect(ids.allSatisfy { !store.isSpilled($0) } && files().isEmpty)
    }

    @Test("spill files are opened without following a symlink planted under their name")
    func plantedSymlink() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let victim = directory + "-victim"
        defer { unlink(victim) }
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        var ids: [ObjectID] = []
        for i in 0..<4 { ids.append(try idleBlob(UInt8(i + 1), conn: ConnectionID(60 + i))) }
        // The worst case: the attacker learned the names (they are unpredictable in practice).
        for id in ids { #expect(symlink(victim, directory + "/" + spill.fileName(id)) == 0) }
        for id in ids { #expect(symlink(victim, directory + "/" + id.description) == 0) }  // the old naming
        let p = try store.createBlob(size: 1 << 20, connection: 70)
        #expect(p.dataSize == 1 << 20)
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious")
        let spilled = try #require(ids.first { store.isSpilled($0) })
        var st = stat()
        #expect(lstat(directory + "/" + spill.fileName(spilled), &st) == 0 && st.st_mode & S_IFMT == S_IFREG)
        #expect(st.st_mode & 0o777 == 0o600)
        // and it reads back intact
        let back = try #require(try store.getBlobs([spilled], unsafe: false, connection: 71).first)
        #expect(bytes(back) == [UInt8](repeating: UInt8(ids.firstIndex(of: spilled)! + 1), count: 1 << 20))
    }

    @Test("names are unguessable: another daemon on the same directory uses other names, none is the id")
    func unguessableNames() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let other = try SpillDirectory(path: directory)
        let id = ObjectID(rawValue: 0x0000_1234_5678_9abc)
        #expect(spill.fileName(id) != other.fileName(id))
        #expect(!spill.fileName(id).hasSuffix(id.description))
        #expect(spill.fileName(id).count >= SpillDirectory.filePrefix.count + 32)
    }

    @Test("spill files of an earlier daemon are removed at start; removeAll empties the directory at stop")
    func cleanup() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for i in 0..<5 { _ = try idleBlob(UInt8(i), conn: ConnectionID(80 + i)) }
        #expect(!files().isEmpty)
        try Data("not ours".utf8).write(to: URL(fileURLWithPath: directory + "/notes.txt"))
        _ = try SpillDirectory(path: directory)  // a new daemon on the same path
        #expect(files() == ["notes.txt"])
        for i in 0..<5 { _ = try idleBlob(UInt8(i), conn: ConnectionID(90 + i)) }
        #expect(files().count > 1)
        #expect(spill.removeAll() > 0)
        #expect(files() == ["notes.txt"])
    }

    @Test("a new directory is 0700; an existing one that group or others can write, or a symlink, is refused")
    func directoryChecks() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var st = stat()
        #expect(stat(directory, &st) == 0 && st.st_mode & 0o777 == 0o700)
        let open = directory + "-open"
        defer { rmdir(open) }
        #expect(mkdir(open, 0o700) == 0 && chmod(open, 0o777) == 0)
        #expect(throws: SystemError.self) { _ = try SpillDirectory(path: open) }
        #expect(chmod(open, 0o770) == 0)
        #expect(throws: SystemError.self) { _ = try SpillDirectory(path: open) }
        #expect(chmod(open, 0o755) == 0)
        _ = try SpillDirectory(path: open)
        let link = directory + "-link"
        defer { unlink(link) }
        #expect(symlink(directory, link) == 0)
        #expect(throws: SystemError.self) { _ = try SpillDirectory(path: link) }
        #expect(SpillDirectory.unsafeOwnership(owner: 65534, mode: 0o700, me: 0) != nil)
        #expect(SpillDirectory.unsafeOwnership(owner: 0, mode: 0o700, me: 0) == nil)
    }

    @Test("a directory owned by another user is refused", .enabled(if: geteuid() == 0, "needs root to chown"))
    func foreignOwner() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let foreign = directory + "-foreign"
        defer { rmdir(foreign) }
        #expect(mkdir(foreign, 0o700) == 0 && chown(foreign, 65534, 65534) == 0)
        #expect(throws: SystemError.self) { _ = try SpillDirectory(path: foreign) }
    }
}
