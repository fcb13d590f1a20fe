import Testing
@testable import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

@Suite("Transparent-huge-page arena", .onBlockingPool)
struct TransparentHugeArenaTests {
    static let mib = 1 << 20

    /// Minor faults this thread has taken so far.
    static func minorFaults() -> Int {
        var usage = rusage()
        _ = getrusage(__rusage_who_t(1) /* RUSAGE_THREAD */, &usage)
        return usage.ru_minflt
    }

    /// Maps the arena's file as a client does (`map_size − 8` bytes, no hint), writes one
    /// byte per 4 KiB, and returns (mapping 2 MiB-aligned?, minor faults taken).
    static func touchAsAClient(_ arena: Arena) throws -> (aligned: Bool, faults: Int) {
        let region = try MappedRegion(fd: arena.fd.raw, length: arena.mapSize - 8, writable: true)
        let aligned = UInt(bitPattern: region.base) % UInt(Arena.hugePageSize) == 0
        let before = minorFaults()
        var offset = 0
        while offset < region.length {
            region.base.storeBytes(of: 1, toByteOffset: offset, as: UInt8.self)
            offset += 4096
        }
        return (aligned, minorFaults() - before)
    }

    static func allocatedBytes(_ arena: Arena) -> Int {
        var st = stat()
        _ = fstat(arena.fd.raw, &st)
        return Int(st.st_blocks) * 512
    }

    @Test("the arena gets 2 MiB transparent huge pages without a pool, and a client's mapping is aligned and faults once per 2 MiB")
    func clientFaultsPerHugePage() throws {
        let huge = try Arena(capacity: 31 * Self.mib, prefault: .now, pages: .transparentHuge)
        #expect(huge.pages == .transparentHuge, "fell back: \(huge.fallbackReason ?? "")")
        #expect(huge.capacity == 32 * Self.mib && huge.pageSize == Arena.hugePageSize)
        #expect(Self.allocatedBytes(huge) == 32 * Self.mib)
        let (aligned, faults) = try Self.touchAsAClient(huge)
        #expect(aligned)
        #expect(faults <= 32, "a client took \(faults) faults for 32 MiB (16 huge pages)")

        // The same with 4 KiB pages: one fault per page (the measurement can tell them apart).
        let small = try Arena(capacity: 32 * Self.mib, prefault: .now, pages: .small)
        #expect(small.pages == .small && small.fallbackReason == nil)
        let (_, smallFaults) = try Self.touchAsAClient(small)
        #expect(smallFaults >= 8192 * 9 / 10, "4 KiB pages: \(smallFaults) faults")
    }

    @Test("when the private tmpfs cannot be made, the arena falls back to 4 KiB pages and says why")
    func fallback() throws {
        let arena = try Arena(capacity: 3 * Self.mib, pages: .transparentHuge) { _ throws(SystemError) -> OwnedFD in
            throw SystemError("private tmpfs (unshare)", errno: EPERM)
        }
        #expect(arena.pages == .small && arena.pageSize == SharedMemoryFile.pageSize)
        #expect(arena.capacity == 3 * Self.mib && arena.mapSize == 3 * Self.mib + 8)
        #expect(arena.fallbackReason?.contains("unshare") == true)
        arena.address(0).storeBytes(of: 7, as: UInt64.self)
        #expect(arena.address(0).load(as: UInt64.self) == 7)
    }

    @Test("trimming punches whole 2 MiB pages only, so the rest stays huge")
    func trimGranule() throws {
        let arena = try Arena(capacity: 8 * Self.mib, prefault: .now, pages: .transparentHuge)
        try #require(arena.pages == .transparentHuge, "fell back: \(arena.fallbackReason ?? "")")
        arena.address(Self.mib).storeBytes(of: 99, as: UInt64.self)
        // [1 MiB, 3 MiB) holds no whole huge page: nothing is returned, nothing is zeroed.
        arena.trim(offset: Self.mib, length: 2 * Self.mib)
        #expect(Self.allocatedBytes(arena) == 8 * Self.mib)
        #expect(arena.address(Self.mib).load(as: UInt64.self) == 99)
        // [0, 4 MiB) is two huge pages: both go back to the OS and read as zeros.
        arena.trim(offset: 0, length: 4 * Self.mib)
        #expect(Self.allocatedBytes(arena) == 4 * Self.mib)
        #expect(arena.address(Self.mib).load(as: UInt64.self) == 0)
    }

    /// (device, inode) of the arena's file.
    static func identity(_ arena: Arena) -> (UInt64, UInt64) {
        var st = stat()
        _ = fstat(arena.fd.raw, &st)
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// How many of this process's descriptors refer to the file `identity`.
    static func openDescriptors(of identity: (UInt64, UInt64)) -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            var st = stat()
            if let fd = Int32(name), fstat(fd, &st) == 0, UInt64(st.st_dev) == identity.0, UInt64(st.st_ino) == identity.1 {
                count += 1
            }
        }
        return count
    }

    static func eventually(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    @Test("a background reservation gives every page while the arena is already usable, for both page sizes",
          arguments: [Arena.Pages.transparentHuge, .small])
    func backgroundReservation(pages: Arena.Pages) throws {
        let arena = try Arena(capacity: 64 * Self.mib, prefault: .background, pages: pages)
        // Usable at once.
        arena.address(0).storeBytes(of: 5, as: UInt64.self)
        #expect(arena.address(0).load(as: UInt64.self) == 5)
        let length = arena.mapSize - (pages == .small ? 0 : 8)
        #expect(Self.eventually(20) { arena.reservedBytes == length }, "reserved \(arena.reservedBytes) of \(length)")
        #expect(Self.allocatedBytes(arena) >= length / 4096 * 4096)
        if pages == .transparentHuge {
            let (_, faults) = try Self.touchAsAClient(arena)
            #expect(faults <= 64, "a client took \(faults) faults for 64 MiB after the reservation")
        }
    }

    @Test("a trim ends a background reservation, so trimmed pages are not faulted back in")
    func trimStopsBackgroundReservation() throws {
        let arena = try Arena(capacity: 2 << 30, prefault: .background, pages: .transparentHuge)
        arena.trim(offset: 0, length: arena.capacity)
        let id = Self.identity(arena)
        #expect(Self.eventually(20) { Self.openDescriptors(of: id) == 1 })  // the reserving thread ended
        #expect(arena.reservedBytes < arena.capacity)
        let settled = Self.allocatedBytes(arena)
        usleep(200_000)
        #expect(Self.allocatedBytes(arena) == settled)
    }

    @Test("dropping an arena stops its background reservation: the thread lets go of the file")
    func backgroundReservationStops() throws {
        var arena: Arena? = try Arena(capacity: 2 << 30, prefault: .background, pages: .transparentHuge)
        let id = Self.identity(arena!)
        #expect(Self.openDescriptors(of: id) == 2)  // the arena's and the reserving thread's
        arena = nil
        #expect(Self.eventually(20) { Self.openDescriptors(of: id) == 0 })
    }
}
