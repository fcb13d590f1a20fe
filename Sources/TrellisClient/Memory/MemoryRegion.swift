import TrellisSystem

/// Memory that blobs point into: the mapping of one daemon arena (IPC), or a heap
/// buffer holding bytes that arrived inline (RPC).
///
/// A region lives as long as the connection or any ``Blob`` that points into it,
/// whichever is last, so a view can never refer to unmapped memory.
final class MemoryRegion: @unchecked Sendable {
    // Sendable: `base` and `length` never change; the bytes are shared memory whose
    // writers are the blob protocol's business (a blob is written only before it is sealed).
    let base: UnsafeMutableRawPointer
    let length: Int
    /// The daemon's `store_fd` this arena is known by, or −1 for heap memory.
    let storeFD: Int32
    private let mapping: MappedRegion?

    /// Maps `length` bytes (`map_size − 8`) of an arena fd received from the daemon.
    init(arenaFD fd: borrowing OwnedFD, storeFD: Int32, length: Int) throws(SystemError) {
        let region = try MappedRegion(fd: fd.raw, length: max(length, 1), writable: true)
        self.base = region.base
        self.length = length
        self.storeFD = storeFD
        self.mapping = consume region
    }

    /// A zero-filled heap buffer of `length` bytes, 64-byte aligned like the daemon's blobs.
    init(heapByteCount length: Int) {
        self.base = UnsafeMutableRawPointer.allocate(byteCount: max(length, 1), alignment: 64)
        self.base.initializeMemory(as: UInt8.self, repeating: 0, count: max(length, 1))
        self.length = length
        self.storeFD = -1
        self.mapping = nil
    }

    var isArena: Bool { storeFD >= 0 }

    /// Whether `[address, address + count)` lies inside this region.
    func contains(_ address: UnsafeRawPointer, count: Int) -> Bool {
        let start = UnsafeRawPointer(base)
        return address >= start && address + count <= start + length
    }

    deinit {
        if storeFD < 0 { base.deallocate() }
        // An arena's MappedRegion unmaps itself.
    }
}
