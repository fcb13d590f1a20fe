import TrellisProtocol

/// Decoding of the daemon's replies. Pure: JSON in, typed values or ``ClientError`` out.
enum Replies {
    /// Checks a reply the way the upstream client does: a non-zero `"code"` is the
    /// daemon's error; otherwise `"type"` must be `expected`.
    static func check(_ reply: JSON, expecting expected: String) throws(ClientError) -> FieldReader {
        guard let o = reply.objectValue else { throw .badReply("reply to \(expected) is not a JSON object") }
        if let codeValue = o["code"], let code = codeValue.intValue, code != 0 {
            throw ClientError(daemon: VineyardError(StatusCode(rawValue: code), o["message"]?.stringValue ?? ""))
        }
        guard let type = o["type"]?.stringValue else { throw .badReply("reply without \"type\", expected \(expected)") }
        guard type == expected else { throw .badReply("expected \(expected), got \(type)") }
        return FieldReader(object: o, command: expected)
    }

    /// Runs a field read, turning a missing or mistyped field into a protocol violation.
    static func field<T>(_ body: () throws(VineyardError) -> T) throws(ClientError) -> T {
        do { return try body() } catch { throw .badReply(error.message) }
    }

    static func register(_ reply: JSON) throws(ClientError) -> ServerInfo {
        let r = try check(reply, expecting: "register_reply")
        if r.object["store_match"]?.boolValue == false {
            throw ClientError(.connectionFailed, code: .invalid, "Mismatched store type")
        }
        return try field { () throws(VineyardError) in
            ServerInfo(
                instanceID: try r.uint("instance_id"),
                version: try r.string("version", default: "0.0.0"),
                ipcSocket: try r.string("ipc_socket", default: ""),
                rpcEndpoint: try r.string("rpc_endpoint", default: ""),
                sessionID: try r.optionalUInt("session_id") ?? 0,
                supportsRPCCompression: try r.optionalBool("support_rpc_compression") ?? false)
        }
    }

    static func payload(_ json: JSON) throws(ClientError) -> Payload {
        do { return try Payload(json: json) } catch { throw .badReply("bad payload: \(error.message)") }
    }

    /// `create_buffer_reply`: the payload and the fd announced (−1 when none follows).
    static func createBuffer(_ reply: JSON) throws(ClientError) -> (payload: Payload, fd: Int32) {
        let r = try check(reply, expecting: "create_buffer_reply")
        let created = try field { () throws(VineyardError) in try r.value("created") }
        let fd = try field { () throws(VineyardError) in try r.int("fd") }
        return (try payload(created), Int32(truncatingIfNeeded: fd))
    }

    /// `create_buffers_reply`: payloads from the numbered keys (what the 0.24.2 client reads) and the fds list.
    static func createBuffers(_ reply: JSON) throws(ClientError) -> (payloads: [Payload], fds: [Int32]) {
        let r = try check(reply, expecting: "create_buffers_reply")
        let n = try field { () throws(VineyardError) in try r.size("num") }
        var payloads: [Payload] = []
        payloads.reserveCapacity(n)
        for i in 0..<n {
            let p = try field { () throws(VineyardError) in try r.value(String(i)) }
            payloads.append(try payload(p))
        }
        return (payloads, try fds(r))
    }

    /// `get_buffers_reply`: payloads from `"payloads"` (what the 0.24.2 client reads) and the fds list.
    static func getBuffers(_ reply: JSON) throws(ClientError) -> (payloads: [Payload], fds: [Int32]) {
        let r = try check(reply, expecting: "get_buffers_reply")
        var payloads: [Payload] = []
        if let list = r.object["payloads"]?.arrayValue {
            payloads.reserveCapacity(list.count)
            for p in list { payloads.append(try payload(p)) }
        } else {
            let n = try field { () throws(VineyardError) in try r.size("num") }
            for i in 0..<n {
                let p = try field { () throws(VineyardError) in try r.value(String(i)) }
                payloads.append(try payload(p))
            }
        }
        return (payloads, try fds(r))
    }

    private static func fds(_ r: FieldReader) throws(ClientError) -> [Int32] {
        guard let v = r.object["fds"] else { return [] }
        guard let a = v.arrayValue else { throw .badReply("\"fds\" is not an array") }
        var out: [Int32] = []
        for e in a {
            guard let i = e.int64Value else { throw .badReply("\"fds\" holds a non-integer") }
            out.append(Int32(truncatingIfNeeded: i))
        }
        return out
    }

    /// `create_data_reply`: id, signature, instance id.
    static func createData(_ reply: JSON) throws(ClientError) -> (id: ObjectID, signature: UInt64, instanceID: UInt64) {
        let r = try check(reply, expecting: "create_data_reply")
        return try field { () throws(VineyardError) in
            (ObjectID(try r.uint("id")), try r.uint("signature"), try r.uint("instance_id"))
        }
    }

    /// `get_data_reply` (also the reply to `list_data`): id → tree; `"content": null` is an empty map.
    static func metadata(_ reply: JSON) throws(ClientError) -> [(ObjectID, JSON)] {
        let r = try check(reply, expecting: "get_data_reply")
        guard let content = r.object["content"], !content.isNull else { return [] }
        guard let o = content.objectValue else { throw .badReply("get_data_reply content is not an object") }
        var out: [(ObjectID, JSON)] = []
        out.reserveCapacity(o.count)
        for (key, tree) in o {
            guard let id = ObjectID(string: key) else { throw .badReply("get_data_reply key \(key) is not an object id") }
            out.append((id, tree))
        }
        out.sort { $0.0 < $1.0 }
        return out
    }

    static func bool(_ reply: JSON, type: String, key: String) throws(ClientError) -> Bool {
        let r = try check(reply, expecting: type)
        return try field { () throws(VineyardError) in try r.bool(key, default: false) }
    }

    static func objectID(_ reply: JSON, type: String, key: String) throws(ClientError) -> ObjectID {
        let r = try check(reply, expecting: type)
        return ObjectID(try field { () throws(VineyardError) in try r.uint(key) })
    }

    static func names(_ reply: JSON) throws(ClientError) -> [(name: String, id: ObjectID)] {
        let r = try check(reply, expecting: "list_name_reply")
        guard let o = r.object["names"]?.objectValue else { return [] }
        var out: [(name: String, id: ObjectID)] = []
        for (k, v) in o {
            guard let u = v.uint64Value else { throw .badReply("list_name_reply: id of \(k) is not an integer") }
            out.append((k, ObjectID(u)))
        }
        out.sort { $0.name < $1.name }
        return out
    }

    static func instanceStatus(_ reply: JSON) throws(ClientError) -> InstanceStatus {
        let r = try check(reply, expecting: "instance_status_reply")
        guard let meta = r.object["meta"], meta.objectValue != nil else {
            throw .badReply("instance_status_reply without \"meta\"")
        }
        return try InstanceStatus(json: meta)
    }

    static func clusterMeta(_ reply: JSON) throws(ClientError) -> [ClusterInstance] {
        let r = try check(reply, expecting: "cluster_meta")
        guard let o = r.object["meta"]?.objectValue else { return [] }
        var out: [ClusterInstance] = []
        for (key, value) in o {
            guard key.hasPrefix("i"), let id = UInt64(key.dropFirst()) else {
                throw .badReply("cluster_meta key \(key) is not i<instance id>")
            }
            out.append(ClusterInstance(instanceID: id, json: value))
        }
        out.sort { $0.instanceID < $1.instanceID }
        return out
    }
}
