import TrellisProtocol
import TrellisSystem

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

    public var hugePages: Bool { pages == .hugetlb }

    /// `map_size` as clients see it: upstream's arenas are 8 bytes longer than the
    /// usable area and clients map `map_size − 8`; keeping that keeps them in bounds.
    public var mapSize: Int { capacity + 8 }

    public static let hugePageSize = 2 << 20

    /// Creates the shared-memory file and maps it. `prefault` (vineyardd's
    /// `--reserve_memory`) gives the whole arena its pages before the daemon serves: with
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
        capacity: Int, name: String = "trellis-arena", prefault: Bool = false, pages: Pages = .small,
        transparentHugeFile: (Int) throws(SystemError) -> OwnedFD = SharedMemoryFile.createTransparentHuge
    ) throws(SystemError) {
        let huge = Self.hugePageSize
        let rounded = (capacity + huge - 1) / huge * huge
        var fallback: String?
        if pages == .transparentHuge {
            do {
                let file = try transparentHugeFile(rounded)
                if prefault {
                    // Allocate and zero every huge page through a throwaway mapping: the pages
                    // stay in the file, and the daemon's RSS does not count the arena.
                    _ = try MappedRegion(fd: file.raw, length: rounded, writable: true, populate: true)
                }
                let map = try MappedRegion(fd: file.raw, length: rounded, writable: true)
                fd = file
                mapping = map
                self.capacity = rounded
                pageSize = huge
                self.pages = .transparentHuge
                fallbackReason = nil
                return
            } catch {
                fallback = "\(error)"
            }
        }
        fallbackReason = fallback
        if pages == .hugetlb {
            self.pages = .hugetlb
            self.capacity = rounded
            pageSize = huge
            fd = try SharedMemoryFile.create(name: name, size: rounded, hugePages: true)
            mapping = try MappedRegion(fd: fd.raw, length: rounded, writable: true, populate: prefault)
        } else {
            self.pages = .small
            self.capacity = capacity
            pageSize = SharedMemoryFile.pageSize
            fd = try SharedMemoryFile.create(name: name, size: capacity + 8)
            mapping = try MappedRegion(fd: fd.raw, length: capacity + 8, writable: true)
            if prefault { try SharedMemoryFile.allocate(fd: fd.raw, offset: 0, length: capacity + 8) }
        }
    }

    /// The daemon's own address of `offset` (upstream reports it as `pointer`).
    @inline(__always)
    public func address(_ offset: Int) -> UnsafeMutableRawPointer { mapping.base + offset }

    /// Returns the whole pages inside `[offset, offset+length)` to the OS.
    public func trim(offset: Int, length: Int) {
        let page = pageSize
        let start = (offset + page - 1) / page * page
        let end = (offset + length) / page * page
        if end > start { try? SharedMemoryFile.punchHole(fd: fd.raw, offset: start, length: end - start) }
    }
}
