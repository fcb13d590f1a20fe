import Synchronization
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// The shared-memory file that holds every blob: one file of `capacity` bytes,
/// mapped once by the daemon (for RPC transfers and pre-faulting) and passed by
/// descriptor to every IPC client.
public final class Arena: Sendable {
    /// What backs the arena's pages.
    public enum Pages: String, Sendable, Equatable {
        /// A memfd in 4 KiB pages: every process that maps it faults once per 4 KiB.
        case small = "4KiB"
        /// A file on a private tmpfs with `huge=within_size`: 2 MiB transparent huge pages,
        /// mapped 2 MiB-aligned by every client, so a client faults once per 2 MiB. No pool.
        case transparentHuge = "thp"
        /// A memfd from the hugetlb pool (`MFD_HUGETLB`, `--huge_pages`).
        case hugetlb = "hugetlb"
    }

    /// When the arena gets its pages.
    public enum Prefault: Sendable, Equatable {
        /// As clients touch them.
        case none
        /// All of them before the daemon serves (vineyardd's `--reserve_memory`).
        case now
        /// All of them from a background thread at the lowest priority, bottom-up (the order
        /// the allocator hands out fresh memory), while the daemon already serves; a client
        /// that gets ahead of it simply faults its pages in itself. (hugetlb: as `.now`.)
        case background
    }

    public let fd: OwnedFD
    public let mapping: MappedRegion
    public let capacity: Int
    /// The granule of trimming: 4 KiB, or 2 MiB with huge pages of either kind (punching
    /// part of a transparent huge page would split it for good).
    public let pageSize: Int
    /// What the arena got (transparent huge pages fall back to `.small`).
    public let pages: Pages
    /// Why transparent huge pages were asked for and not used; nil otherwise.
    public let fallbackReason: String?
    /// The background reservation, while `prefault` is `.background`.
    private let reserver: Reserver?

    /// Bytes from the start of the arena that have their pages (the whole arena after a
    /// `.now` prefault; growing during a `.background` one; 0 without).
    public var reservedBytes: Int { reserver?.done.load(ordering: .relaxed) ?? reservedUpFront }
    private let reservedUpFront: Int

    /// `map_size` as clients see it: upstream's arenas are 8 bytes longer than the
    /// usable area and clients map `map_size − 8`; keeping that keeps them in bounds.
    public var mapSize: Int { capacity + 8 }

    public static let hugePageSize = 2 << 20

    /// Creates the shared-memory file and maps it. `prefault` `.now` (vineyardd's
    /// `--reserve_memory`) gives the whole arena its pages before the daemon serves (and
    /// `.background` while it serves, see ``Prefault``): with
    /// 4 KiB pages by `fallocate` (~0.25 s per GiB here; no mapping in the daemon), so that
    /// a client's first write takes a minor fault on an existing page, ~7× cheaper than
    /// allocating a fresh one; huge pages are populated (allocated and zeroed) through a
    /// mapping — for transparent huge pages a throwaway one, since `fallocate` would leave
    /// them to be zeroed by the first client that touches them.
    ///
    /// `pages` asks for the backing. `.transparentHuge` falls back to `.small` when the
    /// private tmpfs cannot be made (no CAP_SYS_ADMIN and no user namespaces, a seccomp
    /// filter, no tmpfs), with the reason in `fallbackReason`. `.hugetlb` takes its pages
    /// from the kernel's pool and fails if the pool is too small: the shared mapping
    /// reserves all of them now, never later in a client. With huge pages the capacity is
    /// rounded up to whole 2 MiB pages, so clients map `map_size − 8` = a whole number.
    /// `transparentHugeFile` makes the tmpfs file (replaceable to exercise the fallback).
    public init(
        capacity: Int, name: String = "trellis-arena", prefault: Prefault = .none, pages: Pages = .small,
        transparentHugeFile: (Int) throws(SystemError) -> OwnedFD = SharedMemoryFile.createTransparentHuge
    ) throws(SystemError) {
        let m = try Self.makeBacking(
            capacity: capacity, name: name, prefault: prefault, pages: pages, transparentHugeFile: transparentHugeFile)
        self.capacity = m.capacity
        pageSize = m.pageSize
        self.pages = m.pages
        fallbackReason = m.fallback
        let length = m.mapping.length
        let madePages = m.pages
        fd = m.fd
        mapping = m.mapping
        switch prefault {
        case .background where madePages != .hugetlb:
            reserver = try Reserver(fd: fd, length: length, pages: madePages)
            reservedUpFront = 0
        case .none:
            reserver = nil
            reservedUpFront = 0
        default:
            reserver = nil
            reservedUpFront = length
        }
    }

    deinit { reserver?.stop.store(true, ordering: .relaxed) }

    /// The file and the daemon's mapping of it, before they become the arena's.
    private struct Backing: ~Copyable {
        let fd: OwnedFD
        let mapping: MappedRegion
        let capacity: Int
        let pageSize: Int
        let pages: Pages
        var fallback: String? = nil
    }

    private static func makeBacking(
        capacity: Int, name: String, prefault: Prefault, pages: Pages,
        transparentHugeFile: (Int) throws(SystemError) -> OwnedFD
    ) throws(SystemError) -> Backing {
        let huge = hugePageSize
        let rounded = (capacity + huge - 1) / huge * huge
        var fallback: String?
        if pages == .transparentHuge {
            do {
                let file = try transparentHugeFile(rounded)
                if prefault == .now {
                    // Allocate and zero every huge page through a throwaway mapping: the pages
                    // stay in the file, and the daemon's RSS does not count the arena.
                    guard populate(fd: file.raw, offset: 0, length: rounded) else {
                        throw SystemError("populate the arena's huge pages", errno: ENOMEM)
                    }
                }
                let map = try MappedRegion(fd: file.raw, length: rounded, writable: true)
                return Backing(fd: file, mapping: map, capacity: rounded, pageSize: huge, pages: .transparentHuge)
            } catch {
                fallback = "\(error)"
            }
        }
        if pages == .hugetlb {
            let file = try SharedMemoryFile.create(name: name, size: rounded, hugePages: true)
            let map = try MappedRegion(fd: file.raw, length: rounded, writable: true, populate: prefault != .none)
            return Backing(fd: file, mapping: map, capacity: rounded, pageSize: huge, pages: .hugetlb)
        }
        let file = try SharedMemoryFile.create(name: name, size: capacity + 8)
        let map = try MappedRegion(fd: file.raw, length: capacity + 8, writable: true)
        if prefault == .now { try SharedMemoryFile.allocate(fd: file.raw, offset: 0, length: capacity + 8) }
        return Backing(
            fd: file, mapping: map, capacity: capacity, pageSize: SharedMemoryFile.pageSize, pages: .small,
            fallback: fallback)
    }

    /// Gives an arena file its pages from a thread of its own at the lowest priority (nice
    /// 19), in chunks, until done or stopped (the arena went away). Huge pages go one 2 MiB
    /// page per throwaway mapping, so that the daemon's address-space lock is never held
    /// for long by a thread the scheduler may leave waiting (SCHED_IDLE could hold it for
    /// as long as the machine is busy).
    private final class Reserver: Sendable {
        let stop = Atomic<Bool>(false)
        let done = Atomic<Int>(0)

        init(fd: borrowing OwnedFD, length: Int, pages: Pages) throws(SystemError) {
            // The thread's own descriptor: the arena may close its own at any time.
            let own = OwnedFD(adopting: try syscallRetrying("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd.raw, F_DUPFD_CLOEXEC, 0) })
            let box = FDHandOff(own)  // closed here if the thread cannot start, else by the thread
            try spawnThread(name: "trellis-reserve") { [self] in
                guard let fd = box.take() else { return }
                self.run(fd, length: length, pages: pages)
            }
        }

        private func run(_ fd: consuming OwnedFD, length: Int, pages: Pages) {
            lowerCurrentThreadPriority()
            let chunk = pages == .transparentHuge ? Arena.hugePageSize : 32 << 20
            var offset = 0
            while offset < length, !stop.load(ordering: .relaxed) {
                let n = min(chunk, length - offset)
                if pages == .transparentHuge {
                    // Populate through a throwaway mapping: huge pages allocated and zeroed,
                    // the failure reported (MAP_POPULATE would skip a page it failed to fault
                    // and leave it to a client; seen on a busy machine).
                    guard Arena.populate(fd: fd.raw, offset: offset, length: n) else { break }
                } else {
                    guard (try? SharedMemoryFile.allocate(fd: fd.raw, offset: offset, length: n)) != nil else { break }
                }
                offset += n
                done.store(offset, ordering: .relaxed)
            }
        }
    }

    /// Populates `[offset, offset+length)` of `fd` through a throwaway mapping; false if
    /// it could not be mapped or faulted (a few tries: the kernel may fail a fault for a
    /// moment under memory pressure). Kernels without `MADV_POPULATE_WRITE` get
    /// `MAP_POPULATE`'s best effort.
    private static func populate(fd: Int32, offset: Int, length: Int) -> Bool {
        for _ in 0..<3 {
            guard let region = try? MappedRegion(fd: fd, length: length, writable: true, offset: offset) else { return false }
            do {
                try region.populateForWrite()
                return true
            } catch where error.errno == EINVAL {
                return (try? MappedRegion(fd: fd, length: length, writable: true, populate: true, offset: offset)) != nil
            } catch {
                continue
            }
        }
        return false
    }

    /// The daemon's own address of `offset` (upstream reports it as `pointer`).
    @inline(__always)
    public func address(_ offset: Int) -> UnsafeMutableRawPointer { mapping.base + offset }

    /// Returns the whole pages inside `[offset, offset+length)` to the OS. A trim ends a
    /// background reservation still running: it would fault the pages back in.
    public func trim(offset: Int, length: Int) {
        reserver?.stop.store(true, ordering: .relaxed)
        let page = pageSize
        let start = (offset + page - 1) / page * page
        let end = (offset + length) / page * page
        if end > start { try? SharedMemoryFile.punchHole(fd: fd.raw, offset: start, length: end - start) }
    }
}
