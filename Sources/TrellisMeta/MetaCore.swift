import AsyncHTTPClient
import Logging
import Synchronization
import TrellisSystem

/// Cluster metadata: membership, persisted objects and names shared between the daemons
/// of one cluster, on a key-value service (``MetaKV``): a real etcd (`--meta etcd`,
/// ``init(etcd:httpClient:watchHTTPClient:logger:)``) or an in-process
/// ``LocalMetaStore`` (`--meta local` and the tests, ``init(local:prefix:leaseTTL:logger:)``).
/// One type whatever the service: the same code, the same conformance tests.
///
/// Lifecycle: ``connect()`` (optional; waits for the service up to the connect
/// timeout), ``allocateInstanceID()``, ``register(_:republish:)``, then ``run()`` in the
/// service group for the lease keepalive and recovery. ``stop()`` makes `run()`
/// deregister and return; cancelling `run()` just stops the keepalive, so the
/// registration expires after the lease TTL. Only the instance record is attached to the
/// lease: objects and names stay until deleted (through any instance), so an instance
/// that stops leaves the cluster's instance list within the TTL while the metadata and
/// names of what it persisted stay readable (its blobs are gone with it).
///
///
/// Layout under the prefix `P` (a Trellis cluster only talks to itself, so this is
/// simpler than upstream's):
///
/// ```
/// P/next_instance_id        decimal, the next id to hand out
/// P/instances/<id>          InstanceInfo JSON                     (lease of <id>)
/// P/objects/<16 hex>        {"meta":"<metadata JSON text>","owner":<id>}  (no lease)
/// P/objects.changed         empty; rewritten by every write of object records (no lease)
/// P/names/<name>            decimal object id                     (no lease)
/// ```
public final class MetaCore: Sendable {
    let kv: any MetaKV
    let logger: Logger
    let prefix: String
    let leaseTTLSeconds: Int64
    let connectTimeout: Duration
    let keepaliveInterval: Duration
    let retryInterval: Duration

    private struct State {
        var connected = false
        var instance: InstanceInfo?
        var lease: Int64 = 0
        /// The store's epoch when the lease was granted or last refreshed.
        var epoch: String?
        var republish: MetaRepublishHandler?
        var running = false
    }

    private let state = Mutex(State())

    /// The cluster's published objects, mirrored for listing (started on first use).
    let mirror: ObjectMirror
    private let stopSignal: AsyncStream<Void>
    private let stopContinuation: AsyncStream<Void>.Continuation

    /// Cluster metadata in an in-process ``LocalMetaStore`` (a fresh one by default) under
    /// key prefix `prefix`, registering with leases of `leaseTTL` (whole seconds, at least 1).
    /// Instances sharing one store see each other as daemons sharing an etcd prefix.
    public convenience init(
        local store: LocalMetaStore = LocalMetaStore(), prefix: String = "/vineyard", leaseTTL: Duration = .seconds(10),
        logger: Logger
    ) {
        self.init(kv: store, prefix: prefix, leaseTTL: leaseTTL, connectTimeout: .seconds(1), logger: logger)
    }

    /// Cluster metadata in etcd, through its v3 HTTP/JSON gateway; nothing is sent before
    /// the first call. The HTTP clients default to process-wide ones (see ``EtcdClient``).
    public convenience init(
        etcd configuration: EtcdConfiguration, httpClient: HTTPClient = EtcdClient.sharedHTTPClient,
        watchHTTPClient: HTTPClient = EtcdClient.sharedWatchHTTPClient, logger: Logger
    ) {
        let client = EtcdClient(
            endpoint: configuration.endpoint, requestTimeout: configuration.timeout, httpClient: httpClient,
            watchHTTPClient: watchHTTPClient, logger: logger)
        self.init(
            kv: EtcdKV(client: client, endpointDescription: "\(client.endpoint) prefix \(configuration.prefix)"),
            prefix: configuration.prefix, leaseTTL: configuration.leaseTTL, connectTimeout: configuration.timeout,
            logger: logger)
    }

    /// Where the metadata lives, for logs (`local`, or the etcd endpoint and prefix).
    public var endpointDescription: String { kv.endpointDescription }

    init(kv: any MetaKV, prefix: String, leaseTTL: Duration, connectTimeout: Duration, logger: Logger) {
        self.kv = kv
        self.logger = logger
        var prefix = prefix
        while prefix.hasSuffix("/") { prefix.removeLast() }
        self.prefix = prefix
        let (seconds, attoseconds) = leaseTTL.components
        self.leaseTTLSeconds = max(1, seconds + (attoseconds > 0 ? 1 : 0))
        self.connectTimeout = connectTimeout
        self.keepaliveInterval = .seconds(leaseTTLSeconds) / 3
        self.retryInterval = min(.milliseconds(500), .seconds(leaseTTLSeconds) / 4)
        (stopSignal, stopContinuation) = AsyncStream.makeStream(of: Void.self)
        self.mirror = ObjectMirror(kv: kv, prefix: self.prefix, retryInterval: retryInterval, logger: logger)
    }

    deinit { mirror.stop() }

    // MARK: Keys

    var counterKey: String { prefix + "/next_instance_id" }
    var instancesPrefix: String { prefix + "/instances/" }
    var objectsPrefix: String { prefix + "/objects/" }
    var namesPrefix: String { prefix + "/names/" }

    func instanceKey(_ id: UInt64) -> String { instancesPrefix + String(id) }

    func objectKey(_ id: UInt64) -> String {
        let hex = String(id, radix: 16)
        return objectsPrefix + String(repeating: "0", count: 16 - hex.count) + hex
    }

    func nameKey(_ name: String) throws -> String {
        guard !name.isEmpty else { throw MetaError.invalidArgument("empty name") }
        return namesPrefix + name
    }

    /// The registration made by ``register(_:republish:)``, if any.
    public var registeredInstance: InstanceInfo? { state.withLock { $0.instance } }

    /// The lease of the current registration (0 if none); for tests.
    var currentLease: Int64 { state.withLock { $0.lease } }

    private func registration() throws -> (InstanceInfo, Int64) {
        try state.withLock {
            guard let instance = $0.instance, $0.lease != 0 else { throw MetaError.notRegistered }
            return (instance, $0.lease)
        }
    }

    // MARK: Connection and registration

    /// Waits until the metadata service answers; throws ``MetaError/unreachable(endpoint:timeout:reason:)``
    /// once the connect timeout has passed. Later calls return at once.
    public func connect() async throws {
        if state.withLock({ $0.connected }) { return }
        let clock = ContinuousClock()
        let deadline = clock.now + connectTimeout
        var lastError = "no attempt"
        while true {
            let remaining = clock.now.duration(to: deadline)
            if remaining <= .zero { break }
            do {
                let version = try await kv.ping(timeout: remaining)
                state.withLock { $0.connected = true }
                logger.info(
                    "connected to metadata service",
                    metadata: ["endpoint": "\(kv.endpointDescription)", "version": "\(version)"])
                return
            } catch let error as CancellationError {
                throw error
            } catch {
                lastError = "\(error)"
                if Task.isCancelled { throw CancellationError() }
            }
            let pause = min(.milliseconds(200), clock.now.duration(to: deadline))
            if pause > .zero { try await Task.sleep(for: pause) }
        }
        throw MetaError.unreachable(endpoint: kv.endpointDescription, timeout: connectTimeout, reason: lastError)
    }

    /// Atomically takes the next free instance id of the cluster (the first is 0).
    public func allocateInstanceID() async throws -> UInt64 {
        try await connect()
        while true {
            try Task.checkCancellation()
            let (entry, _) = try await kv.get(counterKey)
            let current = try entry.map { try counterValue($0) } ?? 0
            if try await kv.swap(counterKey, expectedModRevision: entry?.modRevision ?? 0, value: String(current + 1)) {
                logger.debug("allocated instance id", metadata: ["instance": "\(current)"])
                return current
            }
        }
    }

    private func counterValue(_ entry: KVEntry) throws -> UInt64 {
        guard let value = UInt64(entry.value) else {
            throw MetaError.corrupt(key: entry.key, reason: "not a counter: \(entry.value)")
        }
        return value
    }

    /// Makes sure the counter will never hand out `id` again (it may have been reset
    /// when etcd lost its data).
    private func reserveCounter(above id: UInt64) async throws {
        while true {
            let (entry, _) = try await kv.get(counterKey)
            let current = try entry.map { try counterValue($0) } ?? 0
            if current > id { return }
            if try await kv.swap(counterKey, expectedModRevision: entry?.modRevision ?? 0, value: String(id + 1)) {
                return
            }
        }
    }

    /// Registers `instance` under a lease of the configured TTL (or updates the
    /// registration, keeping the lease). `republish` is called whenever the backend
    /// had to register again (see ``MetaRepublishHandler``).
    public func register(_ instance: InstanceInfo, republish: @escaping MetaRepublishHandler) async throws {
        try await connect()
        let (previous, kept) = state.withLock { state in
            (state.lease, state.instance?.id == instance.id ? state.lease : 0)
        }
        var lease = kept
        var epoch: String?
        if lease == 0 { (lease, epoch) = try await kv.grantLease(ttlSeconds: leaseTTLSeconds) }
        try await reserveCounter(above: instance.id)
        try await kv.put(instanceKey(instance.id), instance.storedText, lease: lease)
        state.withLock {
            $0.instance = instance
            $0.lease = lease
            if let epoch { $0.epoch = epoch }
            $0.republish = republish
        }
        if previous != 0 && previous != lease {
            // Registered under another id before: that registration ends now.
            try? await kv.revoke(previous)
        }
        logger.info(
            "registered instance",
            metadata: [
                "instance": "\(instance.id)", "lease": "\(lease)", "ttl": "\(leaseTTLSeconds)s",
                "endpoint": "\(kv.endpointDescription)",
            ])
    }

    /// Revokes this instance's lease now: its instance record, objects and names go away.
    public func deregister() async throws {
        let lease = state.withLock {
            let lease = $0.lease
            $0.lease = 0
            $0.instance = nil
            return lease
        }
        guard lease != 0 else { return }
        try await kv.revoke(lease)
        logger.info("deregistered instance", metadata: ["lease": "\(lease)"])
    }

    // MARK: Keepalive loop

    /// Asks ``run()`` to deregister and return. Safe to call from any context.
    public func stop() { stopContinuation.finish() }

    /// Keeps the lease alive and re-registers after lease loss or service restarts,
    /// until ``stop()`` (then deregisters and returns) or cancellation (then returns
    /// without deregistering). Throws ``MetaError/notRegistered`` if called before
    /// ``register(_:republish:)``.
    public func run() async throws {
        _ = try registration()
        let alreadyRunning = state.withLock { state in
            defer { state.running = true }
            return state.running
        }
        if alreadyRunning { throw MetaError.invalidArgument("run() may be called only once") }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.maintain() }
            for await _ in stopSignal {}  // until stop() or cancellation
            group.cancelAll()
        }
        if !Task.isCancelled {
            do {
                try await deregister()
            } catch {
                logger.warning("could not deregister", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Refreshes the lease at once and then every TTL/3 (however long ago it was granted,
    /// a running instance's lease is fresh); after an outage, a lost lease or a restart of
    /// the service registers again and calls the republish handler until it succeeds.
    private func maintain() async {
        var outage = false
        var needsRepublish = false
        var first = true
        while !Task.isCancelled {
            do {
                if !first { try await Task.sleep(for: outage || needsRepublish ? retryInterval : keepaliveInterval) }
                first = false
            } catch {
                return
            }
            guard let (instance, lease) = try? registration() else { continue }
            do {
                // Bounded by the interval, so that an outage is noticed (and the
                // restart behind it) even if etcd is back before the next round.
                let result = try await kv.keepAlive(lease, timeout: keepaliveInterval)
                let lastEpoch = state.withLock { state in
                    defer { state.epoch = result.epoch }
                    return state.epoch
                }
                logger.trace(
                    "lease keepalive",
                    metadata: ["lease": "\(lease)", "alive": "\(result.alive)", "epoch": "\(result.epoch)"])
                var reason: String?
                if !result.alive {
                    reason = "lease expired"
                } else if outage {
                    reason = "metadata service reachable again"
                } else if let lastEpoch, lastEpoch != result.epoch {
                    reason = "metadata service restarted"
                }
                if let reason {
                    try await reregister(instance, lease: result.alive ? lease : 0, reason: reason)
                    needsRepublish = true
                }
                outage = false
                if needsRepublish {
                    try await republish()
                    needsRepublish = false
                }
            } catch {
                if Task.isCancelled { return }
                if !outage {
                    logger.warning(
                        "lost contact with metadata service; retrying",
                        metadata: ["endpoint": "\(kv.endpointDescription)", "error": "\(error)"])
                }
                outage = true
            }
        }
    }

    private func reregister(_ instance: InstanceInfo, lease oldLease: Int64, reason: String) async throws {
        var lease = oldLease
        var epoch: String?
        if lease == 0 { (lease, epoch) = try await kv.grantLease(ttlSeconds: leaseTTLSeconds) }
        try await reserveCounter(above: instance.id)
        try await kv.put(instanceKey(instance.id), instance.storedText, lease: lease)
        let current = state.withLock {
            // A concurrent deregister() wins.
            guard $0.instance?.id == instance.id else { return false }
            $0.lease = lease
            if let epoch { $0.epoch = epoch }
            return true
        }
        if !current {
            try? await kv.revoke(lease)
            return
        }
        logger.notice(
            "re-registered instance",
            metadata: ["instance": "\(instance.id)", "lease": "\(lease)", "reason": "\(reason)"])
    }

    private func republish() async throws {
        let (handler, instance) = state.withLock { ($0.republish, $0.instance) }
        guard let handler, let instance else { return }
        try await handler(instance)
        logger.info("republished instance data", metadata: ["instance": "\(instance.id)"])
    }

    // MARK: Instances

    /// The live instances, by id.
    public func instances() async throws -> [InstanceInfo] {
        let (entries, _) = try await kv.list(prefix: instancesPrefix)
        var result: [InstanceInfo] = []
        for entry in entries {
            guard let info = InstanceInfo(storedText: entry.value) else {
                logger.warning("skipping corrupt instance record", metadata: ["key": "\(entry.key)"])
                continue
            }
            result.append(info)
        }
        return result.sorted { $0.id < $1.id }
    }

    /// Returns once instance `id` is no longer registered (at once if it is not).
    /// Cancellable.
    public func waitForInstanceExit(_ id: UInt64) async throws {
        let key = instanceKey(id)
        try await waitLoop(key) { entry in
            entry == nil ? () : nil
        } onChange: { change in
            if case .delete = change { return () }
            return nil
        }
    }

    // MARK: Objects

    /// Publishes (or replaces) persisted object `objectID` with metadata tree
    /// `metadata` (JSON text), owned by this instance.
    public func publishObject(_ objectID: UInt64, metadata: String) async throws {
        try await publishObjects([(objectID: objectID, metadata: metadata)])
    }

    /// Publishes several objects in as few round trips as the backend allows (a
    /// DataFrame persists ~50 at once).
    /// With `naming`, that name is bound to that object in the same write, after the
    /// records (as ``putName(_:objectID:)`` binds it): a reader that finds the name finds
    /// the records.
    public func publishObjects(
        _ objects: [(objectID: UInt64, metadata: String)], naming: (name: String, objectID: UInt64)? = nil
    ) async throws {
        let (instance, _) = try registration()
        var entries = objects.map { o in
            (key: objectKey(o.objectID),
             value: PersistedObject(objectID: o.objectID, owner: instance.id, metadata: o.metadata).storedText)
        }
        if let naming { entries.append((key: try nameKey(naming.name), value: String(naming.objectID))) }
        // no lease: the record (and the name) outlives its owner until someone deletes it
        try await kv.putAll(entries, lease: 0, marker: mirror.markerKey)
    }

    /// The ids of published objects as they are deleted (by any instance), for as long as
    /// the caller iterates. A broken watch is re-opened from a fresh listing: deletions
    /// while it was broken are not reported (a reader re-checks what it imported anyway).
    public func objectRemovals() -> AsyncStream<UInt64> {
        AsyncStream { continuation in
            // on the blocking pool's executor for the reason ObjectMirror's feeder is
            let task = Task(executorPreference: Blocking.executor) { [self] in
                let prefix = self.objectsPrefix
                while !Task.isCancelled {
                    do {
                        let (_, revision) = try await kv.get(prefix)
                        for try await event in kv.watchDeletions(prefix, prefix: true, fromRevision: revision + 1) {
                            if case .delete(let key) = event.change, let id = UInt64(key.dropFirst(prefix.count), radix: 16) {
                                continuation.yield(id)
                            }
                        }
                    } catch {
                        if Task.isCancelled { break }
                        logger.debug("object watch interrupted; reopening", metadata: ["error": "\(error)"])
                    }
                    try? await Task.sleep(for: retryInterval)
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Published objects whose metadata refers to one of `ids` as a member (from the cached
    /// listing): the referrers a delete elsewhere must respect.
    public func referrers(of ids: [UInt64]) async throws -> [UInt64] {
        guard !ids.isEmpty else { return [] }
        try await syncObjects()
        return mirror.referrers(of: Set(ids))
    }

    /// Removes a published object; returns whether it was there.
    @discardableResult
    public func removeObject(_ objectID: UInt64) async throws -> Bool {
        try await kv.delete(objectKey(objectID), marker: mirror.markerKey)
    }

    /// Removes published objects in as few writes as the backend allows (a deep delete of
    /// a DataFrame removes ~50; one etcd transaction per 127); returns how many were there.
    @discardableResult
    public func removeObjects(_ objectIDs: [UInt64]) async throws -> Int {
        guard !objectIDs.isEmpty else { return 0 }
        return try await kv.delete(objectIDs.map(objectKey), marker: mirror.markerKey)
    }

    /// One published object, or `nil`.
    public func object(_ objectID: UInt64) async throws -> PersistedObject? {
        let key = objectKey(objectID)
        guard let entry = try await kv.get(key).entry else { return nil }
        guard let object = PersistedObject(objectID: objectID, storedText: entry.value) else {
            throw MetaError.corrupt(key: key, reason: "not an object record")
        }
        return object
    }

    /// Every published object, in id order (from the mirrored listing, after
    /// ``syncObjects(timeout:)``).
    public func objects() async throws -> [PersistedObject] {
        try await syncObjects()
        return mirror.all().map { PersistedObject(objectID: $0.id, owner: $0.record.owner, metadata: $0.record.metadata) }
    }

    /// Brings this instance's copy of the published objects up to date: one small request
    /// to the metadata service, then a wait (at most `timeout`) until the copy has applied
    /// every publish and removal that had returned before, on any instance. The first
    /// call reads every object and starts following changes. Then ``objectPage(after:count:)``
    /// and ``objectMetadata(_:)`` read the copy without further requests.
    public func syncObjects(timeout: Duration = .seconds(20)) async throws {
        try await mirror.sync(timeout: timeout)
    }

    /// Up to `count` published objects with ids greater than `after` (from the smallest
    /// when nil), in id order, with their type names, and whether more follow: the copy
    /// as of the last ``syncObjects(timeout:)`` or later.
    public func objectPage(after: UInt64?, count: Int) -> (page: [(id: UInt64, typename: String)], more: Bool) {
        mirror.page(after: after, count: count)
    }

    /// The metadata (JSON text) of those of `ids` that are published, in the order given.
    public func objectMetadata(_ ids: [UInt64]) -> [(id: UInt64, metadata: String)] {
        mirror.records(ids).map { ($0.id, $0.record.metadata) }
    }

    // MARK: Names

    /// Binds `name` to `objectID` (replacing an earlier binding). The binding stays until
    /// the name is dropped or its object deleted (not attached to this instance's lease).
    public func putName(_ name: String, objectID: UInt64) async throws {
        let key = try nameKey(name)
        _ = try registration()
        try await kv.put(key, String(objectID), lease: 0)
    }

    /// The object bound to `name`, or `nil`.
    public func objectID(forName name: String) async throws -> UInt64? {
        let key = try nameKey(name)
        guard let entry = try await kv.get(key).entry else { return nil }
        return try nameValue(key, entry.value)
    }

    /// Removes `name`; returns whether it was bound.
    @discardableResult
    public func dropName(_ name: String) async throws -> Bool {
        try await kv.delete(try nameKey(name))
    }

    /// All names of the cluster with their objects.
    public func names() async throws -> [String: UInt64] {
        let (entries, _) = try await kv.list(prefix: namesPrefix)
        var result: [String: UInt64] = [:]
        for entry in entries {
            guard let id = UInt64(entry.value) else {
                logger.warning("skipping corrupt name record", metadata: ["key": "\(entry.key)"])
                continue
            }
            result[String(entry.key.dropFirst(namesPrefix.count))] = id
        }
        return result
    }

    /// Returns the object bound to `name` as soon as it is bound (at once if it is).
    /// Cancellable; survives service restarts.
    public func waitForName(_ name: String) async throws -> UInt64 {
        let key = try nameKey(name)
        return try await waitLoop(key) { entry in
            try entry.map { try self.nameValue(key, $0.value) }
        } onChange: { change in
            if case .put(_, let value) = change { return try self.nameValue(key, value) }
            return nil
        }
    }

    private func nameValue(_ key: String, _ value: String) throws -> UInt64 {
        guard let id = UInt64(value) else { throw MetaError.corrupt(key: key, reason: "not an object id: \(value)") }
        return id
    }

    // MARK: Waiting

    /// Reads `key`; if `onEntry` accepts the current state returns its result, else
    /// watches the key from the next revision until `onChange` accepts a change.
    /// Broken watches (service restarts, compaction) start over with a fresh read.
    private func waitLoop<Result: Sendable>(
        _ key: String, onEntry: (KVEntry?) throws -> Result?, onChange: (KVChange) throws -> Result?
    ) async throws -> Result {
        while true {
            try Task.checkCancellation()
            do {
                let (entry, revision) = try await kv.get(key)
                if let result = try onEntry(entry) { return result }
                for try await event in kv.watch(key, prefix: false, fromRevision: revision + 1) {
                    if let result = try onChange(event.change) { return result }
                }
                try Task.checkCancellation()
            } catch {
                if error is CancellationError || Task.isCancelled { throw CancellationError() }
                if case .corrupt = error as? MetaError { throw error }
                logger.debug("watch interrupted; retrying", metadata: ["key": "\(key)", "error": "\(error)"])
            }
            try await Task.sleep(for: retryInterval)
        }
    }
}
