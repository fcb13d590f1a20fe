/// Ids in ascending order, so that `list_data` walks from the smallest id and stops at its
/// limit instead of copying and sorting every id the store holds (the store's objects and
/// blobs, and the cluster's persisted objects as a daemon mirrors them).
///
/// Ids grow with time (``ObjectIDGenerator``), so an insert is almost always an
/// append; an id from elsewhere (a cluster import, a session's blob) is placed by binary
/// search. Removal is lazy: the id stays until the removed outnumber the rest, then the
/// array is compacted, so each removal costs amortized O(1). Readers skip ids that are
/// gone (`isLive`); an id that comes back is not stored twice.
public struct IDOrder: Sendable {
    public private(set) var ids: [ObjectID] = []
    /// Entries whose id is gone (an upper bound: compaction recounts).
    public private(set) var removed = 0

    /// Index of the first id ≥ `id`.
    private func lowerBound(_ id: ObjectID) -> Int {
        var lo = 0
        var hi = ids.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ids[mid] < id { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public init() {}

    public mutating func insert(_ id: ObjectID) {
        guard let last = ids.last, id <= last else {
            ids.append(id)
            return
        }
        let i = lowerBound(id)
        if i < ids.count && ids[i] == id {
            removed = max(0, removed - 1)  // it was removed and is back
        } else {
            ids.insert(id, at: i)
        }
    }

    /// One id went away; compacts when most entries are gone.
    public mutating func remove(_ id: ObjectID, isLive: (ObjectID) -> Bool) {
        removed += 1
        if removed > 1024 && removed > ids.count / 2 {
            ids.removeAll { !isLive($0) }
            removed = 0
        }
    }

    public mutating func removeAll() {
        ids = []
        removed = 0
    }

    /// Up to `count` live ids greater than `after` (from the start when nil), in order, and
    /// whether the walk stopped short of the end.
    public func page(after: ObjectID?, count: Int, isLive: (ObjectID) -> Bool) -> (ids: [ObjectID], more: Bool) {
        var i = 0
        if let after {
            i = lowerBound(after)
            if i < ids.count && ids[i] == after { i += 1 }
        }
        var out: [ObjectID] = []
        while i < ids.count {
            if out.count >= count { return (out, true) }
            if isLive(ids[i]) { out.append(ids[i]) }
            i += 1
        }
        return (out, false)
    }
}
