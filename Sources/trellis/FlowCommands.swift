import ArgumentParser
import TrellisFlow

/// How flows reach the object store: the data plane that measures residency and moves
/// objects between replicas.
enum FlowDataPlane {
    static let make: @Sendable ([Replica]) async throws -> any DataPlane = { replicas in
        try ClientDataPlane(replicas: replicas)
    }
}

struct FlowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flow",
        abstract: "Run pipelines whose steps hand data to each other through Trellis.",
        subcommands: [Run.self, Resume.self, Status.self, Logs.self, Report.self, List.self, Validate.self, Render.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run a flow file (starts a runtime when none is up).")
        @Argument(help: "The flow's YAML file.") var file: String
        @Option(name: .customLong("run-id"), help: "Run id (default: generated).") var runID: String?
        @Flag(help: "Keep the run's objects after success.") var keep = false
        @Option(name: .customLong("max-parallel"), help: "At most this many steps at once.") var maxParallel: Int?
        @OptionGroup var target: KubernetesFlags
        @OptionGroup var metrics: FlowMetricsFlags

        func run() async throws {
            let kube = try target.options()
            let (file, runID, keep, maxParallel) = (file, runID, keep, maxParallel)
            let status = await metrics.serving { metrics in
                if let kube {
                    return await FlowCLI.kubernetes(
                        file: file, resume: nil, newRunID: runID, keep: keep, maxParallel: maxParallel, options: kube,
                        metrics: metrics)
                }
                return await FlowCLI.run(
                    file: file, runID: runID, keep: keep, maxParallel: maxParallel, metrics: metrics,
                    makeDataPlane: FlowDataPlane.make)
            }
            if status != 0 { throw ExitCode(status) }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rerun the failed and downstream steps of a run, reusing what is still in memory.")
        @Argument(help: "The run id.") var runID: String
        @Flag(help: "Keep the run's objects after success.") var keep = false
        @Option(name: .customLong("max-parallel")) var maxParallel: Int?
        @OptionGroup var target: KubernetesFlags
        @OptionGroup var metrics: FlowMetricsFlags

        func run() async throws {
            let kube = try target.options()
            let (runID, keep, maxParallel) = (runID, keep, maxParallel)
            let status = await metrics.serving { metrics in
                if kube != nil || KubernetesLauncher.savedOptions(runID: runID, home: .fromEnvironment()) != nil {
                    return await FlowCLI.kubernetes(
                        file: nil, resume: runID, keep: keep, maxParallel: maxParallel, options: kube, metrics: metrics)
                }
                return await FlowCLI.resume(
                    runID: runID, keep: keep, maxParallel: maxParallel, metrics: metrics, makeDataPlane: FlowDataPlane.make)
            }
            if status != 0 { throw ExitCode(status) }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a run's steps, placement, handoffs and state.")
        @Argument var runID: String
        @Flag var json = false
        func run() throws {
            let s = FlowCLI.status(runID: runID, json: json)
            if s != 0 { throw ExitCode(s) }
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a step's output.")
        @Argument var runID: String
        @Argument var step: String
        @Flag var follow = false
        func run() async throws {
            let s = await FlowCLI.logs(runID: runID, step: step, follow: follow)
            if s != 0 { throw ExitCode(s) }
        }
    }

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a run's report: one self-contained HTML page (DAG, placement, timeline, objects, failures, totals).",
            discussion: "Works while the run is going and after it failed, was resumed or finished. Prints the file's path.")
        @Argument(help: "The run id.") var runID: String
        @Option(help: "The file to write (default: report.<format> in the run's directory; - for standard output).")
        var out: String?
        @Option(help: "html (the whole report), svg (the DAG and timeline alone) or png (that SVG through headless Chromium).")
        var format = "html"
        @Option(help: "Log lines shown for each failed step.") var lines = 40
        func run() async throws {
            guard let f = FlowCLI.ReportFormat(rawValue: format) else { throw ValidationError("--format must be html, svg or png") }
            let s = await FlowCLI.report(runID: runID, out: out, format: f, lines: lines)
            if s != 0 { throw ExitCode(s) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List runs.")
        @Flag var json = false
        func run() throws {
            let s = FlowCLI.list(json: json)
            if s != 0 { throw ExitCode(s) }
        }
    }

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a flow file without running it.")
        @Argument var file: String
        func run() throws {
            let s = FlowCLI.validate(file: file)
            if s != 0 { throw ExitCode(s) }
        }
    }
}

struct RuntimeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runtime", abstract: "A local runtime: N replica daemons on this machine.",
        subcommands: [Up.self, Down.self, Status.self])

    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start replica daemons (and a private etcd for more than one).")
        @Option var replicas = 1
        @Option(help: "Shared memory per replica, e.g. 4Gi.") var size = "1Gi"
        @Option(help: "memory, or spill (memory with spill to --spill-dir).") var medium = "memory"
        @Option(name: .customLong("spill-dir")) var spillDir: String?
        @Flag(name: .customLong("huge-pages"), help: "Arenas from the hugetlb pool, pre-faulted (the pool must hold replicas × size).")
        var hugePages = false
        @Flag(help: "Each replica a node: a network namespace with its own address on a private bridge, its daemon bound there, etcd on the bridge (root).")
        var netns = false
        func run() async throws {
            guard let m = Medium(rawValue: medium) else { throw ValidationError("--medium must be memory or spill") }
            let s = await FlowCLI.runtimeUp(
                RuntimeSpec(replicas: replicas, size: size, medium: m, spillDirectory: spillDir, hugePages: hugePages),
                networkNamespaces: netns)
            if s != 0 { throw ExitCode(s) }
        }
    }

    struct Down: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the runtime's daemons.")
        func run() async throws {
            let s = await FlowCLI.runtimeDown()
            if s != 0 { throw ExitCode(s) }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the runtime's replicas.")
        @Flag var json = false
        func run() throws {
            let s = FlowCLI.runtimeStatus(json: json)
            if s != 0 { throw ExitCode(s) }
        }
    }
}

/// `--on kubernetes` and its settings (`flow run`, `flow resume`).
struct KubernetesFlags: ParsableArguments {
    @Option(name: .customLong("on"), help: "Where steps run: local (default) or kubernetes.") var on: String?
    @Option(help: "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster credentials).")
    var kubeconfig: String?
    @Option(help: "kubeconfig context (default: its current-context).") var context: String?
    @Option(help: "Namespace (default: the context's, else default).") var namespace: String?
    @Option(help: "Image of the step containers (default python:3.10).") var image: String?
    @Option(help: "Fluid Dataset/VineyardRuntime name (default: the flow's name).") var dataset: String?
    @Option(name: .customLong("etcd-service"), help: "Cluster metadata through the API server's service proxy, NAME:PORT (default <dataset>-master:2379).")
    var etcdService: String?
    @Option(name: .customLong("etcd-endpoint"), help: "Cluster metadata directly (in the cluster), e.g. http://vineyard-master:2379.")
    var etcdEndpoint: String?
    @Option(name: .customLong("etcd-prefix"), help: "The daemons' --etcd_prefix.") var etcdPrefix = "/vineyard"
    @Flag(name: .customLong("no-runtime"), help: "Do not apply the Dataset and VineyardRuntime (they exist already).")
    var noRuntime = false
    @Option(name: .customLong("worker-image"), help: "Trellis image of the VineyardRuntime's workers (default trellis:latest).")
    var workerImage: String?

    /// The Kubernetes options, or nil for a local run.
    func options() throws -> KubernetesOptions? {
        switch on {
        case nil, "local"?:
            if kubeconfig != nil || context != nil || namespace != nil || image != nil || etcdService != nil || etcdEndpoint != nil {
                throw ValidationError("--kubeconfig, --context, --namespace, --image and --etcd-* need --on kubernetes")
            }
            return nil
        case "kubernetes"?, "k8s"?:
            return KubernetesOptions(
                kubeconfig: kubeconfig, context: context, namespace: namespace, image: image, dataset: dataset,
                etcdService: etcdService, etcdEndpoint: etcdEndpoint, etcdPrefix: etcdPrefix, applyRuntime: !noRuntime,
                workerImage: workerImage)
        case let other?:
            throw ValidationError("--on must be local or kubernetes, not '\(other)'")
        }
    }
}
