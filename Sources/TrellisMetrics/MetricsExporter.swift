import Hummingbird
import NIOCore
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization

/// The process's Prometheus backend for swift-metrics: one registry, the histogram buckets
/// Trellis's timers need, and ``MetricsSystem`` bootstrapped with it (once per process).
public enum PrometheusBackend {
    /// Buckets of the duration histograms, by metric name: requests take microseconds to
    /// milliseconds (a parked `get_name(wait)` seconds), migrations and etcd round trips
    /// milliseconds to seconds, flow steps seconds to an hour.
    public static let durationBuckets: [String: [Duration]] = [
        "trellis_request_duration_seconds": [
            .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
            .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(100), .milliseconds(250), .seconds(1), .seconds(5), .seconds(30),
        ],
        "trellis_migration_duration_seconds": [
            .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        ],
        "trellis_etcd_request_duration_seconds": [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1), .seconds(5),
        ],
        "trellis_flow_step_duration_seconds": [
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
            .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300), .seconds(600), .seconds(1800),
            .seconds(3600),
        ],
    ]

    /// A swift-metrics factory writing into `registry`, with ``durationBuckets``.
    public static func makeFactory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = durationBuckets
        return factory
    }

    private static let bootstrapped = Mutex<PrometheusCollectorRegistry?>(nil)

    /// Bootstraps ``MetricsSystem`` with a Prometheus registry (the first call does; later
    /// calls return the same registry). Call it before creating any metric handle.
    public static func bootstrap() -> PrometheusCollectorRegistry {
        bootstrapped.withLock { r in
            if let r { return r }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(makeFactory(registry: registry))
            r = registry
            return registry
        }
    }
}

/// `GET /metrics` on `host:port` (Hummingbird), the registry in Prometheus' text format,
/// as a ServiceLifecycle service. Port 0 binds a free port; `onListening` gets the bound
/// one. `beforeScrape` runs before each rendering (gauges computed at scrape time).
/// ``start()`` runs it in a service group of its own and returns once it listens.
public struct MetricsExporter: Service {
    public let registry: PrometheusCollectorRegistry
    public let host: String
    public let port: Int
    let logger: Logger
    let beforeScrape: @Sendable () -> Void
    var onListening: @Sendable (Int) -> Void = { _ in }

    /// The path served.
    public static let path = "/metrics"
    /// The exposition format's content type (text format 0.0.4).
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public init(
        registry: PrometheusCollectorRegistry, host: String = "127.0.0.1", port: Int, logger: Logger,
        beforeScrape: @escaping @Sendable () -> Void = {}
    ) {
        self.registry = registry
        self.host = host
        self.port = port
        self.logger = logger
        self.beforeScrape = beforeScrape
    }

    /// The exposition text: `beforeScrape`, then the registry.
    public func render() -> [UInt8] {
        beforeScrape()
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 << 10)
        registry.emit(into: &buffer)
        return buffer
    }

    public func run() async throws {
        let router = Router()
        let exporter = self
        router.get(RouterPath(Self.path)) { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: Self.contentType],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: exporter.render())))
        }
        let onListening = onListening
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) }, logger: logger)
        do {
            try await app.run()
        } catch {
            throw MetricsExporterError(host: host, port: port, underlying: "\(error)")
        }
    }

    /// Runs the exporter in a service group of its own; returns once it listens (with the
    /// bound port), or throws ``MetricsExporterError`` when it cannot.
    public func start() async throws -> RunningExporter {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        var exporter = self
        exporter.onListening = { port in
            continuation.yield(port)
            continuation.finish()
        }
        let group = ServiceGroup(services: [exporter], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        let task = Task {
            defer { continuation.finish() }
            try await group.run()
        }
        for await port in ports {
            logger.info("metrics exporter listening", metadata: ["metrics": "http://\(host):\(port)\(Self.path)"])
            return RunningExporter(port: port, group: group, task: task)
        }
        // ended without listening: the group's error says why
        do {
            try await task.value
        } catch let error as MetricsExporterError {
            throw error
        } catch {
            throw MetricsExporterError(host: host, port: port, underlying: "\(error)")
        }
        throw MetricsExporterError(host: host, port: port, underlying: "the server stopped before it listened")
    }
}

/// An exporter started by ``MetricsExporter/start()``.
public final class RunningExporter: Sendable {
    /// The bound port.
    public let port: Int
    let group: ServiceGroup
    let task: Task<Void, any Error>

    init(port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.port = port
        self.group = group
        self.task = task
    }

    /// Stops serving (open scrapes finish first).
    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// The exporter could not serve (typically: its port is taken).
public struct MetricsExporterError: Error, CustomStringConvertible {
    public let host: String
    public let port: Int
    public let underlying: String
    public var description: String { "cannot serve metrics on \(host):\(port): \(underlying)" }
}
