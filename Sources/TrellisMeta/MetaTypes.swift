import TrellisProtocol
import TrellisSystem

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

    /// The record as stored: `{"meta": <tree text>, "owner": n}`, or for a tree of
    /// ``compressAbove`` bytes or more `{"n": <tree bytes>, "owner": n, "z": <base64>}`
    /// — the tree deflated with ``dictionary`` (a seed frame's 48 records: ~50 KB of
    /// etcd transaction become ~7 KB, and its persist about half as long).
    public var storedText: String {
        let bytes = Array(metadata.utf8)
        if bytes.count >= Self.compressAbove, let z = Deflate.compress(bytes, dictionary: Self.dictionary),
            z.count * 4 / 3 < bytes.count
        {
            return JSON.object(["owner": .number(owner), "z": .string(Base64.encode(z)), "n": .number(bytes.count)])
                .description
        }
        return JSON.object(["owner": .number(owner), "meta": .string(metadata)]).description
    }

    /// Reads either form of ``storedText``; nil for anything else (a deflated tree that is
    /// corrupt, larger than ``maxTreeBytes`` or not the size it announces, or not UTF-8).
    public init?(objectID: UInt64, storedText: String) {
        guard let json = try? JSONParser.parse(storedText), let owner = json["owner"]?.uint64Value else { return nil }
        if let metadata = json["meta"]?.stringValue {
            self.init(objectID: objectID, owner: owner, metadata: metadata)
            return
        }
        guard let text = json["z"]?.stringValue, let size = json["n"]?.uint64Value, size <= Self.maxTreeBytes,
            let z = Base64.decode(text),
            let bytes = Deflate.decompress(z, size: Int(size), dictionary: Self.dictionary),
            let metadata = String(validating: bytes, as: UTF8.self)
        else { return nil }
        self.init(objectID: objectID, owner: owner, metadata: metadata)
    }

    /// Trees this long or longer are stored deflated (a one-blob tensor's is ~440 bytes).
    static let compressAbove = 256
    /// The largest deflated tree a record may announce.
    static let maxTreeBytes: UInt64 = 64 << 20

    /// The preset dictionary of deflated records: what vineyard trees repeat (keys in the
    /// order the daemon writes them, the common type names). Records written with it can
    /// only be read with it: it never changes (another would be another key than `z`).
    static let dictionary: [UInt8] = Array(
        (#"{"__timestamp":,"buffer_":{"id":"o","instance_id":0,"length":0,"nbytes":0,"transient":true,"#
            + #""typename":"vineyard::Blob"},"global":false,"id":"o","instance_id":0,"nbytes":,"order_":"\"C\"","#
            + #""partition_index_":"[]","shape_":"[]","signature":,"transient":false,"#
            + #""typename":"vineyard::Tensor<int64>","value_type_":"int64","value_type_meta_":"<i8"}"#
            + #""typename":"vineyard::Tensor<double>","value_type_":"double","value_type_meta_":"<f8"}"#
            + #""__values_-key-","__values_-value-","columns_":"[","index_":{"typename":"vineyard::Index","#
            + #""value_type_":"int64","partition_index_column_":0,"partition_index_row_":0,"row_batch_index_":0,"#
            + #""typename":"vineyard::DataFrame""#).utf8)
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
