/// Encoding: the request as the 0.24.2 client spells it on the wire (same keys, same
/// forms), so that `Request.decode(r.encode()) == r` and every request the upstream
/// client sent re-encodes to its captured bytes. The Swift client, the Migrator and the
/// test harnesses build their requests here.
extension Request {
    public func encode() -> JSON {
        func typed(_ type: String, _ fields: [String: JSON] = [:]) -> JSON {
            var o = fields
            o["type"] = .string(type)
            return .object(o)
        }
        func idList(_ ids: [ObjectID]) -> JSON { .array(ids.map { .number($0.rawValue) }) }
        /// `{"num": n, "0": id, …}`: how the client lists the blobs of a buffers request.
        func numbered(_ ids: [ObjectID], into o: inout [String: JSON]) {
            o["num"] = .number(ids.count)
            for (i, id) in ids.enumerated() { o[String(i)] = .number(id.rawValue) }
        }
        func sizes(_ s: [Int]) -> [String: JSON] { ["num": .number(s.count), "sizes": .array(s.map { .number($0) })] }
        func limit(_ l: Int) -> JSON { .number(l) }

        switch self {
        case .register(let r):
            return typed(
                "register_request",
                [
                    "version": .string(r.version), "store_type": .number(r.storeType), "session_id": .number(r.sessionID),
                    "username": .string(r.username), "password": .string(r.password),
                ])
        case .exit: return typed("exit_request")
        case .createBuffer(let size): return typed("create_buffer_request", ["size": .number(size)])
        case .createBuffers(let s): return typed("create_buffers_request", sizes(s))
        case .createRemoteBuffer(let size, let compress):
            return typed("create_remote_buffer_request", ["size": .number(size), "compress": .bool(compress), "use_rdma": false])
        case .createRemoteBuffers(let s, let compress):
            var o = sizes(s)
            o["compress"] = .bool(compress)
            o["use_rdma"] = false
            return typed("create_remote_buffers_request", o)
        case .getRemoteBuffers(let ids, let unsafe, let compress):
            var o: [String: JSON] = ["unsafe": .bool(unsafe), "compress": .bool(compress), "use_rdma": false]
            numbered(ids, into: &o)
            return typed("get_remote_buffers_request", o)
        case .seal(let id): return typed("seal_request", ["object_id": .number(id.rawValue)])
        case .getBuffers(let ids, let unsafe):
            var o: [String: JSON] = ["unsafe": .bool(unsafe)]
            numbered(ids, into: &o)
            return typed("get_buffers_request", o)
        case .dropBuffer(let id): return typed("drop_buffer_request", ["id": .number(id.rawValue)])
        case .shrinkBuffer(let id, let size):
            return typed("shrink_buffer_request", ["id": .number(id.rawValue), "size": .number(size)])
        case .splitBuffer(let id, let s, let seal):
            var fields = sizes(s)
            fields["id"] = .number(id.rawValue)
            if seal { fields["seal"] = .bool(true) }
            return typed("trellis_split_buffer_request", fields)
        case .createRangeBuffer(let start, let step, let count):
            return typed("trellis_create_range_buffer_request", ["start": .int(start), "step": .int(step), "num": .number(count)])
        case .getObjects(let ids, let name, let syncRemote):
            if let name { return typed("trellis_get_objects_request", ["name": .string(name), "sync_remote": .bool(syncRemote)]) }
            return typed("trellis_get_objects_request", ["ids": idList(ids), "sync_remote": .bool(syncRemote)])
        case .increaseReferenceCount(let ids): return typed("increase_reference_count_request", ["ids": idList(ids)])
        case .release(let id): return typed("release_request", ["object_id": .number(id.rawValue)])
        case .createData(let content): return typed("create_data_request", ["content": content])
        case .putInline(let content, let blobs):
            return typed("trellis_put_request", ["content": content, "blobs": .array(blobs.map { .string(Base64.encode($0)) })])
        case .createDatas(let contents):
            return typed("create_datas_request", ["num": .number(contents.count), "contents": .array(contents)])
        case .getData(let ids, let syncRemote, let wait):
            return typed("get_data_request", ["id": idList(ids), "sync_remote": .bool(syncRemote), "wait": .bool(wait)])
        case .listData(let pattern, let regex, let l):
            return typed("list_data_request", ["pattern": .string(pattern), "regex": .bool(regex), "limit": limit(l)])
        case .exists(let id): return typed("exists_request", ["id": .number(id.rawValue)])
        case .delData(let d):
            return typed(
                d.wantsFeedback ? "del_data_with_feedbacks_request" : "del_data_request",
                [
                    "id": idList(d.ids), "force": .bool(d.force), "deep": .bool(d.deep), "memory_trim": .bool(d.memoryTrim),
                    "fastpath": .bool(d.fastpath),
                ])
        case .persist(let id): return typed("persist_request", ["id": .number(id.rawValue)])
        case .persistNamed(let id, let name):
            return typed("trellis_persist_request", ["id": .number(id.rawValue), "name": .string(name)])
        case .ifPersist(let id): return typed("if_persist_request", ["id": .number(id.rawValue)])
        case .shallowCopy(let id, let extra):
            // The client sends `extra` only when it has some.
            return typed("shallow_copy_request", extra.isEmpty ? ["id": .number(id.rawValue)] : ["id": .number(id.rawValue), "extra": .object(extra)])
        case .label(let id, let keys, let values):
            return typed(
                "label_request", ["id": .number(id.rawValue), "keys": .array(keys.map(JSON.string)), "values": .array(values.map(JSON.string))])
        case .clear: return typed("clear_request")
        case .memoryTrim: return typed("memory_trim_request")
        case .putName(let id, let name): return typed("put_name_request", ["object_id": .number(id.rawValue), "name": .string(name)])
        case .getName(let name, let wait): return typed("get_name_request", ["name": .string(name), "wait": .bool(wait)])
        case .listName(let pattern, let regex, let l):
            return typed("list_name_request", ["pattern": .string(pattern), "regex": .bool(regex), "limit": limit(l)])
        case .dropName(let name): return typed("drop_name_request", ["name": .string(name)])
        case .clusterMeta: return typed("cluster_meta")
        case .instanceStatus: return typed("instance_status_request")
        case .debug(let body): return typed("debug_command", ["debug": body])
        case .migrateObject(let id): return typed("migrate_object_request", ["object_id": .number(id.rawValue)])
        case .evict(let ids): return typed("evict_request", ["ids": idList(ids)])
        case .load(let ids, let pin): return typed("load_request", ["ids": idList(ids), "pin": .bool(pin)])
        case .unpin(let ids): return typed("unpin_request", ["ids": idList(ids)])
        case .isSpilled(let id): return typed("is_spilled_request", ["id": .number(id.rawValue)])
        case .isInUse(let id): return typed("is_in_use_request", ["id": .number(id.rawValue)])
        case .createStream(let id): return typed("create_stream_request", ["object_id": .number(id.rawValue)])
        case .openStream(let id, let mode):
            return typed("open_stream_request", ["object_id": .number(id.rawValue), "mode": .number(mode)])
        case .getNextStreamChunk(let id, let size):
            return typed("get_next_stream_chunk_request", ["id": .number(id.rawValue), "size": .number(size)])
        case .pushNextStreamChunk(let id, let chunk):
            return typed("push_next_stream_chunk_request", ["id": .number(id.rawValue), "chunk": .number(chunk.rawValue)])
        case .pullNextStreamChunk(let id): return typed("pull_next_stream_chunk_request", ["id": .number(id.rawValue)])
        case .stopStream(let id, let failed):
            return typed("stop_stream_request", ["id": .number(id.rawValue), "failed": .bool(failed)])
        case .dropStream(let id): return typed("drop_stream_request", ["id": .number(id.rawValue)])
        case .newSession(let t): return typed("new_session_request", ["bulk_store_type": .number(t)])
        case .deleteSession: return typed("delete_session_request")
        case .moveBuffersOwnership(let moves, let from):
            return typed(
                "move_buffers_ownership_request",
                [
                    "id_to_id": .array(moves.map { .array([.number($0.source.rawValue), .number($0.target.rawValue)]) }),
                    "session_id": .number(from),
                ])
        case .unsupported(let type): return typed(type)
        }
    }

    /// `register_request` as the 0.24.2 client sends it.
    public static func register(sessionID: UInt64 = 0, username: String = "", password: String = "") -> Request {
        .register(Register(version: clientVersion, storeType: 1, sessionID: sessionID, username: username, password: password))
    }

    /// `del_data_request` as the client's `delete` sends it (no feedback, no fast path).
    public static func delete(_ ids: [ObjectID], force: Bool, deep: Bool, memoryTrim: Bool) -> Request {
        .delData(DelData(ids: ids, force: force, deep: deep, memoryTrim: memoryTrim, fastpath: false, wantsFeedback: false))
    }

    /// The client version Trellis's own clients announce (the upstream client's).
    public static let clientVersion = "0.24.2"
}
