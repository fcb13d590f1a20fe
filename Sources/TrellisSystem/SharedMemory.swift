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

    /// Maps `length` bytes of `fd` from `offset` (page-aligned) shared, read-write or read-only.
    public init(fd: Int32, length: Int, writable: Bool, populate: Bool = false, offset: Int = 0) throws(SystemError) {
        var flags = MAP_SHARED
        if populate { flags |= MAP_POPULATE }
        let prot = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        guard let p = mmap(nil, length, prot, flags, fd, off_t(offset)), p != MAP_FAILED else {
            throw SystemError("mmap")
        }
        base = p
        self.length = length
    }

    /// Faults every page of the region in, writable, without changing a byte
    /// (`MADV_POPULATE_WRITE`, Linux 5.14+) — unlike `MAP_POPULATE`, which skips pages it
    /// fails to fault and says nothing, this reports the failure. Retries interrupted and
    /// transient faults; throws `EINVAL` on kernels without it.
    public func populateForWrite() throws(SystemError) {
        let populateWrite: Int32 = 23  // MADV_POPULATE_WRITE
        _ = try syscallRetrying("madvise(MADV_POPULATE_WRITE)") { () -> Int32 in
            let r = madvise(base, length, populateWrite)
            if r != 0 && errno == EAGAIN { errno = EINTR }  // transient: retry like EINTR
            return r
        }
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

    /// Creates an unnamed file of `size` bytes on a private tmpfs mounted with
    /// `huge=within_size`, so that the kernel backs it with 2 MiB transparent huge pages
    /// and aligns every process's mapping of it to 2 MiB — a memfd gets neither unless the
    /// host's `shmem_enabled` says so. Nothing is reserved up front and no hugetlb pool is
    /// needed; the tmpfs exists only through the returned descriptor. Needs
    /// CAP_SYS_ADMIN or unprivileged user namespaces; otherwise throws, naming the step.
    public static func createTransparentHuge(size: Int) throws(SystemError) -> OwnedFD {
        // `deny` (or a kernel without THP) would silently give 4 KiB pages: say so instead.
        guard let policy = readSmallFile("/sys/kernel/mm/transparent_hugepage/shmem_enabled") else {
            throw SystemError("no transparent huge pages in this kernel", errno: ENOTSUP)
        }
        if policy.contains("[deny]") {
            throw SystemError("shmem huge pages denied by /sys/kernel/mm/transparent_hugepage/shmem_enabled", errno: ENOTSUP)
        }
        // The tmpfs limit: the file plus a little, in KiB (tmpfs rounds to pages anyway).
        let options = "huge=within_size,size=\((size >> 10) + 4096)k,nr_inodes=16,mode=0700"
        var stage: Int32 = 0
        let raw = trellis_private_tmpfs_file(options, off_t(size), &stage)
        if raw < 0 {
            let code = errno
            throw SystemError("private tmpfs (\(tmpfsStage(stage)))", errno: code)
        }
        return OwnedFD(adopting: raw)
    }

    /// The first 4 KiB of a (proc or sys) file as text, or nil.
    static func readSmallFile(_ path: String) -> String? {
        let raw = open(path, O_RDONLY | O_CLOEXEC)
        guard raw >= 0 else { return nil }
        let fd = OwnedFD(adopting: raw)
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { read(fd.raw, $0.baseAddress, $0.count) }
        return n >= 0 ? String(decoding: bytes.prefix(n), as: UTF8.self) : nil
    }

    private static func tmpfsStage(_ stage: Int32) -> String {
        switch stage {
        case Int32(TRELLIS_TMPFS_FORK): "socketpair or fork"
        case Int32(TRELLIS_TMPFS_UNSHARE): "unshare"
        case Int32(TRELLIS_TMPFS_IDMAP): "user namespace id map"
        case Int32(TRELLIS_TMPFS_PRIVATE): "private mount propagation"
        case Int32(TRELLIS_TMPFS_MOUNT): "mount tmpfs"
        case Int32(TRELLIS_TMPFS_OPEN): "O_TMPFILE"
        case Int32(TRELLIS_TMPFS_TRUNCATE): "ftruncate"
        default: "stage \(stage)"
        }
    }

    /// Gives `[offset, offset+length)` of the file its pages now (`fallocate`, mode 0), so
    /// that processes mapping it later take cheap minor faults on existing pages instead
    /// of allocating and zeroing fresh ones.
    public static func allocate(fd: Int32, offset: Int, length: Int) throws(SystemError) {
        guard length > 0 else { return }
        var rc: Int32
        repeat { rc = posix_fallocate(fd, off_t(offset), off_t(length)) } while rc == EINTR
        if rc != 0 { throw SystemError("fallocate", errno: rc) }
    }

    /// Returns the pages of `[offset, offset+length)` to the OS (the range reads as zeros after).
    public static func punchHole(fd: Int32, offset: Int, length: Int) throws(SystemError) {
        guard length > 0 else { return }
        _ = try syscallRetrying("fallocate(PUNCH_HOLE)") {
            trellis_punch_hole(fd, off_t(offset), off_t(length))
        }
    }

    public static let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))
}
