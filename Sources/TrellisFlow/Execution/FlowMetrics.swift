import Metrics
import Synchronization

/// What the flow runner publishes through swift-metrics (docs/METRICS.md), fed by the
/// runner's events: pass ``observe(_:)`` as (part of) ``FlowRunOptions/observer``.
///
/// Labels are the flow's and the step's names (bounded by the flow files), never run ids:
/// several runs of one flow add to the same series.
public final class FlowMetrics: Sendable {
    public static let stepDuration = "trellis_flow_step_duration_seconds"
    public static let attemptsTotal = "trellis_flow_step_attempts_total"
    public static let movedBytesTotal = "trellis_flow_moved_bytes_total"
    public static let handoffSecondsTotal = "trellis_flow_handoff_seconds_total"
    public static let runsTotal = "trellis_flow_runs_total"
    /// Every metric family the runner exposes.
    public static let families = [stepDuration, attemptsTotal, movedBytesTotal, handoffSecondsTotal, runsTotal]

    /// One finished attempt of a step, as the metrics see it (pure: from the event alone).
    public struct Attempt: Sendable, Equatable {
        public var flow: String
        public var step: String
        /// `succeeded`, `failed` (also an attempt that will be retried) or `cancelled`.
        public var result: String
        /// Wall time of the attempt: placement, input moves, the process, output checks.
        public var seconds: Double?
        /// Bytes of inputs the runner moved to the step's replica first.
        public var movedBytes: Int
        /// The handoff, by phase: `move` (the runner moving inputs between replicas), `put`
        /// and `get` (the step's own `Client.put`/`Client.get`, as it reported them).
        public var handoffSeconds: [(phase: String, seconds: Double)]

        public static func == (a: Attempt, b: Attempt) -> Bool {
            a.flow == b.flow && a.step == b.step && a.result == b.result && a.seconds == b.seconds
                && a.movedBytes == b.movedBytes && a.handoffSeconds.map(\.phase) == b.handoffSeconds.map(\.phase)
                && a.handoffSeconds.map(\.seconds) == b.handoffSeconds.map(\.seconds)
        }
    }

    /// The attempt an event ends, if it ends one (`stepRetrying`, `stepFinished`).
    public static func attempt(of event: RunEvent) -> Attempt? {
        let name: String
        let retrying: Bool
        switch event.kind {
        case .stepRetrying(let step, _): (name, retrying) = (step, true)
        case .stepFinished(let step): (name, retrying) = (step, false)
        default: return nil
        }
        guard let s = event.record.steps.first(where: { $0.name == name }) else { return nil }
        let result: String
        switch s.state {
        case .succeeded where !retrying: result = "succeeded"
        case .cancelled: result = "cancelled"
        default: result = "failed"
        }
        return Attempt(
            flow: event.record.spec.name, step: name, result: result, seconds: s.duration,
            movedBytes: s.inputs.reduce(0) { $0 + $1.movedBytes },
            handoffSeconds: [
                ("move", s.inputs.reduce(0) { $0 + $1.moveSeconds }),
                ("put", s.metrics["put_seconds"] ?? 0), ("get", s.metrics["get_seconds"] ?? 0),
            ])
    }

    private struct Key: Hashable {
        var flow: String
        var step: String
    }

    private final class StepHandles: Sendable {
        let duration: Metrics.Timer
        let moved: Counter
        let handoff: [String: FloatingPointCounter]
        let attempts = Mutex<[String: Counter]>([:])
        let key: Key

        init(_ key: Key, factory: any MetricsFactory) {
            let dims = [("flow", key.flow), ("step", key.step)]
            duration = Metrics.Timer(label: FlowMetrics.stepDuration, dimensions: dims, factory: factory)
            moved = Counter(label: FlowMetrics.movedBytesTotal, dimensions: dims, factory: factory)
            var handoff: [String: FloatingPointCounter] = [:]
            for phase in ["move", "put", "get"] {
                handoff[phase] = FloatingPointCounter(
                    label: FlowMetrics.handoffSecondsTotal, dimensions: dims + [("phase", phase)], factory: factory)
            }
            self.handoff = handoff
            self.key = key
        }

        func attemptCounter(_ result: String, factory: any MetricsFactory) -> Counter {
            if let c = attempts.withLock({ $0[result] }) { return c }
            let c = Counter(
                label: FlowMetrics.attemptsTotal, dimensions: [("flow", key.flow), ("step", key.step), ("result", result)],
                factory: factory)
            return attempts.withLock { m in
                if let existing = m[result] { return existing }
                m[result] = c
                return c
            }
        }
    }

    private let factory: any MetricsFactory
    private let steps = Mutex<[Key: StepHandles]>([:])
    /// Run counters by (flow, state).
    private let runs = Mutex<[Key: Counter]>([:])

    /// - Parameter factory: the backend (the process's bootstrapped one by default).
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
    }

    /// Records what `event` finished: an attempt of a step, or a run.
    public func observe(_ event: RunEvent) {
        if case .runFinished = event.kind {
            runCounter(flow: event.record.spec.name, state: event.record.state.rawValue).increment()
            return
        }
        guard let a = Self.attempt(of: event) else { return }
        let h = handles(Key(flow: a.flow, step: a.step))
        h.attemptCounter(a.result, factory: factory).increment()
        if let seconds = a.seconds { h.duration.recordSeconds(seconds) }
        h.moved.increment(by: a.movedBytes)
        for (phase, seconds) in a.handoffSeconds where seconds > 0 {
            h.handoff[phase]?.increment(by: seconds)
        }
    }

    private func runCounter(flow: String, state: String) -> Counter {
        let key = Key(flow: flow, step: state)
        if let c = runs.withLock({ $0[key] }) { return c }
        let c = Counter(label: Self.runsTotal, dimensions: [("flow", flow), ("state", state)], factory: factory)
        return runs.withLock { r in
            if let existing = r[key] { return existing }
            r[key] = c
            return c
        }
    }

    private func handles(_ key: Key) -> StepHandles {
        if let h = steps.withLock({ $0[key] }) { return h }
        let h = StepHandles(key, factory: factory)
        return steps.withLock { s in
            if let existing = s[key] { return existing }
            s[key] = h
            return h
        }
    }
}
