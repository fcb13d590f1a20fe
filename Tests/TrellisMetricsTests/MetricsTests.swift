import Foundation
import Metrics
import Prometheus
import Testing
import TrellisMetrics
import TrellisProtocol
@testable import TrellisFlow
@testable import TrellisServer

/// The exposition text of `registry`.
private func text(_ registry: PrometheusCollectorRegistry) -> String {
    var buffer: [UInt8] = []
    registry.emit(into: &buffer)
    return String(decoding: buffer, as: UTF8.self)
}

/// The value of the sample line `series` (name and labels exactly as emitted), if present.
private func sample(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

@Suite struct RequestLabelTests {
    @Test func everyWireTypeDecodesAndIsItsOwnLabel() {
        for type in Request.wireTypes {
            #expect(DaemonMetrics.typeLabel(type) == type)
            // decode may refuse the missing fields, never the type itself
            do {
                _ = try Request.decode(.object(["type": .string(type)]))
            } catch {
                #expect(!error.message.contains("unexpected command"), "\(type): \(error.message)")
            }
        }
    }

    @Test func unknownTypesShareOneLabel() {
        #expect(DaemonMetrics.typeLabel("no_such_request") == DaemonMetrics.otherType)
        #expect(DaemonMetrics.typeLabel("create_buffer_request\u{0}") == DaemonMetrics.otherType)
        #expect(DaemonMetrics.typeLabel(nil) == DaemonMetrics.unparsedType)
        do {
            _ = try Request.decode(.object(["type": "no_such_request"]))
            Issue.record("an unknown type decoded")
        } catch {
            #expect(error.message.contains("unexpected command"))
        }
    }

    @Test func statusLabels() {
        #expect(DaemonMetrics.statusLabel(.ok) == "ok")
        #expect(DaemonMetrics.statusLabel(.objectNotExists) == "ObjectNotExists")
        #expect(DaemonMetrics.statusLabel(.notEnoughMemory) == "NotEnoughMemory")
    }
}

@Suite struct DaemonMetricsTests {
    @Test func requestsAreCountedByTypeAndStatusWithOneHistogramPerType() {
        let registry = PrometheusCollectorRegistry()
        let metrics = DaemonMetrics(factory: PrometheusBackend.makeFactory(registry: registry))
        metrics.recordRequest(type: "seal_request", status: .ok, nanoseconds: 40_000)
        metrics.recordRequest(type: "seal_request", status: .ok, nanoseconds: 2_000_000)
        metrics.recordRequest(type: "seal_request", status: .objectNotExists, nanoseconds: 10_000)
        metrics.recordRequest(type: "bogus_request", status: .invalid, nanoseconds: 10_000)
        metrics.recordRequest(type: nil, status: .invalid, nanoseconds: 10_000)
        let t = text(registry)
        #expect(sample(t, #"trellis_requests_total{type="seal_request",status="ok"}"#) == 2)
        #expect(sample(t, #"trellis_requests_total{type="seal_request",status="ObjectNotExists"}"#) == 1)
        #expect(sample(t, #"trellis_requests_total{type="other",status="Invalid"}"#) == 1)
        #expect(sample(t, #"trellis_requests_total{type="unparsed",status="Invalid"}"#) == 1)
        #expect(sample(t, #"trellis_request_duration_seconds_count{type="seal_request"}"#) == 3)
        // buckets in seconds: 40 µs and 10 µs fall under 50 µs, 2 ms under 2.5 ms
        #expect(sample(t, #"trellis_request_duration_seconds_bucket{type="seal_request",le="0.00005"}"#) == 2)
        #expect(sample(t, #"trellis_request_duration_seconds_bucket{type="seal_request",le="0.0025"}"#) == 3)
        #expect(!t.contains("bogus_request"))
    }

    @Test func migrationsAndConnections() {
        let registry = PrometheusCollectorRegistry()
        let metrics = DaemonMetrics(factory: PrometheusBackend.makeFactory(registry: registry))
        metrics.recordMigration(bytes: 4096, nanoseconds: 1_000_000)
        metrics.recordMigration(bytes: 100, nanoseconds: 1_000_000)
        metrics.recordMigration(bytes: nil, nanoseconds: 1_000_000)
        metrics.ipcConnections.increment()
        let t = text(registry)
        #expect(sample(t, #"trellis_migrations_total{status="ok"}"#) == 2)
        #expect(sample(t, #"trellis_migrations_total{status="failed"}"#) == 1)
        #expect(sample(t, "trellis_migrated_bytes_total") == 4196)
        #expect(sample(t, "trellis_migration_duration_seconds_count") == 3)
        #expect(sample(t, #"trellis_connections_total{transport="ipc"}"#) == 1)
        #expect(sample(t, #"trellis_connections_total{transport="rpc"}"#) == 0)
    }

    @Test func everyTimerHasBucketsForItsScale() {
        let timers = [DaemonMetrics.requestDuration, DaemonMetrics.migrationDuration, FlowMetrics.stepDuration, "trellis_etcd_request_duration_seconds"]
        #expect(Set(PrometheusBackend.durationBuckets.keys) == Set(timers))
        for (_, buckets) in PrometheusBackend.durationBuckets {
            #expect(buckets == buckets.sorted())
        }
    }
}

@Suite struct FlowMetricsTests {
    static func event(_ kind: RunEvent.Kind, state: StepState, inputs: [InputRecord], metrics: [String: Double], duration: Double?)
        -> RunEvent
    {
        var step = StepRecord(name: "train", stdoutPath: "/dev/null", stderrPath: "/dev/null")
        step.state = state
        step.inputs = inputs
        step.metrics = metrics
        step.duration = duration
        let spec = FlowSpec(name: "hp", steps: [StepSpec(name: "train", action: nil)])
        let record = RunRecord(
            runID: "hp-1", spec: spec, state: .running, createdAt: Date(), startedAt: Date(), replicas: [], steps: [step])
        return RunEvent(kind: kind, record: record)
    }

    static let inputs = [
        InputRecord(name: "x", bytes: 1000, residentOn: 1, localBytes: 0, movedBytes: 1000, moveSeconds: 0.5),
        InputRecord(name: "y", bytes: 10, residentOn: 0, localBytes: 10, movedBytes: 0, moveSeconds: 0),
    ]

    @Test func attemptsComeFromRetriesAndFinishes() throws {
        let retry = try #require(
            FlowMetrics.attempt(
                of: Self.event(.stepRetrying(step: "train", delay: 1), state: .pending, inputs: Self.inputs, metrics: [:], duration: 2)))
        #expect(retry.result == "failed")
        #expect(retry.flow == "hp" && retry.step == "train")
        #expect(retry.movedBytes == 1000)
        let done = try #require(
            FlowMetrics.attempt(
                of: Self.event(
                    .stepFinished(step: "train"), state: .succeeded, inputs: Self.inputs,
                    metrics: ["put_seconds": 0.25, "get_seconds": 0.125], duration: 3)))
        #expect(done.result == "succeeded")
        #expect(done.seconds == 3)
        #expect(done.handoffSeconds.map(\.phase) == ["move", "put", "get"])
        #expect(done.handoffSeconds.map(\.seconds) == [0.5, 0.25, 0.125])
        let started = Self.event(.stepStarted(step: "train"), state: .running, inputs: [], metrics: [:], duration: nil)
        #expect(FlowMetrics.attempt(of: started) == nil)
        let cancelled = FlowMetrics.attempt(
            of: Self.event(.stepFinished(step: "train"), state: .cancelled, inputs: [], metrics: [:], duration: 1))
        #expect(cancelled?.result == "cancelled")
    }

    @Test func observedAttemptsBecomeSeriesPerFlowAndStep() {
        let registry = PrometheusCollectorRegistry()
        let metrics = FlowMetrics(factory: PrometheusBackend.makeFactory(registry: registry))
        metrics.observe(Self.event(.stepRetrying(step: "train", delay: 1), state: .pending, inputs: Self.inputs, metrics: [:], duration: 2))
        metrics.observe(
            Self.event(
                .stepFinished(step: "train"), state: .succeeded, inputs: Self.inputs, metrics: ["put_seconds": 0.25], duration: 3))
        var finished = Self.event(.runFinished, state: .succeeded, inputs: [], metrics: [:], duration: nil)
        finished.record.state = .succeeded
        metrics.observe(finished)
        let t = text(registry)
        #expect(sample(t, #"trellis_flow_step_attempts_total{flow="hp",step="train",result="failed"}"#) == 1)
        #expect(sample(t, #"trellis_flow_step_attempts_total{flow="hp",step="train",result="succeeded"}"#) == 1)
        #expect(sample(t, #"trellis_flow_step_duration_seconds_count{flow="hp",step="train"}"#) == 2)
        #expect(sample(t, #"trellis_flow_step_duration_seconds_sum{flow="hp",step="train"}"#) == 5)
        #expect(sample(t, #"trellis_flow_moved_bytes_total{flow="hp",step="train"}"#) == 2000)
        #expect(sample(t, #"trellis_flow_handoff_seconds_total{flow="hp",step="train",phase="move"}"#) == 1)
        #expect(sample(t, #"trellis_flow_handoff_seconds_total{flow="hp",step="train",phase="put"}"#) == 0.25)
        #expect(sample(t, #"trellis_flow_runs_total{flow="hp",state="succeeded"}"#) == 1)
        #expect(!t.contains("hp-1"))  // no run ids in labels
    }
}
