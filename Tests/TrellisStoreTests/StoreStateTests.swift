import Testing
import TrellisProtocol
@testable import TrellisStore
import TrellisSystem

/// The store's decisions driven directly: a `StoreState` value, no arena, no lock, no
/// sockets. Each operation returns what it leaves for after the lock (`StoreEffects`).
@Suite("Store state machine")
final class StoreStateTests {
    var s = StoreState(capacity: 1 << 20, instance: 0)
    let now: UInt64 = 1_700_000_000_000

    func tree(_ blob: ObjectID) -> JSON {
        [
            "typename": "vineyard::Tensor<int64>", "instance_id": 0, "nbytes": 8,
            "buffer_": ["id": .string(blob.description), "typename": "vineyard::Blob", "instance_id": 0, "length": 8],
        ]
    }

    func sealedBlob(_ size: Int = 8, by conn: ConnectionID = 1) throws -> ObjectID {
        let made = try s.createBlobs(sizes: [size], connection: conn, now: now)
        let id = try #require(made[0]).id
        _ = try s.seal(id, connection: conn)
        return id
    }

    @Test("create, persist, name and delete an object: the bookkeeping and the effects")
    func lifecycle() throws {
        let blob = try sealedBlob()
        #expect(s.allocator.allocatedBytes >= 8)
        let (created, effects) = try s.createData(tree(blob), now: now)
        #expect(effects.wake.isEmpty && effects.trim.isEmpty)
        #expect(s.parents[blob] == [created.id])
        let persisted = try s.persist(created.id)
        #expect(persisted.map(\.id) == [created.id])
        #expect(persisted[0].tree["transient"] == .bool(false), "the tree a cluster publishes")
        #expect(try s.isPersistent(created.id))
        _ = try s.putName("x", for: created.id)
        #expect(s.names["x"] == created.id)
        #expect(s.getData([created.id])[created.id.description]?["__name"] == "x")

        // A referenced blob stays; deleting the object takes its blob and its name with it.
        #expect(s.delete([blob], force: false, deep: true, memoryTrim: false, connection: 1).0.freedBlobs.isEmpty)
        let (d, deleted) = s.delete([created.id], force: false, deep: true, memoryTrim: true, connection: 1)
        #expect(d.deletedObjects == [created.id] && d.freedBlobs == [blob] && d.droppedNames == ["x"])
        #expect(d.unpublished == [created.id])
        #expect(deleted.trim.count == 1, "memory_trim: the freed block is quarantined for the caller to punch")
        #expect(s.objects.isEmpty && s.blobs.isEmpty && s.names.isEmpty)
    }

    @Test("persist without trees (no cluster to publish to): the ids only, the objects persistent all the same")
    func persistWithoutTrees() throws {
        let other = try s.createData(tree(try sealedBlob()), now: now).0.id
        let bare = try s.persist(other, trees: false)
        #expect(bare.map(\.id) == [other] && bare[0].tree == .null)
        #expect(try s.isPersistent(other) && s.getData([other])[other.description]?["transient"] == .bool(false))
    }

    @Test("split_buffer: an unsealed blob becomes one blob per piece, each sealed, used and freed alone")
    func splitBlob() throws {
        let made = try s.createBlobs(sizes: [3 * 4096], connection: 1, now: now)
        let parent = try #require(made[0])
        // only its creator may cut it, only into pieces that tile it exactly
        #expect(throws: VineyardError.self) { try self.s.splitBlob(parent.id, sizes: [4096, 4096, 4096], connection: 2, now: self.now) }
        #expect(throws: VineyardError.self) { try self.s.splitBlob(parent.id, sizes: [4096, 4096], connection: 1, now: self.now) }
        let pieces = try s.splitBlob(parent.id, sizes: [4096, 4096, 4096], connection: 1, now: now).pieces
        #expect(s.blobs[parent.id] == nil)
        #expect(pieces.map(\.record.offset) == [parent.record.offset, parent.record.offset + 4096, parent.record.offset + 8192])
        #expect(Set(pieces.map(\.id)).count == 3 && pieces.allSatisfy { $0.id.isBlob && !$0.record.sealed })
        _ = try s.seal(pieces[1].id, connection: 1)
        // the writer leaves: its unsealed pieces go, the sealed one stays
        _ = s.disconnect(1)
        #expect(s.blobs[pieces[0].id] == nil && s.blobs[pieces[2].id] == nil)
        #expect(s.blobs[pieces[1].id]?.sealed == true)
        #expect(s.allocator.allocatedBytes == 4096)
        #expect(throws: VineyardError.self) { try self.s.splitBlob(pieces[1].id, sizes: [4096], connection: 1, now: self.now) }
    }

    @Test("split_buffer at unaligned sizes: the pieces share their memory, which returns with the last")
    func splitBlobUnaligned() throws {
        let parent = try #require(try s.createBlobs(sizes: [3 * 1000], connection: 1, now: now)[0])
        let (pieces, _) = try s.splitBlob(parent.id, sizes: [1000, 1000, 1000], seal: true, connection: 1, now: now)
        #expect(pieces.map(\.record.offset) == [0, 1000, 2000].map { parent.record.offset + $0 })
        #expect(pieces.map(\.record.size) == [1000, 1000, 1000])
        // a piece is not cut again
        let loose = try #require(try s.createBlobs(sizes: [200], connection: 1, now: now)[0])
        let halves = try s.splitBlob(loose.id, sizes: [100, 100], connection: 1, now: now).pieces
        #expect(throws: VineyardError.self) { try self.s.splitBlob(halves[0].id, sizes: [50, 50], connection: 1, now: self.now) }
        _ = s.disconnect(1)  // the unsealed halves go (their block with the second); the sealed pieces stay
        #expect(s.allocator.allocatedBytes == Allocator.roundedSize(3000))
        // deleted one by one: the memory comes back with the last
        for (i, p) in pieces.enumerated() {
            s.release([p.id], connection: 1)
            _ = try s.dropBlob(p.id, connection: nil)
            #expect(s.allocator.allocatedBytes == (i < 2 ? Allocator.roundedSize(3000) : 0))
        }
    }

    @Test("split_buffer with seal: the pieces come out sealed and used by the writer, which keeps them when it leaves until they are released")
    func splitBlobSealed() throws {
        let parent = try #require(try s.createBlobs(sizes: [2 * 4096], connection: 1, now: now)[0])
        let (pieces, _) = try s.splitBlob(parent.id, sizes: [4096, 4096], seal: true, connection: 1, now: now)
        #expect(pieces.allSatisfy { $0.record.sealed && $0.record.creator == nil && $0.record.users == [1] })
        #expect(pieces.allSatisfy { s.blobs[$0.id]?.sealed == true })
        // sealed: an object can use them at once, and a second seal is a no-op
        _ = try s.seal(pieces[0].id, connection: 1)
        #expect(s.allExist(pieces.map(\.id)))
        // the writer leaves: sealed pieces are not reclaimed as unsealed ones are
        _ = s.disconnect(1)
        #expect(pieces.allSatisfy { s.blobs[$0.id]?.sealed == true })
        #expect(s.allocator.allocatedBytes == 2 * 4096)
    }

    @Test("evict picks an object's idle, unpinned blobs through its whole tree")
    func evictable() throws {
        let used = try sealedBlob(16, by: 1)  // sealed by connection 1: in use
        let idle = try sealedBlob(32, by: 2)
        _ = s.disconnect(2)
        let inner = try s.createData(tree(idle), now: now).0.id
        let outer = try s.createData(
            ["typename": "vineyard::Pair", "instance_id": 0, "first_": ["id": .string(inner.description)], "second_": tree(used)],
            now: now
        ).0.id
        #expect(Set(s.blobIDs(of: [outer])) == [used, idle])
        #expect(s.evictable(s.blobIDs(of: [outer])).map(\.id) == [idle], "the used blob stays")
        s.blobs[idle]?.pinned = true
        #expect(s.evictable([idle]).isEmpty, "a pinned blob stays")
    }

    @Test("a write wakes the waiters of what it wrote, and only those")
    func wakeUps() throws {
        let blob = try sealedBlob()
        let (created, _) = try s.createData(tree(blob), now: now)
        _ = try s.persist(created.id)
        let waiter = try Waiter()
        _ = s.waiters.add(waiter, for: [.name("later")])
        #expect(try s.putName("other", for: created.id).wake.isEmpty)
        let effects = try s.putName("later", for: created.id)
        #expect(effects.wake.count == 1 && effects.wake[0] === waiter)
    }

    @Test("a blob another connection uses is retired on delete and freed on its last release")
    func retired() throws {
        let blob = try sealedBlob(by: 1)
        _ = try s.useBlobs([blob], unsafe: false, connection: 2)
        let used = s.allocator.allocatedBytes
        _ = try s.dropBlob(blob, connection: 1)
        #expect(s.retiredBytes == 8 && s.allocator.allocatedBytes == used)
        s.release([blob], connection: 2)
        #expect(s.retiredBytes == 0 && s.allocator.allocatedBytes == 0)
    }

    @Test("all or nothing: a batch that does not fit allocates none; a departed writer's unsealed blobs go")
    func allocation() throws {
        #expect(throws: VineyardError.self) { try s.createBlobs(sizes: [512 << 10, 1 << 20], connection: 1, now: now) }
        #expect(s.blobs.isEmpty && s.allocator.allocatedBytes == 0)
        _ = try s.createBlobs(sizes: [64, 0, 64], connection: 3, now: now)
        #expect(s.blobs.count == 2)
        #expect(s.disconnect(3) == 2 && s.allocator.allocatedBytes == 0)
    }

    @Test("spilling: victims are idle sealed blobs, least recently used first; a blob used meanwhile is not committed")
    func spillDecisions() throws {
        let old = try sealedBlob(256 << 10)
        let recent = try sealedBlob(256 << 10)
        s.release([old, recent], connection: 1)
        _ = try s.useBlobs([recent], unsafe: false, connection: 2)
        s.release([recent], connection: 2)
        let victims = try #require(s.spillVictims(forRoom: 768 << 10, excluding: []))
        #expect(victims.first?.id == old)
        _ = try s.useBlobs([old], unsafe: false, connection: 4)  // fetched while being written
        #expect(s.commitSpilled(victims.filter { $0.id == old }) == [old])
        #expect(s.spilledBytes == 0 && s.blobs[old]?.spilled == false)
        #expect(s.spillVictims(forRoom: 8, excluding: []) == nil, "room already: nothing to spill")
    }

    @Test("clear drops everything and asks for every free page to be returned")
    func clear() throws {
        let blob = try sealedBlob()
        _ = try s.createData(tree(blob), now: now)
        let (d, effects) = s.clear(connection: nil)
        #expect(d.deletedObjects.count == 1 && d.freedBlobs == [blob])
        #expect(effects.trimAllFree)
        #expect(s.objects.isEmpty && s.blobs.isEmpty)
    }
}

/// Streams as a state machine: chunks queue in order, a reader's finished chunk is
/// deleted by its next pull, stop and drop decide what the reader sees.
@Suite("Stream state machine")
final class StreamStateTests {
    var s = StoreState(capacity: 1 << 20, instance: 0)
    let now: UInt64 = 1_700_000_000_000
    let stream = ObjectID(0x0000_1234_5678_9abc)

    func chunk(_ size: Int, writer: ConnectionID = 1) throws -> ObjectID {
        _ = try s.beginNextChunk(stream)
        let made = try s.createBlobs(sizes: [size], connection: writer, now: now)
        let id = try #require(made[0]).id
        let recorded = s.setWriting(stream, chunk: id)
        #expect(recorded)
        return id
    }

    @Test("chunks reach the reader in order; each pull frees the chunk read before; stop drains")
    func inOrder() throws {
        try s.createStream(stream)
        #expect(throws: VineyardError.self) { try self.s.createStream(self.stream) }
        try s.openStream(stream, mode: 2)
        try s.openStream(stream, mode: 1)
        do {
            try s.openStream(stream, mode: 1)
            Issue.record("a second open for reading must fail")
        } catch { #expect(error.code == .streamOpened) }

        let a = try chunk(100), b = try chunk(200)
        #expect(s.blobs[a]?.sealed == true, "the next chunk seals the previous one")
        #expect(s.blobs[b]?.sealed == false)
        let (first, _, _) = try s.pullStreamChunk(stream, connection: 2)
        #expect(first == StreamPull.chunk(a))
        let (none, _, _) = try s.pullStreamChunk(stream, connection: 2)
        #expect(none == .empty, "b is still being written")
        #expect(s.blobs[a] == nil, "the pull after a freed a")
        _ = try s.stopStream(stream, failed: false)
        #expect(s.blobs[b]?.sealed == true, "stop seals and queues the last chunk")
        let (second, _, _) = try s.pullStreamChunk(stream, connection: 2)
        #expect(second == .chunk(b))
        do {
            _ = try s.pullStreamChunk(stream, connection: 2)
            Issue.record("a drained stream must say so")
        } catch { #expect(error.code == .streamDrained) }
        #expect(s.blobs.isEmpty && s.allocator.allocatedBytes == 0)
        do {
            _ = try s.stopStream(stream, failed: true)
            Issue.record("a stopped stream cannot stop again")
        } catch { #expect(error.code == .invalidStreamState) }
    }

    @Test("drop frees what nobody read and fails the stream for a parked reader")
    func drop() throws {
        try s.createStream(stream)
        let waiter = try Waiter()
        _ = s.waiters.add(waiter, for: [.stream(stream)])
        _ = try chunk(64)
        _ = try chunk(64)
        let (_, effects) = try s.dropStream(stream, connection: 3)
        #expect(effects.wake.contains { $0 === waiter })
        #expect(s.blobs.isEmpty && s.allocator.allocatedBytes == 0)
        #expect(!s.streamExists(stream))
        do {
            _ = try s.pullStreamChunk(stream, connection: 2)
            Issue.record("a dropped stream is gone")
        } catch { #expect(error.code == .objectNotExists) }
    }

    @Test("a failed stream fails the reader once its queue is read")
    func failed() throws {
        try s.createStream(stream)
        let a = try chunk(8)
        _ = try s.stopStream(stream, failed: true)
        let pulled = try s.pullStreamChunk(stream, connection: 2).0
        #expect(pulled == .chunk(a))
        do {
            _ = try s.pullStreamChunk(stream, connection: 2)
            Issue.record("expected StreamFailed")
        } catch { #expect(error.code == .streamFailed) }
    }
}
