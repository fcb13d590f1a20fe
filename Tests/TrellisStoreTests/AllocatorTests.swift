import Testing
@testable import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

@Suite("Allocator", .onBlockingPool)
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

    @Test("split tiles a block into blocks freed on their own; the rounding's tail returns")
    func split() throws {
        var a = Allocator(capacity: 1 << 16)
        let o = a.allocate(4 * 1024 + 100)!  // rounded to 4,224
        #expect(a.allocatedBytes == 4224)
        let cut = a.split(o, sizes: [1024, 1024, 2048, 100])
        let starts = try #require(cut)
        #expect(starts == [o, o + 1024, o + 2048, o + 4096])
        #expect(a.allocationCount == 4 && a.allocatedBytes == 4096 + 128)
        // freeing the middle pieces alone leaves their neighbours allocated
        a.free(starts[1])
        a.free(starts[2])
        #expect(a.allocatedBytes == 1024 + 128)
        #expect(a.freeBlocks.contains { $0.start == o + 1024 && $0.size == 3072 })
        a.free(starts[0])
        a.free(starts[3])
        #expect(a.allocatedBytes == 0 && a.freeBlockCount == 1 && a.largestFreeBlock == 1 << 16)
    }

    @Test("split at unaligned offsets: the pieces share their block, freed with the last of them")
    func splitShared() throws {
        var a = Allocator(capacity: 1 << 16)
        let o = a.allocate(3 * 1000)!  // rounded to 3,008
        let cut = a.split(o, sizes: [1000, 1000, 1000])
        let starts = try #require(cut)
        #expect(starts == [o, o + 1000, o + 2000])
        #expect(a.allocatedBytes == 3008 && a.allocationCount == 1 && a.sharedPieceCount == 3)
        // a piece of a shared block is neither cut again nor shrunk
        #expect(a.split(starts[1], sizes: [500, 500]) == nil)
        #expect(a.split(starts[0], sizes: [64, 936]) == nil)
        a.shrink(starts[0], to: 10)
        #expect(a.allocatedBytes == 3008)
        // freeing pieces frees nothing until the last, in any order
        #expect(a.free(starts[2]) == nil)
        #expect(a.free(starts[0]) == nil)
        #expect(a.allocatedBytes == 3008)
        #expect(a.free(starts[0]) == nil)  // twice: still nothing
        #expect(a.allocatedBytes == 3008)
        #expect(a.split(starts[0], sizes: [3008]) == nil)  // nor is the freed first piece's offset a block again
        a.shrink(starts[0], to: 64)
        #expect(a.allocatedBytes == 3008)
        let freed = a.free(starts[1])
        let block = try #require(freed)
        #expect(block == (start: 0, size: 1 << 16))
        #expect(a.allocatedBytes == 0 && a.sharedPieceCount == 0 && a.freeBlockCount == 1)
        // and the memory is whole again
        #expect(a.allocate(1 << 16) != nil)
    }

    @Test("a shared block's last piece freed into quarantine hands out the whole block")
    func splitSharedQuarantine() throws {
        var a = Allocator(capacity: 1 << 16)
        _ = a.allocate(64)!  // keeps the shared block from coalescing with the start
        let o = a.allocate(200)!
        let cut = a.split(o, sizes: [100, 100])
        let starts = try #require(cut)
        #expect(a.freeIntoQuarantine(starts[0]) == nil)
        let quarantined = a.freeIntoQuarantine(starts[1])
        let q = try #require(quarantined)
        #expect(q.start == o && a.quarantinedBytes == q.size && a.allocatedBytes == 64)
        a.returnQuarantined(start: q.start, size: q.size)
        #expect(a.quarantinedBytes == 0)
    }

    @Test("split refuses what it cannot cut and changes nothing",
          arguments: [[64, 0], [4096, 4096, 64], [Int](), [4096 + 192 + 64], [100, 4096 + 192]])
    func splitRefused(sizes: [Int]) throws {
        var a = Allocator(capacity: 1 << 16)
        let o = a.allocate(4096 + 192)!
        let before = (a.allocatedBytes, a.freeBlocks.map(\.start), a.allocationCount)
        #expect(a.split(o, sizes: sizes) == nil)
        #expect(before == (a.allocatedBytes, a.freeBlocks.map(\.start), a.allocationCount))
        #expect(a.split(o + 64, sizes: [64]) == nil)  // not a block's start
        a.free(o)
        #expect(a.allocatedBytes == 0)
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

    @Test("random workload with cuts, at aligned and unaligned sizes, and repeated frees keeps the books balanced")
    func randomizedWithCuts() {
        struct Unit {
            var bytes: Int
            var pieces: Set<Int>
            var shared: Bool
        }
        var a = Allocator(capacity: 64 << 20)
        var units: [Int: Unit] = [:]  // by start: what the allocator should count for it
        var unitOf: [Int: Int] = [:]  // live piece → its unit
        var freedShared: [Int: Int] = [:]  // pieces freed while their shared block lives → the block
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let r = Int.random(in: 0..<5, using: &rng)
            if unitOf.isEmpty || r < 2 {
                let size = Int.random(in: 1...(1 << Int.random(in: 6...18, using: &rng)), using: &rng)
                if let o = a.allocate(size) {
                    units[o] = Unit(bytes: Allocator.roundedSize(size), pieces: [o], shared: false)
                    unitOf[o] = o
                }
            } else if r == 2 {
                guard let (start, u) = units.first(where: { !$0.value.shared && $0.value.pieces == [$0.key] }),
                    u.bytes >= 256
                else { continue }
                let k = Int.random(in: 2...4, using: &rng)
                let aligned = Bool.random(using: &rng)
                var sizes: [Int] = []
                var room = u.bytes
                for i in 0..<k {
                    let most = room - (k - 1 - i) * 64
                    guard most >= 1 else { break }
                    var size = i == k - 1 ? Int.random(in: 1...most, using: &rng) : Int.random(in: 1...max(1, most / 2), using: &rng)
                    if aligned && i < k - 1 { size = max(64, size & ~63) }
                    if !aligned && i == 0 && size % 64 == 0 { size += 1 }
                    guard size <= room else { break }
                    sizes.append(size)
                    room -= size
                }
                guard sizes.count == k else { continue }
                let cut = a.split(start, sizes: sizes)
                guard let starts = cut else {
                    Issue.record("a cut of \(sizes) in a block of \(u.bytes) was refused")
                    continue
                }
                units[start] = nil
                if aligned {
                    for (i, (o, size)) in zip(starts, sizes).enumerated() {
                        units[o] = Unit(bytes: i == k - 1 ? Allocator.roundedSize(size) : size, pieces: [o], shared: false)
                        unitOf[o] = o
                    }
                } else {
                    units[start] = Unit(bytes: u.bytes, pieces: Set(starts), shared: true)
                    for o in starts { unitOf[o] = start }
                }
            } else if r == 3, let (again, _) = freedShared.randomElement(using: &rng) {
                // a piece freed before while its block lives (no one else's memory): nothing happens
                let before = a.allocatedBytes
                #expect(a.free(again) == nil)
                #expect(a.allocatedBytes == before)
            } else if let o = unitOf.keys.randomElement(using: &rng) {
                let start = unitOf.removeValue(forKey: o)!
                units[start]!.pieces.remove(o)
                if units[start]!.pieces.isEmpty {
                    units[start] = nil
                    freedShared = freedShared.filter { $0.value != start }
                } else {
                    freedShared[o] = start
                }
                a.free(o)
            }
        }
        #expect(a.allocatedBytes == units.values.reduce(0) { $0 + $1.bytes })
        #expect(a.allocatedBytes + a.freeBytes == a.capacity)
        #expect(a.sharedPieceCount == units.values.filter(\.shared).reduce(0) { $0 + $1.pieces.count })
        for o in Array(unitOf.keys) { a.free(o) }
        #expect(a.allocatedBytes == 0 && a.freeBlockCount == 1 && a.sharedPieceCount == 0)
    }
}

@Suite("Huge-page arena", .onBlockingPool)
struct HugePageArenaTests {
    static var freeHugePages: Int {
        guard let f = fopen("/proc/meminfo", "r") else { return 0 }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, 256, f) != nil {
            let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if s.hasPrefix("HugePages_Free:") { return Int(s.split(separator: " ").last!.trimmingPrefix(" ").split(separator: "\n")[0]) ?? 0 }
        }
        return 0
    }

    @Test("a pool too small for the arena fails at creation with ENOMEM, not later")
    func poolTooSmall() {
        let want = (Self.freeHugePages + 16) * Arena.hugePageSize
        #expect(throws: SystemError.self) { _ = try Arena(capacity: want, pages: .hugetlb) }
    }

    @Test("with a pool: capacity rounds up to 2 MiB and trimming works on whole huge pages",
          .enabled(if: freeHugePages >= 2, "no free hugetlb pages (/proc/sys/vm/nr_hugepages)"))
    func withPool() throws {
        let a = try Arena(capacity: 3 << 20, pages: .hugetlb)
        #expect(a.capacity == 4 << 20 && a.mapSize == (4 << 20) + 8 && a.pageSize == 2 << 20)
        a.address(0).storeBytes(of: 42, as: UInt64.self)
        a.trim(offset: 0, length: 4 << 20)
        #expect(a.address(0).load(as: UInt64.self) == 0)
    }
}
