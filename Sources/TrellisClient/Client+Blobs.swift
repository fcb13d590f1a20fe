import TrellisProtocol

extension Client {
    // MARK: Creating

    /// Allocates an unsealed blob of `size` bytes and returns a writable view of it.
    ///
    /// Over IPC this is `create_buffer_request` (the arena fd follows the reply the first
    /// time); `size` 0 gives the empty blob without asking the daemon, as Python does. Over
    /// RPC the bytes are staged locally and sent by ``seal(_:)``.
    ///
    /// - Throws: ``ClientError`` with code ``StatusCode/notEnoughMemory`` when the arena is full.
    public func createBlob(size: Int) throws(ClientError) -> BlobWriter {
        guard size >= 0 else { throw ClientError(.invalidArgument, "negative blob size \(size)") }
        if size == 0 { return BlobWriter(id: .emptyBlob, region: nil, offset: 0, count: 0) }
        if isRPC { return BlobWriter(id: .invalid, region: MemoryRegion(heapByteCount: size), offset: 0, count: size) }
        return try withChannel { (ch) throws(ClientError) -> BlobWriter in
            try ch.send(Request.createBuffer(size: size))
            let (payload, fd) = try Replies.createBuffer(try ch.receive())
            try ch.adoptArenas(announced: fd >= 0 ? [fd] : [], payloads: [payload], sorted: false)
            return BlobWriter(
                id: payload.objectID, region: try ch.region(for: payload), offset: payload.dataOffset,
                count: payload.dataSize)
        }
    }

    /// Allocates several unsealed blobs in one request (`create_buffers_request`).
    public func createBlobs(sizes: [Int]) throws(ClientError) -> [BlobWriter] {
        if isRPC || sizes.isEmpty {
            var out: [BlobWriter] = []
            for s in sizes { out.append(try createBlob(size: s)) }
            return out
        }
        guard sizes.allSatisfy({ $0 >= 0 }) else { throw ClientError(.invalidArgument, "negative blob size in \(sizes)") }
        return try withChannel { (ch) throws(ClientError) -> [BlobWriter] in
            try ch.send(Request.createBuffers(sizes: sizes))
            let (payloads, fds) = try Replies.createBuffers(try ch.receive())
            guard payloads.count == sizes.count else {
                throw .badReply("create_buffers_reply carries \(payloads.count) payloads for \(sizes.count) sizes")
            }
            try ch.adoptArenas(announced: fds, payloads: payloads, sorted: true)
            var out: [BlobWriter] = []
            for p in payloads {
                out.append(BlobWriter(id: p.objectID, region: try ch.region(for: p), offset: p.dataOffset, count: p.dataSize))
            }
            return out
        }
    }

    /// Seals a blob: from now on it is immutable and readable by every client.
    ///
    /// Returns the read view of the same bytes (no copy). Over RPC this is where the bytes
    /// are sent (`create_remote_buffer_request`) and the blob gets its id.
    @discardableResult
    public func seal(_ writer: BlobWriter) throws(ClientError) -> Blob {
        if writer.id == .emptyBlob { return .empty }
        if isRPC { return try sendRemote(writer) }
        try withChannel { (ch) throws(ClientError) in
            try ch.send(Request.seal(writer.id))
            try Replies.done(try ch.receive(), .seal)
        }
        return writer.sealedView
    }

    /// Creates, fills and seals a blob holding a copy of `bytes`.
    @discardableResult
    public func putBlob(_ bytes: UnsafeRawBufferPointer) throws(ClientError) -> Blob {
        let w = try createBlob(size: bytes.count)
        w.copy(bytes)
        return try seal(w)
    }

    /// Creates, fills and seals a blob holding a copy of `bytes`.
    @discardableResult
    public func putBlob(_ bytes: [UInt8]) throws(ClientError) -> Blob {
        try putBlob(contentsOf: bytes)
    }

    /// Creates, fills and seals a blob holding the bytes of `values`.
    @discardableResult
    public func putBlob<T: BitwiseCopyable>(contentsOf values: [T]) throws(ClientError) -> Blob {
        var result: Result<Blob, ClientError> = .success(.empty)
        values.withUnsafeBytes { b in result = Result { () throws(ClientError) -> Blob in try putBlob(b) } }
        return try result.get()
    }

    /// Frees an unsealed blob (`drop_buffer_request`), e.g. to abandon a write.
    public func dropBlob(_ id: ObjectID) throws(ClientError) {
        if id == .emptyBlob { return }
        try Replies.done(try call(.dropBuffer(id)), .dropBuffer)
    }

    // MARK: Reading

    /// The sealed blob `id`, as a zero-copy view.
    ///
    /// - Throws: ``ClientError`` with code ``StatusCode/objectNotExists`` when there is no
    ///   such blob, ``StatusCode/objectNotSealed`` when it is not sealed and `unsafe` is false.
    public func getBlob(_ id: ObjectID, unsafe: Bool = false) throws(ClientError) -> Blob {
        guard let blob = try getBlobs([id], unsafe: unsafe)[id] else {
            throw ClientError(daemon: VineyardError(.objectNotExists, "blob \(id) does not exist"))
        }
        return blob
    }

    /// The sealed blobs among `ids`, in one `get_buffers_request`; ids the daemon does not
    /// know are left out of the result (as upstream does).
    public func getBlobs(_ ids: [ObjectID], unsafe: Bool = false) throws(ClientError) -> [ObjectID: Blob] {
        var result: [ObjectID: Blob] = [:]
        let wanted = Array(Set(ids.filter { $0 != .emptyBlob })).sorted()
        if ids.contains(.emptyBlob) { result[.emptyBlob] = .empty }
        if wanted.isEmpty { return result }
        if isRPC { return try receiveRemote(wanted, unsafe: unsafe).merging(result) { a, _ in a } }
        let fetched = try withChannel { (ch) throws(ClientError) -> [ObjectID: Blob] in
            try ch.send(Request.getBuffers(ids: wanted, unsafe: unsafe))
            let (payloads, fds) = try Replies.getBuffers(try ch.receive())
            try ch.adoptArenas(announced: fds, payloads: payloads, sorted: false)
            var out: [ObjectID: Blob] = [:]
            for p in payloads {
                out[p.objectID] = Blob(id: p.objectID, region: try ch.region(for: p), offset: p.dataOffset, count: p.dataSize)
            }
            return out
        }
        return fetched.merging(result) { a, _ in a }
    }

    // MARK: RPC transfers (§9)

    private func sendRemote(_ writer: BlobWriter) throws(ClientError) -> Blob {
        try withChannel { (ch) throws(ClientError) -> Blob in
            try ch.send(Request.createRemoteBuffer(size: writer.count, compress: false))
            let (first, _) = try Replies.createBuffer(try ch.receive())
            try writer.withUnsafeMutableBytes { (b) throws(ClientError) in try ch.sendRaw(UnsafeRawBufferPointer(b)) }
            let (done, _) = try Replies.createBuffer(try ch.receive())
            guard done.objectID == first.objectID else {
                throw .badReply("create_remote_buffer: second reply names \(done.objectID), first \(first.objectID)")
            }
            return Blob(id: first.objectID, region: writer.region, offset: writer.offset, count: writer.count)
        }
    }

    private func receiveRemote(_ ids: [ObjectID], unsafe: Bool) throws(ClientError) -> [ObjectID: Blob] {
        try withChannel { (ch) throws(ClientError) -> [ObjectID: Blob] in
            try ch.send(Request.getRemoteBuffers(ids: ids, unsafe: unsafe, compress: false))
            let (payloads, _) = try Replies.getBuffers(try ch.receive())
            var out: [ObjectID: Blob] = [:]
            for p in payloads {
                guard p.dataSize > 0 else {
                    out[p.objectID] = Blob(id: p.objectID, region: nil, offset: 0, count: 0)
                    continue
                }
                let region = MemoryRegion(heapByteCount: p.dataSize)
                try ch.receiveRaw(into: region.base, count: p.dataSize)
                out[p.objectID] = Blob(id: p.objectID, region: region, offset: 0, count: p.dataSize)
            }
            return out
        }
    }
}
