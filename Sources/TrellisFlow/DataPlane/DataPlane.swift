/// One replica daemon of a runtime, as steps and the data plane reach it.
public struct Replica: Codable, Sendable, Equatable, Hashable {
    /// 0-based index (what placement decisions and run records use).
    public var index: Int
    /// Its IPC socket (what a step gets as `VINEYARD_IPC_SOCKET`).
    public var socket: String
    /// Its RPC port, if it listens for RPC.
    public var rpcPort: Int?
    /// The address its RPC listens on (`nil`: 127.0.0.1); a node's own address on
    /// network-namespace nodes and Kubernetes.
    public var host: String?
    /// The node it runs on (`MY_NODE_NAME`, published in the cluster metadata); `nil` for
    /// replicas of a local runtime, which all share this machine.
    public var node: String?

    /// Creates a replica description.
    public init(index: Int, socket: String, rpcPort: Int? = nil, host: String? = nil, node: String? = nil) {
        self.index = index
        self.socket = socket
        self.rpcPort = rpcPort
        self.host = host
        self.node = node
    }

    /// `<host>:<port>` when it has an RPC port (`VINEYARD_RPC_ENDPOINT`).
    public var rpcEndpoint: String? { rpcPort.map { "\(host ?? "127.0.0.1"):\($0)" } }
}

/// What the flow runner needs from the object store, by object *store* name
/// (the run-prefixed name, see ``ObjectNaming``).
///
/// The runner never touches objects itself: it asks where they are, has inputs moved before a
/// step starts, and deletes a run's objects at the end. The integrator implements this with
/// the Swift client; ``InMemoryDataPlane`` is a fake for tests and dry runs.
///
/// Notes for a vineyard-style implementation, where replicas share metadata (etcd) and a name
/// is global across replicas:
/// - ``residentBytes(of:on:)``: resolve the name, and add up the sizes of the object's blobs
///   whose instance is this replica (0 when it exists only remotely).
/// - ``move(_:from:to:)``: migrate the object into `to` (through `to`'s IPC socket) and point the
///   name at the migrated copy, so the step's `get(name=…)` resolves to a local object whatever
///   its `fetch` flag. Keep the source copy (a step on `from` may be reading it) but remember
///   it, so that ``delete(_:on:)`` on `from` can drop it later.
/// - ``delete(_:on:)``: delete the named objects' copies on that replica (deep) and, once no copy
///   is left, drop the name. The runner calls it for every replica, with the run's output names,
///   when a run succeeds (unless `--keep`) and before each attempt of a step (for that step's
///   outputs, so a retry never sees a half-written leftover).
/// The runner calls these from one task at a time per step; independent steps may call
/// concurrently.
public protocol DataPlane: Sendable {
    /// Bytes of each named object resident on `replica` (blobs in that replica's memory).
    /// Names that are unknown, or known only as remote objects there, are left out
    /// (or reported as 0 when the object exists but has no local bytes).
    func residentBytes(of names: [String], on replica: Replica) async throws -> [String: Int]

    /// ``residentBytes(of:on:)`` with the id each name resolved to on `replica`, when the
    /// data plane learns it from the same lookup (a step placed there is handed the ids of
    /// its inputs and need not look the names up again). Default: no ids.
    func residentObjects(of names: [String], on replica: Replica) async throws -> [String: ResidentObject]

    /// Makes the object called `name` resident on `to`, copying its blobs from `from`, so that
    /// afterwards a get of `name` through `to`'s socket is local and zero-copy. Returns the
    /// bytes copied. The copy on `from` stays (it may be deleted later by ``delete(_:on:)``).
    func move(_ name: String, from: Replica, to: Replica) async throws -> Int

    /// Deletes the named objects (and their names) on `replica`; names that do not exist there
    /// are ignored.
    func delete(_ names: [String], on replica: Replica) async throws

    /// The store's type name of each named object visible on `replica` (for the run report);
    /// unknown names are left out. Default: none known.
    func typeNames(of names: [String], on replica: Replica) async throws -> [String: String]

    /// How much of `replica`'s arena is in use (for the run report's peak memory); nil when the
    /// data plane cannot tell. Default: nil.
    func memory(on replica: Replica) async throws -> ReplicaMemory?
}

/// One named object as seen from a replica: its id there (nil when the data plane did not
/// learn it) and the bytes of its blobs in that replica's memory.
public struct ResidentObject: Sendable, Equatable {
    public var id: UInt64?
    public var bytes: Int
    public init(id: UInt64?, bytes: Int) {
        self.id = id
        self.bytes = bytes
    }
}

extension DataPlane {
    /// The bytes, no ids.
    public func residentObjects(of names: [String], on replica: Replica) async throws -> [String: ResidentObject] {
        try await residentBytes(of: names, on: replica).mapValues { ResidentObject(id: nil, bytes: $0) }
    }

    /// No type names known.
    public func typeNames(of names: [String], on replica: Replica) async throws -> [String: String] { [:] }

    /// Memory use unknown.
    public func memory(on replica: Replica) async throws -> ReplicaMemory? { nil }

    /// Residency of `names` across `replicas`: name → replica index → bytes.
    public func residency(of names: [String], on replicas: [Replica]) async throws -> Residency {
        try await located(names, on: replicas).residency
    }

    /// Residency of `names` across `replicas`, and the ids the lookups found: name →
    /// replica index → id (only where the data plane reports them).
    public func located(_ names: [String], on replicas: [Replica]) async throws
        -> (residency: Residency, ids: [String: [Int: UInt64]])
    {
        var out: Residency = [:]
        var ids: [String: [Int: UInt64]] = [:]
        guard !names.isEmpty else { return (out, ids) }
        for r in replicas {
            for (name, object) in try await residentObjects(of: names, on: r) {
                out[name, default: [:]][r.index] = object.bytes
                if let id = object.id { ids[name, default: [:]][r.index] = id }
            }
        }
        return (out, ids)
    }
}

/// An error from a data plane operation.
public struct DataPlaneError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What failed.
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}

/// How a run's objects are named in the store.
///
/// **Choice: a per-run name prefix, `<run-id>/<name>`, applied by the step's client library.**
/// Steps keep calling `vineyard.put(x, name="x_train")` / `vineyard.get(name="x_train")`
/// unchanged; the runner passes `TRELLIS_NAME_PREFIX=<run-id>/` and the Python bootstrap that
/// runs every Python step wraps the upstream client's name calls (`put_name`, `get_name`,
/// `drop_name`, `list_names` on `vineyard.Client`, through which `put(name=)`/`get(name=)` go)
/// to add it. No `sitecustomize`, no patched site-packages: the wrapper is installed only in
/// processes the runner starts. Command steps that use the vineyard client from Python get the
/// same by running `python3 -m trellis_step script.py` (the bootstrap is on their
/// `PYTHONPATH`); anything else reads `TRELLIS_NAME_PREFIX` itself.
///
/// Why not the alternatives: per-run replica daemons would isolate names too, but cost a
/// runtime start per run and would throw away the resident intermediates `flow resume`
/// reuses; vineyard sessions are not part of the protocol Trellis serves to every client;
/// renaming objects after each step races with concurrent readers. A prefix also makes a run's
/// objects easy to list and delete as a group, and two runs of one flow never collide.
public enum ObjectNaming {
    /// The prefix of a run's objects: `<runID>/`.
    public static func prefix(runID: String) -> String { "\(runID)/" }

    /// The store name of a flow-level object name.
    public static func storeName(_ name: String, runID: String) -> String { prefix(runID: runID) + name }

    /// The flow-level name of a store name of this run, or `nil` if it belongs to another run.
    public static func flowName(_ storeName: String, runID: String) -> String? {
        let p = prefix(runID: runID)
        return storeName.hasPrefix(p) ? String(storeName.dropFirst(p.count)) : nil
    }
}
