import TrellisProtocol
import TrellisSystem

/// The shared-memory file that holds every blob: one memfd of `capacity` bytes,
/// mapped once by the daemon (for RPC transfers and pre-faulting) and passed by
/// descriptor to every IPC client.
public final class Arena: Sendable {
    public let fd: OwnedFD
    public let mapping: MappedRegion
    public let capacity: Int

    /// `map_size` as clients see it: upstream's arenas are 8 bytes longer than the
    /// usable area and clients map `map_size − 8`; keeping that keeps them in bounds.
    public var mapSize: Int { capacity + 8 }

    /// Creates the memfd and maps it. `prefault` touches every page now (vineyardd's
    /// `--reserve_memory`), so that first writes by clients take no allocation faults.
    public init(capacity: Int, name: String = "trellis-arena", prefault: Bool = false) throws(SystemError) {
        self.capacity = capacity
        fd = try SharedMemoryFile.create(name: name, size: capacity + 8)
        mapping = try MappedRegion(fd: fd.raw, length: capacity + 8, writable: true, populate: prefault)
    }

    /// The daemon's own address of `offset` (upstream reports it as `pointer`).
    @inline(__always)
    public func address(_ offset: Int) -> UnsafeMutableRawPointer { mapping.base + offset }

    /// Returns the whole pages inside `[offset, offset+length)` to the OS.
    public func trim(offset: Int, length: Int) {
        let page = SharedMemoryFile.pageSize
        let start = (offset + page - 1) / page * page
        let end = (offset + length) / page * page
        if end > start { try? SharedMemoryFile.punchHole(fd: fd.raw, offset: start, length: end - start) }
    }
}
