import TrellisProtocol
import TrellisSystem

/// The shared-memory file that holds every blob: one memfd of `capacity` bytes,
/// mapped once by the daemon (for RPC transfers and pre-faulting) and passed by
/// descriptor to every IPC client.
public final class Arena: Sendable {
    public let fd: OwnedFD
    public let mapping: MappedRegion
    public let capacity: Int
    /// The arena's page size: 4 KiB, or 2 MiB with huge pages.
    public let pageSize: Int
    public let hugePages: Bool

    /// `map_size` as clients see it: upstream's arenas are 8 bytes longer than the
    /// usable area and clients map `map_size − 8`; keeping that keeps them in bounds.
    public var mapSize: Int { capacity + 8 }

    public static let hugePageSize = 2 << 20

    /// Creates the memfd and maps it. `prefault` (vineyardd's `--reserve_memory`) gives
    /// the whole arena its pages before the daemon serves: with 4 KiB pages by
    /// `fallocate` (~0.25 s per GiB here; no mapping in the daemon), so that a client's
    /// first write takes a minor fault on an existing page, ~7× cheaper than allocating
    /// a fresh one; huge pages are populated through the daemon's mapping.
    ///
    /// With `hugePages` the memfd comes from the kernel's hugetlb pool (`MFD_HUGETLB`):
    /// every process that maps it takes one fault per 2 MiB instead of per 4 KiB. The
    /// capacity is rounded up to whole huge pages, and the shared mapping reserves all
    /// of them now, so a pool that is too small fails here, never later in a client.
    public init(capacity: Int, name: String = "trellis-arena", prefault: Bool = false, hugePages: Bool = false) throws(SystemError) {
        self.hugePages = hugePages
        if hugePages {
            let huge = Self.hugePageSize
            let rounded = (capacity + huge - 1) / huge * huge
            self.capacity = rounded
            pageSize = huge
            // Clients map `map_size − 8` = `rounded` bytes: a whole number of huge pages.
            fd = try SharedMemoryFile.create(name: name, size: rounded, hugePages: true)
            mapping = try MappedRegion(fd: fd.raw, length: rounded, writable: true, populate: prefault)
        } else {
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
