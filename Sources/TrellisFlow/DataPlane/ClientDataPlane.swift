import TrellisClient
import TrellisProtocol

/// The data plane over the Trellis daemons of a runtime, through the Swift client.
///
/// - Residency: the bytes of an object's blobs that live in a replica's own arena.
/// - Move: the target replica migrates the object from its owner over RPC (daemon to
///   daemon, straight into its arena) and binds the copy to the replica-local name
///   ``localName(_:replica:)``, which the step bootstrap resolves before the shared name;
///   so a step's `get(name=…)` is local and zero-copy whatever flags it passes, while the
///   shared name keeps pointing at the original for everyone else.
/// - Delete: every object of the names that lives on that replica, and the names.
public struct ClientDataPlane: DataPlane {
    public let replicas: [Replica]

    public init(replicas: [Replica]) throws {
        self.replicas = replicas
    }

    /// The name a replica-local copy of `name` is bound to.
    public static func localName(_ name: String, replica: Int) -> String { "\(name)@r\(replica)" }

    private func connect(_ replica: Replica) throws -> Client {
        try Client(socket: replica.socket)
    }

    /// The id `name` resolves to on `replica`: its local copy first, else the shared object.
    private func resolve(_ name: String, on replica: Replica, _ client: Client) throws -> ObjectID? {
        if let local = try lookup(Self.localName(name, replica: replica.index), client) { return local }
        return try lookup(name, client)
    }

    /// The object bound to `name`, nil if the name is unbound.
    private func lookup(_ name: String, _ client: Client) throws(ClientError) -> ObjectID? {
        let found: Result<ObjectID, ClientError>
        do throws(ClientError) {
            found = .success(try client.getName(name))
        } catch {
            found = .failure(error)
        }
        switch found {
        case .success(let id): return id
        case .failure(let e) where e.code == .objectNotExists: return nil
        case .failure(let e): throw e
        }
    }

    private func localBytes(_ id: ObjectID, _ client: Client) throws -> Int {
        let meta = try client.getMetadata(id)
        let mine = meta.blobReferences.filter { $0.instanceID == nil || $0.instanceID == client.instanceID }.map(\.id)
        guard !mine.isEmpty else { return 0 }
        return try client.getBlobs(mine).values.reduce(0) { $0 + $1.count }
    }

    public func residentBytes(of names: [String], on replica: Replica) async throws -> [String: Int] {
        try await residentObjects(of: names, on: replica).mapValues(\.bytes)
    }

    public func residentObjects(of names: [String], on replica: Replica) async throws -> [String: ResidentObject] {
        let client = try connect(replica)
        defer { client.close() }
        var out: [String: ResidentObject] = [:]
        for name in names {
            guard let id = try resolve(name, on: replica, client) else { continue }
            out[name] = ResidentObject(id: id.rawValue, bytes: try localBytes(id, client))
        }
        return out
    }

    public func move(_ name: String, from: Replica, to: Replica) async throws -> Int {
        let client = try connect(to)
        defer { client.close() }
        guard let id = try resolve(name, on: to, client) else {
            throw DataPlaneError("cannot move '\(name)': no such object in the runtime")
        }
        let meta = try client.getMetadata(id)
        if meta.instanceID == client.instanceID { return 0 }  // already here
        let copy = try client.migrate(id)
        try client.putName(Self.localName(name, replica: to.index), for: copy)
        return try localBytes(copy, client)
    }

    public func typeNames(of names: [String], on replica: Replica) async throws -> [String: String] {
        let client = try connect(replica)
        defer { client.close() }
        var out: [String: String] = [:]
        for name in names {
            guard let id = try resolve(name, on: replica, client) else { continue }
            let type = try client.getMetadata(id).typename
            if !type.isEmpty { out[name] = type }
        }
        return out
    }

    public func memory(on replica: Replica) async throws -> ReplicaMemory? {
        let client = try connect(replica)
        defer { client.close() }
        let s = try client.instanceStatus()
        return ReplicaMemory(replica: replica.index, usedBytes: s.memoryUsage, limitBytes: s.memoryLimit)
    }

    public func delete(_ names: [String], on replica: Replica) async throws {
        let client = try connect(replica)
        defer { client.close() }
        for name in names {
            for candidate in [Self.localName(name, replica: replica.index), name] {
                guard let id = try? client.getName(candidate) else { continue }
                let meta = try? client.getMetadata(id)
                // Only what lives here: another replica deletes its own copies.
                guard meta?.instanceID == client.instanceID else { continue }
                try? client.dropName(candidate)
                try client.delete(id, force: true, deep: true)
            }
        }
    }
}
