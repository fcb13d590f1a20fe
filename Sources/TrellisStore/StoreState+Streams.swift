import TrellisProtocol

/// One stream (`vineyard.io`): chunks a writer hands to a reader in order, as upstream's
/// stream store keeps them. A chunk is a blob the daemon allocated for the writer
/// (`get_next_stream_chunk`) or any object the writer pushed (`push_next_stream_chunk`).
struct StreamRecord: Sendable {
    /// Modes opened so far (1 = read, 2 = write); each may be opened once.
    var openModes = 0
    /// The blob the writer is filling (sealed and queued by its next chunk or by stop).
    var writing: ObjectID?
    /// Chunks ready for the reader, oldest first.
    var ready: [ObjectID] = []
    var readyHead = 0
    /// The chunk the reader holds (deleted when it pulls the next one).
    var reading: ObjectID?
    var drained = false
    var failed = false

    var backlog: Int { ready.count - readyHead }
    var stopped: Bool { drained || failed }

    mutating func enqueue(_ id: ObjectID) { ready.append(id) }

    mutating func dequeue() -> ObjectID? {
        guard readyHead < ready.count else { return nil }
        let id = ready[readyHead]
        readyHead += 1
        if readyHead > 64 && readyHead * 2 > ready.count {
            ready.removeFirst(readyHead)
            readyHead = 0
        }
        return id
    }

    mutating func drainQueue() -> [ObjectID] {
        let rest = Array(ready[readyHead...])
        ready = []
        readyHead = 0
        return rest
    }
}

/// What a pull found.
public enum StreamPull: Sendable, Equatable {
    case chunk(ObjectID)
    /// Nothing yet: park until the stream changes.
    case empty
}

// The store's decisions about streams: mutating methods on the state, returning effects
// (the blobs a reader finished with are freed like any deletion; parked readers and
// writers are woken through the `.stream(id)` key).
extension StoreState {
    static let maxStreams = 65_536

    private func stream(_ id: ObjectID, _ what: String) throws(VineyardError) -> StreamRecord {
        guard let s = streams[id] else { throw VineyardError(.objectNotExists, "failed to \(what) stream: \(id)") }
        return s
    }

    mutating func createStream(_ id: ObjectID) throws(VineyardError) {
        if streams[id] != nil {
            throw VineyardError(.objectExists, "Failed to create the stream as it is already exists: \(id)")
        }
        guard streams.count < Self.maxStreams else {
            throw VineyardError(.invalid, "too many streams (\(Self.maxStreams)): drop some first")
        }
        streams[id] = StreamRecord()
    }

    mutating func openStream(_ id: ObjectID, mode: Int) throws(VineyardError) {
        guard mode == 1 || mode == 2 else { throw VineyardError(.invalid, "open_stream: mode must be 1 (read) or 2 (write), got \(mode)") }
        var s = try stream(id, "open")
        if s.openModes & mode != 0 { throw VineyardError(.streamOpened, "Stream already opened") }
        s.openModes |= mode
        streams[id] = s
    }

    /// Seals the writer's current chunk (if it still exists) and queues it.
    private mutating func queueWriting(_ s: inout StreamRecord, _ id: ObjectID) {
        guard let w = s.writing else { return }
        s.writing = nil
        if var b = blobs[w] {
            if let creator = b.creator { unhold(w, creator) }
            b.sealed = true
            b.creator = nil
            blobs[w] = b
            s.enqueue(w)
        }
    }

    /// `get_next_stream_chunk`, before allocating: queues the writer's last chunk. Throws
    /// when the stream is stopped.
    mutating func beginNextChunk(_ id: ObjectID) throws(VineyardError) -> StoreEffects {
        var s = try stream(id, "allocate from")
        if s.stopped { throw VineyardError(.invalidStreamState, "Stream state error: the stream is stopped") }
        queueWriting(&s, id)
        streams[id] = s
        waiters.touch(.stream(id))
        return StoreEffects(wake: waiters.takeWoken())
    }

    /// Records the blob allocated for the writer; false when the stream went away meanwhile.
    mutating func setWriting(_ id: ObjectID, chunk: ObjectID) -> Bool {
        guard var s = streams[id], !s.stopped else { return false }
        if chunk != .emptyBlob { s.writing = chunk }
        streams[id] = s
        return true
    }

    /// Whether a writer blocked on a full arena may still get room from this stream's reader.
    func streamHasBacklog(_ id: ObjectID) -> Bool {
        guard let s = streams[id] else { return false }
        return s.backlog > 0 || s.reading != nil
    }

    mutating func pushStreamChunk(_ id: ObjectID, chunk: ObjectID) throws(VineyardError) -> StoreEffects {
        var s = try stream(id, "push to")
        if s.stopped { throw VineyardError(.invalidStreamState, "Stream state error: the stream is stopped") }
        guard chunk.isBlob ? blobs[chunk] != nil : objects[chunk] != nil else {
            throw VineyardError(.objectNotExists, "push_next_stream_chunk: chunk \(chunk) does not exist")
        }
        s.enqueue(chunk)
        streams[id] = s
        waiters.touch(.stream(id))
        return StoreEffects(wake: waiters.takeWoken())
    }

    /// `pull_next_stream_chunk`: drops the chunk the reader held, then hands it the next
    /// one; drained or failed once the queue is empty and the writer stopped.
    mutating func pullStreamChunk(
        _ id: ObjectID, connection: ConnectionID?
    ) throws(VineyardError) -> (StreamPull, Deletion, StoreEffects) {
        var s = try stream(id, "pull from")
        var deletion = Deletion()
        var effects = StoreEffects()
        if let done = s.reading {
            s.reading = nil
            streams[id] = s
            (deletion, effects) = delete([done], force: false, deep: true, memoryTrim: false, connection: connection)
            s = streams[id] ?? s
        }
        if let next = s.dequeue() {
            s.reading = next
            streams[id] = s
            waiters.touch(.stream(id))
            effects.wake += waiters.takeWoken()
            return (.chunk(next), deletion, effects)
        }
        streams[id] = s
        // room was freed: a writer parked on a full arena may go on
        waiters.touch(.stream(id))
        effects.wake += waiters.takeWoken()
        if s.failed { throw VineyardError(.streamFailed, "Stream failed") }
        if s.drained { throw VineyardError(.streamDrained, "Stream drained: no more chunks") }
        return (.empty, deletion, effects)
    }

    mutating func stopStream(_ id: ObjectID, failed: Bool) throws(VineyardError) -> StoreEffects {
        var s = try stream(id, "stop")
        if s.stopped { throw VineyardError(.invalidStreamState, "Stream already stopped") }
        queueWriting(&s, id)
        if failed { s.failed = true } else { s.drained = true }
        streams[id] = s
        waiters.touch(.stream(id))
        return StoreEffects(wake: waiters.takeWoken())
    }

    /// `drop_stream`: fails the stream for a parked reader, deletes the chunks nobody read
    /// (the one the reader holds stays, as upstream keeps it) and forgets the stream.
    mutating func dropStream(_ id: ObjectID, connection: ConnectionID?) throws(VineyardError) -> (Deletion, StoreEffects) {
        var s = try stream(id, "drop")
        var pending = s.drainQueue()
        if let w = s.writing, blobs[w] != nil { pending.append(w) }
        streams[id] = nil
        var (deletion, effects) = delete(pending, force: false, deep: true, memoryTrim: false, connection: connection)
        waiters.touch(.stream(id))
        effects.wake += waiters.takeWoken()
        return (deletion, effects)
    }

    func streamExists(_ id: ObjectID) -> Bool { streams[id] != nil }
}
