import CoreMetrics
import Synchronization
import TrellisProtocol
import TrellisStore

/// What a daemon reports through swift-metrics (docs/METRICS.md lists every metric):
/// requests by type and status with a latency histogram per type, connections, migrations,
/// and — set from the store's status when ``update(status:counters:)`` is called, i.e. at
/// each scrape — the arena's gauges.
///
/// The handles are made once: the request path looks its type up in a dictionary built at
/// init and increments handles cached per (type, status), so a request costs no allocation
/// and one uncontended lock (per type) beyond the backend's own update.
public final class DaemonMetrics: Sendable {
    /// The label of requests whose `type` the protocol does not know (a bounded label set
    /// whatever clients send).
    public static let otherType = "other"
    /// The label of frames that were not JSON or had no string `type`.
    public static let unparsedType = "unparsed"
    /// The status label of a request that was answered without an error.
    public static let okStatus = "ok"

    public static let requestsTotal = "trellis_requests_total"
    public static let requestDuration = "trellis_request_duration_seconds"
    public static let connectionsTotal = "trellis_connections_total"
    public static let migrationsTotal = "trellis_migrations_total"
    public static let migratedBytesTotal = "trellis_migrated_bytes_total"
    public static let migrationDuration = "trellis_migration_duration_seconds"

    /// The `type` label for a request whose wire type is `type` (nil: unparsable frame).
    public static func typeLabel(_ type: String?) -> String {
        guard let type else { return unparsedType }
        return Request.wireTypes.contains(type) ? type : otherType
    }

    /// The `status` label: `ok`, or the error code's name (`Invalid`, `ObjectNotExists`, …).
    public static func statusLabel(_ code: StatusCode) -> String {
        code == .ok ? okStatus : code.name
    }

    let factory: any MetricsFactory
    private let slots: [String: RequestSlot]
    let ipcConnections: Counter
    let rpcConnections: Counter
    let migrationsOK: Counter
    let migrationsFailed: Counter
    let migratedBytes: Counter
    let migrationTimer: CoreMetrics.Timer
    private let gauges: Gauges
    private let listeningPort = Atomic<Int>(0)

    /// The exporter's bound port (0 until it listens), for `instance_status`.
    public var port: Int {
        get { listeningPort.load(ordering: .relaxed) }
    }

    /// Records where the exporter listens.
    public func setPort(_ port: Int) { listeningPort.store(port, ordering: .relaxed) }

    /// - Parameter factory: the backend (the process's bootstrapped one by default).
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        var slots: [String: RequestSlot] = [:]
        for type in Request.wireTypes.union([Self.otherType, Self.unparsedType]) {
            slots[type] = RequestSlot(type: type, factory: factory)
        }
        self.slots = slots
        ipcConnections = Counter(label: Self.connectionsTotal, dimensions: [("transport", "ipc")], factory: factory)
        rpcConnections = Counter(label: Self.connectionsTotal, dimensions: [("transport", "rpc")], factory: factory)
        migrationsOK = Counter(label: Self.migrationsTotal, dimensions: [("status", "ok")], factory: factory)
        migrationsFailed = Counter(label: Self.migrationsTotal, dimensions: [("status", "failed")], factory: factory)
        migratedBytes = Counter(label: Self.migratedBytesTotal, factory: factory)
        migrationTimer = CoreMetrics.Timer(label: Self.migrationDuration, factory: factory)
        gauges = Gauges(factory: factory)
    }

    /// Counts one request and records how long it took (from its frame to its reply).
    func recordRequest(type: String?, status: StatusCode, nanoseconds: Int64) {
        guard let slot = type.flatMap({ slots[$0] }) ?? slots[type == nil ? Self.unparsedType : Self.otherType] else { return }
        let (counter, timer) = slot.handles(status)
        counter.increment()
        timer.recordNanoseconds(nanoseconds)
    }

    /// One migration that copied `bytes` here (`ok`), or failed.
    func recordMigration(bytes: Int?, nanoseconds: Int64) {
        if let bytes {
            migrationsOK.increment()
            migratedBytes.increment(by: bytes)
        } else {
            migrationsFailed.increment()
        }
        migrationTimer.recordNanoseconds(nanoseconds)
    }

    /// Sets the gauges from a status snapshot (called at each scrape).
    func update(status: StoreStatus, counters: ServerCounters) {
        gauges.set(status: status, counters: counters)
    }

    /// Every metric family name a daemon exposes (documented in docs/METRICS.md).
    public static let families: [String] = [
        requestsTotal, requestDuration, connectionsTotal, migrationsTotal, migratedBytesTotal, migrationDuration,
    ] + Gauges.names
}

/// The handles of one request type: its latency timer and a counter per status.
private final class RequestSlot: Sendable {
    let type: String
    let factory: any MetricsFactory
    private let state = Mutex<State>(State())

    struct State {
        var timer: CoreMetrics.Timer?
        var counters: [Int: Counter] = [:]
    }

    init(type: String, factory: any MetricsFactory) {
        self.type = type
        self.factory = factory
    }

    func handles(_ status: StatusCode) -> (Counter, CoreMetrics.Timer) {
        state.withLock { s in
            let timer: CoreMetrics.Timer
            if let t = s.timer {
                timer = t
            } else {
                timer = CoreMetrics.Timer(label: DaemonMetrics.requestDuration, dimensions: [("type", type)], factory: factory)
                s.timer = timer
            }
            if let c = s.counters[status.rawValue] { return (c, timer) }
            let c = Counter(
                label: DaemonMetrics.requestsTotal,
                dimensions: [("type", type), ("status", DaemonMetrics.statusLabel(status))], factory: factory)
            s.counters[status.rawValue] = c
            return (c, timer)
        }
    }
}

/// The store's state as gauges.
private struct Gauges: Sendable {
    static let names = [
        "trellis_arena_used_bytes", "trellis_arena_free_bytes", "trellis_arena_limit_bytes",
        "trellis_arena_largest_free_block_bytes", "trellis_arena_fragmentation_ratio", "trellis_objects", "trellis_blobs",
        "trellis_names", "trellis_spilled_bytes", "trellis_retired_bytes", "trellis_clients", "trellis_deferred_requests",
    ]
    let used, free, limit, largestFree, fragmentation, objects, blobs, names, spilled, retired: Gauge
    let ipcClients, rpcClients, deferred: Gauge

    init(factory: any MetricsFactory) {
        func g(_ label: String, _ dimensions: [(String, String)] = []) -> Gauge {
            Gauge(label: label, dimensions: dimensions, factory: factory)
        }
        used = g("trellis_arena_used_bytes")
        free = g("trellis_arena_free_bytes")
        limit = g("trellis_arena_limit_bytes")
        largestFree = g("trellis_arena_largest_free_block_bytes")
        fragmentation = g("trellis_arena_fragmentation_ratio")
        objects = g("trellis_objects")
        blobs = g("trellis_blobs")
        names = g("trellis_names")
        spilled = g("trellis_spilled_bytes")
        retired = g("trellis_retired_bytes")
        ipcClients = g("trellis_clients", [("transport", "ipc")])
        rpcClients = g("trellis_clients", [("transport", "rpc")])
        deferred = g("trellis_deferred_requests")
    }

    func set(status st: StoreStatus, counters c: ServerCounters) {
        used.record(st.memoryUsage)
        free.record(st.freeBytes)
        limit.record(st.memoryLimit)
        largestFree.record(st.largestFreeBlock)
        fragmentation.record(st.fragmentation)
        objects.record(st.objects)
        blobs.record(st.blobs)
        names.record(st.names)
        spilled.record(st.spilledBytes)
        retired.record(st.retiredBytes)
        ipcClients.record(c.ipcConnections)
        rpcClients.record(c.rpcConnections)
        deferred.record(c.deferredRequests)
    }
}
