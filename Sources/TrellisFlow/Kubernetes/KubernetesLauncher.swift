import Foundation

/// The Kubernetes settings of `trellis flow run --on kubernetes` (kept with the run, so
/// `flow resume` reuses them).
public struct KubernetesOptions: Codable, Sendable, Equatable {
    /// `--kubeconfig` (nil: `$KUBECONFIG`, `~/.kube/config`, else in-cluster credentials).
    public var kubeconfig: String?
    /// `--context`.
    public var context: String?
    /// `--namespace` (nil: the context's, else `default`).
    public var namespace: String?
    /// `--image`: the step image.
    public var image: String?
    /// `--dataset`: the Fluid Dataset/VineyardRuntime name (default: the flow's name as a DNS label).
    public var dataset: String?
    /// `--etcd-service NAME:PORT`: reach the cluster metadata through the API server's service
    /// proxy (default `<dataset>-master:2379`, Fluid's master Service).
    public var etcdService: String?
    /// `--etcd-endpoint URL`: reach it directly instead (in the cluster).
    public var etcdEndpoint: String?
    /// The daemons' `--etcd_prefix`.
    public var etcdPrefix: String
    /// Apply the Dataset and VineyardRuntime (the code ConfigMap is always applied).
    public var applyRuntime: Bool
    /// `--worker-image`: the Trellis image of the VineyardRuntime's workers (default: the
    /// renderer's, `trellis:latest`).
    public var workerImage: String?
    /// Build the objects with the renderer's builders (``KubeLaunchObjects``); `false` uses
    /// the launcher's own minimal ones (``KubeStepObjects``, a per-run code ConfigMap).
    public var rendered: Bool = true
    /// Seconds to wait for at least one daemon to register.
    public var registrationTimeout: Double
    /// Status polling: first and largest pause (seconds).
    public var pollFirst: Double
    public var pollMax: Double

    public init(
        kubeconfig: String? = nil, context: String? = nil, namespace: String? = nil, image: String? = nil,
        dataset: String? = nil, etcdService: String? = nil, etcdEndpoint: String? = nil, etcdPrefix: String = "/vineyard",
        applyRuntime: Bool = true, workerImage: String? = nil, registrationTimeout: Double = 300, pollFirst: Double = 0.25,
        pollMax: Double = 2
    ) {
        self.workerImage = workerImage
        self.kubeconfig = kubeconfig
        self.context = context
        self.namespace = namespace
        self.image = image
        self.dataset = dataset
        self.etcdService = etcdService
        self.etcdEndpoint = etcdEndpoint
        self.etcdPrefix = etcdPrefix
        self.applyRuntime = applyRuntime
        self.registrationTimeout = registrationTimeout
        self.pollFirst = pollFirst
        self.pollMax = pollMax
    }

    /// The Dataset name for a flow.
    public func datasetName(flow: String) -> String {
        dataset ?? { let d = KubeNaming.dnsFragment(flow, limit: 40); return d.isEmpty ? "trellis" : d }()
    }
}

/// `trellis flow run/resume --on kubernetes`: the same ``FlowRunner`` (placement, retries,
/// timeouts, failure propagation, record, resume) with ``KubernetesExecutor`` running the
/// attempts and ``EtcdMetadataDataPlane`` answering where objects are.
///
/// Per invocation: apply the static parts (Dataset + VineyardRuntime unless disabled, and the
/// code ConfigMap, built by the renderer's builders) with server-side apply; wait until daemons are registered in the
/// cluster metadata and take one replica per daemon (with its node); run; then delete the
/// run's Jobs (by label). The Jobs' logs are in the run's log files
/// already, so `flow logs` works after the cleanup.
public struct KubernetesLauncher: Sendable {
    public var home: TrellisHome
    public var options: KubernetesOptions
    public var connection: KubeConnection
    public var transport: any KubeTransport
    /// A separate transport for a direct etcd endpoint (nil: through the API server).
    public var etcdTransport: (any KubeTransport)?
    public var note: @Sendable (String) -> Void
    /// Builds step Jobs (default: ``KubeStepObjects/job(for:affinity:settings:)``).
    public var jobBuilder: (@Sendable (StepLaunch, NodeAffinity, KubeRunSettings) -> KubeValue)?

    public init(
        home: TrellisHome = .fromEnvironment(), options: KubernetesOptions, connection: KubeConnection,
        transport: any KubeTransport, etcdTransport: (any KubeTransport)? = nil, note: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.home = home
        self.options = options
        self.connection = connection
        self.transport = transport
        self.etcdTransport = etcdTransport
        self.note = note
    }

    var client: KubeClient { KubeClient(transport: transport, namespace: connection.namespace) }

    /// The metadata gateway these options describe.
    public func etcdGateway(dataset: String) -> EtcdGateway {
        if options.etcdEndpoint != nil, let etcdTransport {
            return EtcdGateway(transport: etcdTransport, keyPrefix: options.etcdPrefix)
        }
        let service = options.etcdService ?? "\(dataset)-master:2379"
        return EtcdGateway(
            transport: transport, pathPrefix: EtcdGateway.proxyPath(namespace: connection.namespace, service: service),
            keyPrefix: options.etcdPrefix)
    }

    public func run(spec: FlowSpec, options runOptions: FlowRunOptions) async throws -> RunRecord {
        try spec.validate()
        let store = RunStore(home: home)
        let runID = runOptions.runID ?? RunStore.generateRunID(flow: spec.name)
        if store.exists(runID) {
            throw RunStoreError("run '\(runID)' already exists; use 'trellis flow resume \(runID)' or another --run-id")
        }
        let runner = try await prepare(spec: spec, runID: runID)
        var o = runOptions
        o.runID = runID
        let record: RunRecord
        do {
            record = try await runner.run(spec: spec, options: o)
        } catch {
            await cleanup(runID: runID)
            throw error
        }
        try? saveOptions(runID: runID, store: store)
        await cleanup(runID: runID)
        return record
    }

    public func resume(runID: String, options runOptions: FlowRunOptions) async throws -> RunRecord {
        let store = RunStore(home: home)
        let previous = try store.load(runID)
        let runner = try await prepare(spec: previous.spec, runID: runID, invocation: previous.resumes + 1)
        let record: RunRecord
        do {
            record = try await runner.resume(runID: runID, options: runOptions)
        } catch {
            await cleanup(runID: runID)
            throw error
        }
        await cleanup(runID: runID)
        return record
    }

    /// The options a run was started with (for `flow resume` without flags).
    public static func savedOptions(runID: String, home: TrellisHome) -> KubernetesOptions? {
        let path = RunStore(home: home).directory(of: runID) + "/kubernetes.json"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(KubernetesOptions.self, from: data)
    }

    func saveOptions(runID: String, store: RunStore) throws {
        let data = try JSONEncoder().encode(options)
        try data.write(to: URL(fileURLWithPath: store.directory(of: runID) + "/kubernetes.json"))
    }

    func settings(for spec: FlowSpec) -> KubeRunSettings {
        var s = KubeRunSettings(dataset: options.datasetName(flow: spec.name))
        if let image = options.image { s.image = image }
        return s
    }

    /// Applies the static parts, finds the daemons and builds the runner.
    func prepare(spec: FlowSpec, runID: String, invocation: Int = 0) async throws -> FlowRunner {
        let settings = settings(for: spec)
        let client = self.client
        var objects: [KubeValue]
        if options.rendered {
            // Every step's Job must build (the factory below cannot throw): fail before anything runs.
            for step in spec.steps {
                _ = try KubeRender.stepJob(
                    flow: spec, step: step, runID: runID, namespace: connection.namespace, image: settings.image,
                    data: .fluidDataset(settings.dataset))
            }
            objects = try KubeLaunchObjects.staticObjects(
                flow: spec, namespace: connection.namespace, settings: settings,
                workerImage: options.workerImage ?? KubeRenderOptions().image, runtime: options.applyRuntime)
        } else {
            objects = options.applyRuntime ? KubeStepObjects.staticObjects(spec: spec, settings: settings) : []
            objects.append(
                try KubeStepObjects.codeConfigMap(runID: runID, spec: spec) { try String(contentsOfFile: $0, encoding: .utf8) })
        }
        for object in objects {
            do {
                try await client.apply(object)
            } catch {
                throw KubeAPIError(
                    status: (error as? KubeAPIError)?.status ?? 0, reason: "ApplyFailed",
                    message: "cannot apply \(object["kind"]?.string ?? "?") \(object[path: "metadata", "name"]?.string ?? "?"): \(error)")
            }
        }
        note("applied \(objects.count) object(s) in namespace \(connection.namespace) (\(connection.source))")
        let etcd = etcdGateway(dataset: settings.dataset)
        let start = ContinuousClock.now
        var instances: [MetadataInstance] = []
        var lastError: (any Error)?
        while true {
            do {
                instances = try await EtcdMetadataDataPlane.discover(etcd)
                lastError = nil
            } catch {
                lastError = error
            }
            if !instances.isEmpty { break }
            if (ContinuousClock.now - start).seconds >= options.registrationTimeout {
                throw DataPlaneError(
                    "no daemon registered in the cluster metadata (\(etcd.pathPrefix.isEmpty ? "direct" : etcd.pathPrefix), prefix \(etcd.keyPrefix)) "
                        + "within \(Int(options.registrationTimeout))s" + (lastError.map { ": \($0)" } ?? ""))
            }
            try await Task.sleep(for: .seconds(2))
        }
        let replicas = EtcdMetadataDataPlane.replicas(of: instances, podSocket: settings.podSocket)
        note("\(replicas.count) replica(s): " + replicas.map { "\($0.index)@\($0.node ?? "?")" }.joined(separator: ", "))
        let poll = (first: options.pollFirst, max: options.pollMax)
        let plane = EtcdMetadataDataPlane(
            etcd: etcd, instances: Dictionary(uniqueKeysWithValues: instances.enumerated().map { ($0.offset, $0.element.id) }),
            cleaner: KubeObjectCleaner(client: client, settings: settings, pollInterval: poll))
        let builder = jobBuilder
        let rendered = options.rendered
        let namespace = connection.namespace
        var executor = KubernetesExecutor(
            client: client,
            jobFactory: { launch, affinity in
                if let builder { return builder(launch, affinity, settings) }
                if rendered {
                    do {
                        return try KubeLaunchObjects.job(
                            flow: spec, launch: launch, affinity: affinity, namespace: namespace, settings: settings)
                    } catch {
                        // Not reached: every step's Job was built once above.
                    }
                }
                return KubeStepObjects.job(for: launch, affinity: affinity, settings: settings)
            }, pollInterval: poll)
        executor.invocation = invocation
        return FlowRunner(dataPlane: plane, replicas: replicas, store: RunStore(home: home), executor: executor)
    }

    /// Deletes the run's Jobs (by label) and code ConfigMap, in a task of its own (the run may
    /// have been cancelled).
    func cleanup(runID: String) async {
        let client = self.client
        let note = self.note
        let perRunCode = !options.rendered
        await Task {
            do {
                try await client.deleteAll(apiVersion: "batch/v1", kind: "Job", labelSelector: KubeNaming.runSelector(runID))
                // The renderer's code ConfigMap is the flow's (a static part); the minimal one is the run's.
                if perRunCode {
                    try await client.delete(
                        apiVersion: "v1", kind: "ConfigMap", name: KubeNaming.runObjectName(runID: runID, suffix: "code"))
                }
            } catch {
                note("cannot delete the Jobs of run \(runID): \(error)")
            }
        }.value
    }
}
