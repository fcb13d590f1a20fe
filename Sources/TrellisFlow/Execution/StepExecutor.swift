import Foundation

/// One attempt of one step, as the runner hands it to a ``StepExecutor``: what to run, on
/// which replica (node), with which environment, and where its output goes.
///
/// The runner has already placed the step (``Placer``), moved its inputs to `replica` and
/// cleared stale outputs; the executor only starts the attempt and reports how it ended.
/// `command` is the invocation on a machine that shares the runner's files (local processes,
/// network-namespace nodes); an executor that runs steps elsewhere (Kubernetes) builds its own
/// from `step` and ships the code itself.
public struct StepLaunch: Sendable {
    /// The run.
    public var runID: String
    /// The step as the flow declares it.
    public var step: StepSpec
    /// 1-based attempt number.
    public var attempt: Int
    /// Where placement put it.
    public var replica: Replica
    /// argv[0] and the rest, for executors that share the runner's files.
    public var command: [String]
    /// The step's full environment (VINEYARD_IPC_SOCKET, TRELLIS_* and the spec's env).
    public var environment: [String: String]
    /// Working directory on the runner's machine.
    public var workingDirectory: String
    /// Where the step's stdout and stderr go (appended).
    public var stdoutPath: String
    /// Where the step's stderr goes (appended).
    public var stderrPath: String
    /// Seconds before the attempt is stopped as timed out.
    public var timeout: Double?
    /// Seconds between SIGTERM (or a delete) and SIGKILL.
    public var killGrace: Double

    /// Creates a launch description.
    public init(
        runID: String, step: StepSpec, attempt: Int, replica: Replica, command: [String],
        environment: [String: String], workingDirectory: String, stdoutPath: String, stderrPath: String,
        timeout: Double?, killGrace: Double
    ) {
        self.runID = runID
        self.step = step
        self.attempt = attempt
        self.replica = replica
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
        self.timeout = timeout
        self.killGrace = killGrace
    }
}

/// How an attempt ended, whatever ran it.
public struct StepExit: Sendable, Equatable {
    /// Exit code or signal of the step's process (or of the pod's container).
    public var status: ExitStatus
    /// Stopped because it ran past its timeout.
    public var timedOut: Bool
    /// Stopped because the run was cancelled.
    public var cancelled: Bool
    /// Seconds from start to end as the executor saw them.
    public var seconds: Double
    /// Why it ended when the process alone does not say (a node cut off, a pod that could
    /// not be scheduled, a daemon that vanished); shown in the record and `flow status`.
    public var message: String?

    /// Creates an exit description.
    public init(status: ExitStatus, timedOut: Bool = false, cancelled: Bool = false, seconds: Double, message: String? = nil) {
        self.status = status
        self.timedOut = timedOut
        self.cancelled = cancelled
        self.seconds = seconds
        self.message = message
    }
}

/// The one seam between the flow runner and whatever runs a step: local processes, processes
/// inside a network-namespace node, or a Kubernetes Job pinned to a node. Placement, moves,
/// retries, the record and cleanup are the runner's and the same for every conformer.
public protocol StepExecutor: Sendable {
    /// Runs one attempt to its end, honouring `launch.timeout`; cancelling the calling task
    /// stops it (exit with `cancelled`). Throws only when the attempt cannot start at all
    /// (the error text goes to the record as "cannot start: …").
    func run(_ launch: StepLaunch) async throws -> StepExit
}
