import Logging

/// Cluster metadata kept in this process (`--meta local`): a single-daemon
/// "cluster" needing no external service, with the same semantics as
/// ``EtcdMetaBackend`` (instance ids, leases with TTL, objects, names, waits).
///
/// Backends that share one ``LocalMetaStore`` see each other like daemons sharing
/// an etcd prefix; the tests use this to run the same conformance suite on both.
///
/// ```swift
/// let meta = LocalMetaBackend(logger: logger)
/// let id = try await meta.allocateInstanceID()   // 0
/// try await meta.register(info(id)) { _ in }
/// try await meta.run()                             // in the service group
/// ```
public final class LocalMetaBackend: MetaBackend {
    /// The store holding the metadata.
    public let store: LocalMetaStore
    let core: MetaCore<LocalMetaStore>

    /// Creates a backend on `store` (a fresh one by default) under key prefix
    /// `prefix`, registering with leases of `leaseTTL` (whole seconds, at least 1).
    public init(
        store: LocalMetaStore = LocalMetaStore(), prefix: String = "/vineyard", leaseTTL: Duration = .seconds(10),
        logger: Logger
    ) {
        self.store = store
        self.core = MetaCore(kv: store, prefix: prefix, leaseTTL: leaseTTL, connectTimeout: .seconds(1), logger: logger)
    }

    public var endpointDescription: String { core.kv.endpointDescription }
    public var registeredInstance: InstanceInfo? { core.registeredInstance }
    public func connect() async throws { try await core.connect() }
    public func allocateInstanceID() async throws -> UInt64 { try await core.allocateInstanceID() }
    public func register(_ instance: InstanceInfo, republish: @escaping MetaRepublishHandler) async throws {
        try await core.register(instance, republish: republish)
    }
    public func run() async throws { try await core.run() }
    public func stop() { core.stop() }
    public func deregister() async throws { try await core.deregister() }
    public func instances() async throws -> [InstanceInfo] { try await core.instances() }
    public func waitForInstanceExit(_ id: UInt64) async throws { try await core.waitForInstanceExit(id) }
    public func publishObject(_ objectID: UInt64, metadata: String) async throws {
        try await core.publishObject(objectID, metadata: metadata)
    }
    public func publishObjects(_ objects: [(objectID: UInt64, metadata: String)]) async throws {
        try await core.publishObjects(objects)
    }
    @discardableResult
    public func removeObject(_ objectID: UInt64) async throws -> Bool { try await core.removeObject(objectID) }
    public func object(_ objectID: UInt64) async throws -> PersistedObject? { try await core.object(objectID) }
    public func objects() async throws -> [PersistedObject] { try await core.objects() }
    public func putName(_ name: String, objectID: UInt64) async throws {
        try await core.putName(name, objectID: objectID)
    }
    public func objectID(forName name: String) async throws -> UInt64? { try await core.objectID(forName: name) }
    @discardableResult
    public func dropName(_ name: String) async throws -> Bool { try await core.dropName(name) }
    public func names() async throws -> [String: UInt64] { try await core.names() }
    public func waitForName(_ name: String) async throws -> UInt64 { try await core.waitForName(name) }
}
