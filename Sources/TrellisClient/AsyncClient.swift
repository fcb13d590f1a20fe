import TrellisSystem
import TrellisProtocol

/// An async face over one ``Client`` connection.
///
/// Each call runs the blocking request on the blocking pool (``Blocking``), so a task
/// awaiting a reply (or a name, with `wait`) never occupies a thread of the cooperative
/// pool; the client's own lock keeps one request in flight per connection. Requests are short and run to completion even if their task is
/// cancelled — except waits (`wait: true`), which can last forever: cancelling a task that
/// waits breaks the connection (``Client/interrupt()``), the call throws, and the client is closed.
///
/// ```swift
/// let client = try await AsyncClient(socket: "/tmp/trellis.sock")
/// let id = try await client.run { try $0.putTensor([1.5, 2.5] as [Double]).id }
/// let frame = try await client.get(DataFrame.self, name: "seed", wait: true)
/// ```
public final class AsyncClient: Sendable {
    /// The blocking connection underneath; its calls may also be used directly.
    public let client: Client

    /// Connects over IPC (see ``Client/init(socket:maxReplySize:)``) off the cooperative pool.
    public init(socket: String? = nil) async throws(ClientError) {
        self.client = try await Blocking.run { () throws(ClientError) -> Client in try Client(socket: socket) }
    }

    /// Connects over RPC (TCP) off the cooperative pool.
    public init(host: String, port: Int) async throws(ClientError) {
        self.client = try await Blocking.run { () throws(ClientError) -> Client in try Client(host: host, port: port) }
    }

    /// Wraps an existing connection.
    public init(_ client: Client) {
        self.client = client
    }

    /// Runs `body` with the blocking client on the blocking pool.
    ///
    /// - Parameter interruptible: cancelling the task breaks the connection to end `body`
    ///   early (for waits that may never be answered).
    public func run<R: Sendable>(
        interruptible: Bool = false, _ body: @escaping @Sendable (Client) throws(ClientError) -> R
    ) async throws(ClientError) -> R {
        let client = self.client
        guard interruptible else {
            return try await Blocking.run { () throws(ClientError) -> R in try body(client) }
        }
        let result = await withTaskCancellationHandler {
            await Blocking.run { () -> Result<R, ClientError> in Result { () throws(ClientError) -> R in try body(client) } }
        } onCancel: {
            client.interrupt()
        }
        return try result.get()
    }

    /// Closes the connection (see ``Client/close()``).
    public func close() async {
        let client = self.client
        await Blocking.run { client.close() }
    }

    // MARK: Conveniences (each is one `run`)

    /// See ``Client/getObject(_:syncRemote:)``.
    public func getObject(_ id: ObjectID) async throws(ClientError) -> StoredObject {
        try await run { (c) throws(ClientError) in try c.getObject(id) }
    }

    /// See ``Client/get(_:_:)``.
    public func get<T: StoredValue>(_ type: T.Type, _ id: ObjectID) async throws(ClientError) -> T {
        try await run { (c) throws(ClientError) in try c.get(type, id) }
    }

    /// See ``Client/get(_:name:wait:)``; a cancelled wait breaks the connection.
    public func get<T: StoredValue>(_ type: T.Type, name: String, wait: Bool = false) async throws(ClientError) -> T {
        try await run(interruptible: wait) { (c) throws(ClientError) in try c.get(type, name: name, wait: wait) }
    }

    /// See ``Client/createMetadata(_:)``.
    public func createMetadata(_ meta: ObjectMeta) async throws(ClientError) -> ObjectMeta {
        try await run { (c) throws(ClientError) in try c.createMetadata(meta) }
    }

    /// See ``Client/getMetadata(_:syncRemote:wait:)-(ObjectID,_,_)``.
    public func getMetadata(_ id: ObjectID, wait: Bool = false) async throws(ClientError) -> ObjectMeta {
        try await run(interruptible: wait) { (c) throws(ClientError) in try c.getMetadata(id, wait: wait) }
    }

    /// See ``Client/listMetadata(pattern:regex:limit:)``.
    public func listMetadata(pattern: String = "*", regex: Bool = false, limit: Int = 5) async throws(ClientError) -> [ObjectMeta] {
        try await run { (c) throws(ClientError) in try c.listMetadata(pattern: pattern, regex: regex, limit: limit) }
    }

    /// See ``Client/putTensor(_:shape:)``.
    public func putTensor<T: TensorElement>(_ values: [T], shape: [Int]? = nil) async throws(ClientError) -> Tensor<T> {
        try await run { (c) throws(ClientError) in try c.putTensor(values, shape: shape) }
    }

    /// See ``Client/putBlob(_:)-([UInt8])``.
    public func putBlob(_ bytes: [UInt8]) async throws(ClientError) -> Blob {
        try await run { (c) throws(ClientError) in try c.putBlob(bytes) }
    }

    /// See ``Client/getBlobs(_:unsafe:)``.
    public func getBlobs(_ ids: [ObjectID]) async throws(ClientError) -> [ObjectID: Blob] {
        try await run { (c) throws(ClientError) in try c.getBlobs(ids) }
    }

    /// See ``Client/delete(_:force:deep:memoryTrim:)-([ObjectID],_,_,_)``.
    public func delete(_ ids: [ObjectID], force: Bool = false, deep: Bool = true) async throws(ClientError) {
        try await run { (c) throws(ClientError) in try c.delete(ids, force: force, deep: deep) }
    }

    /// See ``Client/exists(_:)``.
    public func exists(_ id: ObjectID) async throws(ClientError) -> Bool {
        try await run { (c) throws(ClientError) in try c.exists(id) }
    }

    /// See ``Client/persist(_:)``.
    public func persist(_ id: ObjectID) async throws(ClientError) {
        try await run { (c) throws(ClientError) in try c.persist(id) }
    }

    /// See ``Client/publish(_:as:)``.
    public func publish(_ id: ObjectID, as name: String) async throws(ClientError) {
        try await run { (c) throws(ClientError) in try c.publish(id, as: name) }
    }

    /// See ``Client/putName(_:for:)``.
    public func putName(_ name: String, for id: ObjectID) async throws(ClientError) {
        try await run { (c) throws(ClientError) in try c.putName(name, for: id) }
    }

    /// See ``Client/getName(_:wait:)``; a cancelled wait breaks the connection.
    public func getName(_ name: String, wait: Bool = false) async throws(ClientError) -> ObjectID {
        try await run(interruptible: wait) { (c) throws(ClientError) in try c.getName(name, wait: wait) }
    }

    /// See ``Client/listNames(pattern:regex:limit:)``.
    public func listNames(pattern: String = "*", regex: Bool = false, limit: Int = 5) async throws(ClientError) -> [NamedObject] {
        try await run { (c) throws(ClientError) in try c.listNames(pattern: pattern, regex: regex, limit: limit) }
    }

    /// See ``Client/dropName(_:)``.
    public func dropName(_ name: String) async throws(ClientError) {
        try await run { (c) throws(ClientError) in try c.dropName(name) }
    }

    /// See ``Client/instanceStatus()``.
    public func instanceStatus() async throws(ClientError) -> InstanceStatus {
        try await run { (c) throws(ClientError) in try c.instanceStatus() }
    }

    /// See ``Client/clusterMeta()``.
    public func clusterMeta() async throws(ClientError) -> [ClusterInstance] {
        try await run { (c) throws(ClientError) in try c.clusterMeta() }
    }
}
