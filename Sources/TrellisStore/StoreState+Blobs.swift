import TrellisProtocol

// The store's decisions about blobs: allocate, seal, use, drop, shrink, release, a
// departed connection — mutating methods on the state; payloads (which need the
// arena's descriptor and addresses) are made by ``ObjectStore``.
extension StoreState {
    func outOfMemory(_ size: Int) -> VineyardError {
        VineyardError(
            .notEnoughMemory,
            "Failed to allocate memory of size \(size), total available memory size are \(allocator.capacity), and \(allocator.allocatedBytes) are already in use"
        )
    }

    /// Allocates unsealed blobs for `connection`, all or none; nil stands for the empty blob (size 0).
    mutating func createBlobs(
        sizes: [Int], connection: ConnectionID, now: UInt64
    ) throws(VineyardError) -> [(id: ObjectID, record: BlobRecord)?] {
        var made: [(ObjectID, Int)] = []
        var out: [(id: ObjectID, record: BlobRecord)?] = []
        out.reserveCapacity(sizes.count)
        for size in sizes {
            if size == 0 {
                out.append(nil)
                continue
            }
            guard let offset = allocator.allocate(size) else {
                for (id, off) in made {
                    _ = removeBlob(id)
                    allocator.free(off)
                }
                throw outOfMemory(size)
            }
            let id = ids.next(blob: true, nowMillis: now)
            let rec = BlobRecord(offset: offset, size: size, sealed: false, creator: connection)
            addBlob(id, rec)
            made.append((id, offset))
            out.append((id, rec))
        }
        return out
    }

    /// Seals a blob (idempotent) and records `connection` as a user.
    mutating func seal(_ id: ObjectID, connection: ConnectionID) throws(VineyardError) -> StoreEffects {
        // (the record is changed where it lies: a copy's `users` would be copied on insert)
        guard let i = blobs.index(forKey: id) else { throw VineyardError(.objectNotExists, "seal: id = \(id)") }
        if let creator = blobs.values[i].creator, creator != connection { unhold(id, creator) }
        tick &+= 1
        if blobs.values[i].seal(by: connection, tick: tick) { hold(id, connection) }
        waiters.touch(.object(id))
        return StoreEffects(wake: waiters.takeWoken())
    }

    /// The requested blobs in request order (nil: the empty blob), each now used by
    /// `connection` (which pins it against spilling); unknown ids are skipped; spilled
    /// ones are listed apart, to be read back first. An unsealed blob is an error unless `unsafe`.
    mutating func useBlobs(
        _ requested: [ObjectID], unsafe: Bool, connection: ConnectionID
    ) throws(VineyardError) -> (found: [(id: ObjectID, record: BlobRecord)?], spilled: [ObjectID]) {
        var out: [(id: ObjectID, record: BlobRecord)?] = []
        var spilled: [ObjectID] = []
        out.reserveCapacity(requested.count)
        tick &+= 1
        for id in requested {
            if id == .emptyBlob {
                out.append(nil)
                continue
            }
            guard let i = blobs.index(forKey: id) else { continue }
            if !blobs.values[i].sealed && !unsafe { throw VineyardError(.objectNotSealed, "Failed to get blob with id \(id)") }
            if blobs.values[i].spilled {
                spilled.append(id)
                continue
            }
            if blobs.values[i].use(by: connection, tick: tick) { hold(id, connection) }
            out.append((id, blobs.values[i]))
        }
        return (out, spilled)
    }

    /// Deletes one blob outright, ignoring references.
    mutating func dropBlob(_ id: ObjectID, connection: ConnectionID?) throws(VineyardError) -> StoreEffects {
        guard let released = removeBlob(id, by: connection) else { throw VineyardError(.objectNotExists, "delete: id = \(id)") }
        if case .arena(let offset) = released { allocator.free(offset) }
        // A blob that was never spilled has no file: removing the name is harmless.
        return StoreEffects(removeSpillFiles: [id])
    }

    mutating func shrinkBlob(_ id: ObjectID, size: Int) throws(VineyardError) {
        guard var b = blobs[id] else { throw VineyardError(.objectNotExists, "shrink: id = \(id)") }
        if b.sealed { throw VineyardError(.objectSealed, "cannot shrink a sealed blob: \(id)") }
        guard size <= b.size else { throw VineyardError(.invalid, "cannot grow blob \(id) from \(b.size) to \(size)") }
        if size > 0 { allocator.shrink(b.offset, to: size) }
        b.size = size
        blobs[id] = b
    }

    /// Trellis' `split_buffer` extension: an unsealed blob of `connection`'s becomes
    /// consecutive unsealed blobs of `sizes` bytes tiling it exactly (a buffer written
    /// in place — a pandas block of several columns — published as one blob per column,
    /// with no copy). All or nothing; the original id is gone afterwards.
    mutating func splitBlob(
        _ id: ObjectID, sizes: [Int], seal: Bool = false, connection: ConnectionID, now: UInt64
    ) throws(VineyardError) -> (pieces: [(id: ObjectID, record: BlobRecord)], effects: StoreEffects) {
        guard let b = blobs[id] else { throw VineyardError(.objectNotExists, "split: id = \(id)") }
        if b.sealed { throw VineyardError(.objectSealed, "cannot split a sealed blob: \(id)") }
        guard b.creator == connection else {
            throw VineyardError(.invalid, "cannot split blob \(id): another connection created it")
        }
        guard !sizes.isEmpty, sizes.count <= 1 << 16 else {
            throw VineyardError(.invalid, "split: between 1 and 65536 pieces, not \(sizes.count)")
        }
        var total = 0
        for s in sizes {
            guard s > 0, s <= b.size else { throw VineyardError(.invalid, "split: a piece of \(s) bytes in a blob of \(b.size)") }
            total += s
        }
        guard total == b.size else {
            throw VineyardError(.invalid, "split: the pieces add up to \(total) bytes, the blob \(id) has \(b.size)")
        }
        guard let starts = allocator.split(b.offset, sizes: sizes) else {
            throw VineyardError(
                .invalid, "split: blob \(id) is itself a piece of a block cut at unaligned offsets")
        }
        // the parent's record goes (its memory lives on as the pieces): out of the indexes too
        blobs[id] = nil
        blobOrder.remove(id) { blobs[$0] != nil }
        unhold(id, connection)
        for u in b.users { unhold(id, u) }
        var out: [(id: ObjectID, record: BlobRecord)] = []
        out.reserveCapacity(sizes.count)
        for (start, size) in zip(starts, sizes) {
            let piece = ids.next(blob: true, nowMillis: now)
            let rec = BlobRecord(offset: start, size: size, sealed: false, creator: connection)
            addBlob(piece, rec)
            out.append((piece, rec))
        }
        var effects = StoreEffects()
        if seal {
            for i in out.indices {
                effects.wake += try self.seal(out[i].id, connection: connection).wake
                out[i].record = blobs[out[i].id] ?? out[i].record
            }
        }
        return (out, effects)
    }

    /// Drops `connection`'s use of blobs (of deleted ones too: the last use frees their memory).
    mutating func release(_ requested: [ObjectID], connection: ConnectionID) {
        for id in requested {
            if blobs[id] != nil {
                if blobs[id]!.users.remove(connection) != nil { unhold(id, connection) }
            } else {
                releaseRetired(id, by: connection)
            }
        }
    }

    /// A connection went away: its unsealed blobs are reclaimed and its uses dropped.
    /// Looks only at the blobs the connection holds (``held``), not at every blob.
    mutating func disconnect(_ connection: ConnectionID) -> Int {
        guard let mine = held.removeValue(forKey: connection) else { return 0 }
        var reclaimed = 0
        for id in mine {
            if let b = blobs[id] {
                if b.creator == connection && !b.sealed {
                    blobs[id] = nil
                    blobOrder.remove(id) { blobs[$0] != nil }
                    allocator.free(b.offset)
                    reclaimed += 1
                } else if b.users.contains(connection) {
                    blobs[id]!.users.remove(connection)
                }
            } else if retired[id]?.users.contains(connection) == true {
                releaseRetired(id, by: connection)
            }
        }
        held[connection] = nil  // releaseRetired may have looked it up again
        return reclaimed
    }
}

extension StoreState {
    /// A blob arriving from another session under its own `id`: allocated unsealed for
    /// `connection` (so a move that breaks off is reclaimed with it), sealed by the caller
    /// once its bytes are copied in.
    mutating func adoptBlob(_ id: ObjectID, size: Int, connection: ConnectionID) throws(VineyardError) -> BlobRecord {
        guard blobs[id] == nil, retired[id] == nil else {
            throw VineyardError(.objectExists, "move_buffers_ownership: blob \(id) already exists in this session")
        }
        guard let offset = allocator.allocate(size) else { throw outOfMemory(size) }
        let rec = BlobRecord(offset: offset, size: size, sealed: false, creator: connection)
        addBlob(id, rec)
        return rec
    }
}
