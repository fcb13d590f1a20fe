import TrellisProtocol

/// The blob placeholders of a `trellis_put_request`'s tree (``Request/putInline(_:blobs:)``):
/// a member `{"__trellis_blob": k}` stands for the k-th blob the request carries.
enum InlineBlobs {
    /// Checks the placeholders of `tree` against `count` inline blobs, before anything is
    /// allocated: each is an object of that one key with 0 ≤ k < count, and every blob is
    /// referred to (an unreferenced one would be stored with nothing holding it). The walk
    /// follows nested new trees (members without an `id`) down to the depth limit; a
    /// deeper tree is refused as `create_data` refuses it.
    static func check(_ tree: [String: JSON], count: Int) throws(VineyardError) {
        var referred = [Bool](repeating: false, count: count)
        try walk(tree, nesting: 1, &referred)
        if let k = referred.firstIndex(of: false) {
            throw VineyardError(.invalid, "Invalid message: inline blob \(k) is not referred to by the tree")
        }
    }

    private static func walk(_ tree: [String: JSON], nesting: Int, _ referred: inout [Bool]) throws(VineyardError) {
        if nesting > ObjectStore.maxMetadataDepth {
            throw VineyardError(
                .metaTreeInvalid, "metadata tree is more than \(ObjectStore.maxMetadataDepth) levels deep, the limit")
        }
        for (key, value) in tree {
            guard case .object(let m) = value else { continue }
            if let k = m[Request.inlineBlobKey] {
                guard m.count == 1, let i = k.int64Value, i >= 0, i < referred.count else {
                    throw VineyardError(
                        .invalid,
                        "Invalid message: member '\(key)' is not a placeholder {\"\(Request.inlineBlobKey)\": k} with 0 <= k < \(referred.count)")
                }
                referred[Int(i)] = true
            } else if m["id"] == nil {
                try walk(m, nesting: nesting + 1, &referred)
            }
        }
    }

    /// `tree` with each placeholder replaced by its blob's member (after ``check(_:count:)``).
    static func fill(_ tree: [String: JSON], _ members: [JSON]) -> [String: JSON] {
        var out = tree
        for (key, value) in tree {
            guard case .object(let m) = value else { continue }
            if let k = m[Request.inlineBlobKey]?.intValue {
                out[key] = members[k]
            } else if m["id"] == nil {
                out[key] = .object(fill(m, members))
            }
        }
        return out
    }
}

extension ObjectStore {
    /// `trellis_put_request`: allocates the blobs, writes `blobs` into them, seals them
    /// and creates `content` with its placeholders replaced by the blobs — all or nothing
    /// (a refused tree leaves no blob behind). `connection` does not use the blobs after:
    /// the object holds them, so deleting it frees their memory at once.
    public func putInline(_ content: JSON, blobs: [[UInt8]], connection: ConnectionID) throws(VineyardError) -> CreatedObject {
        guard case .object(let tree) = content else {
            throw VineyardError(.metaTreeInvalid, "No 'typename' field in incoming metadata")
        }
        try InlineBlobs.check(tree, count: blobs.count)
        let made = try createBlobs(sizes: blobs.map(\.count), connection: connection)
        for (p, bytes) in zip(made, blobs) where p.dataSize > 0 {
            bytes.withUnsafeBytes { src in
                arena.address(p.dataOffset).copyMemory(from: src.baseAddress!, byteCount: p.dataSize)
            }
        }
        let ids = made.map(\.objectID).filter { $0 != .emptyBlob }
        let members = zip(made, blobs).map { p, bytes in ObjectStore.blobStub(p.objectID, instance: instanceID, length: bytes.count) }
        let filled = JSON.object(InlineBlobs.fill(tree, members))
        let now = now()
        // seals, then the tree (its blob members must exist), then the connection lets go;
        // what was done before a refusal still has its effects run, then the blobs go
        let (outcome, effects) = locked { (s) -> (Result<CreatedObject, VineyardError>, StoreEffects) in
            var effects = StoreEffects()
            do throws(VineyardError) {
                for id in ids { effects.wake += try s.seal(id, connection: connection).wake }
                let (created, more) = try s.createData(filled, now: now)
                effects.wake += more.wake
                s.release(ids, connection: connection)
                return (.success(created), effects)
            } catch {
                return (.failure(error), effects)
            }
        }
        run(effects)
        switch outcome {
        case .success(let created):
            return created
        case .failure(let error):
            for id in ids { try? dropBlob(id, connection: connection) }
            throw error
        }
    }
}
