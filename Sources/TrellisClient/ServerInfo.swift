import TrellisProtocol

/// What the daemon said about itself when the connection registered (`register_reply`).
public struct ServerInfo: Sendable, Equatable {
    /// The daemon's instance id; metadata created on this connection carries it.
    public var instanceID: UInt64
    /// The daemon's version string (`"0.24.2"` for Trellis and upstream).
    public var version: String
    /// The daemon's own `--socket` path, as configured.
    public var ipcSocket: String
    /// `host:port` of the daemon's RPC listener (`0.0.0.0:0` when disabled).
    public var rpcEndpoint: String
    /// The session this connection belongs to (0 = root).
    public var sessionID: UInt64
    /// Whether the daemon accepts zstd-compressed RPC transfers.
    public var supportsRPCCompression: Bool
    /// The protocol extensions the daemon advertises (`trellis_extensions`: Trellis
    /// daemons; empty for upstream vineyardd).
    public var extensions: Set<String>

    /// Makes a value (tests, fakes).
    public init(
        instanceID: UInt64, version: String, ipcSocket: String, rpcEndpoint: String, sessionID: UInt64,
        supportsRPCCompression: Bool, extensions: Set<String> = []
    ) {
        self.extensions = extensions
        self.instanceID = instanceID
        self.version = version
        self.ipcSocket = ipcSocket
        self.rpcEndpoint = rpcEndpoint
        self.sessionID = sessionID
        self.supportsRPCCompression = supportsRPCCompression
    }
}

/// The daemon's `instance_status` reply: the seven upstream fields, plus the arena
/// figures Trellis adds (`nil` when the daemon is upstream vineyardd).
public struct InstanceStatus: Sendable, Equatable {
    /// The daemon's instance id.
    public var instanceID: UInt64
    /// `--deployment` (`"local"` by default).
    public var deployment: String
    /// Bytes allocated in the arena.
    public var memoryUsage: Int
    /// The arena's size (`--size`).
    public var memoryLimit: Int
    /// Requests parked waiting (for names or objects to appear).
    public var deferredRequests: Int
    /// Open IPC connections.
    public var ipcConnections: Int
    /// Open RPC connections.
    public var rpcConnections: Int
    /// Free bytes in the arena (Trellis only).
    public var freeBytes: Int?
    /// The largest block that one allocation can still get (Trellis only).
    public var largestFreeBlock: Int?
    /// External fragmentation in [0, 1]: 1 − largest free block / free bytes (Trellis only).
    public var fragmentation: Double?
    /// Number of metadata objects (Trellis only).
    public var objects: Int?
    /// Number of blobs (Trellis only).
    public var blobs: Int?
    /// Number of names (Trellis only).
    public var names: Int?
    /// Bytes of blobs moved to the spill directory (Trellis with `--spill_path` only).
    public var spilledBytes: Int?
    /// What backs the arena: "4KiB", "thp" (transparent huge pages) or "hugetlb" (Trellis only).
    public var pages: String?
    /// The reply's `meta` object as received, including keys this type does not know.
    public var raw: JSON

    /// Decodes the `meta` object of `instance_status_reply`; the seven upstream keys are required.
    public init(json: JSON) throws(ClientError) {
        let r = FieldReader(json, command: "instance_status_reply")
        do {
            instanceID = try r.uint("instance_id")
            deployment = try r.string("deployment", default: "")
            memoryUsage = try r.size("memory_usage")
            memoryLimit = try r.size("memory_limit")
            deferredRequests = try r.size("deferred_requests")
            ipcConnections = try r.size("ipc_connections")
            rpcConnections = try r.size("rpc_connections")
        } catch {
            throw .badReply(error.message)
        }
        freeBytes = json["free_bytes"]?.intValue
        largestFreeBlock = json["largest_free_block"]?.intValue
        fragmentation = json["fragmentation"]?.doubleValue
        spilledBytes = json["spilled_bytes"]?.intValue
        pages = json["pages"]?.stringValue
        objects = json["objects"]?.intValue
        blobs = json["blobs"]?.intValue
        names = json["names"]?.intValue
        raw = json
    }
}

/// One instance of the cluster, from the `cluster_meta` reply.
public struct ClusterInstance: Sendable, Equatable {
    /// The instance id (`i<id>` key).
    public var instanceID: UInt64
    /// The host the daemon runs on.
    public var hostname: String?
    /// The node name (`MY_NODE_NAME`, else the host name).
    public var nodename: String?
    /// The daemon's IPC socket path.
    public var ipcSocket: String?
    /// `host:port`.
    public var rpcEndpoint: String?
    /// Everything the daemon reported for this instance.
    public var raw: JSON

    init(instanceID: UInt64, json: JSON) {
        self.instanceID = instanceID
        hostname = json["hostname"]?.stringValue
        nodename = json["nodename"]?.stringValue
        ipcSocket = json["ipc_socket"]?.stringValue
        rpcEndpoint = json["rpc_endpoint"]?.stringValue
        raw = json
    }
}

extension InstanceStatus {
    /// What `trellis status --json` prints (and the dashboard serves for each replica): the
    /// reply's `meta` object as received, plus the daemon's `socket` and `version`.
    public func json(server: ServerInfo) -> JSON {
        var o = raw.objectValue ?? [:]
        o["socket"] = .string(server.ipcSocket)
        o["version"] = .string(server.version)
        return .object(o)
    }
}
