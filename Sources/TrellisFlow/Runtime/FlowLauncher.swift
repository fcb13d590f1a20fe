import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `trellis flow run` / `flow resume` in one call: finds the runtime (or starts an ephemeral one
/// when none is up), binds a data plane to its replicas, runs, and settles the runtime.
///
/// Ephemeral runtime policy: started in the shared runtime directory and marked ephemeral.
/// When the run succeeds it is stopped. When the run fails or is cancelled it is **kept up**,
/// because its memory holds the intermediates `flow resume` reuses; the record's message says
/// so, and `trellis runtime down` stops it. A successful resume of the last run it was kept for
/// stops it.
public struct FlowLauncher: Sendable {
    /// Where runs and the runtime live.
    public var home: TrellisHome
    /// The runtime to use or start.
    public var runtime: LocalRuntime
    /// Builds the data plane for a runtime's replicas (the integrator's Swift-client binding).
    public var makeDataPlane: @Sendable ([Replica]) async throws -> any DataPlane
    /// Receives one-line notes for the terminal ("starting an ephemeral runtime …").
    public var note: @Sendable (String) -> Void

    /// Creates a launcher.
    public init(
        home: TrellisHome = .fromEnvironment(), trellisBinary: String,
        makeDataPlane: @escaping @Sendable ([Replica]) async throws -> any DataPlane,
        note: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.home = home
        self.runtime = LocalRuntime(directory: home.runtimeDirectory, trellisBinary: trellisBinary)
        self.makeDataPlane = makeDataPlane
        self.note = note
    }

    /// Runs `spec` (validated first, before any runtime starts).
    public func run(spec: FlowSpec, options: FlowRunOptions = FlowRunOptions()) async throws -> RunRecord {
        try spec.validate()
        if let id = options.runID, RunStore(home: home).exists(id) {
            throw RunStoreError("run '\(id)' already exists; use 'trellis flow resume \(id)' or another --run-id")
        }
        var options = options
        let status = runtime.status()
        let warm = zygote(spec: spec, states: [:], runtime: status, options: &options)
        defer { settleZygote(warm, runID: options.runID) }
        let (state, ephemeral) = try await ensureRuntime(spec.runtime, status: status)
        options.nodeZygotes = Self.nodeZygotes(state)
        let runner: FlowRunner
        let transport: HTTPKubeTransport?
        do {
            (runner, transport) = try await makeRunner(state)
        } catch {
            if ephemeral { try? await runtime.down() }
            throw error
        }
        let record: RunRecord
        do {
            record = try await runner.run(spec: spec, options: options)
            options.runID = record.runID
            await transport?.shutdown()
        } catch {
            await transport?.shutdown()
            if ephemeral { try? await runtime.down() }
            throw error
        }
        // A runtime kept up for another run's intermediates is ephemeral too: this run joins
        // (or leaves) the list of runs it is kept for.
        return try await settle(record, ephemeral: ephemeral || state.ephemeral)
    }

    /// Resumes a failed or cancelled run on the current runtime. If the runtime is gone, an
    /// ephemeral one is started and every step whose outputs are missing runs again.
    public func resume(runID: String, options: FlowRunOptions = FlowRunOptions()) async throws -> RunRecord {
        let previous = try RunStore(home: home).load(runID)
        var options = options
        let states = Dictionary(previous.steps.map { ($0.name, $0.state) }, uniquingKeysWith: { a, _ in a })
        let status = runtime.status()
        let warm = zygote(spec: previous.spec, states: states, runtime: status, options: &options)
        defer { settleZygote(warm, runID: runID) }
        let (state, ephemeral) = try await ensureRuntime(previous.spec.runtime, status: status)
        if ephemeral {
            note("the runtime that held run \(runID)'s intermediates is gone; recomputing them")
        }
        options.nodeZygotes = Self.nodeZygotes(state)
        let (runner, transport) = try await makeRunner(state)
        let record: RunRecord
        do {
            record = try await runner.resume(runID: runID, options: options)
            await transport?.shutdown()
        } catch {
            await transport?.shutdown()
            if ephemeral { try? await runtime.down() }
            throw error
        }
        return try await settle(record, ephemeral: ephemeral || state.ephemeral)
    }

    /// Sets `options.zygote`: the running runtime's zygote when it runs the steps'
    /// interpreter, else one started now, before the runtime, so that its imports (~0.8 s for
    /// vineyard, pandas, pyarrow) overlap the replicas' start-up instead of delaying the first
    /// step. Returns the zygote started here (ours to stop), if any. Nothing when the flow has
    /// no Python step to run or `TRELLIS_ZYGOTE=0`.
    private func zygote(
        spec: FlowSpec, states: [String: StepState], runtime status: RuntimeStatus, options: inout FlowRunOptions
    ) -> WarmZygote? {
        // Steps on namespace nodes start inside their namespace, not from a zygote on the host.
        if status.state?.netns != nil { return nil }
        guard let interpreter = FlowRunner.zygoteInterpreter(spec: spec, states: states, options: options) else {
            return nil
        }
        if status.isUp, let z = status.state?.zygote, z.interpreter == interpreter, z.isRunning {
            options.zygote = WarmZygote(attachingTo: z)
            return nil
        }
        let directory = (home.path as NSString).appendingPathComponent(
            "zygote-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))")
        let started = WarmZygote.launch(
            interpreter: interpreter, directory: directory, log: directory + "/zygote.log", environment: options.environment,
            stepFiles: FlowRunner.pythonStepFiles(spec: spec, states: states))
        options.zygote = started
        return started
    }

    /// Stops the launcher's zygote and files its log with the run's logs.
    private func settleZygote(_ zygote: WarmZygote?, runID: String?) {
        guard let zygote else { return }
        zygote.stop()
        let store = RunStore(home: home)
        if let runID, store.exists(runID) {
            // Beside the logs of earlier attempts (resume) or of a zygote the runner started.
            let logs = store.directory(of: runID) + "/logs/"
            var name = "zygote.log"
            var n = 1
            while FileManager.default.fileExists(atPath: logs + name) {
                name = "zygote.\(n).log"
                n += 1
            }
            rename(zygote.logPath, logs + name)
        }
        try? FileManager.default.removeItem(atPath: zygote.directory)
    }

    /// The runner for a runtime: local replicas through `makeDataPlane` and the runner's own
    /// processes; network-namespace nodes through ``NodesDataPlane`` (placement from the
    /// cluster metadata, as on Kubernetes) and a ``ProcessExecutor`` that runs each step in
    /// its node's namespace.
    /// The zygotes of a node runtime that still run, by node.
    static func nodeZygotes(_ state: RuntimeState) -> [String: WarmZygote] {
        (state.nodeZygotes ?? [:]).filter { $0.value.isRunning }.mapValues { WarmZygote(attachingTo: $0) }
    }

    /// The transport returned is the metadata reader's (nodes only): shut it down after the run.
    private func makeRunner(_ state: RuntimeState) async throws -> (FlowRunner, HTTPKubeTransport?) {
        let store = RunStore(home: home)
        guard let network = state.netns else {
            return (FlowRunner(dataPlane: try await makeDataPlane(state.replicas), replicas: state.replicas, store: store), nil)
        }
        guard let ip = NetnsNetwork.findIP(environment: runtime.environment) else {
            throw RuntimeError("the runtime's nodes are network namespaces and no ip command is found")
        }
        // etcd's gateway on the bridge (the host is on it), read as the Kubernetes launcher reads it.
        let transport = try HTTPKubeTransport(baseURL: "http://\(network.gateway):2379", timeoutSeconds: 10)
        do {
            let etcd = EtcdGateway(transport: transport, keyPrefix: state.id)  // the daemons' --etcd_prefix
            let plane = try await NodesDataPlane.connect(replicas: state.replicas, etcd: etcd)
            let runner = FlowRunner(
                dataPlane: plane, replicas: state.replicas, store: store,
                executor: ProcessExecutor.networkNamespaces(network, replicas: state.replicas, ip: ip))
            return (runner, transport)
        } catch {
            await transport.shutdown()
            throw error
        }
    }

    private func ensureRuntime(_ spec: RuntimeSpec, status: RuntimeStatus) async throws -> (RuntimeState, Bool) {
        if !status.isUp, var state = status.state, state.netns != nil {
            // A node is down: run on the nodes that are left (what lived on the lost ones is
            // recomputed), as a cluster would; never replace a node runtime by a local one.
            let alive = state.replicas.indices.filter { $0 < status.replicasAlive.count && status.replicasAlive[$0] }
            guard !alive.isEmpty, status.etcdAlive != false else {
                throw RuntimeError(
                    "the node runtime \(state.id) is down (\(status.etcdAlive == false ? "its etcd" : "every node's daemon") "
                        + "is gone); 'trellis runtime down' and up again")
            }
            let lost = state.replicas.indices.filter { !alive.contains($0) }.map { state.replicas[$0].node ?? "r\($0)" }
            note("node(s) \(lost.joined(separator: ", ")) down: running on the \(alive.count) node(s) left")
            state.replicas = alive.enumerated().map { k, i in
                var r = state.replicas[i]
                r.index = k
                return r
            }
            return (state, false)
        }
        if status.isUp, let state = status.state {
            if state.replicas.count != spec.replicas {
                note(
                    "using the running runtime (\(state.replicas.count) replica(s)); the flow asks for "
                        + "\(spec.replicas) — 'trellis runtime down' to get a fresh one")
            }
            return (state, false)
        }
        note("no runtime is up: starting \(spec.replicas) replica(s) of \(spec.size) for this run")
        return (try await runtime.up(spec, ephemeral: true), true)
    }

    private func settle(_ record: RunRecord, ephemeral: Bool) async throws -> RunRecord {
        guard ephemeral, let state = runtime.loadState(), state.ephemeral else { return record }
        var record = record
        if record.state == .succeeded {
            try? runtime.setKept(record.runID, false)
            if runtime.loadState()?.keptFor.isEmpty ?? true {
                try await runtime.down()
            }
        } else {
            try runtime.setKept(record.runID, true)
            record.message = (record.message ?? "")
                + "\nthe runtime started for this run stays up to keep them ('trellis runtime down' to stop it)"
            try RunStore(home: home).save(record)
        }
        return record
    }
}
