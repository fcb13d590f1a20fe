import Testing
@testable import TrellisStore

@Suite("Allocator")
struct AllocatorTests {
    @Test("offsets are 64-byte aligned and blocks never overlap")
    func alignmentAndDisjointness() {
        var a = Allocator(capacity: 1 << 20)
        var blocks: [(Int, Int)] = []
        for size in [1, 63, 64, 65, 100, 4096, 10_000, 7] {
            let off = a.allocate(size)!
            #expect(off % 64 == 0)
            blocks.append((off, Allocator.roundedSize(size)))
        }
        blocks.sort { $0.0 < $1.0 }
        for (x, y) in zip(blocks, blocks.dropFirst()) { #expect(x.0 + x.1 <= y.0) }
        #expect(a.allocatedBytes == blocks.reduce(0) { $0 + $1.1 })
    }

    @Test("freeing coalesces neighbours back into one block")
    func coalescing() {
        var a = Allocator(capacity: 64 * 1024)
        let offs = (0..<16).map { _ in a.allocate(4096)! }
        #expect(a.allocate(1) == nil)  // full
        for o in offs where (o / 4096) % 2 == 0 { a.free(o) }
        #expect(a.freeBlockCount == 8)
        #expect(a.largestFreeBlock == 4096)
        #expect(a.fragmentation > 0.8)
        for o in offs where (o / 4096) % 2 == 1 { a.free(o) }
        #expect(a.freeBlockCount == 1)
        #expect(a.largestFreeBlock == 64 * 1024)
        #expect(a.fragmentation == 0)
        #expect(a.allocatedBytes == 0)
    }

    @Test("a request for the whole capacity succeeds, one byte more fails")
    func exactCapacity() {
        var a = Allocator(capacity: 1 << 20)
        #expect(a.allocate((1 << 20) + 1) == nil)
        let o = a.allocate(1 << 20)
        #expect(o == 0)
        #expect(a.allocate(1) == nil)
    }

    @Test("freed memory is reused before untouched memory")
    func reuseFirst() {
        var a = Allocator(capacity: 1 << 30)
        let first = a.allocate(1 << 20)!
        _ = a.allocate(1 << 20)!
        a.free(first)
        #expect(a.allocate(1 << 20) == first)
    }

    @Test("quarantined blocks are not handed out until returned")
    func quarantine() {
        var a = Allocator(capacity: 4096)
        let o = a.allocate(4096)!
        let block = a.freeIntoQuarantine(o)!
        #expect(block.start == 0 && block.size == 4096)
        #expect(a.allocate(64) == nil)
        a.returnQuarantined(start: block.start, size: block.size)
        #expect(a.allocate(4096) == 0)
    }

    @Test("shrink returns the tail")
    func shrink() {
        var a = Allocator(capacity: 8192)
        let o = a.allocate(8192)!
        a.shrink(o, to: 100)
        #expect(a.allocatedBytes == 128)
        #expect(a.allocate(8000) != nil)
    }

    @Test("random workload keeps the books balanced")
    func randomized() {
        var a = Allocator(capacity: 64 << 20)
        var live: [Int: Int] = [:]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            if live.isEmpty || Int.random(in: 0..<3, using: &rng) > 0 {
                let size = Int.random(in: 1...(1 << Int.random(in: 6...18, using: &rng)), using: &rng)
                if let o = a.allocate(size) { live[o] = Allocator.roundedSize(size) }
            } else {
                let o = live.keys.randomElement(using: &rng)!
                live[o] = nil
                a.free(o)
            }
        }
        #expect(a.allocatedBytes == live.values.reduce(0, +))
        #expect(a.allocatedBytes + a.freeBytes == a.capacity)
        let sorted = live.sorted { $0.key < $1.key }
        for (x, y) in zip(sorted, sorted.dropFirst()) { #expect(x.key + x.value <= y.key) }
        for o in live.keys { a.free(o) }
        #expect(a.freeBlockCount == 1)
    }
}
