import Testing
import TrellisProtocol
@testable import TrellisStore
import TrellisSystem
import TrellisTestSupport

/// The bookkeeping that keeps costs proportional to the work asked for, not to the store's
/// size: the id order `list_data` walks, and the per-connection index a disconnect uses.
/// Correctness only (each checked against a plain reference); the costs are measured by
/// bench/cost_curves.py.
@Suite("Bookkeeping that scales")
struct ScaleBookkeepingTests {
    @Test("IDOrder: out-of-order inserts, removals, returns and compaction; pages equal a sorted reference")
    func idOrder() {
        var order = IDOrder()
        var live = Set<ObjectID>()
        var rng = SplitMix(seed: 42)
        for step in 0..<20_000 {
            let r = rng.next() % 10
            if r < 6 || live.isEmpty {
                // mostly growing ids (as made here), sometimes an older one (an import, a return)
                let id = ObjectID(r < 4 ? UInt64(step) * 8 + 100_000 : rng.next() % 160_000)
                if live.insert(id).inserted { order.insert(id) }
            } else {
                let id = live.randomElement(using: &rng)!
                live.remove(id)
                order.remove(id) { live.contains($0) }
            }
        }
        #expect(order.removed < 1025 || order.removed <= order.ids.count / 2, "compaction keeps the removed bounded")
        #expect(order.ids == order.ids.sorted() && Set(order.ids).count == order.ids.count, "sorted, no duplicates")
        let sorted = live.sorted()
        var walked: [ObjectID] = []
        var after: ObjectID?
        while true {
            let (page, more) = order.page(after: after, count: 97) { live.contains($0) }
            walked += page
            guard more, let last = page.last else { break }
            after = last
        }
        #expect(walked == sorted)
        #expect(order.page(after: nil, count: 5) { live.contains($0) }.ids == Array(sorted.prefix(5)))
    }

    @Test("list_data lists the first matches in id order across pages, after deletions; blobs after objects")
    func listing() throws {
        let clock = ClockBox()
        let store = try ObjectStore(capacity: 64 << 20, clock: { clock.tick() })
        var ids: [ObjectID] = []
        for i in 0..<3000 {
            // every 250th object is a DataFrame; the rest are tensors
            let typename = i % 250 == 7 ? "vineyard::DataFrame" : "vineyard::Tensor<int64>"
            ids.append(try store.createData(["typename": .string(typename), "instance_id": 0, "nbytes": 0]).id)
        }
        // delete two thirds (compacts the order), keeping every object whose index is 0 mod 3
        let gone = ids.enumerated().filter { $0.offset % 3 != 0 }.map(\.element)
        store.delete(gone, force: false, deep: true, memoryTrim: false)
        let kept = ids.enumerated().filter { $0.offset % 3 == 0 }
        func listed(_ pattern: String, _ limit: Int) -> [ObjectID] {
            (store.listData(pattern: pattern, regex: false, limit: limit).objectValue ?? [:]).keys
                .compactMap { ObjectID(string: $0) }.sorted()
        }
        #expect(listed("vineyard::Tensor*", 5) == Array(kept.filter { $0.offset % 250 != 7 }.map(\.element).prefix(5)))
        // the matches lie hundreds of ids apart: the walk crosses many pages to find them
        let frames = kept.filter { $0.offset % 250 == 7 }.map(\.element)
        #expect(!frames.isEmpty)
        #expect(listed("vineyard::DataFrame", 100) == frames)
        #expect(listed("vineyard::DataFrame", 1) == [frames[0]])
        #expect(listed("*", 1_000_000).count == kept.count)

        // sealed blobs come after the objects, smallest ids first; unsealed ones are not listed
        let blobs = try (0..<10).map { _ in try store.createBlob(size: 64, connection: 1).objectID }
        for b in blobs.dropFirst() { try store.seal(b, connection: 1) }
        let all = listed("*", kept.count + 3)
        #expect(all.filter(\.isBlob) == Array(blobs[1...3]))
        #expect(all.filter { !$0.isBlob }.count == kept.count)
    }

    @Test("disconnect looks at what the connection holds: unsealed blobs reclaimed, uses dropped, retired ones freed")
    func disconnect() throws {
        var s = StoreState(capacity: 1 << 20, instance: 0)
        let now: UInt64 = 1_700_000_000_000
        func sealed(_ conn: ConnectionID) throws -> ObjectID {
            let id = try #require(try s.createBlobs(sizes: [64], connection: conn, now: now)[0]).id
            _ = try s.seal(id, connection: conn)
            return id
        }
        let a = try (0..<50).map { _ in try sealed(1) }  // connection 1 wrote them
        _ = try s.useBlobs(Array(a[0..<10]), unsafe: false, connection: 2)  // 2 reads ten
        let pending = try s.createBlobs(sizes: [64, 64], connection: 2, now: now).compactMap { $0?.id }
        #expect(s.held[2] == Set(a[0..<10]).union(pending))

        // 1 deletes a blob 2 still uses: retired until 2 goes
        _ = s.delete([a[0]], force: false, deep: true, memoryTrim: false, connection: 1)
        #expect(s.retired[a[0]] != nil && s.held[1]?.contains(a[0]) == false)
        // 2 lets go of one explicitly
        s.release([a[1]], connection: 2)
        #expect(s.held[2]?.contains(a[1]) == false && s.blobs[a[1]]?.users == [1])

        let before = s.allocator.allocatedBytes
        #expect(s.disconnect(2) == 2, "its two unsealed blobs")
        #expect(s.held[2] == nil && s.retired.isEmpty)
        #expect(s.allocator.allocatedBytes == before - 3 * 64, "two unsealed and the retired one freed")
        #expect(a.dropFirst().allSatisfy { s.blobs[$0]?.users == [1] }, "the writer's uses stay")
        #expect(s.blobs.count == 49)

        // the writer deleting everything leaves nothing behind in the index
        _ = s.delete(Array(a.dropFirst()), force: false, deep: true, memoryTrim: false, connection: 1)
        #expect(s.held.isEmpty && s.blobs.isEmpty && s.allocator.allocatedBytes == 0)
        #expect(s.disconnect(1) == 0)
    }

    @Test("tables that deletions left mostly empty are rebuilt smaller, and the heap trimmed")
    func shrinking() throws {
        var s = StoreState(capacity: 64 << 20, instance: 0)
        let now: UInt64 = 1_700_000_000_000
        var ids: [ObjectID] = []
        for _ in 0..<20_000 {
            let blob = try #require(try s.createBlobs(sizes: [64], connection: 1, now: now)[0]).id
            _ = try s.seal(blob, connection: 1)
            let tree: JSON = [
                "typename": "vineyard::Tensor<int64>", "instance_id": 0, "nbytes": 8,
                "buffer_": ["id": .string(blob.description), "typename": "vineyard::Blob", "instance_id": 0, "length": 8],
            ]
            ids.append(try s.createData(tree, now: now).0.id)
        }
        let full = (objects: s.objects.capacity, blobs: s.blobs.capacity)
        var trimmed = 0
        for chunk in stride(from: 0, to: ids.count - 100, by: 1000) {
            let (_, effects) = s.delete(Array(ids[chunk..<min(chunk + 1000, ids.count - 100)]), force: false, deep: true,
                                        memoryTrim: false, connection: 1)
            if effects.trimHeap { trimmed += 1 }
        }
        #expect(s.objects.count == 100 && s.blobs.count == 100)
        #expect(trimmed >= 1 && trimmed <= 3, "rebuilt once the tables are sparse, not at every delete")
        #expect(s.objects.capacity <= full.objects / 4 && s.blobs.capacity <= full.blobs / 4)
        // what is left is intact
        #expect(ids.suffix(100).allSatisfy { s.objects[$0] != nil })
        #expect(s.getData(Array(ids.suffix(3))).count == 3)
    }
}

/// A small deterministic generator for the tests' random operations.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
