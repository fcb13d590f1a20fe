/// The data plane of a runtime whose replicas are network-namespace nodes.
///
/// Where objects are is read from the cluster metadata exactly as on Kubernetes
/// (``EtcdMetadataDataPlane``: each daemon's instance record names its node, each object's
/// tree its blobs' instances), so the placement the Kubernetes launcher relies on runs here
/// for real. Moves and deletes go to the daemons through their UNIX sockets, which the host
/// reaches (``ClientDataPlane``): a move is the target daemon migrating the object from the
/// owner over the virtual network.
public struct NodesDataPlane: DataPlane {
    public var metadata: EtcdMetadataDataPlane
    public var daemons: ClientDataPlane

    public init(metadata: EtcdMetadataDataPlane, daemons: ClientDataPlane) {
        self.metadata = metadata
        self.daemons = daemons
    }

    /// Binds the replicas to their instances by node name (read from the metadata).
    public static func connect(replicas: [Replica], etcd: EtcdGateway) async throws -> NodesDataPlane {
        let instances = try await EtcdMetadataDataPlane.discover(etcd)
        var ids: [Int: UInt64] = [:]
        for r in replicas {
            guard let i = instances.first(where: { $0.nodename == r.node }) else {
                throw DataPlaneError("node \(r.node ?? "?") (replica \(r.index)) is not registered in the cluster metadata: is its daemon up?")
            }
            ids[r.index] = i.id
        }
        var metadata = EtcdMetadataDataPlane(etcd: etcd, instances: ids, cleaner: nil)
        metadata.liveInstances = Set(ids.values)  // a lost node's objects are gone with it
        return NodesDataPlane(metadata: metadata, daemons: try ClientDataPlane(replicas: replicas))
    }

    public func residentBytes(of names: [String], on replica: Replica) async throws -> [String: Int] {
        try await metadata.residentBytes(of: names, on: replica)
    }

    public func move(_ name: String, from: Replica, to: Replica) async throws -> Int {
        try await daemons.move(name, from: from, to: to)
    }

    public func delete(_ names: [String], on replica: Replica) async throws {
        try await daemons.delete(names, on: replica)
    }

    public func typeNames(of names: [String], on replica: Replica) async throws -> [String: String] {
        try await daemons.typeNames(of: names, on: replica)
    }

    public func memory(on replica: Replica) async throws -> ReplicaMemory? {
        try await daemons.memory(on: replica)
    }
}
