import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

extension ObjectStore {
    /// `move_buffers_ownership`: takes sealed blobs of `source` (another session's store)
    /// into this one under the target ids, and deletes them there. Sessions have arenas of
    /// their own, so the bytes are copied (upstream hands the allocation over); all or none:
    /// a blob that is missing, unsealed or does not fit leaves both stores as they were.
    public func adoptBlobs(
        from source: ObjectStore, _ moves: [Request.BlobMove], connection: ConnectionID
    ) throws(VineyardError) {
        let moves = moves.filter { $0.source != .emptyBlob }
        guard !moves.isEmpty else { return }
        let found = try source.getBlobs(moves.map(\.source), unsafe: false, connection: connection)
        defer { source.release(moves.map(\.source), connection: connection) }
        let bySource = Dictionary(found.map { ($0.objectID, $0) }, uniquingKeysWith: { a, _ in a })
        var made: [ObjectID] = []
        do throws(VineyardError) {
            for m in moves {
                guard let p = bySource[m.source] else {
                    throw VineyardError(.objectNotExists, "move_buffers_ownership: blob \(m.source) is not a sealed blob of the source session")
                }
                let rec = try withState { (s) throws(VineyardError) in try s.adoptBlob(m.target, size: p.dataSize, connection: connection) }
                made.append(m.target)
                memcpy(arena.address(rec.offset), source.arena.address(p.dataOffset), p.dataSize)
            }
        } catch {
            for id in made { try? dropBlob(id, connection: connection) }
            throw error
        }
        for id in made { try seal(id, connection: connection) }
        release(made, connection: connection)
        for m in moves { try? source.dropBlob(m.source, connection: connection) }
    }
}
