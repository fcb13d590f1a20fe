import TrellisProtocol

/// The requests a client sends, as JSON bodies, spelled the way the 0.24.2 Python
/// client spells them (same keys, same forms). Pure values: nothing here does I/O.
enum Requests {
    static let clientVersion = "0.24.2"

    static func register(sessionID: UInt64 = 0) -> JSON {
        [
            "type": "register_request", "version": .string(clientVersion), "store_type": 1,
            "session_id": .number(sessionID), "username": "", "password": "",
        ]
    }

    static let exit: JSON = ["type": "exit_request"]

    static func createBuffer(size: Int) -> JSON {
        ["type": "create_buffer_request", "size": .number(size)]
    }

    static func createBuffers(sizes: [Int]) -> JSON {
        ["type": "create_buffers_request", "num": .number(sizes.count), "sizes": .array(sizes.map { .number($0) })]
    }

    static func createRemoteBuffer(size: Int) -> JSON {
        ["type": "create_remote_buffer_request", "size": .number(size), "compress": false, "use_rdma": false]
    }

    static func seal(_ id: ObjectID) -> JSON {
        ["type": "seal_request", "object_id": .number(id.rawValue)]
    }

    /// `{"num": n, "0": id, …, "unsafe": b}` with ids sorted and deduplicated, as the 0.24.2 client sends.
    static func getBuffers(_ ids: [ObjectID], unsafe: Bool, remote: Bool = false) -> JSON {
        var o: [String: JSON] = [
            "type": .string(remote ? "get_remote_buffers_request" : "get_buffers_request"),
            "num": .number(ids.count), "unsafe": .bool(unsafe),
        ]
        for (i, id) in ids.enumerated() { o[String(i)] = .number(id.rawValue) }
        if remote {
            o["compress"] = false
            o["use_rdma"] = false
        }
        return .object(o)
    }

    static func dropBuffer(_ id: ObjectID) -> JSON {
        ["type": "drop_buffer_request", "id": .number(id.rawValue)]
    }

    static func createData(_ content: JSON) -> JSON {
        ["type": "create_data_request", "content": content]
    }

    static func getData(_ ids: [ObjectID], syncRemote: Bool, wait: Bool) -> JSON {
        [
            "type": "get_data_request", "id": .array(ids.map { .number($0.rawValue) }),
            "sync_remote": .bool(syncRemote), "wait": .bool(wait),
        ]
    }

    static func listData(pattern: String, regex: Bool, limit: Int) -> JSON {
        ["type": "list_data_request", "pattern": .string(pattern), "regex": .bool(regex), "limit": .number(limit)]
    }

    static func exists(_ id: ObjectID) -> JSON {
        ["type": "exists_request", "id": .number(id.rawValue)]
    }

    static func delete(_ ids: [ObjectID], force: Bool, deep: Bool, memoryTrim: Bool) -> JSON {
        [
            "type": "del_data_request", "id": .array(ids.map { .number($0.rawValue) }),
            "force": .bool(force), "deep": .bool(deep), "memory_trim": .bool(memoryTrim), "fastpath": false,
        ]
    }

    static func persist(_ id: ObjectID) -> JSON {
        ["type": "persist_request", "id": .number(id.rawValue)]
    }

    static func ifPersist(_ id: ObjectID) -> JSON {
        ["type": "if_persist_request", "id": .number(id.rawValue)]
    }

    static func putName(_ id: ObjectID, _ name: String) -> JSON {
        ["type": "put_name_request", "object_id": .number(id.rawValue), "name": .string(name)]
    }

    static func getName(_ name: String, wait: Bool) -> JSON {
        ["type": "get_name_request", "name": .string(name), "wait": .bool(wait)]
    }

    static func listNames(pattern: String, regex: Bool, limit: Int) -> JSON {
        ["type": "list_name_request", "pattern": .string(pattern), "regex": .bool(regex), "limit": .number(limit)]
    }

    static func dropName(_ name: String) -> JSON {
        ["type": "drop_name_request", "name": .string(name)]
    }

    static func migrate(_ id: ObjectID) -> JSON {
        ["type": "migrate_object_request", "object_id": .number(id.rawValue)]
    }

    static let clusterMeta: JSON = ["type": "cluster_meta"]
    static let instanceStatus: JSON = ["type": "instance_status_request"]
    static let clear: JSON = ["type": "clear_request"]
}
