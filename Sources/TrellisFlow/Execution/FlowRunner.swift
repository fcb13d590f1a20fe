import Foundation
import TrellisSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Something that happened during a run, with the record as it is after the change.
public struct RunEvent: Sendable {
    /// What changed.
    public enum Kind: Sendable, Equatable {
        /// The run (or a resume) started.
        case runStarted
        /// A step was placed and its attempt started.
        case stepStarted(step: String)
        /// A step's attempt failed; it will be retried after `delay` seconds.
        case stepRetrying(step: String, delay: Double)
        /// A step reached a final state (or was stopped).
        case stepFinished(step: String)
        /// The run finished; the record is final.
        case runFinished
    }

    /// What changed.
    public var kind: Kind
    /// The run record after the change.
    public var record: RunRecord
}

/// Options of one `flow run` / `flow resume` invocation.
public struct FlowRunOptions: Sendable {
    /// The run id; `nil` generates `<flow>-<time>-<random>`. Ignored by resume.
    public var runID: String?
    /// Keep the run's objects in the store even when it succeeds (`--keep`).
    public var keepObjects: Bool
    /// Most steps at once; `nil`: the spec's `max_parallel`, else the number of CPUs (≥ 2).
    public var maxParallel: Int?
    /// Interpreter for Python steps that name none.
    public var pythonExecutable: String
    /// Seconds between SIGTERM and SIGKILL when a step is stopped (timeout, cancel).
    public var killGrace: Double
    /// Base environment of the steps (default: the runner's).
    public var environment: [String: String]
    /// Called on every change (from the runner's task; keep it quick). Use ``ProgressRenderer``
    /// for the terminal view.
    public var observer: (@Sendable (RunEvent) -> Void)?
    /// A zygote already warming up (``FlowLauncher`` starts one before the runtime); used
    /// when its interpreter is the Python steps', and stopped by whoever started it.
    public var zygote: WarmZygote?
    /// Zygotes running inside network-namespace nodes, by node name: a step on such a node
    /// forks from its node's zygote (so the worker is inside the node), never the host's.
    public var nodeZygotes: [String: WarmZygote] = [:]

    /// The interpreter of Python steps that name none: `$TRELLIS_PYTHON` when set and not
    /// empty, else `python3`. Runtimes start their zygote on it, so that runs match it.
    public static func defaultPython(environment: [String: String]) -> String {
        environment["TRELLIS_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "python3"
    }

    /// Creates options; the interpreter defaults to ``defaultPython(environment:)``.
    public init(
        runID: String? = nil, keepObjects: Bool = false, maxParallel: Int? = nil, pythonExecutable: String? = nil,
        killGrace: Double = 3, environment: [String: String] = ProcessInfo.processInfo.environment,
        observer: (@Sendable (RunEvent) -> Void)? = nil
    ) {
        self.runID = runID
        self.keepObjects = keepObjects
        self.maxParallel = maxParallel
        self.pythonExecutable = pythonExecutable ?? Self.defaultPython(environment: environment)
        self.killGrace = killGrace
        self.environment = environment
        self.observer = observer
    }
}

/// The executor: carries out ``FlowScheduler``'s decisions with real processes, the data plane,
/// timers and the run record. Everything it decides is delegated to the pure parts.
///
/// Each step runs as its own process group on the replica placement chose, with
/// `VINEYARD_IPC_SOCKET` (that replica), `TRELLIS_RUN_ID`, `TRELLIS_STEP`, `TRELLIS_REPLICA`,
/// `TRELLIS_ATTEMPT`, `TRELLIS_NAME_PREFIX`, `TRELLIS_INPUTS`, `TRELLIS_OUTPUTS`,
/// `TRELLIS_METRICS` and `PYTHONPATH` (with the bootstrap) set. Inputs not resident on that
/// replica are moved there first. A step succeeds when it exits 0 *and* each declared output
/// is in the store. Cancel the calling task (e.g. on Ctrl-C, see ``InterruptHandler``) to
/// cancel the run: running steps are stopped, the record says `cancelled`.
public struct FlowRunner: Sendable {
    /// The store operations.
    public let dataPlane: any DataPlane
    /// The runtime's replicas (index = position).
    public let replicas: [Replica]
    /// Where records and logs go.
    public let store: RunStore

    /// Runs each attempt instead of a local process when set (e.g. ``KubernetesExecutor``).
    public let executor: (any StepExecutor)?

    /// Creates a runner over a runtime's replicas.
    public init(dataPlane: any DataPlane, replicas: [Replica], store: RunStore = RunStore(), executor: (any StepExecutor)? = nil) {
        self.dataPlane = dataPlane
        self.replicas = replicas.sorted { $0.index < $1.index }
        self.store = store
        self.executor = executor
    }

    /// Validates and runs a flow to the end. Returns the final record (also on disk); a failed
    /// or cancelled run is reported through ``RunRecord/state``, not thrown.
    ///
    /// - Throws: ``FlowValidationError`` before anything starts; ``RunStoreError`` for a bad or
    ///   taken run id.
    public func run(spec: FlowSpec, options: FlowRunOptions = FlowRunOptions()) async throws -> RunRecord {
        try spec.validate()
        guard !replicas.isEmpty else { throw RunStoreError("the runtime has no replicas") }
        let runID = options.runID ?? RunStore.generateRunID(flow: spec.name)
        try store.create(runID)
        let now = Date()
        var record = RunRecord(
            runID: runID, spec: spec, state: .running, createdAt: now, startedAt: now, replicas: replicas,
            steps: spec.steps.map {
                StepRecord(
                    name: $0.name, stdoutPath: store.logPath(run: runID, step: $0.name, stream: .stdout),
                    stderrPath: store.logPath(run: runID, step: $0.name, stream: .stderr))
            })
        record.runnerPID = getpid()
        try? spec.yaml().write(toFile: store.directory(of: runID) + "/spec.yaml", atomically: true, encoding: .utf8)
        let scheduler = try FlowScheduler(spec: spec, replicaCount: replicas.count, maxParallel: parallelism(spec, options))
        return try await execute(record: record, scheduler: scheduler, options: options)
    }

    /// Resumes a failed or cancelled run: reruns the steps that did not succeed and everything
    /// downstream of them, plus the producers of needed inputs that are no longer in the store;
    /// steps whose outputs are still resident are reused, not rerun.
    public func resume(runID: String, options: FlowRunOptions = FlowRunOptions()) async throws -> RunRecord {
        var record = try store.load(runID)
        switch record.effectiveState {
        case .running: throw RunStoreError("run '\(runID)' is still running (pid \(record.runnerPID.map(String.init) ?? "?"))")
        case .succeeded: throw RunStoreError("run '\(runID)' already succeeded; nothing to resume")
        case .failed, .cancelled: break
        }
        let spec = record.spec
        let allOutputs = spec.steps.flatMap(\.outputs)
        let where_ = try await dataPlane.residency(
            of: allOutputs.map { ObjectNaming.storeName($0, runID: runID) }, on: replicas)
        let resident = Set(allOutputs.filter { where_[ObjectNaming.storeName($0, runID: runID)] != nil })
        var previous: [String: StepState] = [:]
        for s in record.steps { previous[s.name] = s.state }
        let rerun = try FlowScheduler.resumePlan(spec: spec, previous: previous, resident: resident)
        var initial: [String: StepState] = [:]
        for s in spec.steps where !rerun.contains(s.name) { initial[s.name] = .succeeded }
        for i in record.steps.indices {
            if rerun.contains(record.steps[i].name) {
                record.steps[i].state = .pending
                record.steps[i].message = nil
                record.steps[i].reused = false
                record.steps[i].timedOut = false
            } else {
                record.steps[i].reused = true
            }
        }
        record.resumes += 1
        record.state = .running
        record.startedAt = Date()
        record.finishedAt = nil
        record.message = nil
        record.runnerPID = getpid()
        record.replicas = replicas
        let scheduler = try FlowScheduler(
            spec: spec, replicaCount: replicas.count, maxParallel: parallelism(spec, options), initial: initial)
        return try await execute(record: record, scheduler: scheduler, options: options)
    }

    func parallelism(_ spec: FlowSpec, _ options: FlowRunOptions) -> Int {
        options.maxParallel ?? spec.maxParallel ?? max(2, ProcessInfo.processInfo.activeProcessorCount)
    }

    // MARK: - The loop

    private enum Completion: Sendable {
        case attempt(AttemptResult)
        case retryDue(String)
    }

    private struct AttemptResult: Sendable {
        var step: String
        var replica: Int
        var exit: SupervisedExit?
        var error: String?
        var inputs: [InputRecord]
        var moveSeconds: Double
        var metrics: [String: Double]
        var planeSeconds: Double = 0
        var moves: [MoveRecord] = []
        var processStartedAt: Date?
    }

    private func execute(record initial: RunRecord, scheduler initialScheduler: FlowScheduler, options: FlowRunOptions)
        async throws -> RunRecord
    {
        var record = initial
        var scheduler = initialScheduler
        let runID = record.runID
        let baseDirectory = record.spec.baseDirectory
        let specs = Dictionary(record.spec.steps.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        try RunPermissions.current.makeDirectory(store.libDirectory(of: runID))
        try PythonBootstrap.source.write(
            toFile: store.libDirectory(of: runID) + "/" + PythonBootstrap.fileName, atomically: true, encoding: .utf8)
        for (step, state) in scheduler.states where state == .succeeded {
            update(&record, step) { $0.state = .succeeded }
        }
        save(record)
        // A zygote warmed up by the launcher (while the runtime started) when it fits, else our own.
        let wanted = executor == nil ? Self.zygoteInterpreter(spec: record.spec, states: scheduler.states, options: options) : nil
        let warm = options.zygote.flatMap { $0.interpreter == wanted ? $0 : nil }
        let ownZygote = warm == nil ? wanted.flatMap {
            startZygote(interpreter: $0, record: record, states: scheduler.states, options: options)
        } : nil
        let zygote = warm ?? ownZygote
        defer { ownZygote?.stop() }
        options.observer?(RunEvent(kind: .runStarted, record: record))
        var began: [String: ContinuousClock.Instant] = [:]
        var planeTime: [String: Double] = [:]

        await withTaskGroup(of: Completion.self) { group in
            while true {
                if Task.isCancelled && !scheduler.isCancelling {
                    _ = scheduler.cancel()
                    for (name, st) in scheduler.states where st == .cancelled {
                        update(&record, name) {
                            if $0.state == .pending {
                                $0.state = .cancelled
                                $0.message = "not run: the run was cancelled"
                            }
                        }
                    }
                    save(record)
                }
                for name in scheduler.readySteps() {
                    guard let spec = specs[name] else { continue }
                    let t0 = ContinuousClock.now
                    let storeInputs = spec.inputs.map { ObjectNaming.storeName($0, runID: runID) }
                    var residency: Residency = [:]
                    var ids: [String: [Int: UInt64]] = [:]
                    let found = try? await dataPlane.located(storeInputs, on: replicas)
                    planeTime[name] = (ContinuousClock.now - t0).seconds
                    if let found {
                        for input in spec.inputs {
                            let stored = ObjectNaming.storeName(input, runID: runID)
                            if let w = found.residency[stored] { residency[input] = w }
                            if let i = found.ids[stored] { ids[input] = i }
                        }
                    }
                    let launch = scheduler.start(name, residency: residency)
                    began[name] = t0
                    let invocation = record.resumes
                    update(&record, name) {
                        let now = Date()
                        $0.state = .running
                        $0.replica = launch.placement.replica
                        $0.placementReason = launch.placement.reason
                        $0.startedAt = now
                        $0.attempts += 1
                        $0.history = ($0.history ?? []) + [
                            AttemptRecord(
                                attempt: $0.attempts, invocation: invocation, replica: launch.placement.replica, startedAt: now)
                        ]
                        $0.exitCode = nil
                        $0.signal = nil
                        $0.timedOut = false
                        $0.duration = nil
                        $0.message = launch.placement.missing.isEmpty
                            ? nil : "inputs not in the store: \(launch.placement.missing.joined(separator: ", "))"
                    }
                    save(record)
                    options.observer?(RunEvent(kind: .stepStarted(step: name), record: record))
                    let snapshot = residency
                    let copies = Self.localCopies(in: record, on: launch.placement.replica)
                    let inputIDs = ids.compactMapValues { $0[launch.placement.replica] }
                    group.addTask {
                        .attempt(
                            await self.attempt(
                                spec: spec, launch: launch, residency: snapshot, inputIDs: inputIDs, localCopies: copies,
                                runID: runID, baseDirectory: baseDirectory, zygote: zygote, options: options))
                    }
                }
                if scheduler.isFinished { break }
                guard let completion = await group.next() else { break }
                switch completion {
                case .retryDue(let name):
                    scheduler.retryDue(name)
                case .attempt(let result):
                    await handle(
                        result, specs: specs, scheduler: &scheduler, record: &record, began: began,
                        planeTime: planeTime[result.step] ?? 0, options: options, group: &group)
                }
            }
            group.cancelAll()
        }

        // Finish: outcome, cleanup, message.
        let outcome = scheduler.outcome == .running ? (scheduler.isCancelling ? .cancelled : .failed) : scheduler.outcome
        record.state = outcome
        record.finishedAt = Date()
        record.runnerPID = nil
        switch outcome {
        case .succeeded:
            if options.keepObjects {
                record.objectsKept = true
                record.message = "succeeded; objects kept (--keep)"
            } else {
                let failedDeletes = await deleteObjects(of: record)
                record.objectsKept = !failedDeletes.isEmpty
                if failedDeletes.isEmpty {
                    let now = Date()
                    var freed = record.freedAt ?? [:]
                    for o in record.steps.flatMap(\.outputs) where freed[o.name] == nil { freed[o.name] = now }
                    if !freed.isEmpty { record.freedAt = freed }
                }
                if !failedDeletes.isEmpty {
                    record.message = "succeeded; could not delete some objects: \(failedDeletes.joined(separator: "; "))"
                }
            }
        case .failed:
            record.objectsKept = true
            let failed = record.steps.filter { $0.state == .failed }
            let parts = failed.map { s -> String in
                "step '\(s.name)' failed (\(s.message ?? "error")); log: \(s.stderrPath)"
            }
            record.message = parts.joined(separator: "\n")
                + "\nintermediates kept; rerun the failed part with: trellis flow resume \(runID)"
        case .cancelled:
            record.objectsKept = true
            record.message = "cancelled; intermediates kept; continue with: trellis flow resume \(runID)"
        case .running:
            break
        }
        save(record)
        options.observer?(RunEvent(kind: .runFinished, record: record))
        return record
    }

    private func handle(
        _ result: AttemptResult, specs: [String: StepSpec], scheduler: inout FlowScheduler, record: inout RunRecord,
        began: [String: ContinuousClock.Instant], planeTime: Double, options: FlowRunOptions,
        group: inout TaskGroup<Completion>
    ) async {
        var planeSeconds = planeTime + result.planeSeconds
        let name = result.step
        let runID = record.runID
        var failure: String? = result.error
        var retryable = true
        var outputs: [OutputRecord] = []
        if let exit = result.exit, failure == nil {
            if exit.cancelled {
                failure = "cancelled"
            } else if exit.timedOut {
                failure = "timed out after \(formatFixed(specs[name]?.timeout ?? 0, digits: 1))s"
            } else if !exit.status.succeeded {
                failure = exit.status.description
            } else {
                // Exit 0: each declared output must be in the store.
                let declared = specs[name]?.outputs ?? []
                let storeNames = declared.map { ObjectNaming.storeName($0, runID: runID) }
                do {
                    let t = ContinuousClock.now
                    let found = try await dataPlane.residency(of: storeNames, on: replicas)
                    planeSeconds += (ContinuousClock.now - t).seconds
                    var missing: [String] = []
                    for (flowName, storeName) in zip(declared, storeNames) {
                        guard let w = found[storeName], !w.isEmpty else {
                            missing.append(flowName)
                            continue
                        }
                        let r = (w[result.replica] ?? 0) > 0 || w.count == 1 && w[result.replica] != nil
                            ? result.replica
                            : w.max { a, b in a.value < b.value || (a.value == b.value && a.key > b.key) }!.key
                        outputs.append(OutputRecord(name: flowName, storeName: storeName, bytes: w[r] ?? 0, replica: r))
                    }
                    if !missing.isEmpty {
                        failure = "exited 0 but did not produce \(missing.map { "'\($0)'" }.joined(separator: ", "))"
                    }
                } catch {
                    failure = "cannot check outputs: \(error)"
                }
            }
        }
        let cancelled = result.exit?.cancelled == true || (scheduler.isCancelling && failure != nil)
        if cancelled {
            scheduler.stopped(name)
        } else if failure == nil {
            scheduler.succeeded(name)
        }
        update(&record, name) { s in
            s.inputs = result.inputs
            s.metrics = result.metrics
            if let e = result.exit {
                s.exitCode = e.status.code
                s.signal = e.status.signal
                s.timedOut = e.timedOut
                s.processSeconds = e.seconds
            }
            if let t0 = began[name] {
                let total = (ContinuousClock.now - t0).seconds
                s.duration = total
                s.dataPlaneSeconds = planeSeconds
                s.overhead = max(0, total - (result.exit?.seconds ?? 0) - result.moveSeconds - planeSeconds)
            }
            if cancelled {
                s.state = .cancelled
                s.message = "stopped: the run was cancelled"
            } else if failure == nil {
                s.state = .succeeded
                s.outputs = outputs
                s.message = nil
            } else {
                s.message = failure
            }
            if var h = s.history?.popLast() {
                h.finishedAt = Date()
                h.moves = result.moves
                h.processStartedAt = result.processStartedAt
                h.processSeconds = result.exit?.seconds
                h.dataPlaneSeconds = s.dataPlaneSeconds
                h.overhead = s.overhead
                h.exitCode = result.exit?.status.code
                h.signal = result.exit?.status.signal
                h.timedOut = result.exit?.timedOut
                h.outcome = cancelled ? "cancelled" : failure == nil ? "succeeded" : "failed"
                h.message = cancelled ? s.message : failure
                s.history!.append(h)
            }
        }
        if !cancelled, failure == nil {
            await noteObjects(outputs, replica: result.replica, record: &record)
        }
        if !cancelled, let failure {
            if result.error != nil && result.exit == nil && result.error!.hasPrefix("cannot start") { retryable = false }
            let decision = scheduler.attemptFailed(name, retryable: retryable)
            switch decision {
            case .retry(let delay):
                update(&record, name) {
                    $0.state = .pending
                    $0.message = "attempt \($0.attempts) failed (\(failure)); retrying in \(formatFixed(delay, digits: 1))s"
                }
                save(record)
                options.observer?(RunEvent(kind: .stepRetrying(step: name, delay: delay), record: record))
                group.addTask {
                    try? await Task.sleep(for: .seconds(delay))
                    return .retryDue(name)
                }
                return
            case .failed(let downstream):
                update(&record, name) {
                    $0.state = .failed
                    $0.message = $0.attempts > 1 ? "\(failure) after \($0.attempts) attempts" : failure
                }
                for d in downstream {
                    update(&record, d) {
                        $0.state = .upstreamFailed
                        $0.message = "not run: upstream step '\(name)' failed"
                    }
                }
            }
        }
        if !cancelled, failure == nil, !options.keepObjects {
            await freeConsumedInputs(of: name, specs: specs, scheduler: scheduler, record: &record)
        }
        save(record)
        options.observer?(RunEvent(kind: .stepFinished(step: name), record: record))
    }

    /// Deletes the inputs of `step` whose every consumer has now succeeded: no step of this
    /// run (nor a resume of it) reads them again, so their memory goes back at once instead
    /// of at the end of the run. Only objects the flow produced; never with `--keep`.
    private func freeConsumedInputs(
        of step: String, specs: [String: StepSpec], scheduler: FlowScheduler, record: inout RunRecord
    ) async {
        let produced = Set(specs.values.flatMap(\.outputs))
        var freed: [String] = []
        for input in Set(specs[step]?.inputs ?? []).sorted() where produced.contains(input) {
            let consumers = specs.values.filter { $0.inputs.contains(input) }
            guard consumers.allSatisfy({ scheduler.states[$0.name] == .succeeded }) else { continue }
            let storeName = ObjectNaming.storeName(input, runID: record.runID)
            var deleted = true
            for r in replicas {
                do { try await dataPlane.delete([storeName], on: r) } catch { deleted = false }
            }
            if deleted { freed.append(input) }
        }
        if !freed.isEmpty {
            record.freedEarly = (record.freedEarly ?? []) + freed
            let now = Date()
            for f in freed { record.freedAt = (record.freedAt ?? [:]).merging([f: now]) { _, b in b } }
        }
    }

    /// For the report: the store types of a step's new outputs, and each replica's arena use
    /// now (the step's outputs are in, its inputs not yet freed), kept as a peak per replica.
    /// What the data plane cannot tell is left out; none of it affects the run.
    private func noteObjects(_ outputs: [OutputRecord], replica: Int, record: inout RunRecord) async {
        if !outputs.isEmpty, let r = replicas.first(where: { $0.index == replica }),
            let types = try? await dataPlane.typeNames(of: outputs.map(\.storeName), on: r)
        {
            for o in outputs {
                if let t = types[o.storeName] { record.objectTypes = (record.objectTypes ?? [:]).merging([o.name: t]) { _, b in b } }
            }
        }
        var peaks = record.peakMemory ?? []
        for r in replicas {
            guard let m = try? await dataPlane.memory(on: r) else { continue }
            let reading = ReplicaMemory(replica: r.index, usedBytes: m.usedBytes, limitBytes: m.limitBytes, at: Date())
            if let i = peaks.firstIndex(where: { $0.replica == r.index }) {
                if m.usedBytes > peaks[i].usedBytes { peaks[i] = reading }
            } else {
                peaks.append(reading)
            }
        }
        if !peaks.isEmpty { record.peakMemory = peaks.sorted { $0.replica < $1.replica } }
    }

    // MARK: - One attempt

    /// `names` as a JSON array of strings.
    static func jsonArray(_ names: [String]) -> String {
        guard let data = try? JSONEncoder().encode(names), let text = String(data: data, encoding: .utf8) else { return "[]" }
        return text
    }

    /// A JSON object of strings, keys sorted.
    static func jsonObject(_ values: [String: String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        guard let data = try? encoder.encode(values), let text = String(data: data, encoding: .utf8) else { return "{}" }
        return text
    }

    /// The inputs moved onto `replica` by this run's attempts so far (each copy is bound to
    /// its replica-local name there; a copy deleted since only costs a step one lookup).
    static func localCopies(in record: RunRecord, on replica: Int) -> Set<String> {
        var out: Set<String> = []
        for step in record.steps {
            for h in step.history ?? [] {
                for m in h.moves where m.to == replica { out.insert(m.name) }
            }
        }
        return out
    }

    private func attempt(
        spec: StepSpec, launch: Launch, residency: Residency, inputIDs: [String: UInt64], localCopies: Set<String>,
        runID: String, baseDirectory: String?, zygote: WarmZygote?, options: FlowRunOptions
    ) async -> AttemptResult {
        var localCopies = localCopies
        var inputIDs = inputIDs
        let replica = replicas[launch.placement.replica]
        var result = AttemptResult(
            step: spec.name, replica: replica.index, exit: nil, error: nil, inputs: [], moveSeconds: 0, metrics: [:])
        // Inputs: record where they are; move the ones that are elsewhere.
        var seen: Set<String> = []
        for input in spec.inputs where seen.insert(input).inserted {
            let w = residency[input] ?? [:]
            let home = w.max { a, b in a.value < b.value || (a.value == b.value && a.key > b.key) }
            var rec = InputRecord(
                name: input, bytes: home?.value ?? 0, residentOn: home?.key,
                residentReplicas: w.filter { $0.value > 0 }.keys.sorted(),
                localBytes: w[replica.index] ?? 0,
                movedBytes: 0, moveSeconds: 0)
            if let move = launch.placement.moves.first(where: { $0.name == input }) {
                let t = ContinuousClock.now
                let startedAt = Date()
                do {
                    rec.movedBytes = try await dataPlane.move(
                        ObjectNaming.storeName(input, runID: runID), from: replicas[move.from], to: replica)
                } catch {
                    result.error = "cannot move input '\(input)' from replica \(move.from) to \(replica.index): \(error)"
                }
                rec.moveSeconds = (ContinuousClock.now - t).seconds
                if result.error == nil { localCopies.insert(input) }
                inputIDs[input] = nil  // the copy has an id of its own: the step looks it up
                result.moves.append(
                    MoveRecord(
                        name: input, from: move.from, to: replica.index, bytes: rec.movedBytes, startedAt: startedAt,
                        seconds: rec.moveSeconds))
                result.moveSeconds += rec.moveSeconds
            }
            result.inputs.append(rec)
            if result.error != nil { return result }
        }
        if Task.isCancelled {
            result.exit = SupervisedExit(status: ExitStatus(code: nil, signal: SIGTERM), timedOut: false, cancelled: true, seconds: 0)
            return result
        }
        // Outputs left by an earlier attempt or run would make the success check lie.
        if !spec.outputs.isEmpty {
            let names = spec.outputs.map { ObjectNaming.storeName($0, runID: runID) }
            let t = ContinuousClock.now
            for r in replicas { try? await dataPlane.delete(names, on: r) }
            result.planeSeconds += (ContinuousClock.now - t).seconds
        }
        // The process.
        let metricsPath = store.directory(of: runID) + "/logs/\(spec.name).metrics.jsonl"
        _ = FileManager.default.createFile(atPath: metricsPath, contents: nil)
        let invocation: (executable: String, arguments: [String])
        let workdir = workingDirectory(of: spec, baseDirectory: baseDirectory)
        switch spec.action {
        case .command(let argv)?:
            invocation = (argv[0], Array(argv.dropFirst()))
        case .python(let p)?:
            let file = Self.pythonFile(p, workingDirectory: workdir)
            var args = [store.libDirectory(of: runID) + "/" + PythonBootstrap.fileName, "--file", file]
            if let f = p.function { args += ["--function", f] }
            let zygote = replica.node.map { options.nodeZygotes[$0] } ?? zygote
            if let zygote,
                resolveExecutable(p.interpreter ?? options.pythonExecutable, environment: options.environment)
                    == zygote.interpreter
            {
                // A stub hands the step to a worker forked from the warm zygote (the stub that
                // zygote was launched with: they speak one protocol).
                let stub = zygote.directory + "/" + PythonZygote.stubFileName
                args = ["-S", stub, "--zygote", zygote.socket, "--pid", String(zygote.pid), "--"] + args
            }
            invocation = (p.interpreter ?? options.pythonExecutable, args)
        case .swift(let s)?:
            invocation = (s.executable, s.arguments)
        case nil:
            result.error = "nothing to run"
            return result
        }
        var env = options.environment
        for (k, v) in spec.env { env[k] = v }
        let lib = store.libDirectory(of: runID)
        prependPythonPath(lib, to: &env)
        env["PYTHONUNBUFFERED"] = env["PYTHONUNBUFFERED"] ?? "1"
        env["VINEYARD_IPC_SOCKET"] = replica.socket
        env["TRELLIS_RUN_ID"] = runID
        env["TRELLIS_STEP"] = spec.name
        env["TRELLIS_REPLICA"] = String(replica.index)
        env["TRELLIS_ATTEMPT"] = String(launch.attempt)
        env["TRELLIS_NAME_PREFIX"] = ObjectNaming.prefix(runID: runID)
        env["TRELLIS_INPUTS"] = spec.inputs.joined(separator: ",")
        env["TRELLIS_OUTPUTS"] = spec.outputs.joined(separator: ",")
        // The names whose replica-local copy the bootstrap looks up before the shared name
        // (any other name: the shared one straight away — in a cluster each lookup of a
        // name is a read of the cluster's metadata).
        env["TRELLIS_LOCAL_COPIES"] = Self.jsonArray(localCopies.sorted())
        // The ids the inputs resolved to on this replica when the step was placed (the
        // lookups placement made anyway): the bootstrap answers the step's own lookups of
        // those names from them instead of asking the daemon (in a cluster, etcd) again.
        env["TRELLIS_INPUT_IDS"] = Self.jsonObject(inputIDs.mapValues(String.init))
        env["TRELLIS_METRICS"] = metricsPath
        let out = store.logPath(run: runID, step: spec.name, stream: .stdout)
        let err = store.logPath(run: runID, step: spec.name, stream: .stderr)
        appendLine(
            "--- trellis: attempt \(launch.attempt) on replica \(replica.index) at \(Date().formatted(Date.ISO8601FormatStyle())) ---",
            to: err)
        result.processStartedAt = Date()
        if let executor {
            let launch = StepLaunch(
                runID: runID, step: spec, attempt: launch.attempt, replica: replica,
                command: [invocation.executable] + invocation.arguments, environment: env, workingDirectory: workdir,
                stdoutPath: out, stderrPath: err, timeout: spec.timeout, killGrace: options.killGrace)
            do {
                let exit = try await executor.run(launch)
                result.exit = SupervisedExit(
                    status: exit.status, timedOut: exit.timedOut, cancelled: exit.cancelled, seconds: exit.seconds)
                result.metrics = readMetrics(at: metricsPath)  // written where the runner's files are shared
                if let m = exit.message { appendLine("trellis: \(m)", to: err) }
            } catch {
                result.error = "cannot start: \(error)"
                appendLine("trellis: \(result.error!)", to: err)
            }
            return result
        }
        let child: ChildProcess
        do {
            child = try ChildProcess.spawn(
                executable: invocation.executable, arguments: invocation.arguments, environment: env,
                workingDirectory: workdir, stdout: .file(out), stderr: .file(err))
        } catch {
            result.error = "cannot start: \(error)"
            appendLine("trellis: \(result.error!)", to: err)
            return result
        }
        result.exit = await supervise(child, timeout: spec.timeout, grace: options.killGrace)
        result.metrics = readMetrics(at: metricsPath)
        if let e = result.exit, e.timedOut {
            appendLine("trellis: timed out after \(spec.timeout ?? 0)s; process group killed", to: err)
        }
        return result
    }

    /// The interpreter of the first Python step still to run, when a zygote would serve it
    /// (and `TRELLIS_ZYGOTE` is not `0`).
    static func zygoteInterpreter(spec: FlowSpec, states: [String: StepState], options: FlowRunOptions) -> String? {
        guard PythonZygote.isEnabled(environment: options.environment) else { return nil }
        return spec.steps.lazy.compactMap { step -> String? in
            guard case .python(let p)? = step.action, states[step.name] != .succeeded else { return nil }
            return resolveExecutable(p.interpreter ?? options.pythonExecutable, environment: options.environment)
        }.first
    }

    /// A Python step's file as an absolute path (relative ones are in its working directory).
    static func pythonFile(_ p: PythonTarget, workingDirectory: String) -> String {
        p.file.hasPrefix("/") ? p.file : (workingDirectory as NSString).appendingPathComponent(p.file)
    }

    /// The source files of the Python steps still to run (absolute paths), whose imports a
    /// zygote started for the run preloads.
    static func pythonStepFiles(spec: FlowSpec, states: [String: StepState]) -> [String] {
        var seen = Set<String>()
        return spec.steps.compactMap { step -> String? in
            guard case .python(let p)? = step.action, states[step.name] != .succeeded else { return nil }
            let file = pythonFile(p, workingDirectory: workingDirectory(of: step, baseDirectory: spec.baseDirectory))
            return seen.insert(file).inserted ? file : nil
        }
    }

    /// Starts the run's zygote in its lib directory, on `interpreter` (that of the first
    /// Python step still to run); steps on that interpreter use it. Nil when it cannot start.
    private func startZygote(interpreter: String, record: RunRecord, states: [String: StepState], options: FlowRunOptions)
        -> WarmZygote?
    {
        WarmZygote.launch(
            interpreter: interpreter, directory: store.libDirectory(of: record.runID),
            log: store.directory(of: record.runID) + "/logs/zygote.log", environment: options.environment,
            stepFiles: Self.pythonStepFiles(spec: record.spec, states: states))
    }

    func workingDirectory(of spec: StepSpec, baseDirectory: String?) -> String {
        Self.workingDirectory(of: spec, baseDirectory: baseDirectory)
    }

    static func workingDirectory(of spec: StepSpec, baseDirectory: String?) -> String {
        let base = baseDirectory ?? FileManager.default.currentDirectoryPath
        guard let w = spec.workdir, !w.isEmpty else { return base }
        return w.hasPrefix("/") ? w : (base as NSString).appendingPathComponent(w)
    }

    private func deleteObjects(of record: RunRecord) async -> [String] {
        let names = record.spec.steps.flatMap(\.outputs).map { ObjectNaming.storeName($0, runID: record.runID) }
        guard !names.isEmpty else { return [] }
        var failures: [String] = []
        for r in replicas {
            do { try await dataPlane.delete(names, on: r) } catch { failures.append("replica \(r.index): \(error)") }
        }
        return failures
    }

    private func update(_ record: inout RunRecord, _ step: String, _ body: (inout StepRecord) -> Void) {
        if let i = record.steps.firstIndex(where: { $0.name == step }) { body(&record.steps[i]) }
    }

    private func save(_ record: RunRecord) {
        do { try store.save(record) } catch {
            FileHandle.standardError.write(Data("trellis: cannot save run record: \(error)\n".utf8))
        }
    }
}

func appendLine(_ line: String, to path: String) {
    guard let file = try? OwnedFD.open(path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: RunPermissions.current.file) else { return }
    _ = Array((line + "\n").utf8).withUnsafeBytes { try? file.descriptor.writeFile($0) }
}
