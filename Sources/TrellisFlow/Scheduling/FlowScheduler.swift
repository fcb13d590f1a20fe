/// The state of one step in a run.
public enum StepState: String, Codable, Sendable, Equatable, CaseIterable {
    /// Not started yet (or waiting for a retry).
    case pending
    /// An attempt is in progress (inputs being moved, or the process running).
    case running
    /// Finished with exit status 0 and produced its outputs.
    case succeeded
    /// Failed (non-zero exit, signal, timeout, missing output) after its last retry.
    case failed
    /// Never ran because a step it depends on failed.
    case upstreamFailed = "upstream-failed"
    /// Never ran, or was stopped, because the run was cancelled.
    case cancelled

    /// Whether the state is final for this run.
    public var isTerminal: Bool { self != .pending && self != .running }
}

/// How a run ended.
public enum RunOutcome: String, Codable, Sendable, Equatable {
    /// Still going.
    case running
    /// Every step succeeded.
    case succeeded
    /// At least one step failed (the others finished or were marked upstream-failed).
    case failed
    /// Cancelled before finishing.
    case cancelled
}

/// A start decision: run `step` (attempt `attempt`) on `placement.replica` after the moves.
public struct Launch: Sendable, Equatable {
    /// The step.
    public var step: String
    /// 1 for the first attempt.
    public var attempt: Int
    /// Where and what to move.
    public var placement: Placement
}

/// What to do after an attempt failed.
public enum FailureDecision: Sendable, Equatable {
    /// Retry after `delay` seconds (call ``FlowScheduler/retryDue(_:)`` then).
    case retry(after: Double)
    /// No retries left: the step failed; these downstream steps became upstream-failed.
    case failed(upstreamFailed: [String])
}

/// The pure core of a run: which steps may start, where they go, and what failures do.
///
/// It does no I/O and keeps no clocks: the executor feeds it events (a step succeeded, an
/// attempt failed, a retry delay elapsed, cancel) and residency snapshots, and carries out
/// the decisions it returns. That keeps every scheduling rule unit-testable without processes.
public struct FlowScheduler: Sendable {
    /// The flow's graph.
    public let graph: FlowGraph
    /// Per-step settings (retries, inputs) by name.
    let specs: [String: StepSpec]
    /// Number of replicas.
    public let replicaCount: Int
    /// Most steps running at once.
    public let maxParallel: Int

    /// Current state of every step.
    public private(set) var states: [String: StepState]
    /// Attempts started so far per step (in this invocation; resumed runs start over at 0).
    public private(set) var attempts: [String: Int] = [:]
    /// Replica of each started step's latest attempt.
    public private(set) var replicaOf: [String: Int] = [:]
    /// Steps waiting for their retry delay.
    public private(set) var waitingRetry: Set<String> = []
    /// Running steps per replica.
    public private(set) var running: [Int]
    /// Steps placed so far per replica (spreads steps without inputs).
    public private(set) var placed: [Int]
    /// Whether ``cancel()`` was called.
    public private(set) var isCancelling = false

    /// Creates a scheduler.
    ///
    /// - Parameters:
    ///   - initial: states carried over (resume): steps given as `.succeeded` are not run again;
    ///     anything else starts as pending.
    public init(
        spec: FlowSpec, replicaCount: Int, maxParallel: Int, initial: [String: StepState] = [:]
    ) throws(FlowValidationError) {
        graph = try FlowGraph(spec)
        var specs: [String: StepSpec] = [:]
        for s in spec.steps { specs[s.name] = s }
        self.specs = specs
        self.replicaCount = max(1, replicaCount)
        self.maxParallel = max(1, maxParallel)
        var states: [String: StepState] = [:]
        for s in spec.steps { states[s.name] = initial[s.name] == .succeeded ? .succeeded : .pending }
        self.states = states
        running = Array(repeating: 0, count: max(1, replicaCount))
        placed = Array(repeating: 0, count: max(1, replicaCount))
    }

    /// Steps running now.
    public var runningCount: Int { running.reduce(0, +) }

    /// Pending steps whose dependencies all succeeded, not waiting for a retry, in topological
    /// (then spec) order, at most as many as free parallel slots. Empty while cancelling.
    public func readySteps() -> [String] {
        guard !isCancelling else { return [] }
        let free = maxParallel - runningCount
        guard free > 0 else { return [] }
        var out: [String] = []
        for s in graph.topologicalOrder where states[s] == .pending && !waitingRetry.contains(s) {
            if graph.dependencies[s, default: []].allSatisfy({ states[$0] == .succeeded }) {
                out.append(s)
                if out.count == free { break }
            }
        }
        return out
    }

    /// Places a ready step given where its inputs live, and marks it running.
    public mutating func start(_ step: String, residency: Residency) -> Launch {
        let inputs = specs[step]?.inputs ?? []
        let placement = Placer.place(inputs: inputs, residency: residency, running: running, placed: placed)
        states[step] = .running
        attempts[step, default: 0] += 1
        replicaOf[step] = placement.replica
        running[placement.replica] += 1
        placed[placement.replica] += 1
        return Launch(step: step, attempt: attempts[step]!, placement: placement)
    }

    /// The running step finished and produced its outputs.
    public mutating func succeeded(_ step: String) {
        release(step)
        states[step] = .succeeded
    }

    /// The running step's attempt failed. Retries while attempts remain (and not cancelling)
    /// with exponential backoff; otherwise marks it failed and its downstream upstream-failed.
    /// - Parameter retryable: `false` for failures a retry cannot fix.
    public mutating func attemptFailed(_ step: String, retryable: Bool = true) -> FailureDecision {
        release(step)
        let spec = specs[step]
        let done = attempts[step, default: 0]
        if retryable, !isCancelling, let spec, done <= spec.retries {
            states[step] = .pending
            waitingRetry.insert(step)
            return .retry(after: FlowScheduler.backoff(base: spec.retryDelay, retry: done))
        }
        states[step] = .failed
        var marked: [String] = []
        for d in graph.topologicalOrder where graph.downstream(of: [step]).contains(d) {
            if states[d] == .pending {
                states[d] = .upstreamFailed
                waitingRetry.remove(d)
                marked.append(d)
            }
        }
        return .failed(upstreamFailed: marked)
    }

    /// A retry delay elapsed: the step is ready again.
    public mutating func retryDue(_ step: String) {
        waitingRetry.remove(step)
    }

    /// Cancels the run: pending steps (including those waiting for a retry) become cancelled.
    /// Returns the running steps, which the executor must stop and report with ``stopped(_:)``.
    public mutating func cancel() -> [String] {
        isCancelling = true
        for (s, st) in states where st == .pending { states[s] = .cancelled }
        waitingRetry.removeAll()
        return graph.steps.filter { states[$0] == .running }
    }

    /// A running step was stopped because of cancellation.
    public mutating func stopped(_ step: String) {
        release(step)
        states[step] = .cancelled
    }

    /// Whether nothing is running, waiting or startable any more.
    public var isFinished: Bool {
        runningCount == 0 && waitingRetry.isEmpty && readySteps().isEmpty
    }

    /// The outcome so far: `.running` until ``isFinished``.
    public var outcome: RunOutcome {
        guard isFinished else { return .running }
        if states.values.contains(.failed) { return .failed }
        if isCancelling || states.values.contains(.cancelled) { return .cancelled }
        if states.values.allSatisfy({ $0 == .succeeded }) { return .succeeded }
        // Pending steps that can never become ready (should not happen in a valid graph).
        return .failed
    }

    /// Retry delay: `base * 2^(retry-1)`, capped at 60 s.
    public static func backoff(base: Double, retry: Int) -> Double {
        var d = base
        var i = 1
        while i < retry && d < 60 {
            d *= 2
            i += 1
        }
        return min(d, 60)
    }

    private mutating func release(_ step: String) {
        if states[step] == .running, let r = replicaOf[step], r < running.count, running[r] > 0 {
            running[r] -= 1
        }
    }

    /// Which steps a resumed run must run again, given the previous states and which objects
    /// are still resident: every step that did not succeed, everything downstream of those,
    /// and — transitively — the producers of any input they need that is no longer resident.
    public static func resumePlan(
        spec: FlowSpec, previous: [String: StepState], resident: Set<String>
    ) throws(FlowValidationError) -> Set<String> {
        let graph = try FlowGraph(spec)
        var rerun = Set(spec.steps.map(\.name).filter { previous[$0] != .succeeded })
        rerun.formUnion(graph.downstream(of: rerun))
        var changed = true
        while changed {
            changed = false
            for s in spec.steps where rerun.contains(s.name) {
                for i in s.inputs where !resident.contains(i) {
                    if let p = graph.producer[i], !rerun.contains(p) {
                        rerun.insert(p)
                        changed = true
                    }
                }
            }
        }
        return rerun
    }
}
