import Foundation

/// Everything known about a run, written to `<runs>/<run-id>/record.json` after every change
/// so another process (`trellis flow status`, `flow logs --follow`, `flow resume`) can read it.
public struct RunRecord: Codable, Sendable, Equatable {
    /// Format version of this file.
    public var version: Int = 1
    /// The run id (given or generated); also the object-name prefix (``ObjectNaming``).
    public var runID: String
    /// The flow as it was run (relative paths resolved against ``FlowSpec/baseDirectory``).
    public var spec: FlowSpec
    /// Overall state.
    public var state: RunOutcome
    /// When the run was first created.
    public var createdAt: Date
    /// When the latest invocation (first run or a resume) started.
    public var startedAt: Date
    /// When the latest invocation finished.
    public var finishedAt: Date?
    /// How many times `flow resume` was used on this run.
    public var resumes: Int = 0
    /// Pid of the runner process while it runs.
    public var runnerPID: Int32?
    /// The replicas the run used.
    public var replicas: [Replica]
    /// Whether the run's objects were left in the store (failed/cancelled runs, or `--keep`).
    public var objectsKept: Bool = false
    /// A sentence for people: why it failed, where to look.
    public var message: String?
    /// Intermediates deleted as soon as their last consumer succeeded (not with `--keep`),
    /// in the order they were freed; nil when none was.
    public var freedEarly: [String]?
    /// One record per step, in spec order.
    public var steps: [StepRecord]
    /// When each intermediate (flow-level name) was deleted from the store: early frees and
    /// the end-of-run cleanup; nil in records written before this was kept.
    public var freedAt: [String: Date]?
    /// The store's type of each output (flow-level name → e.g. `vineyard::DataFrame`), where
    /// the data plane can tell.
    public var objectTypes: [String: String]?
    /// The most arena memory each replica had in use, sampled when steps finished (before
    /// their inputs were freed), over all invocations of the run.
    public var peakMemory: [ReplicaMemory]?

    /// The record of step `name`.
    public func step(_ name: String) -> StepRecord? { steps.first { $0.name == name } }

    /// Wall-clock duration of the latest invocation, if finished.
    public var duration: Double? { finishedAt.map { $0.timeIntervalSince(startedAt) } }

    /// Creates a record.
    public init(
        runID: String, spec: FlowSpec, state: RunOutcome, createdAt: Date, startedAt: Date, replicas: [Replica],
        steps: [StepRecord]
    ) {
        self.runID = runID
        self.spec = spec
        self.state = state
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.replicas = replicas
        self.steps = steps
    }

    /// Steps that ran away from their data: some replica held all of the step's (non-empty)
    /// inputs when it was placed, and the step ran on a replica that did not. The data-affinity
    /// target is that this list is empty.
    public var affinityViolations: [String] {
        steps.filter { s in
            guard let r = s.replica, !s.inputs.isEmpty, s.inputs.contains(where: { $0.bytes > 0 }) else { return false }
            var common = Set(s.inputs[0].residentReplicas)
            for i in s.inputs.dropFirst() { common.formIntersection(i.residentReplicas) }
            return !common.isEmpty && !common.contains(r)
        }.map(\.name)
    }
}

/// What happened to one step.
public struct StepRecord: Codable, Sendable, Equatable {
    /// Step name.
    public var name: String
    /// Current state.
    public var state: StepState
    /// Replica of the latest attempt.
    public var replica: Int?
    /// Why that replica.
    public var placementReason: PlacementReason?
    /// Start of the latest attempt.
    public var startedAt: Date?
    /// Duration of the latest attempt in seconds (moves + process).
    public var duration: Double?
    /// Attempts made (all invocations of the run together).
    public var attempts: Int = 0
    /// Exit code of the latest attempt's process.
    public var exitCode: Int32?
    /// Signal that ended the latest attempt's process.
    public var signal: Int32?
    /// Whether the latest attempt hit its timeout.
    public var timedOut: Bool = false
    /// Why it failed / was skipped.
    public var message: String?
    /// Its inputs: where they were, what was moved.
    public var inputs: [InputRecord] = []
    /// Its outputs: sizes and replica.
    public var outputs: [OutputRecord] = []
    /// Standard output log (all attempts, appended).
    public var stdoutPath: String
    /// Standard error log (all attempts, appended).
    public var stderrPath: String
    /// Seconds the runner itself spent on this step's latest attempt: everything outside the
    /// child process, the moves and the data-plane calls (placement, spawning, timers, record
    /// writing, logs).
    public var overhead: Double?
    /// Seconds spent in data-plane calls other than moves for the latest attempt (residency
    /// queries, clearing stale outputs, checking outputs).
    public var dataPlaneSeconds: Double?
    /// Seconds the child process ran (latest attempt).
    public var processSeconds: Double?
    /// Numbers the step reported through `$TRELLIS_METRICS` (e.g. `put_seconds`, `get_seconds`
    /// measured by the Python bootstrap), latest attempt.
    public var metrics: [String: Double] = [:]
    /// Whether this step was reused from an earlier invocation by `flow resume`.
    public var reused: Bool = false
    /// Every attempt of every invocation, oldest first (nil in records written before it was
    /// kept; the report then draws the latest attempt from the fields above).
    public var history: [AttemptRecord]?

    /// Creates a pending step record.
    public init(name: String, stdoutPath: String, stderrPath: String) {
        self.name = name
        self.state = .pending
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
    }
}

/// One attempt of a step: when and where it ran, its moves and how it ended.
public struct AttemptRecord: Codable, Sendable, Equatable {
    /// 1 for the step's first attempt; counts on over resumes.
    public var attempt: Int
    /// Which invocation of the run made it: 0 the first run, n the n-th `flow resume`.
    public var invocation: Int
    /// Replica it ran on.
    public var replica: Int
    /// When the runner started it (before residency queries and moves).
    public var startedAt: Date
    /// When its process started (nil if it never did).
    public var processStartedAt: Date?
    /// When the runner had handled its end (outputs checked); nil while it runs.
    public var finishedAt: Date?
    /// Inputs moved to its replica first.
    public var moves: [MoveRecord]
    /// Seconds its process ran.
    public var processSeconds: Double?
    /// Seconds in data-plane calls other than moves.
    public var dataPlaneSeconds: Double?
    /// Seconds of runner overhead (see ``StepRecord/overhead``).
    public var overhead: Double?
    /// `running`, `succeeded`, `failed` or `cancelled`.
    public var outcome: String
    /// Exit code of its process.
    public var exitCode: Int32?
    /// Signal that ended its process.
    public var signal: Int32?
    /// Whether it hit the step's timeout.
    public var timedOut: Bool?
    /// Why it failed.
    public var message: String?

    /// Creates a running attempt.
    public init(attempt: Int, invocation: Int, replica: Int, startedAt: Date) {
        self.attempt = attempt
        self.invocation = invocation
        self.replica = replica
        self.startedAt = startedAt
        self.moves = []
        self.outcome = "running"
    }
}

/// One input moved between replicas before an attempt.
public struct MoveRecord: Codable, Sendable, Equatable {
    /// Flow-level name.
    public var name: String
    /// From replica.
    public var from: Int
    /// To replica (the attempt's).
    public var to: Int
    /// Bytes copied.
    public var bytes: Int
    /// When the move started.
    public var startedAt: Date
    /// Seconds it took.
    public var seconds: Double

    /// Creates a move record.
    public init(name: String, from: Int, to: Int, bytes: Int, startedAt: Date, seconds: Double) {
        self.name = name
        self.from = from
        self.to = to
        self.bytes = bytes
        self.startedAt = startedAt
        self.seconds = seconds
    }
}

/// Arena use of one replica.
public struct ReplicaMemory: Codable, Sendable, Equatable {
    /// Replica index.
    public var replica: Int
    /// Bytes allocated in its arena.
    public var usedBytes: Int
    /// Its arena's size (0 when unknown).
    public var limitBytes: Int
    /// When it was sampled (for a peak: when the peak was seen).
    public var at: Date?

    /// Creates a reading.
    public init(replica: Int, usedBytes: Int, limitBytes: Int, at: Date? = nil) {
        self.replica = replica
        self.usedBytes = usedBytes
        self.limitBytes = limitBytes
        self.at = at
    }
}

/// One input of a step, as it was when the step started.
public struct InputRecord: Codable, Sendable, Equatable {
    /// Flow-level name.
    public var name: String
    /// Object size in bytes.
    public var bytes: Int
    /// The replica holding most of it before any move (`nil`: resident nowhere).
    public var residentOn: Int?
    /// Every replica holding it before any move.
    public var residentReplicas: [Int]
    /// Bytes already local to the step's replica.
    public var localBytes: Int
    /// Bytes moved to the step's replica (0 when it was local).
    public var movedBytes: Int
    /// Seconds the move took.
    public var moveSeconds: Double

    /// Creates an input record.
    public init(
        name: String, bytes: Int, residentOn: Int?, residentReplicas: [Int]? = nil, localBytes: Int, movedBytes: Int,
        moveSeconds: Double
    ) {
        self.name = name
        self.bytes = bytes
        self.residentOn = residentOn
        self.residentReplicas = residentReplicas ?? residentOn.map { [$0] } ?? []
        self.localBytes = localBytes
        self.movedBytes = movedBytes
        self.moveSeconds = moveSeconds
    }
}

/// One output of a step.
public struct OutputRecord: Codable, Sendable, Equatable {
    /// Flow-level name.
    public var name: String
    /// Name in the store (run-prefixed).
    public var storeName: String
    /// Size in bytes.
    public var bytes: Int
    /// Replica holding it.
    public var replica: Int

    /// Creates an output record.
    public init(name: String, storeName: String, bytes: Int, replica: Int) {
        self.name = name
        self.storeName = storeName
        self.bytes = bytes
        self.replica = replica
    }
}

extension RunRecord {
    /// JSON encoder used for records (sorted keys, ISO-8601 dates).
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.dateEncodingStrategy = .iso8601WithFraction
        return e
    }

    /// JSON decoder for records.
    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601WithFraction
        return d
    }
}

extension JSONEncoder.DateEncodingStrategy {
    static var iso8601WithFraction: JSONEncoder.DateEncodingStrategy {
        .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        }
    }
}

extension JSONDecoder.DateDecodingStrategy {
    static var iso8601WithFraction: JSONDecoder.DateDecodingStrategy {
        .custom { decoder in
            let c = try decoder.singleValueContainer()
            let s = try c.decode(String.self)
            let strategy = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
            if let d = try? strategy.parse(s) { return d }
            if let d = try? Date.ISO8601FormatStyle().parse(s) { return d }
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "bad date \(s)")
        }
    }
}
