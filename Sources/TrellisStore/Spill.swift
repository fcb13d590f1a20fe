import Synchronization
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// Where blobs go when the arena is full (`--spill_path`): one file per blob.
///
/// Only sealed blobs that no connection uses are spilled; a spilled blob is read back
/// into the arena the next time a client asks for it, so clients always map arena
/// memory and never see a spilled blob.
///
/// The daemon often runs as root and the directory may be shared, so: a directory it
/// creates is 0700; an existing one is refused when it is a symbolic link, owned by
/// another user, or writable by group or others; files are opened relative to the
/// directory's descriptor with `O_NOFOLLOW` (and `O_EXCL` when written), under names
/// carrying a random per-daemon token, so nobody can predict or pre-plant them; spill
/// files (this and earlier daemons') are removed at start and by ``removeAll()`` at stop.
public final class SpillDirectory: Sendable {
    public let path: String
    private let directory: OwnedFD
    /// 128 random bits in hex, fixed for this daemon.
    private let token: String
    /// Every spill file's name starts with this (what start and stop clean up).
    public static let filePrefix = "trellis-spill-"

    /// Opens (or creates, 0700) the directory, checks who may write it, and removes
    /// spill files left by an earlier daemon.
    public init(path: String) throws(SystemError) {
        self.path = path
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw SystemError("mkdir \(path)") }
        let raw = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if raw < 0 {
            let e = errno
            if e == ELOOP || e == ENOTDIR {
                var st = stat()
                let isLink = lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK
                throw SystemError("spill path \(path) is \(isLink ? "a symbolic link" : "not a directory"); refusing it", errno: e)
            }
            throw SystemError("open spill directory \(path)", errno: e)
        }
        let dir = OwnedFD(adopting: raw)
        var st = stat()
        if fstat(dir.raw, &st) != 0 { throw SystemError("fstat \(path)") }
        if let problem = Self.unsafeOwnership(owner: st.st_uid, mode: st.st_mode, me: geteuid()) {
            throw SystemError("spill directory \(path) \(problem); refusing it (use a directory only this user can write, e.g. mode 0700)", errno: EPERM)
        }
        directory = dir
        var rng = SystemRandomNumberGenerator()
        let hi = rng.next() as UInt64, lo = rng.next() as UInt64
        token = Self.hex(hi) + Self.hex(lo)
        _ = removeAll()
    }

    /// Why a directory with this owner and mode must not hold a root daemon's files, or nil.
    public static func unsafeOwnership(owner: uid_t, mode: mode_t, me: uid_t) -> String? {
        if owner != me { return "is owned by uid \(owner), not by this daemon's uid \(me)" }
        if mode & 0o022 != 0 { return "is writable by group or others (mode \(String(mode & 0o7777, radix: 8)))" }
        return nil
    }

    static func hex(_ v: UInt64) -> String {
        let h = String(v, radix: 16)
        return String(repeating: "0", count: 16 - h.count) + h
    }

    /// The file name of a blob's spill file (unpredictable without this daemon's token).
    public func fileName(_ id: ObjectID) -> String { Self.filePrefix + token + "-" + Self.hex(id.rawValue) }

    func file(_ id: ObjectID) -> String { path + "/" + fileName(id) }

    private func openFile(_ id: ObjectID, _ flags: Int32) throws(SystemError) -> OwnedFD {
        let name = fileName(id)
        let dir = directory.raw
        return OwnedFD(adopting: try syscallRetrying("open \(path)/\(name)") { openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, 0o600) })
    }

    /// Writes `count` bytes at `source` to a new file for the blob (a leftover file of
    /// the same name is removed first, never written through).
    func write(_ id: ObjectID, from source: UnsafeRawPointer, count: Int) throws(SystemError) {
        let fd = try createFile(id)
        var done = 0
        while done < count {
            done += try syscallRetrying("write \(file(id))") { pwrite(fd.raw, source + done, count - done, off_t(done)) }
        }
    }

    private func createFile(_ id: ObjectID) throws(SystemError) -> OwnedFD {
        do {
            return try openFile(id, O_WRONLY | O_CREAT | O_EXCL)
        } catch where error.errno == EEXIST {
            remove(id)
            return try openFile(id, O_WRONLY | O_CREAT | O_EXCL)
        }
    }

    /// Reads the blob's file (exactly `count` bytes) to `destination`.
    func read(_ id: ObjectID, into destination: UnsafeMutableRawPointer, count: Int) throws(SystemError) {
        let fd = try openFile(id, O_RDONLY)
        var done = 0
        while done < count {
            let n = try syscallRetrying("read \(file(id))") { pread(fd.raw, destination + done, count - done, off_t(done)) }
            if n == 0 { throw SystemError("read \(file(id)): \(done) of \(count) bytes", errno: EIO) }
            done += n
        }
    }

    func remove(_ id: ObjectID) { unlinkat(directory.raw, fileName(id), 0) }

    /// Removes every spill file in the directory (this daemon's and earlier ones');
    /// returns how many. Called at start and when the daemon stops.
    @discardableResult
    public func removeAll() -> Int {
        let copy = dup(directory.raw)
        guard copy >= 0, let d = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            return 0
        }
        defer { closedir(d) }
        rewinddir(d)  // the duplicate shares the offset an earlier listing left at the end
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasPrefix(Self.filePrefix) { names.append(name) }
        }
        var removed = 0
        for n in names where unlinkat(directory.raw, n, 0) == 0 { removed += 1 }
        return removed
    }
}

extension ObjectStore {
    /// Allocation attempts between spills before a request gives up (NotEnoughMemory):
    /// bounds the loop when the free space never forms a block that fits.
    static let spillAttempts = 64

    /// Spills idle blobs, least recently used first, until the allocator has a free block of
    /// `bytes` (or nothing more can go). Called with the spill gate held; writes files
    /// outside the state lock and commits only blobs that stayed idle and in place.
    /// Returns whether the caller should try allocating again: something was spilled, or
    /// room appeared meanwhile (another connection freed or spilled).
    func spillLocked(_ spill: SpillDirectory, forRoom bytes: Int, excluding: Set<ObjectID>) -> Bool {
        guard let victims = locked({ $0.spillVictims(forRoom: bytes, excluding: excluding) }) else { return true }
        guard !victims.isEmpty else { return false }
        return writeOut(spill, victims) > 0
    }

    /// Writes `victims` to their spill files (outside the state lock), then commits those
    /// that stayed idle and in place; returns how many went out of the arena. A blob whose
    /// file could not be written (a full disk) or that changed meanwhile stays in memory.
    /// Called with the spill gate held.
    func writeOut(_ spill: SpillDirectory, _ victims: [(id: ObjectID, offset: Int, size: Int)]) -> Int {
        var written: [(id: ObjectID, offset: Int, size: Int)] = []
        for v in victims {
            do {
                try spill.write(v.id, from: arena.address(v.offset), count: v.size)
                written.append(v)
            } catch {
                spill.remove(v.id)
            }
        }
        let discarded = locked { $0.commitSpilled(written) }
        for id in discarded { spill.remove(id) }
        return written.count - discarded.count
    }

    /// Reads spilled blobs among `ids` back into the arena (spilling others to make room).
    func reload(_ spill: SpillDirectory, _ ids: [ObjectID]) throws(VineyardError) {
        try spillGate.withLock { _ throws(VineyardError) in
            let todo = locked { $0.spilledAmong(ids) }
            let keep = Set(ids)
            for (id, size) in todo {
                var offset: Int?
                for _ in 0..<Self.spillAttempts {
                    offset = locked { $0.allocator.allocate(size) }
                    if offset != nil || !spillLocked(spill, forRoom: size, excluding: keep) { break }
                }
                guard let offset else {
                    throw locked { $0.outOfMemory(size) }
                }
                do {
                    try spill.read(id, into: arena.address(offset), count: size)
                } catch {
                    locked { $0.allocator.free(offset) }
                    // Deleted while we were reading: the caller skips unknown ids.
                    if locked({ $0.blobs[id] == nil }) { continue }
                    throw VineyardError(.ioError, "cannot read spilled blob \(id) back: \(error)")
                }
                let placed = locked { $0.commitReloaded(id, at: offset) }
                if placed { spill.remove(id) }
            }
        }
    }
}

extension ObjectStore {
    /// `evict`: writes the blobs of the named objects (or the named blobs) to the spill
    /// directory now, as a full arena would — those that no connection uses and that are
    /// not pinned; the others stay. Returns how many went. Without `--spill_path`, Invalid.
    @discardableResult
    public func evict(_ ids: [ObjectID]) throws(VineyardError) -> Int {
        guard let spill else {
            throw VineyardError(.invalid, "evict: the daemon runs without --spill_path, so nothing can be evicted")
        }
        return spillGate.withLock { _ in
            writeOut(spill, locked { s in s.evictable(s.blobIDs(of: ids)) })
        }
    }

    /// `load`: reads the named objects' spilled blobs back into the arena; with `pin`, they
    /// then stay there (never spilled) until `unpin`.
    public func load(_ ids: [ObjectID], pin: Bool) throws(VineyardError) {
        let blobs = locked { $0.blobIDs(of: ids) }
        if let spill { try reload(spill, blobs) }
        if pin { locked { s in for id in blobs { s.blobs[id]?.pinned = true } } }
    }

    /// `unpin`: the named objects' blobs may be spilled again.
    public func unpin(_ ids: [ObjectID]) {
        locked { s in for id in s.blobIDs(of: ids) { s.blobs[id]?.pinned = false } }
    }

    /// Whether the blob is pinned in the arena (`load(pin: true)`).
    public func isPinned(_ id: ObjectID) -> Bool { locked { $0.blobs[id]?.pinned ?? false } }
}

extension StoreState {
    /// The local blobs of the named objects (their whole trees) and the named blobs.
    func blobIDs(of ids: [ObjectID]) -> [ObjectID] {
        var out: [ObjectID] = []
        var seen = Set<ObjectID>()
        var stack = ids
        while let id = stack.popLast() {
            guard seen.insert(id).inserted else { continue }
            if blobs[id] != nil {
                out.append(id)
            } else if let rec = objects[id] {
                stack.append(contentsOf: rec.members.values)
            }
        }
        return out
    }

    /// Of `ids`, the blobs that may go to disk now: sealed, in the arena, unused, unpinned.
    func evictable(_ ids: [ObjectID]) -> [(id: ObjectID, offset: Int, size: Int)] {
        ids.compactMap { id in
            guard let b = blobs[id], b.sealed, !b.spilled, b.users.isEmpty, !b.pinned, b.size > 0 else { return nil }
            return (id, b.offset, b.size)
        }
    }

    /// The spilled blobs among `ids`, with their sizes.
    func spilledAmong(_ ids: [ObjectID]) -> [(ObjectID, Int)] {
        ids.compactMap { id in blobs[id].flatMap { $0.spilled ? (id, $0.size) : nil } }
    }

    /// A spilled blob was read back to `offset`: it lives in the arena again. False (and the
    /// memory freed) when it was deleted meanwhile.
    mutating func commitReloaded(_ id: ObjectID, at offset: Int) -> Bool {
        guard var b = blobs[id], b.spilled else {
            allocator.free(offset)
            return false
        }
        b.offset = offset
        b.spilled = false
        spilledBytes -= b.size
        blobs[id] = b
        return true
    }

    /// Idle blobs (sealed, unused, in the arena, least recently used first) worth about
    /// twice `bytes`, to be written out; nil when there is room already.
    func spillVictims(forRoom bytes: Int, excluding: Set<ObjectID>) -> [(id: ObjectID, offset: Int, size: Int)]? {
        if allocator.largestFreeBlock >= bytes { return nil }
        let idle = blobs.filter {
            !$0.value.spilled && $0.value.sealed && $0.value.users.isEmpty && !$0.value.pinned && !excluding.contains($0.key)
        }
            .sorted { $0.value.lastUse < $1.value.lastUse }
        var picked: [(id: ObjectID, offset: Int, size: Int)] = []
        var freed = 0
        // Twice the request: freed blocks need not be adjacent; the caller retries if short.
        let target = bytes > Int.max / 2 ? Int.max : 2 * bytes
        for (id, b) in idle where freed < target {
            picked.append((id, b.offset, b.size))
            freed += b.size
        }
        return picked
    }

    /// Marks written blobs spilled and frees their memory, unless they were deleted or
    /// fetched meanwhile (then the file is not the truth): returns those, whose files go.
    mutating func commitSpilled(_ written: [(id: ObjectID, offset: Int, size: Int)]) -> [ObjectID] {
        var discarded: [ObjectID] = []
        for v in written {
            guard var b = blobs[v.id], !b.spilled, b.offset == v.offset, b.users.isEmpty, !b.pinned else {
                discarded.append(v.id)
                continue
            }
            allocator.free(b.offset)
            b.spilled = true
            b.offset = -1
            blobs[v.id] = b
            spilledBytes += b.size
        }
        return discarded
    }
}
