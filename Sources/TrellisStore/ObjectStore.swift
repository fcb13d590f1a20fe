import Synchronization
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// What the store reports about itself (`instance_status`, `trellis status`).
public struct StoreStatus: Sendable, Equatable {
    public var instanceID: UInt64
    public var memoryUsage: Int
    public var memoryLimit: Int
    public var freeBytes: Int
    public var largestFreeBlock: Int
    public var fragmentation: Double
    public var objects: Int
    public var blobs: Int
    public var names: Int
    /// Bytes of blobs written to the spill directory (out of the arena).
    public var spilledBytes: Int = 0
    /// Bytes of deleted blobs still used by other connections (counted in `memoryUsage`
    /// until the last of them releases them or disconnects).
    public var retiredBytes: Int = 0
}

/// An object that became persistent (for the cluster metadata to publish).
public struct PersistedObject: Sendable, Equatable {
    public var id: ObjectID
    public var tree: JSON
}

/// The in-memory immutable object store: blobs in one shared-memory arena, metadata
/// trees, names and the dependency graph.
///
/// One lock guards a value-typed state; every public method takes it once, decides,
/// and performs effects (returning pages to the OS, waking waiters) after releasing it.
/// Nothing here touches sockets.
public final class ObjectStore: Sendable {
    public let arena: Arena
    public let instanceID: UInt64
    private let state: Mutex<StoreState>
    private let clock: @Sendable () -> UInt64
    /// Where idle blobs go when the arena is full (`--spill_path`); nil: never spill.
    public let spill: SpillDirectory?
    /// Serialises spilling and reloading (file I/O runs outside the state lock).
    let spillGate = Mutex<Void>(())
    /// Parked requests woken so far (each wake-up of one waiter counts once); for tests.
    let wakeUps = Atomic<Int>(0)
    /// Parked requests woken so far.
    public var wakeUpCount: Int { wakeUps.load(ordering: .relaxed) }

    /// - Parameters:
    ///   - capacity: bytes of blob memory (`--size`).
    ///   - prefault: when the arena gets its pages (`--reserve_memory`, `--reserve_in_background`).
    ///   - spill: where idle blobs go when the arena is full (nil: NotEnoughMemory instead).
    ///   - clock: milliseconds since the epoch (injected for tests).
    public init(
        capacity: Int, instanceID: UInt64 = 0, prefault: Arena.Prefault = .none, pages: Arena.Pages = .small,
        spill: SpillDirectory? = nil, clock: @escaping @Sendable () -> UInt64 = ObjectStore.wallClockMillis
    ) throws(SystemError) {
        arena = try Arena(capacity: capacity, prefault: prefault, pages: pages)
        self.instanceID = instanceID
        self.spill = spill
        self.clock = clock
        state = Mutex(StoreState(capacity: arena.capacity, instance: instanceID))
    }

    public static let wallClockMillis: @Sendable () -> UInt64 = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    // MARK: - Blobs

    private func payload(_ id: ObjectID, _ b: BlobRecord) -> Payload {
        Payload(
            objectID: id, storeFD: arena.fd.raw, dataOffset: b.offset, dataSize: b.size, mapSize: arena.mapSize,
            pointer: UInt64(UInt(bitPattern: arena.address(b.offset))), isSealed: b.sealed)
    }

    /// Allocates unsealed blobs for `connection` (all or none). With a spill directory, a
    /// full arena first spills idle blobs (least recently used first) to make room.
    public func createBlobs(sizes: [Int], connection: ConnectionID) throws(VineyardError) -> [Payload] {
        // A request no arena could hold fails now (before spilling every idle blob for nothing,
        // and before any size arithmetic could overflow).
        let capacity = arena.capacity
        if let tooLarge = sizes.first(where: { $0 < 0 || $0 > capacity }) {
            throw VineyardError(
                .notEnoughMemory,
                "Failed to allocate memory of size \(tooLarge): larger than the whole arena (\(capacity) bytes)")
        }
        guard let spill else { return try createBlobsOnce(sizes: sizes, connection: connection) }
        var attempts = 0
        while true {
            do {
                return try createBlobsOnce(sizes: sizes, connection: connection)
            } catch where error.code == .notEnoughMemory {
                attempts += 1
                let needed = sizes.max() ?? 0
                let retry = spillGate.withLock { _ in spillLocked(spill, forRoom: needed, excluding: []) }
                if !retry || attempts >= Self.spillAttempts { throw error }
            }
        }
    }

    private func createBlobsOnce(sizes: [Int], connection: ConnectionID) throws(VineyardError) -> [Payload] {
        let now = clock()
        let made = try withState { (s) throws(VineyardError) in try s.createBlobs(sizes: sizes, connection: connection, now: now) }
        return made.map { $0.map { payload($0.id, $0.record) } ?? .empty }
    }

    public func createBlob(size: Int, connection: ConnectionID) throws(VineyardError) -> Payload {
        try createBlobs(sizes: [size], connection: connection)[0]
    }

    /// A new blob of `count` int64 values `start, start + step, …` (wrapping on overflow),
    /// written here and sealed for `connection` (the `range_buffer` extension).
    public func createRangeBlob(start: Int64, step: Int64, count: Int, connection: ConnectionID) throws(VineyardError) -> Payload {
        guard count >= 0, count <= Int.max / 8 else {
            throw VineyardError(.invalid, "Invalid message: a range of \(count) values")
        }
        var p = try createBlob(size: count * 8, connection: connection)
        guard count > 0 else { return p }
        let values = arena.address(p.dataOffset).bindMemory(to: Int64.self, capacity: count)
        for i in 0..<count { values[i] = start &+ Int64(i) &* step }
        do {
            try seal(p.objectID, connection: connection)
        } catch {
            try? dropBlob(p.objectID, connection: connection)
            throw error
        }
        p.isSealed = true
        return p
    }

    /// Seals a blob (idempotent) and records `connection` as a user.
    public func seal(_ id: ObjectID, connection: ConnectionID) throws(VineyardError) {
        if id == .emptyBlob { return }
        run(try withState { (s) throws(VineyardError) in try s.seal(id, connection: connection) })
    }

    /// Payloads of the requested blobs in request order; unknown ids are skipped, an
    /// unsealed blob is an error unless `unsafe`. Spilled blobs are read back first; the
    /// connection's use then keeps them in the arena.
    public func getBlobs(_ ids: [ObjectID], unsafe: Bool, connection: ConnectionID) throws(VineyardError) -> [Payload] {
        while true {
            let (found, spilled) = try withState { (s) throws(VineyardError) in try s.useBlobs(ids, unsafe: unsafe, connection: connection) }
            let out = found.map { $0.map { payload($0.id, $0.record) } ?? .empty }
            guard let spill, !spilled.isEmpty else { return out }
            // Read them back, then answer again from the arena.
            try reload(spill, spilled)
        }
    }

    /// Deletes one blob outright (BlobBuilder.abort), ignoring references; its memory is
    /// reused once no other connection uses it.
    public func dropBlob(_ id: ObjectID, connection: ConnectionID? = nil) throws(VineyardError) {
        if id == .emptyBlob { return }
        run(try withState { (s) throws(VineyardError) in try s.dropBlob(id, connection: connection) })
    }

    /// Cuts an unsealed blob of `connection`'s into consecutive blobs of `sizes` bytes
    /// (Trellis' `split_buffer` extension); returns their ids in order.
    public func splitBlob(_ id: ObjectID, sizes: [Int], seal: Bool = false, connection: ConnectionID) throws(VineyardError) -> [ObjectID] {
        let now = clock()
        let (pieces, effects) = try withState { (s) throws(VineyardError) in
            try s.splitBlob(id, sizes: sizes, seal: seal, connection: connection, now: now)
        }
        run(effects)
        return pieces.map(\.id)
    }

    public func shrinkBlob(_ id: ObjectID, size: Int) throws(VineyardError) {
        try withState { (s) throws(VineyardError) in try s.shrinkBlob(id, size: size) }
    }

    /// Drops `connection`'s use of blobs (of deleted ones too: the last use frees their memory).
    public func release(_ ids: [ObjectID], connection: ConnectionID) {
        locked { $0.release(ids, connection: connection) }
    }

    public func addUse(_ ids: [ObjectID], connection: ConnectionID) {
        locked { s in for id in ids { s.addUser(id, connection) } }
    }

    /// Whether the blob is in the spill directory rather than the arena.
    public func isSpilled(_ id: ObjectID) -> Bool { locked { $0.blobs[id]?.spilled ?? false } }

    public func isInUse(_ id: ObjectID) -> Bool { locked { !($0.blobs[id]?.users.isEmpty ?? true) } }

    /// A connection went away: its unsealed blobs are reclaimed and its uses dropped.
    /// Returns how many blobs were reclaimed.
    @discardableResult
    public func disconnect(_ connection: ConnectionID) -> Int {
        locked { $0.disconnect(connection) }
    }

    // MARK: - Status

    public func status() -> StoreStatus {
        locked { s in
            StoreStatus(
                instanceID: instanceID, memoryUsage: s.allocator.allocatedBytes, memoryLimit: s.allocator.capacity,
                freeBytes: s.allocator.freeBytes, largestFreeBlock: s.allocator.largestFreeBlock,
                fragmentation: s.allocator.fragmentation, objects: s.objects.count, blobs: s.blobs.count,
                names: s.names.count, spilledBytes: s.spilledBytes, retiredBytes: s.retiredBytes)
        }
    }

    // MARK: - Effects

    /// Returns the pages of quarantined blocks to the OS, then puts the blocks back.
    func trimAndReturn(_ blocks: [(start: Int, size: Int)]) {
        guard !blocks.isEmpty else { return }
        for b in blocks { arena.trim(offset: b.start, length: b.size) }
        state.withLock { s in
            for b in blocks { s.allocator.returnQuarantined(start: b.start, size: b.size) }
        }
    }

    func wake(_ waiters: [Waiter]) {
        if waiters.isEmpty { return }
        wakeUps.add(waiters.count, ordering: .relaxed)
        for w in waiters { w.signal() }
    }

    /// Withdraws all free memory, returns its pages to the OS and puts it back.
    public func trimFreeMemory() {
        let blocks = state.withLock { $0.allocator.quarantineAllFree() }
        trimAndReturn(blocks)
    }

    // MARK: - Internal access for the metadata extension

    func withState<R>(_ body: (inout StoreState) throws(VineyardError) -> R) throws(VineyardError) -> R {
        try state.withLock { (s) throws(VineyardError) -> R in try body(&s) }
    }

    /// The lock around a decision that cannot fail.
    @discardableResult
    func locked<R>(_ body: (inout StoreState) -> R) -> R {
        state.withLock { body(&$0) }
    }

    /// Runs what a decision left for after the lock: trims, spill files, wake-ups.
    func run(_ effects: StoreEffects) {
        trimAndReturn(effects.trim)
        if let spill { for id in effects.removeSpillFiles { spill.remove(id) } }
        if effects.trimAllFree { trimFreeMemory() }
        // the tables were rebuilt smaller: hand the heap they left behind back to the OS
        if effects.trimHeap { trimHeap() }
        wake(effects.wake)
    }

    func now() -> UInt64 { clock() }
}
