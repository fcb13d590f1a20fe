import TrellisProtocol

/// What one daemon tells the cluster about itself (upstream `instances/i<id>/…`,
/// the entries of a `cluster_meta` reply).
public struct InstanceInfo: Sendable, Hashable {
    /// The instance id from ``MetaBackend/allocateInstanceID()``.
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
    /// registration ends (lease expiry or ``MetaBackend/deregister()``).
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

/// Errors of a ``MetaBackend``.
public enum MetaError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The metadata service could not be reached within the connect timeout
    /// (`--meta_timeout`).
    case unreachable(endpoint: String, timeout: Duration, reason: String)
    /// The operation needs ``MetaBackend/register(_:republish:)`` first.
    case notRegistered
    /// This instance's lease is gone (expired while the service was unreachable);
    /// ``MetaBackend/run()`` registers again and calls the republish handler.
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

/// What the daemon needs from cluster metadata: membership, persisted objects and
/// names shared between the daemons of one cluster.
///
/// Lifecycle: ``connect()`` (optional; waits for the service up to the connect
/// timeout), ``allocateInstanceID()``, ``register(_:republish:)``, then
/// ``run()`` in the service group for the lease keepalive and recovery. ``stop()``
/// makes `run()` deregister and return; cancelling `run()` just stops the
/// keepalive, so the registration expires after the lease TTL.
///
/// Everything this instance publishes (its instance record, objects and names) is
/// attached to its lease: when the daemon dies, all of it disappears within the TTL.
public protocol MetaBackend: AnyObject, Sendable {
    /// Where the metadata lives, for logs (`local`, or the etcd endpoint and prefix).
    var endpointDescription: String { get }

    /// The registration made by ``register(_:republish:)``, if any.
    var registeredInstance: InstanceInfo? { get }

    /// Waits until the metadata service answers; throws ``MetaError/unreachable(endpoint:timeout:reason:)``
    /// once the connect timeout has passed. Later calls return at once.
    func connect() async throws

    /// Atomically takes the next free instance id of the cluster (the first is 0).
    func allocateInstanceID() async throws -> UInt64

    /// Registers `instance` under a lease of the configured TTL (or updates the
    /// registration, keeping the lease). `republish` is called whenever the backend
    /// had to register again (see ``MetaRepublishHandler``).
    func register(_ instance: InstanceInfo, republish: @escaping MetaRepublishHandler) async throws

    /// Keeps the lease alive and re-registers after lease loss or service restarts,
    /// until ``stop()`` (then deregisters and returns) or cancellation (then returns
    /// without deregistering). Throws ``MetaError/notRegistered`` if called before
    /// ``register(_:republish:)``.
    func run() async throws

    /// Asks ``run()`` to deregister and return. Safe to call from any context.
    func stop()

    /// Revokes this instance's lease now: its instance record, objects and names go away.
    func deregister() async throws

    /// The live instances, by id.
    func instances() async throws -> [InstanceInfo]

    /// Returns once instance `id` is no longer registered (at once if it is not).
    /// Cancellable.
    func waitForInstanceExit(_ id: UInt64) async throws

    /// Publishes (or replaces) persisted object `objectID` with metadata tree
    /// `metadata` (JSON text), owned by this instance.
    func publishObject(_ objectID: UInt64, metadata: String) async throws

    /// Publishes several objects in as few round trips as the backend allows (a
    /// DataFrame persists ~50 at once).
    func publishObjects(_ objects: [(objectID: UInt64, metadata: String)]) async throws

    /// Removes a published object; returns whether it was there.
    @discardableResult
    func removeObject(_ objectID: UInt64) async throws -> Bool

    /// One published object, or `nil`.
    func object(_ objectID: UInt64) async throws -> PersistedObject?

    /// All published objects of the cluster, by id.
    func objects() async throws -> [PersistedObject]

    /// Binds `name` to `objectID` (replacing an earlier binding). The binding is
    /// attached to this instance's registration.
    func putName(_ name: String, objectID: UInt64) async throws

    /// The object bound to `name`, or `nil`.
    func objectID(forName name: String) async throws -> UInt64?

    /// Removes `name`; returns whether it was bound.
    @discardableResult
    func dropName(_ name: String) async throws -> Bool

    /// All names of the cluster with their objects.
    func names() async throws -> [String: UInt64]

    /// Returns the object bound to `name` as soon as it is bound (at once if it is).
    /// Cancellable; survives service restarts.
    func waitForName(_ name: String) async throws -> UInt64
}
