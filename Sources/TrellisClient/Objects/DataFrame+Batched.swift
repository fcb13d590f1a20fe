import TrellisProtocol

extension Client {
    /// Writes a data frame of `rows` rows with a default range index, its columns' bytes
    /// written in place by `fill(column, bytes)` (C order, `rows × dtype.size` bytes) — the
    /// same object as ``createDataFrame(columns:index:)`` over tensors, in three round trips
    /// on a Trellis daemon: one `create_buffers` for the index and every column, then the
    /// seals and one `create_data` for the whole tree (frame, index, columns) sent
    /// together, then the tree read back. Against upstream vineyardd (no nested
    /// `create_data`; no `trellis_extensions` in its register reply) and over RPC it
    /// writes tensor by tensor, as before.
    public func putDataFrame(
        rows: Int, columns: [(name: JSON, dtype: DType)],
        fill: (_ column: Int, _ bytes: UnsafeMutableRawBufferPointer) -> Void
    ) throws(ClientError) -> DataFrame {
        guard rows >= 0 else { throw ClientError(.invalidArgument, "negative row count \(rows)") }
        var sizes = [rows * 8]
        for c in columns {
            let (n, overflow) = rows.multipliedReportingOverflow(by: c.dtype.size)
            guard !overflow else { throw ClientError(.invalidArgument, "column \(c.name) of \(rows) rows is too large") }
            sizes.append(n)
        }
        guard !isRPC, server.extensions.contains("split_buffer") else {
            var stored: [(name: JSON, values: AnyTensor)] = []
            for (i, c) in columns.enumerated() {
                stored.append((c.name, try createTensor(dtype: c.dtype, shape: [rows]) { fill(i, $0) }))
            }
            return try createDataFrame(columns: stored)
        }
        let writers = try createBlobs(sizes: sizes)
        writers[0].withUnsafeMutableBytes { raw in
            let labels = raw.bindMemory(to: Int64.self)
            for i in 0..<labels.count { labels[i] = Int64(i) }
        }
        for (i, w) in writers.dropFirst().enumerated() { w.withUnsafeMutableBytes { fill(i, $0) } }
        let blobs = writers.map(\.sealedView)
        let index = Self.indexMeta(values: Self.tensorMeta(dtype: .int64, shape: [rows], blob: blobs[0]), dtype: .int64)
        var meta = Self.dataFrameMeta(
            index: index,
            columns: columns.enumerated().map { i, c in
                (c.name, Self.tensorMeta(dtype: c.dtype, shape: [rows], blob: blobs[i + 1]))
            })
        meta.stampInstanceID(instanceID)
        let sealed = writers.map(\.id).filter { $0 != .emptyBlob }
        let created: Reply.Created
        do throws(ClientError) {
            created = try withChannel { (ch) throws(ClientError) -> Reply.Created in
                for id in sealed { try ch.send(Request.seal(id)) }
                try ch.send(Request.createData(meta.json))
                // every reply is read, so the conversation stays in step whatever fails
                var failure: ClientError?
                for _ in sealed {
                    do throws(ClientError) {
                        try Replies.done(try ch.receive(), .seal)
                    } catch where error.kind == .daemon {
                        failure = failure ?? error
                    }
                }
                let made: Reply.Created?
                do throws(ClientError) {
                    made = try Replies.createData(try ch.receive())
                } catch where error.kind == .daemon {
                    failure = failure ?? error
                    made = nil
                }
                if let failure { throw failure }
                return made!
            }
        } catch {
            for id in sealed { try? dropBlob(id) }
            throw error
        }
        var map: [ObjectID: Blob] = [:]
        for b in blobs where b.id != .emptyBlob { map[b.id] = b }
        return try DataFrame(StoredObject(meta: try getMetadata(created.id, syncRemote: false), blobs: map))
    }
}
