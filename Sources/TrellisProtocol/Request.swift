/// A decoded client request. Decoding validates every field's type, so the daemon's
/// handlers only see well-formed values.
public enum Request: Sendable, Equatable {
    case register(Register)
    case exit
    case createBuffer(size: Int)
    case createBuffers(sizes: [Int])
    case createRemoteBuffer(size: Int, compress: Bool)
    case createRemoteBuffers(sizes: [Int], compress: Bool)
    case getRemoteBuffers(ids: [ObjectID], unsafe: Bool, compress: Bool)
    case seal(ObjectID)
    case getBuffers(ids: [ObjectID], unsafe: Bool)
    case dropBuffer(ObjectID)
    case shrinkBuffer(ObjectID, size: Int)
    /// Trellis extension (`trellis_split_buffer_request`, advertised in the register reply):
    /// an unsealed blob becomes consecutive blobs of these sizes, tiling it exactly;
    /// with `seal` (`"seal": true`, extension `split_seal`) the pieces come out sealed and
    /// used by the connection, as if each had been sealed by a `seal_request`.
    case splitBuffer(ObjectID, sizes: [Int], seal: Bool)
    /// Trellis extension (`trellis_create_range_buffer_request`, extension `range_buffer`):
    /// a new blob of `count` int64 values `start, start + step, …`, written by the daemon
    /// and sealed (used by the connection, as after a seal) — what vineyard stores for a
    /// pandas RangeIndex, without the writer materialising and copying it. Replied to as
    /// `create_buffer_request` is.
    case createRangeBuffer(start: Int64, step: Int64, count: Int)
    /// Trellis extension (`trellis_get_objects_request`, extension `get_objects`): what
    /// `get_data` returns for `ids` and, in the same reply, what `get_buffers` returns for
    /// every blob of this instance their trees refer to (the connection uses them, as
    /// after a `get_buffers`): a reader's two round trips in one. With `name` (instead of
    /// `ids`) the object that name is bound to, as `get_name` finds it: three in one.
    case getObjects(ids: [ObjectID], name: String?, syncRemote: Bool)
    case increaseReferenceCount([ObjectID])
    case release(ObjectID)
    case createData(JSON)
    case createDatas([JSON])
    /// Trellis extension (`trellis_put_request`, extension `put_inline`): a small object
    /// in one round trip. The blobs' bytes come inline (`blobs`, base64), the daemon
    /// allocates, writes and seals them, then creates the tree (`content`), whose blob
    /// members are placeholders `{"__trellis_blob": k}` for the k-th blob — what
    /// `create_buffer`, `seal` and `create_data` do in three round trips. Every blob is
    /// referred to; the object holds them (the connection does not use them after).
    /// All or nothing; at most ``maxInlineBytes`` bytes in all. Replied to as
    /// `create_data_request` is.
    case putInline(JSON, blobs: [[UInt8]])
    case getData(ids: [ObjectID], syncRemote: Bool, wait: Bool)
    case listData(pattern: String, regex: Bool, limit: Int)
    case exists(ObjectID)
    case delData(DelData)
    case persist(ObjectID)
    /// Trellis extension (`trellis_persist_request`, extension `persist_name`): `persist`
    /// then `put_name` of `name` to the object, in one round trip — and, in a cluster, in
    /// one etcd transaction (what `put(value, persist=True, name=…)` asks for). Replied
    /// to as `persist_request` is.
    case persistNamed(ObjectID, name: String)
    case ifPersist(ObjectID)
    case shallowCopy(ObjectID, extra: [String: JSON])
    case label(ObjectID, keys: [String], values: [String])
    case clear
    case memoryTrim
    case putName(ObjectID, name: String)
    case getName(String, wait: Bool)
    case listName(pattern: String, regex: Bool, limit: Int)
    case dropName(String)
    case clusterMeta
    case instanceStatus
    case debug(JSON)
    case migrateObject(ObjectID)
    case evict([ObjectID])
    case load([ObjectID], pin: Bool)
    case unpin([ObjectID])
    case isSpilled(ObjectID)
    case isInUse(ObjectID)
    case createStream(ObjectID)
    /// `open_stream_request`: mode 1 = read, 2 = write.
    case openStream(ObjectID, mode: Int)
    case getNextStreamChunk(ObjectID, size: Int)
    case pushNextStreamChunk(ObjectID, chunk: ObjectID)
    case pullNextStreamChunk(ObjectID)
    case stopStream(ObjectID, failed: Bool)
    case dropStream(ObjectID)
    /// `new_session_request`: 1 = default bulk store (2, plasma, is not served).
    case newSession(bulkStoreType: Int)
    case deleteSession
    /// `move_buffers_ownership_request`: blobs of session `from` moved into this one,
    /// source id → target id (`id_to_id`; the plasma maps are refused).
    case moveBuffersOwnership([BlobMove], from: UInt64)
    /// A command upstream knows but Trellis does not serve (streams, sessions, arenas, plasma, GPU, locks).
    case unsupported(type: String)

    public struct Register: Sendable, Equatable {
        public var version: String
        /// 1 = default bulk store; 2 = plasma (not served by Trellis). Absent counts as 1.
        public var storeType: Int
        public var sessionID: UInt64
        public var username: String
        public var password: String

        public init(version: String, storeType: Int, sessionID: UInt64, username: String, password: String) {
            self.version = version
            self.storeType = storeType
            self.sessionID = sessionID
            self.username = username
            self.password = password
        }
    }

    public struct BlobMove: Sendable, Equatable {
        public var source: ObjectID
        public var target: ObjectID

        public init(source: ObjectID, target: ObjectID) {
            self.source = source
            self.target = target
        }
    }

    public struct DelData: Sendable, Equatable {
        public var ids: [ObjectID]
        public var force: Bool
        public var deep: Bool
        public var memoryTrim: Bool
        public var fastpath: Bool
        public var wantsFeedback: Bool

        public init(ids: [ObjectID], force: Bool, deep: Bool, memoryTrim: Bool, fastpath: Bool, wantsFeedback: Bool) {
            self.ids = ids
            self.force = force
            self.deep = deep
            self.memoryTrim = memoryTrim
            self.fastpath = fastpath
            self.wantsFeedback = wantsFeedback
        }
    }

    /// The request's `type` string, as it arrived.
    public static func type(of message: JSON) throws(VineyardError) -> String {
        guard case .object(let o) = message, let t = o["type"] else {
            throw VineyardError(.invalid, "Invalid message: no 'type' field")
        }
        guard let s = t.stringValue else { throw VineyardError(.invalid, "Invalid message: 'type' must be a string") }
        return s
    }

    /// Every request `type` ``decode(_:)`` accepts (including the ones answered as
    /// unsupported): a bounded set, which metrics use as labels.
    public static let wireTypes: Set<String> = [
        "register_request", "exit_request", "create_buffer_request", "create_buffers_request",
        "create_remote_buffer_request", "create_remote_buffers_request", "get_remote_buffers_request", "seal_request",
        "get_buffers_request", "drop_buffer_request", "shrink_buffer_request", "increase_reference_count_request",
        "release_request", "create_data_request", "create_datas_request", "get_data_request", "list_data_request",
        "exists_request", "del_data_request", "del_data_with_feedbacks_request", "persist_request", "if_persist_request",
        "shallow_copy_request", "label_request", "clear_request", "memory_trim_request", "put_name_request",
        "get_name_request", "list_name_request", "drop_name_request", "cluster_meta", "instance_status_request",
        "debug_command", "migrate_object_request", "evict_request", "load_request", "unpin_request", "is_spilled_request",
        "is_in_use_request", "create_stream_request", "open_stream_request", "get_next_stream_chunk_request",
        "push_next_stream_chunk_request", "pull_next_stream_chunk_request", "stop_stream_request", "drop_stream_request",
        "new_session_request", "delete_session_request", "move_buffers_ownership_request",
        "make_arena_request", "finalize_arena_request", "create_disk_buffer_request", "create_gpu_buffer_request",
        "get_gpu_buffers_request", "create_buffer_by_plasma_request", "get_buffers_by_plasma_request", "plasma_seal_request",
        "plasma_release_request", "plasma_delete_data_request", "acquire_lock_request", "release_lock_request",
        "release_blobs_with_rdma_request", "sync_meta_request",
    ]

    /// Decodes a request body (already parsed JSON).
    /// The most blobs one `create_buffers`/`get_buffers` request (IPC or RPC) may name.
    /// Each blob costs a payload of ~300 bytes, twice, in the reply: without a bound a
    /// 0.2 MiB request of zero sizes (or repeated ids) asked for a 30 MiB reply. 16,384
    /// blobs keep the reply near 10 MiB; a larger batch is refused (Invalid) and can be split.
    public static let maxBlobsPerRequest = 16_384

    /// The most bytes (decoded) one `trellis_put_request` may carry inline: it is for
    /// small objects; larger ones go through `create_buffers` and a mapping.
    public static let maxInlineBytes = 1 << 20

    /// The key of a blob placeholder in a `trellis_put_request`'s tree.
    public static let inlineBlobKey = "__trellis_blob"

    public static func decode(_ message: JSON) throws(VineyardError) -> Request {
        let type = try type(of: message)
        let r = FieldReader(message, command: type)
        func ids(_ key: String) throws(VineyardError) -> [ObjectID] { try r.uintArray(key).map(ObjectID.init(rawValue:)) }
        func id(_ key: String) throws(VineyardError) -> ObjectID { ObjectID(try r.uint(key)) }
        func limit() throws(VineyardError) -> Int {
            guard let v = r.object["limit"], !v.isNull else { return Int.max }
            guard let u = v.uint64Value else { throw VineyardError(.invalid, "Invalid message: field 'limit' of '\(type)' must be an unsigned integer, got \(v.kindName)") }
            return u > UInt64(Int.max) ? Int.max : Int(u)
        }
        switch type {
        case "register_request":
            var storeType = 1
            if let st = r.object["store_type"] {
                switch st {
                case .string(let s): storeType = s == "Plasma" ? 2 : (s == "Normal" ? 1 : 0)
                default:
                    guard let i = st.int64Value else { throw VineyardError(.invalid, "Invalid message: field 'store_type' of 'register_request' must be a number or a string") }
                    storeType = Int(i)
                }
            }
            return .register(
                Register(
                    version: try r.string("version", default: "0.0.0"), storeType: storeType,
                    sessionID: try r.optionalUInt("session_id") ?? 0,
                    username: try r.string("username", default: ""), password: try r.string("password", default: "")))
        case "exit_request": return .exit
        case "create_buffer_request": return .createBuffer(size: try r.size("size"))
        case "create_buffers_request":
            return .createBuffers(sizes: try sizes(r))
        case "create_remote_buffer_request":
            return .createRemoteBuffer(size: try r.size("size"), compress: try r.bool("compress", default: false))
        case "create_remote_buffers_request":
            return .createRemoteBuffers(sizes: try sizes(r), compress: try r.bool("compress", default: false))
        case "get_remote_buffers_request":
            return .getRemoteBuffers(
                ids: try batch(r.numberedIDs(), type).map(ObjectID.init(rawValue:)), unsafe: try r.bool("unsafe", default: false),
                compress: try r.bool("compress", default: false))
        case "seal_request": return .seal(try id("object_id"))
        case "get_buffers_request":
            return .getBuffers(ids: try batch(r.numberedIDs(), type).map(ObjectID.init(rawValue:)), unsafe: try r.bool("unsafe", default: false))
        case "drop_buffer_request": return .dropBuffer(try id("id"))
        case "shrink_buffer_request": return .shrinkBuffer(try id("id"), size: try r.size("size"))
        case "trellis_split_buffer_request": return .splitBuffer(try id("id"), sizes: try sizes(r), seal: try r.bool("seal", default: false))
        case "trellis_create_range_buffer_request":
            return .createRangeBuffer(start: try r.int("start"), step: try r.int("step"), count: try r.size("num"))
        case "trellis_get_objects_request":
            let syncRemote = try r.bool("sync_remote", default: false)
            if r.object["name"] != nil && r.object["ids"] == nil {
                return .getObjects(ids: [], name: try r.string("name"), syncRemote: syncRemote)
            }
            return .getObjects(ids: try batch(try ids("ids"), type), name: nil, syncRemote: syncRemote)
        case "increase_reference_count_request": return .increaseReferenceCount(try ids("ids"))
        case "release_request": return .release(try id("object_id"))
        case "create_data_request":
            let content = try r.value("content")
            guard case .object = content else { throw VineyardError(.metaTreeInvalid, "Invalid metadata: 'content' must be an object") }
            return .createData(content)
        case "trellis_put_request":
            let content = try r.value("content")
            guard case .object = content else { throw VineyardError(.metaTreeInvalid, "Invalid metadata: 'content' must be an object") }
            return .putInline(content, blobs: try inlineBlobs(r))
        case "create_datas_request":
            guard let a = try r.value("contents").arrayValue else { throw VineyardError(.invalid, "Invalid message: 'contents' must be an array") }
            return .createDatas(a)
        case "get_data_request":
            return .getData(ids: try ids("id"), syncRemote: try r.bool("sync_remote", default: false), wait: try r.bool("wait", default: false))
        case "list_data_request":
            return .listData(pattern: try r.string("pattern", default: "*"), regex: try r.bool("regex", default: false), limit: try limit())
        case "exists_request": return .exists(try id("id"))
        case "del_data_request", "del_data_with_feedbacks_request":
            return .delData(
                DelData(
                    ids: try ids("id"), force: try r.bool("force", default: false), deep: try r.bool("deep", default: true),
                    memoryTrim: try r.bool("memory_trim", default: false), fastpath: try r.bool("fastpath", default: false),
                    wantsFeedback: type == "del_data_with_feedbacks_request"))
        case "persist_request": return .persist(try id("id"))
        case "trellis_persist_request": return .persistNamed(try id("id"), name: try r.string("name"))
        case "if_persist_request": return .ifPersist(try id("id"))
        case "shallow_copy_request":
            var extra: [String: JSON] = [:]
            if let e = r.object["extra"], !e.isNull {
                guard let o = e.objectValue else { throw VineyardError(.invalid, "Invalid message: 'extra' must be an object") }
                extra = o
            }
            return .shallowCopy(try id("id"), extra: extra)
        case "label_request":
            let keys = try r.stringArray("keys")
            let values = try r.stringArray("values")
            guard keys.count == values.count else { throw VineyardError(.invalid, "Invalid message: 'keys' and 'values' differ in length") }
            return .label(try id("id"), keys: keys, values: values)
        case "clear_request": return .clear
        case "memory_trim_request": return .memoryTrim
        case "put_name_request": return .putName(try id("object_id"), name: try r.string("name"))
        case "get_name_request": return .getName(try r.string("name"), wait: try r.bool("wait", default: false))
        case "list_name_request":
            return .listName(pattern: try r.string("pattern", default: "*"), regex: try r.bool("regex", default: false), limit: try limit())
        case "drop_name_request": return .dropName(try r.string("name"))
        case "cluster_meta": return .clusterMeta
        case "instance_status_request": return .instanceStatus
        case "debug_command": return .debug(r.object["debug"] ?? .null)
        case "migrate_object_request": return .migrateObject(try id("object_id"))
        case "evict_request": return .evict(try ids("ids"))
        case "load_request": return .load(try ids("ids"), pin: try r.bool("pin", default: false))
        case "unpin_request": return .unpin(try ids("ids"))
        case "is_spilled_request": return .isSpilled(try id("id"))
        case "is_in_use_request": return .isInUse(try id("id"))
        case "create_stream_request": return .createStream(try id("object_id"))
        case "open_stream_request": return .openStream(try id("object_id"), mode: try r.size("mode"))
        case "get_next_stream_chunk_request": return .getNextStreamChunk(try id("id"), size: try r.size("size"))
        case "push_next_stream_chunk_request": return .pushNextStreamChunk(try id("id"), chunk: try id("chunk"))
        case "pull_next_stream_chunk_request": return .pullNextStreamChunk(try id("id"))
        case "stop_stream_request": return .stopStream(try id("id"), failed: try r.bool("failed", default: false))
        case "drop_stream_request": return .dropStream(try id("id"))
        case "new_session_request": return .newSession(bulkStoreType: try r.optionalUInt("bulk_store_type").map { Int(clamping: $0) } ?? 1)
        case "delete_session_request": return .deleteSession
        case "move_buffers_ownership_request":
            for plasma in ["pid_to_id", "id_to_pid", "pid_to_pid"] {
                if let v = r.object[plasma], v.arrayValue?.isEmpty == false || v.objectValue?.isEmpty == false {
                    throw VineyardError(.invalid, "move_buffers_ownership: '\(plasma)' names plasma buffers; Trellis serves no plasma store")
                }
            }
            return .moveBuffersOwnership(try batch(Self.pairs(r, "id_to_id"), type), from: try r.uint("session_id"))
        case "make_arena_request", "finalize_arena_request",
            "create_disk_buffer_request", "create_gpu_buffer_request", "get_gpu_buffers_request",
            "create_buffer_by_plasma_request", "get_buffers_by_plasma_request", "plasma_seal_request",
            "plasma_release_request", "plasma_delete_data_request", "acquire_lock_request",
            "release_lock_request", "release_blobs_with_rdma_request", "sync_meta_request":
            return .unsupported(type: type)
        default:
            throw VineyardError(.invalid, "Got unexpected command: \(type)")
        }
    }

    private static func batch<T>(_ items: [T], _ type: String) throws(VineyardError) -> [T] {
        guard items.count <= maxBlobsPerRequest else {
            throw VineyardError(
                .invalid, "Invalid message: '\(type)' names \(items.count) blobs, more than the limit of \(maxBlobsPerRequest) per request")
        }
        return items
    }

    /// A `std::map<uint64, uint64>` as nlohmann's json writes it: `[[k, v], …]` (absent: empty).
    private static func pairs(_ r: FieldReader, _ key: String) throws(VineyardError) -> [BlobMove] {
        guard let v = r.object[key], !v.isNull else { return [] }
        guard let a = v.arrayValue else {
            throw VineyardError(.invalid, "Invalid message: field '\(key)' of '\(r.command)' must be an array of [source, target] id pairs")
        }
        var out: [BlobMove] = []
        out.reserveCapacity(min(a.count, maxBlobsPerRequest))
        for e in a {
            guard let p = e.arrayValue, p.count == 2, let s = p[0].uint64Value, let t = p[1].uint64Value else {
                throw VineyardError(.invalid, "Invalid message: field '\(key)' of '\(r.command)' must hold [source, target] id pairs")
            }
            out.append(BlobMove(source: ObjectID(s), target: ObjectID(t)))
        }
        return out
    }

    private static func inlineBlobs(_ r: FieldReader) throws(VineyardError) -> [[UInt8]] {
        let texts = try batch(r.stringArray("blobs"), r.command)
        var out: [[UInt8]] = []
        out.reserveCapacity(texts.count)
        var total = 0  // (checked blob by blob: at most one blob past the limit is decoded)
        for (k, text) in texts.enumerated() {
            guard let bytes = Base64.decodeStrict(text) else {
                throw VineyardError(.invalid, "Invalid message: blob \(k) of '\(r.command)' is not base64 (padded, standard alphabet)")
            }
            total += bytes.count
            guard total <= maxInlineBytes else {
                throw VineyardError(
                    .invalid, "Invalid message: '\(r.command)' carries more than \(maxInlineBytes) bytes inline: write larger objects through create_buffers")
            }
            out.append(bytes)
        }
        return out
    }

    private static func sizes(_ r: FieldReader) throws(VineyardError) -> [Int] {
        let raw = try batch(r.uintArray("sizes"), r.command)
        if let n = try r.optionalUInt("num"), n != UInt64(raw.count) {
            throw VineyardError(.invalid, "Invalid message: 'num' (\(n)) does not match \(raw.count) sizes")
        }
        return raw.map { $0 > UInt64(Int.max) ? Int.max : Int($0) }
    }
}
