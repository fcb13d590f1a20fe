import Synchronization
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// Where blobs go when the arena is full (`--spill_path`): one file per blob, named by id.
///
/// Only sealed blobs that no connection uses are spilled; a spilled blob is read back
/// into the arena the next time a client asks for it, so clients always map arena
/// memory and never see a spilled blob.
public struct SpillDirectory: Sendable {
    public let path: String

    /// Creates the directory if needed.
    public init(path: String) throws(SystemError) {
        self.path = path
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw SystemError("mkdir \(path)") }
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw SystemError("spill path \(path) is not a directory", errno: ENOTDIR)
        }
    }

    func file(_ id: ObjectID) -> String { path + "/" + id.description }

    private func openFile(_ id: ObjectID, _ flags: Int32) throws(SystemError) -> OwnedFD {
        let path = file(id)
        return OwnedFD(adopting: try syscallRetrying("open \(path)") { open(path, flags | O_CLOEXEC, 0o600) })
    }

    /// Writes `count` bytes at `source` to the blob's file (replacing it).
    func write(_ id: ObjectID, from source: UnsafeRawPointer, count: Int) throws(SystemError) {
        let fd = try openFile(id, O_WRONLY | O_CREAT | O_TRUNC)
        var done = 0
        while done < count {
            done += try syscallRetrying("write \(file(id))") { pwrite(fd.raw, source + done, count - done, off_t(done)) }
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

    func remove(_ id: ObjectID) { unlink(file(id)) }
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
        var roomAlready = false
        let victims: [(id: ObjectID, offset: Int, size: Int)] = (try? withState { (s) throws(VineyardError) in
            if s.allocator.largestFreeBlock >= bytes {
                roomAlready = true
                return []
            }
            let idle = s.blobs.filter { !$0.value.spilled && $0.value.sealed && $0.value.users.isEmpty && !excluding.contains($0.key) }
                .sorted { $0.value.lastUse < $1.value.lastUse }
            var picked: [(ObjectID, Int, Int)] = []
            var freed = 0
            // Twice the request: freed blocks need not be adjacent; the caller retries if short.
            for (id, b) in idle where freed < 2 * bytes {
                picked.append((id, b.offset, b.size))
                freed += b.size
            }
            return picked
        }) ?? []
        if roomAlready { return true }
        guard !victims.isEmpty else { return false }
        var written: [(id: ObjectID, offset: Int, size: Int)] = []
        for v in victims {
            do {
                try spill.write(v.id, from: arena.address(v.offset), count: v.size)
                written.append(v)
            } catch {
                spill.remove(v.id)  // a full disk: keep the blob in memory
            }
        }
        let discarded: [ObjectID] = (try? withState { (s) throws(VineyardError) in
            var discarded: [ObjectID] = []
            for v in written {
                // Deleted, or fetched by a client meanwhile: the file is not the truth.
                guard var b = s.blobs[v.id], !b.spilled, b.offset == v.offset, b.users.isEmpty else {
                    discarded.append(v.id)
                    continue
                }
                s.allocator.free(b.offset)
                b.spilled = true
                b.offset = -1
                s.blobs[v.id] = b
                s.spilledBytes += b.size
            }
            return discarded
        }) ?? []
        for id in discarded { spill.remove(id) }
        return written.count > discarded.count
    }

    /// Reads spilled blobs among `ids` back into the arena (spilling others to make room).
    func reload(_ spill: SpillDirectory, _ ids: [ObjectID]) throws(VineyardError) {
        try spillGate.withLock { _ throws(VineyardError) in
            let todo: [(ObjectID, Int)] = try withState { s in
                ids.compactMap { id in s.blobs[id].flatMap { $0.spilled ? (id, $0.size) : nil } }
            }
            let keep = Set(ids)
            for (id, size) in todo {
                var offset: Int?
                for _ in 0..<Self.spillAttempts {
                    offset = try withState { s in s.allocator.allocate(size) }
                    if offset != nil || !spillLocked(spill, forRoom: size, excluding: keep) { break }
                }
                guard let offset else {
                    throw try withState { s in self.outOfMemory(size, s) }
                }
                do {
                    try spill.read(id, into: arena.address(offset), count: size)
                } catch {
                    _ = try withState { s in s.allocator.free(offset) }
                    // Deleted while we were reading: the caller skips unknown ids.
                    if try withState({ s in s.blobs[id] == nil }) { continue }
                    throw VineyardError(.ioError, "cannot read spilled blob \(id) back: \(error)")
                }
                let placed = try withState { s -> Bool in
                    guard var b = s.blobs[id], b.spilled else {
                        s.allocator.free(offset)
                        return false
                    }
                    b.offset = offset
                    b.spilled = false
                    s.spilledBytes -= b.size
                    s.blobs[id] = b
                    return true
                }
                if placed { spill.remove(id) }
            }
        }
    }
}
