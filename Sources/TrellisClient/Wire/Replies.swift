import TrellisProtocol

/// The client's reading of replies: ``Reply`` (TrellisProtocol's one codec) decodes, and
/// this turns an error reply into the daemon's ``ClientError``, a reply of another type or
/// a malformed one into a protocol violation, and hands back the fields the caller needs.
package enum Replies {
    /// Decodes `json` as a reply to a request that expects `expected`.
    package static func decode(_ json: JSON, expecting expected: String) throws(ClientError) -> Reply {
        let reply: Reply
        do { reply = try Reply.decode(json) } catch { throw .badReply("reply to \(expected): \(error.message)") }
        if case .error(let e) = reply { throw ClientError(daemon: e) }
        guard reply.type == expected else { throw .badReply("expected \(expected), got \(reply.type)") }
        return reply
    }

    /// A reply that carries nothing but its type.
    static func done(_ json: JSON, _ expected: Reply.Done) throws(ClientError) {
        _ = try decode(json, expecting: expected.rawValue)
    }

    static func register(_ json: JSON) throws(ClientError) -> ServerInfo {
        guard case .register(let r) = try decode(json, expecting: "register_reply") else { throw unreachable }
        if !r.storeMatch { throw ClientError(.connectionFailed, code: .invalid, "Mismatched store type") }
        return ServerInfo(
            instanceID: r.instanceID, version: r.version, ipcSocket: r.ipcSocket, rpcEndpoint: r.rpcEndpoint,
            sessionID: r.sessionID, supportsRPCCompression: r.supportsRPCCompression,
            extensions: Set(r.extensions))
    }

    /// `create_buffer_reply`: the payload and the fd announced (−1 when none follows).
    static func createBuffer(_ json: JSON) throws(ClientError) -> (payload: Payload, fd: Int32) {
        guard case .createBuffer(let p, let fd) = try decode(json, expecting: "create_buffer_reply") else { throw unreachable }
        return (p, fd)
    }

    static func createBuffers(_ json: JSON) throws(ClientError) -> (payloads: [Payload], fds: [Int32]) {
        guard case .createBuffers(let ps, let fds) = try decode(json, expecting: "create_buffers_reply") else { throw unreachable }
        return (ps, fds)
    }

    static func getBuffers(_ json: JSON) throws(ClientError) -> (payloads: [Payload], fds: [Int32]) {
        guard case .getBuffers(let ps, let fds, _) = try decode(json, expecting: "get_buffers_reply") else { throw unreachable }
        return (ps, fds)
    }

    static func createData(_ json: JSON) throws(ClientError) -> Reply.Created {
        guard case .createData(let c) = try decode(json, expecting: "create_data_reply") else { throw unreachable }
        return c
    }

    /// `get_data_reply` (also the reply to `list_data`): id → tree, in id order.
    static func metadata(_ json: JSON) throws(ClientError) -> [(ObjectID, JSON)] {
        guard case .data(let content) = try decode(json, expecting: "get_data_reply") else { throw unreachable }
        var out: [(ObjectID, JSON)] = []
        out.reserveCapacity(content.count)
        for (key, tree) in content {
            guard let id = ObjectID(string: key) else { throw .badReply("get_data_reply key \(key) is not an object id") }
            out.append((id, tree))
        }
        out.sort { $0.0 < $1.0 }
        return out
    }

    static func exists(_ json: JSON) throws(ClientError) -> Bool {
        guard case .exists(let b) = try decode(json, expecting: "exists_reply") else { throw unreachable }
        return b
    }

    static func ifPersist(_ json: JSON) throws(ClientError) -> Bool {
        guard case .ifPersist(let b) = try decode(json, expecting: "if_persist_reply") else { throw unreachable }
        return b
    }

    static func getName(_ json: JSON) throws(ClientError) -> ObjectID {
        guard case .getName(let id) = try decode(json, expecting: "get_name_reply") else { throw unreachable }
        return id
    }

    static func migrated(_ json: JSON) throws(ClientError) -> ObjectID {
        guard case .migrateObject(let id) = try decode(json, expecting: "migrate_object_reply") else { throw unreachable }
        return id
    }

    static func names(_ json: JSON) throws(ClientError) -> [(name: String, id: ObjectID)] {
        guard case .listName(let names) = try decode(json, expecting: "list_name_reply") else { throw unreachable }
        return names.map { (name: $0.key, id: $0.value) }.sorted { $0.name < $1.name }
    }

    static func instanceStatus(_ json: JSON) throws(ClientError) -> InstanceStatus {
        guard case .instanceStatus(let meta) = try decode(json, expecting: "instance_status_reply") else { throw unreachable }
        return try InstanceStatus(json: meta)
    }

    static func clusterMeta(_ json: JSON) throws(ClientError) -> [ClusterInstance] {
        guard case .clusterMeta(let meta) = try decode(json, expecting: "cluster_meta") else { throw unreachable }
        var out: [ClusterInstance] = []
        for (key, value) in meta {
            guard key.hasPrefix("i"), let id = UInt64(key.dropFirst()) else {
                throw .badReply("cluster_meta key \(key) is not i<instance id>")
            }
            out.append(ClusterInstance(instanceID: id, json: value))
        }
        out.sort { $0.instanceID < $1.instanceID }
        return out
    }

    /// `decode` checked the type, so the case matches; this only satisfies the compiler.
    private static var unreachable: ClientError { .badReply("reply case does not match its type") }
}
