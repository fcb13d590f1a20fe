/// An allocator for one arena of `capacity` bytes whose bookkeeping lives outside the
/// arena (the arena is shared memory that clients map; writing headers into it would
/// fault pages nobody asked for and let a client corrupt the allocator).
///
/// Two-level segregated fit: free blocks sit in bins by size (8 sub-bins per power of
/// two), a bitmap finds the first non-empty bin that is certain to fit in O(1), and
/// neighbours are coalesced on free through maps keyed by block start and end.
/// Allocation and free are O(1) (hash lookups and a few bit scans). Every block is
/// aligned to ``alignment`` bytes.
///
/// Small bins are searched first, so recently freed (already faulted) memory is reused
/// before the untouched tail of the arena; the tail block is always split from its low
/// end, so the arena is consumed bottom-up.
public struct Allocator: Sendable {
    public static let alignment = 64
    static let subBinBits = 3
    static let subBins = 1 << subBinBits

    public let capacity: Int
    /// Free blocks: start → size, and end → start for coalescing.
    private var freeByStart: [Int: Int] = [:]
    private var freeByEnd: [Int: Int] = [:]
    /// Allocated blocks: start → size (rounded).
    private var allocated: [Int: Int] = [:]
    /// Pieces of a block cut at offsets the alignment does not allow as blocks of their
    /// own (see ``split(_:sizes:)``): piece start → the start of the block they share.
    private var pieceBlock: [Int: Int] = [:]
    /// Blocks shared by such pieces: start → pieces not yet freed.
    private var livePieces: [Int: Int] = [:]
    private var bins: [Set<Int>]
    private var bitmap: [UInt64]
    public private(set) var allocatedBytes = 0
    public private(set) var freeBytes: Int

    public init(capacity: Int) {
        let cap = capacity - capacity % Self.alignment
        self.capacity = cap
        let binCount = 64 * Self.subBins
        bins = Array(repeating: [], count: binCount)
        bitmap = Array(repeating: 0, count: (binCount + 63) / 64)
        freeBytes = 0
        if cap > 0 { insertFree(start: 0, size: cap) }
    }

    // MARK: Bins

    /// The bin holding blocks of exactly `size` bytes (sizes in [lower, upper) of the bin).
    @inline(__always)
    static func binIndex(forSize size: Int) -> Int {
        let units = size / alignment  // ≥ 1
        if units < subBins { return units }
        let log = (Int.bitWidth - 1) - units.leadingZeroBitCount
        let sub = (units >> (log - subBinBits)) & (subBins - 1)
        return (log - subBinBits + 1) * subBins + sub
    }

    /// The lowest bin whose every block is ≥ `size` bytes.
    @inline(__always)
    static func searchBin(forSize size: Int) -> Int {
        let units = size / alignment
        if units < subBins { return units }
        let log = (Int.bitWidth - 1) - units.leadingZeroBitCount
        let step = 1 << (log - subBinBits)
        let roundedUnits = units + step - 1  // round up to the bin boundary
        let rlog = (Int.bitWidth - 1) - roundedUnits.leadingZeroBitCount
        let sub = (roundedUnits >> (rlog - subBinBits)) & (subBins - 1)
        return (rlog - subBinBits + 1) * subBins + sub
    }

    private mutating func insertFree(start: Int, size: Int) {
        freeByStart[start] = size
        freeByEnd[start + size] = start
        let b = Self.binIndex(forSize: size)
        bins[b].insert(start)
        bitmap[b >> 6] |= 1 << UInt64(b & 63)
        freeBytes += size
    }

    private mutating func removeFree(start: Int, size: Int) {
        freeByStart[start] = nil
        freeByEnd[start + size] = nil
        let b = Self.binIndex(forSize: size)
        bins[b].remove(start)
        if bins[b].isEmpty { bitmap[b >> 6] &= ~(1 << UInt64(b & 63)) }
        freeBytes -= size
    }

    private func firstNonEmptyBin(from index: Int) -> Int? {
        var word = index >> 6
        guard word < bitmap.count else { return nil }
        var bits = bitmap[word] & (~0 << UInt64(index & 63))
        while true {
            if bits != 0 { return word << 6 + bits.trailingZeroBitCount }
            word += 1
            if word >= bitmap.count { return nil }
            bits = bitmap[word]
        }
    }

    // MARK: API

    /// The size a request of `size` bytes really takes.
    @inline(__always)
    public static func roundedSize(_ size: Int) -> Int {
        max(alignment, (size + alignment - 1) & ~(alignment - 1))
    }

    /// Allocates `size` bytes; returns the offset, or nil when no free block is large enough.
    public mutating func allocate(_ size: Int) -> Int? {
        guard size >= 0, size <= capacity else { return nil }
        let need = Self.roundedSize(size)
        var start: Int
        var blockSize: Int
        if let bin = firstNonEmptyBin(from: Self.searchBin(forSize: need)) {
            // Every block in this bin fits; any will do (O(1)).
            start = bins[bin].first!
            blockSize = freeByStart[start]!
        } else {
            // Near capacity the request's own bin may still hold a block that is large
            // enough; this scan of one bin only runs when the O(1) search failed.
            let b = Self.binIndex(forSize: need)
            guard let s = bins[b].filter({ freeByStart[$0]! >= need }).min() else { return nil }
            start = s
            blockSize = freeByStart[s]!
        }
        removeFree(start: start, size: blockSize)
        if blockSize > need {
            insertFree(start: start + need, size: blockSize - need)
            blockSize = need
        }
        allocated[start] = blockSize
        allocatedBytes += blockSize
        return start
    }

    /// Frees the block at `offset`; returns the coalesced free block it now belongs to.
    /// For a piece of a shared block (``split(_:sizes:)``) the block is freed with the last
    /// of its pieces; until then nothing is freed (nil).
    @discardableResult
    public mutating func free(_ offset: Int) -> (start: Int, size: Int)? {
        var offset = offset
        if let block = pieceBlock.removeValue(forKey: offset) {
            let left = livePieces[block, default: 1] - 1
            guard left == 0 else {
                livePieces[block] = left
                return nil
            }
            livePieces[block] = nil
            offset = block
        } else if livePieces[offset] != nil {
            return nil  // a shared block whose first piece was freed already: its others live
        }
        guard let size = allocated.removeValue(forKey: offset) else { return nil }
        allocatedBytes -= size
        return coalescingInsert(start: offset, size: size)
    }

    /// Frees the block at `offset` and takes the coalesced free block it belongs to out
    /// of circulation, so that its pages can be returned to the OS without the lock
    /// held and without anyone allocating them meanwhile. Hand it back with
    /// ``returnQuarantined(start:size:)``.
    public mutating func freeIntoQuarantine(_ offset: Int) -> (start: Int, size: Int)? {
        guard let block = free(offset) else { return nil }
        removeFree(start: block.start, size: block.size)
        quarantinedBytes += block.size
        return block
    }

    /// Gives back the spare capacity of the bookkeeping tables (removing entries keeps a
    /// dictionary's capacity: after 100,000s of blocks they would hold megabytes of empty
    /// slots). Called when the store is cleared.
    public mutating func releaseSpareCapacity() {
        func shrink<K: Hashable, V>(_ d: inout [K: V]) {
            guard d.capacity > 256, d.count < d.capacity / 4 else { return }
            var fresh = [K: V](minimumCapacity: d.count)
            for (k, v) in d { fresh[k] = v }
            d = fresh
        }
        shrink(&freeByStart)
        shrink(&freeByEnd)
        shrink(&allocated)
        shrink(&pieceBlock)
        shrink(&livePieces)
        for i in bins.indices where bins[i].capacity > 256 && bins[i].count < bins[i].capacity / 4 {
            var fresh = Set<Int>(minimumCapacity: bins[i].count)
            fresh.formUnion(bins[i])
            bins[i] = fresh
        }
    }

    /// Takes every free block out of circulation (for trimming the whole arena).
    public mutating func quarantineAllFree() -> [(start: Int, size: Int)] {
        let blocks = freeBlocks
        for b in blocks {
            removeFree(start: b.start, size: b.size)
            quarantinedBytes += b.size
        }
        return blocks
    }

    /// Puts a quarantined block back into the free space.
    public mutating func returnQuarantined(start: Int, size: Int) {
        quarantinedBytes -= size
        coalescingInsert(start: start, size: size)
    }

    public private(set) var quarantinedBytes = 0

    @discardableResult
    private mutating func coalescingInsert(start offset: Int, size: Int) -> (start: Int, size: Int) {
        var start = offset
        var total = size
        if let prevStart = freeByEnd[start], let prevSize = freeByStart[prevStart] {
            removeFree(start: prevStart, size: prevSize)
            start = prevStart
            total += prevSize
        }
        if let nextSize = freeByStart[offset + size] {
            removeFree(start: offset + size, size: nextSize)
            total += nextSize
        }
        insertFree(start: start, size: total)
        return (start, total)
    }

    /// Shrinks an allocated block in place, returning the tail to the free space.
    public mutating func shrink(_ offset: Int, to size: Int) {
        // (a piece keeps its block)
        guard pieceBlock[offset] == nil, livePieces[offset] == nil, let old = allocated[offset] else { return }
        let need = Self.roundedSize(size)
        guard need < old else { return }
        allocated[offset] = need
        allocatedBytes -= old - need
        var tailSize = old - need
        if let nextSize = freeByStart[offset + old] {
            removeFree(start: offset + old, size: nextSize)
            tailSize += nextSize
        }
        insertFree(start: offset + need, size: tailSize)
    }

    /// Cuts the allocated block at `offset` into consecutive pieces of `sizes` bytes that
    /// tile it from its start, each freed on its own from now on. When every piece but the
    /// last is a multiple of ``alignment``, the pieces become blocks of their own (what the
    /// last leaves of the block's rounding returns to the free space). Otherwise they share
    /// the block, which is freed with the last of them (a column of 600,001 int64 values
    /// is not a whole number of 64-byte units, and its neighbour starts where it ends).
    /// The pieces must not outgrow the block; a piece of a shared block is not cut again.
    /// Returns the pieces' offsets, or nil (and changes nothing) when the cut is not possible.
    public mutating func split(_ offset: Int, sizes: [Int]) -> [Int]? {
        guard pieceBlock[offset] == nil, livePieces[offset] == nil, let old = allocated[offset], !sizes.isEmpty else {
            return nil
        }
        var starts: [Int] = []
        starts.reserveCapacity(sizes.count)
        var at = offset
        var aligned = true
        for (i, size) in sizes.enumerated() {
            guard size > 0 else { return nil }
            if i < sizes.count - 1 && size % Self.alignment != 0 { aligned = false }
            starts.append(at)
            at += size
        }
        guard at - offset <= old else { return nil }
        guard aligned else {
            for start in starts { pieceBlock[start] = offset }
            livePieces[offset] = sizes.count
            return starts
        }
        for (start, size) in zip(starts.dropLast(), sizes.dropLast()) { allocated[start] = size }
        allocated[starts[starts.count - 1]] = offset + old - starts[starts.count - 1]
        shrink(starts[starts.count - 1], to: sizes[sizes.count - 1])
        return starts
    }

    /// Pieces sharing blocks (for tests and diagnostics).
    public var sharedPieceCount: Int { pieceBlock.count }

    /// The largest block that could be allocated now.
    public var largestFreeBlock: Int {
        guard let top = (0..<bitmap.count).reversed().first(where: { bitmap[$0] != 0 }) else { return 0 }
        let bin = top << 6 + (63 - bitmap[top].leadingZeroBitCount)
        return bins[bin].map { freeByStart[$0]! }.max() ?? 0
    }

    /// External fragmentation in [0, 1]: 1 − largest free block / free bytes.
    public var fragmentation: Double {
        freeBytes == 0 ? 0 : 1 - Double(largestFreeBlock) / Double(freeBytes)
    }

    public var freeBlockCount: Int { freeByStart.count }
    public var allocationCount: Int { allocated.count }

    /// All free blocks, by start (for tests and diagnostics).
    public var freeBlocks: [(start: Int, size: Int)] {
        freeByStart.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }
}
