import ArgumentParser
import Logging
import TrellisFlow
import TrellisMetrics
import UnixSignals

/// `trellis flow run|resume --metrics-port P [--metrics-linger S]`: the runner's metrics
/// (``FlowMetrics``) served at http://127.0.0.1:P/metrics while the run lasts, and S
/// seconds after it, so that a last scrape sees the final values.
struct FlowMetricsFlags: ParsableArguments {
    @Option(
        name: [.customLong("metrics-port"), .customLong("metrics_port")],
        help: "Serve Prometheus metrics (step durations, attempts, bytes moved, handoff time) on 127.0.0.1:PORT while the run lasts (0: a free port, printed).")
    var metricsPort: Int?
    @Option(
        name: [.customLong("metrics-linger")],
        help: "With --metrics-port: keep serving this many seconds after the run ends (default 0).")
    var metricsLinger: Double = 0

    func validate() throws {
        if let p = metricsPort, !(0...65535).contains(p) { throw ValidationError("--metrics-port must be a port number") }
        if metricsLinger < 0 { throw ValidationError("--metrics-linger must not be negative") }
    }

    /// Runs `body` with the runner's metrics served (nil and nothing served without a port).
    func serving(_ body: (FlowMetrics?) async -> Int32) async -> Int32 {
        guard let port = metricsPort else { return await body(nil) }
        let registry = PrometheusBackend.bootstrap()
        let metrics = FlowMetrics()
        var logger = Logger(label: "trellis.flow.metrics")
        logger.logLevel = .warning
        let exporter: RunningExporter
        do {
            exporter = try await MetricsExporter(registry: registry, port: port, logger: logger).start()
        } catch {
            printError("trellis flow: \(error)")
            return 1
        }
        printError("trellis: metrics at http://127.0.0.1:\(exporter.port)\(MetricsExporter.path)")
        let status = await body(metrics)
        if metricsLinger > 0 { await linger(seconds: metricsLinger) }
        await exporter.stop()
        return status
    }

    /// Waits `seconds`, or until SIGTERM/SIGINT (the run is over: a signal only ends the wait).
    private func linger(seconds: Double) async {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000))) }
            group.addTask {
                for await _ in signals { return }
            }
            await group.next()
            group.cancelAll()
        }
    }
}
