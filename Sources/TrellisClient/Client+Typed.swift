import TrellisProtocol

extension Client {
    /// Reads object `id` as `type` (``Tensor``, ``AnyTensor``, ``DataFrame``, ``Series``,
    /// ``ArrowTable``, ``RecordBatch``…): one `get_data` and one `get_buffers`, zero-copy.
    ///
    /// - Throws: ``ClientError/Kind/invalidObject`` when the object has another layout.
    public func get<T: StoredValue>(_ type: T.Type, _ id: ObjectID) throws(ClientError) -> T {
        try T(try getObject(id))
    }

    /// Reads the object `name` refers to as `type`; with `wait`, waits for the name.
    public func get<T: StoredValue>(_ type: T.Type, name: String, wait: Bool = false) throws(ClientError) -> T {
        try T(try getObject(try getName(name, wait: wait)))
    }

    /// Persists an object and gives it a name, as Python's `put(value, persist=True, name=…)`:
    /// one request where the daemon serves `persist_name` (in a cluster, the records and
    /// the name in one etcd transaction), else `persist` then `put_name`.
    public func publish(_ id: ObjectID, as name: String) throws(ClientError) {
        if server.extensions.contains("persist_name") {
            try Replies.done(try call(.persistNamed(id, name: name)), .persist)
            return
        }
        try persist(id)
        try putName(name, for: id)
    }
}
