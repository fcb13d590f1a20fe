import TrellisProtocol
import TrellisSystem

// Streams (`vineyard.io`): the lock around StoreState's stream decisions, and the parking
// of a reader waiting for a chunk or a writer waiting for room.
extension ObjectStore {
    public func createStream(_ id: ObjectID) throws(VineyardError) {
        try withState { (s) throws(VineyardError) in try s.createStream(id) }
    }

    /// Opens the stream for reading (1) or writing (2); each mode once.
    public func openStream(_ id: ObjectID, mode: Int) throws(VineyardError) {
        try withState { (s) throws(VineyardError) in try s.openStream(id, mode: mode) }
    }

    /// The writer's next chunk: queues the one it filled, then allocates `size` bytes for
    /// it. When the arena is full and the reader has chunks to finish, waits for the reader
    /// (as upstream parks the writer) instead of failing.
    public func nextStreamChunk(
        _ id: ObjectID, size: Int, connection: ConnectionID, watching client: Descriptor? = nil, cancelled: () -> Bool
    ) throws(VineyardError) -> Payload {
        run(try withState { (s) throws(VineyardError) in try s.beginNextChunk(id) })
        var payload: Payload
        do {
            payload = try createBlob(size: size, connection: connection)
        } catch where error.code == .notEnoughMemory && size <= arena.capacity {
            // (a chunk larger than the whole arena can never fit: that fails at once)
            var last = error
            let made: Payload? = wait(for: [.stream(id)], watching: client, cancelled: cancelled) {
                do throws(VineyardError) {
                    return try createBlob(size: size, connection: connection)
                } catch {
                    last = error
                    return locked({ $0.streamHasBacklog(id) }) && error.code == .notEnoughMemory ? nil : .empty
                }
            }
            guard let made, made != .empty || size == 0 else { throw last }
            payload = made
        }
        if !locked({ $0.setWriting(id, chunk: payload.objectID) }) {
            try? dropBlob(payload.objectID, connection: connection)
            throw VineyardError(.invalidStreamState, "Stream state error: the stream was stopped or dropped meanwhile")
        }
        return payload
    }

    public func pushStreamChunk(_ id: ObjectID, chunk: ObjectID) throws(VineyardError) {
        run(try withState { (s) throws(VineyardError) in try s.pushStreamChunk(id, chunk: chunk) })
    }

    /// The reader's next chunk; the one it held before is deleted (deeply, as upstream).
    /// Parks until the writer queues one or stops (drained: 42, failed: 43).
    public func pullStreamChunk(
        _ id: ObjectID, connection: ConnectionID, watching client: Descriptor? = nil, cancelled: () -> Bool
    ) throws(VineyardError) -> (chunk: ObjectID, deletion: Deletion) {
        var deletion = Deletion()
        var first = true
        func attempt() -> Result<ObjectID, VineyardError>? {
            do throws(VineyardError) {
                let (pull, d, effects) = try withState { (s) throws(VineyardError) in
                    if !first && !s.streamExists(id) { throw VineyardError(.streamFailed, "Stream failed: it was dropped") }
                    return try s.pullStreamChunk(id, connection: connection)
                }
                first = false
                deletion.deletedObjects += d.deletedObjects
                deletion.freedBlobs += d.freedBlobs
                deletion.unpublished += d.unpublished
                deletion.droppedNames += d.droppedNames
                run(effects)
                if case .chunk(let c) = pull { return .success(c) }
                return nil
            } catch {
                return .failure(error)
            }
        }
        if let r = attempt() { return (try r.get(), deletion) }
        guard let r = wait(for: [.stream(id)], watching: client, cancelled: cancelled, ready: attempt) else {
            throw VineyardError(.invalidStreamState, "pull_next_stream_chunk: the client left while waiting")
        }
        return (try r.get(), deletion)
    }

    public func stopStream(_ id: ObjectID, failed: Bool) throws(VineyardError) {
        run(try withState { (s) throws(VineyardError) in try s.stopStream(id, failed: failed) })
    }

    public func dropStream(_ id: ObjectID, connection: ConnectionID? = nil) throws(VineyardError) -> Deletion {
        let (d, effects) = try withState { (s) throws(VineyardError) in try s.dropStream(id, connection: connection) }
        run(effects)
        return d
    }

    /// Open streams (for status and tests).
    public var streamCount: Int { locked { $0.streams.count } }
}
