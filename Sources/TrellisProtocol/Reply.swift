/// A reply, as the daemon writes it and a client reads it: one type for both directions.
/// `encode()` writes the keys vineyardd 0.24.2 writes (payload lists twice, as it does);
/// `decode(_:)` reads what the 0.24.2 client reads, checking every field's type.
public enum Reply: Sendable, Equatable {
    case register(Register)
    /// `create_buffer_reply` (also the RPC `create_remote_buffer` reply): the blob's payload
    /// and the descriptor number announced (−1 when none follows the frame).
    case createBuffer(Payload, fd: Int32)
    /// `create_buffers_reply`: payloads, the descriptors announced, and the blob ids.
    case createBuffers([Payload], fds: [Int32])
    /// `get_buffers_reply` (IPC and RPC): payloads and the descriptors announced.
    case getBuffers([Payload], fds: [Int32], compress: Bool)
    case createData(Created)
    case createDatas([Created])
    /// `get_data_reply` (to `get_data` and `list_data`): object id (as upstream prints it) → tree.
    case data([String: JSON])
    case exists(Bool)
    /// `del_data_with_feedbacks_reply`: the blobs the deletion freed.
    case deletedBlobs([ObjectID])
    case ifPersist(Bool)
    case shallowCopy(ObjectID)
    case memoryTrim(trimmed: Bool)
    case getName(ObjectID)
    case listName([String: ObjectID])
    /// `cluster_meta`: `"i<instance id>"` → the instance's description.
    case clusterMeta([String: JSON])
    /// `instance_status_reply`: the status object.
    case instanceStatus(JSON)
    case debug(JSON)
    case migrateObject(ObjectID)
    case isSpilled(Bool)
    case isInUse(Bool)
    /// `get_next_stream_chunk_reply`: the chunk blob's payload and the descriptor announced.
    case nextStreamChunk(Payload, fd: Int32)
    /// `pull_next_stream_chunk_reply`: the next chunk's id.
    case pullStreamChunk(ObjectID)
    /// `new_session_reply`: the new session's socket.
    case newSession(socketPath: String)
    /// `trellis_split_buffer_reply` (a Trellis extension): the pieces' blob ids, in order.
    case splitBuffer([ObjectID])
    /// `trellis_get_objects_reply` (a Trellis extension): the trees as `get_data_reply`'s
    /// content, their blobs' payloads and the descriptors announced, as `get_buffers_reply`'s.
    case objects([String: JSON], payloads: [Payload], fds: [Int32])
    /// A reply that carries nothing but its type.
    case done(Done)
    /// An error reply: `{"code": N, "message": "…"}`, no type.
    case error(VineyardError)

    public struct Register: Sendable, Equatable {
        public var instanceID: UInt64
        public var ipcSocket: String
        public var rpcEndpoint: String
        public var sessionID: UInt64
        public var storeMatch: Bool
        public var supportsRPCCompression: Bool
        public var version: String
        /// Trellis' extensions of the protocol (`trellis_extensions`; absent from
        /// vineyardd's reply, and upstream clients ignore it): e.g. `split_buffer`.
        public var extensions: [String]

        public init(
            instanceID: UInt64, ipcSocket: String, rpcEndpoint: String, sessionID: UInt64, storeMatch: Bool,
            supportsRPCCompression: Bool, version: String, extensions: [String] = []
        ) {
            self.extensions = extensions
            self.instanceID = instanceID
            self.ipcSocket = ipcSocket
            self.rpcEndpoint = rpcEndpoint
            self.sessionID = sessionID
            self.storeMatch = storeMatch
            self.supportsRPCCompression = supportsRPCCompression
            self.version = version
        }
    }

    /// What `create_data` answers: the object's id, signature and owning instance.
    public struct Created: Sendable, Equatable {
        public var id: ObjectID
        public var signature: UInt64
        public var instanceID: UInt64

        public init(id: ObjectID, signature: UInt64, instanceID: UInt64) {
            self.id = id
            self.signature = signature
            self.instanceID = instanceID
        }
    }

    /// The replies with no fields, by their `type`.
    public enum Done: String, Sendable, CaseIterable {
        case seal = "seal_reply"
        case dropBuffer = "drop_buffer_reply"
        case shrinkBuffer = "shrink_buffer_reply"
        case increaseReferenceCount = "increase_reference_count_reply"
        case release = "release_reply"
        case delData = "del_data_reply"
        case persist = "persist_reply"
        case label = "label_reply"
        case clear = "clear_reply"
        case putName = "put_name_reply"
        case dropName = "drop_name_reply"
        case evict = "evict_reply"
        case load = "load_reply"
        case unpin = "unpin_reply"
        case createStream = "create_stream_reply"
        case openStream = "open_stream_reply"
        case pushNextStreamChunk = "push_next_stream_chunk_reply"
        case stopStream = "stop_stream_reply"
        case dropStream = "drop_stream_reply"
        case deleteSession = "delete_session_reply"
        case moveBuffersOwnership = "move_buffers_ownership_reply"
    }

    /// The reply's `type` (`"error"` for an error reply, which carries none).
    public var type: String {
        switch self {
        case .register: return "register_reply"
        case .createBuffer: return "create_buffer_reply"
        case .createBuffers: return "create_buffers_reply"
        case .getBuffers: return "get_buffers_reply"
        case .createData: return "create_data_reply"
        case .createDatas: return "create_datas_reply"
        case .data: return "get_data_reply"
        case .exists: return "exists_reply"
        case .deletedBlobs: return "del_data_with_feedbacks_reply"
        case .ifPersist: return "if_persist_reply"
        case .shallowCopy: return "shallow_copy_reply"
        case .memoryTrim: return "memory_trim_reply"
        case .getName: return "get_name_reply"
        case .listName: return "list_name_reply"
        case .clusterMeta: return "cluster_meta"
        case .instanceStatus: return "instance_status_reply"
        case .debug: return "debug_reply"
        case .migrateObject: return "migrate_object_reply"
        case .isSpilled: return "is_spilled_reply"
        case .isInUse: return "is_in_use_reply"
        case .nextStreamChunk: return "get_next_stream_chunk_reply"
        case .pullStreamChunk: return "pull_next_stream_chunk_reply"
        case .newSession: return "new_session_reply"
        case .splitBuffer: return "trellis_split_buffer_reply"
        case .objects: return "trellis_get_objects_reply"
        case .done(let d): return d.rawValue
        case .error: return "error"
        }
    }

    // MARK: Encoding

    public func encode() -> JSON {
        func typed(_ fields: [String: JSON]) -> JSON {
            var o = fields
            o["type"] = .string(type)
            return .object(o)
        }
        func ids(_ list: [ObjectID]) -> JSON { .array(list.map { .number($0.rawValue) }) }
        func fdList(_ fds: [Int32]) -> JSON { .array(fds.map { .int(Int64($0)) }) }
        /// Payloads twice, as upstream writes them: a `payloads` array and `"0"`, `"1"`, … keys.
        func payloads(_ ps: [Payload]) -> [String: JSON] {
            var o: [String: JSON] = ["num": .number(ps.count)]
            var list: [JSON] = []
            list.reserveCapacity(ps.count)
            for (i, p) in ps.enumerated() {
                let j = p.json
                list.append(j)
                o[String(i)] = j
            }
            o["payloads"] = .array(list)
            return o
        }
        switch self {
        case .register(let r):
            return typed([
                "instance_id": .number(r.instanceID), "ipc_socket": .string(r.ipcSocket),
                "rpc_endpoint": .string(r.rpcEndpoint), "session_id": .number(r.sessionID),
                "store_match": .bool(r.storeMatch), "support_rpc_compression": .bool(r.supportsRPCCompression),
                "version": .string(r.version),
            ].merging(r.extensions.isEmpty ? [:] : ["trellis_extensions": .array(r.extensions.map { .string($0) })]) { a, _ in a })
        case .createBuffer(let p, let fd):
            return typed(["id": .number(p.objectID.rawValue), "created": p.json, "fd": .int(Int64(fd))])
        case .createBuffers(let ps, let fds):
            var o = payloads(ps)
            o["fds"] = fdList(fds)
            o["ids"] = ids(ps.map(\.objectID))
            return typed(o)
        case .getBuffers(let ps, let fds, let compress):
            var o = payloads(ps)
            o["fds"] = fdList(fds)
            o["compress"] = .bool(compress)
            return typed(o)
        case .createData(let c):
            return typed(["id": .number(c.id.rawValue), "signature": .number(c.signature), "instance_id": .number(c.instanceID)])
        case .createDatas(let cs):
            return typed([
                "num": .number(cs.count), "ids": ids(cs.map(\.id)), "signatures": .array(cs.map { .number($0.signature) }),
                "instance_ids": .array(cs.map { .number($0.instanceID) }),
            ])
        case .data(let content): return typed(["content": content.isEmpty ? .null : .object(content)])  // upstream: null when empty
        case .exists(let b): return typed(["exists": .bool(b)])
        case .deletedBlobs(let list): return typed(["deleted_bids": ids(list)])
        case .ifPersist(let b): return typed(["persist": .bool(b)])
        case .shallowCopy(let id): return typed(["target_id": .number(id.rawValue)])
        case .memoryTrim(let trimmed): return typed(["trimmed": .bool(trimmed)])
        case .getName(let id): return typed(["object_id": .number(id.rawValue)])
        case .listName(let names):
            return typed(["names": .object(names.mapValues { .number($0.rawValue) }), "size": .number(names.count)])
        case .clusterMeta(let meta): return typed(["meta": .object(meta)])
        case .instanceStatus(let meta): return typed(["meta": meta])
        case .debug(let result): return typed(["result": result])
        case .migrateObject(let id): return typed(["object_id": .number(id.rawValue)])
        case .isSpilled(let b): return typed(["is_spilled": .bool(b)])
        case .isInUse(let b): return typed(["is_in_use": .bool(b)])
        case .nextStreamChunk(let p, let fd): return typed(["buffer": p.json, "fd": .int(Int64(fd))])
        case .pullStreamChunk(let id): return typed(["chunk": .number(id.rawValue)])
        case .newSession(let path): return typed(["socket_path": .string(path)])
        case .splitBuffer(let pieces): return typed(["ids": ids(pieces)])
        case .objects(let content, let ps, let fds):
            return typed([
                "content": content.isEmpty ? .null : .object(content), "payloads": .array(ps.map(\.json)), "fds": fdList(fds),
            ])
        case .done: return typed([:])
        case .error(let e): return e.reply
        }
    }

    // MARK: Decoding

    /// Reads a reply. A non-zero `code` is an error reply (``error(_:)``), whatever else it
    /// holds, as the upstream client reads it; a reply of a type this protocol does not
    /// know, or with a missing or mistyped field, throws `Invalid` naming it.
    public static func decode(_ json: JSON) throws(VineyardError) -> Reply {
        guard case .object(let o) = json else { throw VineyardError(.invalid, "reply is not a JSON object") }
        if let codeValue = o["code"], let code = codeValue.intValue, code != 0 {
            return .error(VineyardError(StatusCode(rawValue: code), o["message"]?.stringValue ?? ""))
        }
        guard let type = o["type"]?.stringValue else { throw VineyardError(.invalid, "reply without a \"type\"") }
        let r = FieldReader(object: o, command: type)
        func id(_ key: String) throws(VineyardError) -> ObjectID { ObjectID(try r.uint(key)) }
        func bool(_ key: String) throws(VineyardError) -> Bool { try r.bool(key, default: false) }
        func fds() throws(VineyardError) -> [Int32] {
            guard let v = o["fds"] else { return [] }
            guard let a = v.arrayValue else { throw VineyardError(.invalid, "\(type): \"fds\" is not an array") }
            var out: [Int32] = []
            out.reserveCapacity(a.count)
            for e in a {
                guard let i = e.int64Value else { throw VineyardError(.invalid, "\(type): \"fds\" holds a non-integer") }
                out.append(Int32(truncatingIfNeeded: i))
            }
            return out
        }
        /// The `payloads` list (what the 0.24.2 client reads), else the numbered keys.
        func payloads() throws(VineyardError) -> [Payload] {
            if let list = o["payloads"] {
                guard let a = list.arrayValue else { throw VineyardError(.invalid, "\(type): \"payloads\" is not an array") }
                var out: [Payload] = []
                out.reserveCapacity(a.count)
                for p in a { out.append(try Payload(json: p)) }
                return out
            }
            let n = try r.size("num")
            guard n <= Request.maxBlobsPerRequest else { throw VineyardError(.invalid, "\(type): \(n) payloads") }
            var out: [Payload] = []
            for i in 0..<n { out.append(try Payload(json: try r.value(String(i)))) }
            return out
        }
        func uints(_ key: String) throws(VineyardError) -> [UInt64] { try r.uintArray(key) }

        if let done = Done(rawValue: type) { return .done(done) }
        switch type {
        case "register_reply":
            return .register(
                Register(
                    instanceID: try r.uint("instance_id"), ipcSocket: try r.string("ipc_socket", default: ""),
                    rpcEndpoint: try r.string("rpc_endpoint", default: ""), sessionID: try r.optionalUInt("session_id") ?? 0,
                    storeMatch: try r.optionalBool("store_match") ?? true,
                    supportsRPCCompression: try r.optionalBool("support_rpc_compression") ?? false,
                    version: try r.string("version", default: "0.0.0"),
                    extensions: r.object["trellis_extensions"] == nil ? [] : try r.stringArray("trellis_extensions")))
        case "create_buffer_reply":
            return .createBuffer(try Payload(json: try r.value("created")), fd: Int32(truncatingIfNeeded: try r.int("fd")))
        case "create_buffers_reply":
            return .createBuffers(try payloads(), fds: try fds())
        case "get_buffers_reply":
            return .getBuffers(try payloads(), fds: try fds(), compress: try bool("compress"))
        case "create_data_reply":
            return .createData(Created(id: try id("id"), signature: try r.uint("signature"), instanceID: try r.uint("instance_id")))
        case "create_datas_reply":
            let (i, s, n) = (try uints("ids"), try uints("signatures"), try uints("instance_ids"))
            guard i.count == s.count, s.count == n.count else {
                throw VineyardError(.invalid, "create_datas_reply: ids, signatures and instance_ids differ in length")
            }
            return .createDatas((0..<i.count).map { Created(id: ObjectID(i[$0]), signature: s[$0], instanceID: n[$0]) })
        case "get_data_reply":
            guard let content = o["content"], !content.isNull else { return .data([:]) }
            guard let c = content.objectValue else { throw VineyardError(.invalid, "get_data_reply: \"content\" is not an object") }
            return .data(c)
        case "exists_reply": return .exists(try bool("exists"))
        case "del_data_with_feedbacks_reply": return .deletedBlobs(try uints("deleted_bids").map(ObjectID.init(rawValue:)))
        case "if_persist_reply": return .ifPersist(try bool("persist"))
        case "shallow_copy_reply": return .shallowCopy(try id("target_id"))
        case "memory_trim_reply": return .memoryTrim(trimmed: try bool("trimmed"))
        case "get_name_reply": return .getName(try id("object_id"))
        case "list_name_reply":
            guard let v = o["names"], !v.isNull else { return .listName([:]) }
            guard let names = v.objectValue else { throw VineyardError(.invalid, "list_name_reply: \"names\" is not an object") }
            var out: [String: ObjectID] = [:]
            for (k, v) in names {
                guard let u = v.uint64Value else { throw VineyardError(.invalid, "list_name_reply: the id of \(k) is not an integer") }
                out[k] = ObjectID(u)
            }
            return .listName(out)
        case "cluster_meta":
            guard let v = o["meta"], !v.isNull else { return .clusterMeta([:]) }
            guard let meta = v.objectValue else { throw VineyardError(.invalid, "cluster_meta: \"meta\" is not an object") }
            return .clusterMeta(meta)
        case "instance_status_reply":
            guard let meta = o["meta"], meta.objectValue != nil else {
                throw VineyardError(.invalid, "instance_status_reply without an object \"meta\"")
            }
            return .instanceStatus(meta)
        case "debug_reply": return .debug(o["result"] ?? .null)
        case "migrate_object_reply": return .migrateObject(try id("object_id"))
        case "is_spilled_reply": return .isSpilled(try bool("is_spilled"))
        case "is_in_use_reply": return .isInUse(try bool("is_in_use"))
        case "get_next_stream_chunk_reply":
            return .nextStreamChunk(try Payload(json: try r.value("buffer")), fd: Int32(truncatingIfNeeded: try r.int("fd")))
        case "pull_next_stream_chunk_reply": return .pullStreamChunk(try id("chunk"))
        case "new_session_reply": return .newSession(socketPath: try r.string("socket_path"))
        case "trellis_split_buffer_reply": return .splitBuffer(try uints("ids").map { ObjectID($0) })
        case "trellis_get_objects_reply":
            var content: [String: JSON] = [:]
            if let c = o["content"], !c.isNull {
                guard let c = c.objectValue else { throw VineyardError(.invalid, "trellis_get_objects_reply: \"content\" is not an object") }
                content = c
            }
            guard let list = o["payloads"]?.arrayValue else {
                throw VineyardError(.invalid, "trellis_get_objects_reply: \"payloads\" is not an array")
            }
            var ps: [Payload] = []
            for p in list { ps.append(try Payload(json: p)) }
            return .objects(content, payloads: ps, fds: try fds())
        default:
            throw VineyardError(.invalid, "unknown reply type \(type)")
        }
    }
}
