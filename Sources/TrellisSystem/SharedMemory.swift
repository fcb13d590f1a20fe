import CTrellisShim
#if canImport(Glibc)
import Glibc
#endif

/// A `mmap`ed region, unmapped exactly once when it goes away.
public struct MappedRegion: ~Copyable, @unchecked Sendable {
    // Sendable: the pointer is only an address; what is written through it is the
    // caller's business (shared memory is shared by design).
    public let base: UnsafeMutableRawPointer
    public let length: Int

    /// Maps `length` bytes of `fd` shared, read-write or read-only.
    public init(fd: Int32, length: Int, writable: Bool, populate: Bool = false) throws(SystemError) {
        var flags = MAP_SHARED
        if populate { flags |= MAP_POPULATE }
        let prot = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        guard let p = mmap(nil, length, prot, flags, fd, 0), p != MAP_FAILED else {
            throw SystemError("mmap")
        }
        base = p
        self.length = length
    }

    public var buffer: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base, count: length)
    }

    deinit {
        _ = munmap(base, length)
    }
}

/// Helpers for the memfd that backs an arena.
public enum SharedMemoryFile {
    /// Creates an anonymous shared-memory file of `size` bytes (`memfd_create` + `ftruncate`).
    public static func create(name: String, size: Int, hugePages: Bool = false) throws(SystemError) -> OwnedFD {
        let raw = trellis_memfd_create(name, hugePages ? 1 : 0)
        if raw < 0 { throw SystemError("memfd_create") }
        let fd = OwnedFD(adopting: raw)
        _ = try syscallRetrying("ftruncate") { ftruncate(fd.raw, off_t(size)) }
        return fd
    }

    /// Returns the pages of `[offset, offset+length)` to the OS (the range reads as zeros after).
    /// Gives `[offset, offset+length)` of the file its pages now (`fallocate`, mode 0), so
    /// that processes mapping it later take cheap minor faults on existing pages instead
    /// of allocating and zeroing fresh ones.
    public static func allocate(fd: Int32, offset: Int, length: Int) throws(SystemError) {
        guard length > 0 else { return }
        var rc: Int32
        repeat { rc = posix_fallocate(fd, off_t(offset), off_t(length)) } while rc == EINTR
        if rc != 0 { throw SystemError("fallocate", errno: rc) }
    }

    public static func punchHole(fd: Int32, offset: Int, length: Int) throws(SystemError) {
        guard length > 0 else { return }
        _ = try syscallRetrying("fallocate(PUNCH_HOLE)") {
            trellis_punch_hole(fd, off_t(offset), off_t(length))
        }
    }

    public static let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))
}
