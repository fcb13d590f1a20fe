import TrellisProtocol

/// What one daemon tells the cluster about itself (upstream `instances/i<id>/…`,
/// the entries of a `cluster_meta` reply).
public struct InstanceInfo: Sendable, Hashable {
    /// The instance id from ``MetaCore/allocateInstanceID()``.
    public var id: UInt64
    /// Host name advertised to peers (upstream `MY_HOST_NAME` or the host name).
    public var hostname: String
    /// Node name (upstream `MY_NODE_NAME` or the host name).
    public var nodename: String
    /// `host:port` of the daemon's RPC listener.
    public var rpcEndpoint: String
    /// Path of the daemon's UNIX socket.
    public var ipcSocket: String
    /// Opaque host identity (upstream: `gethostid()`).
    public var hostid: UInt64
    /// Opaque start stamp (upstream: a cycle counter).
    public var timestamp: UInt64

    /// Creates an instance description.
    public init(
        id: UInt64, hostname: String, nodename: String, rpcEndpoint: String, ipcSocket: String, hostid: UInt64,
        timestamp: UInt64
    ) {
        self.id = id
        self.hostname = hostname
        self.nodename = nodename
        self.rpcEndpoint = rpcEndpoint
        self.ipcSocket = ipcSocket
        self.hostid = hostid
        self.timestamp = timestamp
    }

    /// The fields as upstream's `cluster_meta` shows them for one instance
    /// (`hostid`, `hostname`, `ipc_socket`, `nodename`, `rpc_endpoint`, `timestamp`).
    public var clusterMetaJSON: JSON {
        [
            "hostid": .number(hostid), "hostname": .string(hostname), "ipc_socket": .string(ipcSocket),
            "nodename": .string(nodename), "rpc_endpoint": .string(rpcEndpoint), "timestamp": .number(timestamp),
        ]
    }

    /// The stored form: ``clusterMetaJSON`` plus `instance_id`.
    var storedText: String {
        guard case .object(var fields) = clusterMetaJSON else { return "{}" }
        fields["instance_id"] = .number(id)
        return JSON.object(fields).description
    }

    init?(storedText: String) {
        guard let json = try? JSONParser.parse(storedText), let id = json["instance_id"]?.uint64Value else {
            return nil
        }
        self.init(
            id: id, hostname: json["hostname"]?.stringValue ?? "", nodename: json["nodename"]?.stringValue ?? "",
            rpcEndpoint: json["rpc_endpoint"]?.stringValue ?? "", ipcSocket: json["ipc_socket"]?.stringValue ?? "",
            hostid: json["hostid"]?.uint64Value ?? 0, timestamp: json["timestamp"]?.uint64Value ?? 0)
    }
}

/// A persisted object as the cluster shares it.
public struct PersistedObject: Sendable, Hashable {
    /// The object's id.
    public var objectID: UInt64
    /// The instance that published it; the object disappears when that instance's
    /// registration ends (lease expiry or ``MetaCore/deregister()``).
    public var owner: UInt64
    /// The object's metadata tree as JSON text, exactly as published.
    public var metadata: String

    /// Creates a record.
    public init(objectID: UInt64, owner: UInt64, metadata: String) {
        self.objectID = objectID
        self.owner = owner
        self.metadata = metadata
    }

    var storedText: String {
        JSON.object(["owner": .number(owner), "meta": .string(metadata)]).description
    }

    init?(objectID: UInt64, storedText: String) {
        guard let json = try? JSONParser.parse(storedText), let owner = json["owner"]?.uint64Value,
            let metadata = json["meta"]?.stringValue
        else { return nil }
        self.init(objectID: objectID, owner: owner, metadata: metadata)
    }
}

/// Errors of a ``MetaCore``.
public enum MetaError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The metadata service could not be reached within the connect timeout
    /// (`--meta_timeout`).
    case unreachable(endpoint: String, timeout: Duration, reason: String)
    /// The operation needs ``MetaCore/register(_:republish:)`` first.
    case notRegistered
    /// This instance's lease is gone (expired while the service was unreachable);
    /// ``MetaCore/run()`` registers again and calls the republish handler.
    case leaseLost
    /// A request to the metadata service failed.
    case unavailable(String)
    /// A stored value could not be decoded.
    case corrupt(key: String, reason: String)
    /// A name or other argument is not acceptable.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .unreachable(let endpoint, let timeout, let reason):
            return "metadata service \(endpoint) unreachable within \(timeout): \(reason)"
        case .notRegistered: return "this instance is not registered with the metadata service"
        case .leaseLost: return "the instance's lease expired; re-registration pending"
        case .unavailable(let reason): return "metadata service request failed: \(reason)"
        case .corrupt(let key, let reason): return "corrupt metadata at \(key): \(reason)"
        case .invalidArgument(let reason): return "invalid argument: \(reason)"
        }
    }
}

/// Called after this instance registered again (its lease was lost or the metadata
/// service restarted or came back after an outage). It receives the current
/// registration and should publish the instance's persisted objects and names again.
public typealias MetaRepublishHandler = @Sendable (InstanceInfo) async throws -> Void
