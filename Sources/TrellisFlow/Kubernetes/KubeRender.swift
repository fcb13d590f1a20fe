import Foundation

/// What `trellis flow render` writes.
public enum KubeTarget: String, Sendable, Equatable, CaseIterable {
    /// Fluid: a Dataset + VineyardRuntime (worker image = Trellis), the steps' code in a
    /// ConfigMap, one DataProcess (`processor.job.podSpec`) per step chained by `runAfter`.
    case fluid
    /// Argo Workflows on a cluster without Fluid: etcd (Service + StatefulSet), Trellis as a
    /// DaemonSet, the code ConfigMap, and a Workflow whose DAG places steps by data affinity.
    case argo
}

/// Choices of a render that are not in the flow.
public struct KubeRenderOptions: Sendable, Equatable {
    /// Namespace of every object.
    public var namespace: String
    /// The Trellis daemon image (`Containerfile`'s final stage), `repo[:tag]`.
    public var image: String
    /// The image steps run in (python3, the pinned vineyard client; `Containerfile`'s `step` stage).
    public var stepImage: String
    /// The etcd image of the Argo target's StatefulSet (must have `etcd` on `PATH`).
    public var etcdImage: String
    /// Run id (object-name prefix, DataProcess names). `nil`: the flow's name for Fluid (whose
    /// objects are static), `{{workflow.name}}` for Argo (one id per submitted Workflow).
    public var runID: String?

    /// Creates options.
    public init(
        namespace: String = "default", image: String = "trellis:latest", stepImage: String = "trellis-step:latest",
        etcdImage: String = "quay.io/coreos/etcd:v3.5.21", runID: String? = nil
    ) {
        self.namespace = namespace
        self.image = image
        self.stepImage = stepImage
        self.etcdImage = etcdImage
        self.runID = runID
    }
}

/// A flow that cannot be rendered (the message names the step and what is wrong).
public struct KubeRenderError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong.
    public var description: String
    /// Creates an error.
    public init(_ description: String) { self.description = description }
}

/// Where a step pod reaches its Trellis daemon.
public enum KubeDataMount: Sendable, Equatable {
    /// The socket directory of the Trellis DaemonSet on the pod's node (hostPath), mounted at
    /// ``KubeRender/Paths/daemonSocketDirectory``.
    case trellisDaemonSet
    /// A Fluid Dataset's PVC (named after the Dataset) mounted at ``KubeRender/Paths/datasetMountPath``,
    /// where Fluid's fuse pod links the worker's socket.
    case fluidDataset(String)
}

/// One file of the steps' code, as stored in the flow's ConfigMap and mounted into step pods.
public struct StepCodeFile: Sendable, Equatable {
    /// ConfigMap key.
    public var key: String
    /// Path below ``KubeRender/Paths/codeMount`` where the pod sees it (`lib/…` or `code/…`).
    public var path: String
    /// The file's text.
    public var content: String

    /// Creates a file entry.
    public init(key: String, path: String, content: String) {
        self.key = key
        self.path = path
        self.content = content
    }
}

/// Builds Kubernetes objects (as ``KubeValue`` trees) for a flow: the whole render of
/// `trellis flow render`, and the per-step builders a launcher submits one by one.
///
/// Pure: nothing here reads files or talks to a cluster, except ``loadCode(flow:)``, which
/// reads the steps' Python files from the flow's base directory.
public enum KubeRender {
    /// Fixed paths inside pods and on nodes.
    public enum Paths {
        /// Where the code ConfigMap is mounted in step pods.
        public static let codeMount = "/trellis"
        /// The steps' files (the flow's base directory) inside the mount.
        public static let codeDirectory = "/trellis/code"
        /// The Trellis step bootstrap's directory (on `PYTHONPATH`).
        public static let libDirectory = "/trellis/lib"
        /// Where a Fluid Dataset is mounted, as in the tutorial; Fluid's fuse pod links the
        /// worker's socket into it.
        public static let datasetMountPath = "/var/run"
        /// The socket a step sees through a Fluid Dataset mount.
        public static let datasetSocket = "/var/run/vineyard-worker.sock"
        /// Where the Trellis DaemonSet's socket directory is mounted (daemon and steps alike).
        public static let daemonSocketDirectory = "/var/run/trellis"
        /// The daemon's socket in that directory.
        public static let daemonSocket = "/var/run/trellis/vineyard-worker.sock"
        /// The node directory holding a DaemonSet's socket (`DirectoryOrCreate`), like Fluid's
        /// `/runtime-mnt/vineyard/<ns>/<name>`.
        public static func hostSocketDirectory(namespace: String, runtime: String) -> String {
            "/runtime-mnt/trellis/\(namespace)/\(runtime)"
        }
    }

    /// RPC port of the Trellis DaemonSet (host network).
    public static let rpcPort = 9600
    /// etcd client port.
    public static let etcdClientPort = 2379
    /// ConfigMap key of the step bootstrap.
    public static let bootstrapKey = "trellis-bootstrap.py"
    /// Largest ConfigMap the API server stores (its data).
    public static let maxConfigMapBytes = 1_048_576

    // MARK: - Names

    /// Name of the Dataset and VineyardRuntime (equal, as Fluid binds them by name), and of
    /// the Trellis DaemonSet's runtime directory: the flow's name as a DNS label of ≤ 40.
    public static func runtimeName(flow: FlowSpec) -> String {
        KubeNames.dnsLabel(flow.name, maxLength: KubeNames.maxRuntime)
    }

    /// Name of the flow's code ConfigMap.
    public static func codeConfigMapName(flow: FlowSpec) -> String {
        KubeNames.dnsLabel(runtimeName(flow: flow) + "-code")
    }

    /// Name of a step's DataProcess: `<run>-<step>`, ≤ 43 characters.
    public static func dataProcessName(runID: String, step: String) -> String {
        KubeNames.dnsLabel("\(runID)-\(step)", maxLength: KubeNames.maxDataProcess)
    }

    /// Name of a step's Job: `<run>-<step>`, ≤ 63 characters.
    public static func jobName(runID: String, step: String) -> String {
        KubeNames.dnsLabel("\(runID)-\(step)")
    }

    /// The default run id of a target (see ``KubeRenderOptions/runID``).
    public static func defaultRunID(flow: FlowSpec, target: KubeTarget) -> String {
        switch target {
        case .fluid: return KubeNames.dnsLabel(flow.name, maxLength: KubeNames.maxRuntime)
        case .argo: return "{{workflow.name}}"
        }
    }

    /// Splits `repo[:tag]` (a registry port is not a tag) into Fluid's `image` and `imageTag`;
    /// no tag gives `latest` (Fluid always joins the two with `:`).
    public static func splitImage(_ ref: String) -> (image: String, tag: String) {
        let slash = ref.lastIndex(of: "/")
        if let colon = ref.lastIndex(of: ":"), slash.map({ colon > $0 }) ?? true {
            return (String(ref[..<colon]), String(ref[ref.index(after: colon)...]))
        }
        return (ref, "latest")
    }

    /// A byte count as a Kubernetes quantity: the largest binary unit dividing it exactly
    /// (`2Gi`, `1536Mi`), else plain bytes. Trellis reads sizes with binary suffixes only
    /// (`2G` = 2 GiB), Kubernetes reads `2G` as 10⁹, so sizes are always re-spelt.
    public static func quantity(bytes: Int) -> String {
        for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] where bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return String(bytes)
    }

    /// Memory a Trellis worker container needs: the arena plus 500 MiB, as Fluid gives vineyardd.
    public static func workerMemory(sizeBytes: Int) -> String {
        quantity(bytes: sizeBytes + 500 << 20)
    }

    // MARK: - Labels

    /// Labels of every object of a flow (and, with `step`, of a step's objects and pods).
    /// A run id that is not a literal (Argo's `{{workflow.name}}`) is left out.
    public static func labels(flow: FlowSpec, runID: String? = nil, step: String? = nil) -> KubeValue {
        var l: KubeValue = [
            "app.kubernetes.io/managed-by": "trellis",
            "trellis.io/flow": .string(KubeNames.labelValue(flow.name)),
        ]
        if let runID, !runID.contains("{{") { l.set("trellis.io/run", .string(KubeNames.labelValue(runID))) }
        if let step { l.set("trellis.io/step", .string(KubeNames.labelValue(step))) }
        return l
    }

    // MARK: - Code

    /// A relative path with `.` and `..` resolved; `nil` when it climbs out of its root.
    static func normalize(_ path: String) -> String? {
        var parts: [Substring] = []
        for p in path.split(separator: "/", omittingEmptySubsequences: true) {
            if p == "." { continue }
            if p == ".." {
                guard !parts.isEmpty else { return nil }
                parts.removeLast()
            } else {
                parts.append(p)
            }
        }
        return parts.joined(separator: "/")
    }

    /// A step's working directory relative to the flow's base directory (`""` for the base
    /// itself), or its absolute path (taken as a path inside the step image).
    static func relativeWorkdir(_ step: StepSpec) throws(KubeRenderError) -> String {
        guard let w = step.workdir, !w.isEmpty else { return "" }
        if w.hasPrefix("/") { return w }
        guard let n = normalize(w) else {
            throw KubeRenderError("step '\(step.name)': workdir '\(w)' is outside the flow's directory")
        }
        return n
    }

    /// The file a Python step runs, relative to the flow's base directory, or `nil` when its
    /// path is absolute (then it must exist in the step image).
    static func pythonFile(_ step: StepSpec, _ p: PythonTarget) throws(KubeRenderError) -> String? {
        if p.file.hasPrefix("/") { return nil }
        let w = try relativeWorkdir(step)
        if w.hasPrefix("/") { return nil }
        guard let n = normalize(w.isEmpty ? p.file : w + "/" + p.file), !n.isEmpty else {
            throw KubeRenderError(
                "step '\(step.name)': python file '\(p.file)' is outside the flow's directory, so it cannot be shipped in the ConfigMap")
        }
        return n
    }

    /// The ConfigMap entries of a flow (without contents): the bootstrap, then each Python
    /// file the steps name (relative ones, each once, sorted by path).
    public static func codeEntries(flow: FlowSpec) throws(KubeRenderError) -> [(key: String, path: String)] {
        var files = Set<String>()
        for s in flow.steps {
            if case .python(let p)? = s.action, let f = try pythonFile(s, p) { files.insert(f) }
        }
        var out: [(key: String, path: String)] = [(bootstrapKey, "lib/" + PythonBootstrap.fileName)]
        for f in files.sorted() {
            let key = KubeNames.configMapKey(f)
            if key == bootstrapKey {
                throw KubeRenderError("python file '\(f)' has the name of Trellis's bootstrap; rename it")
            }
            out.append((key, "code/" + f))
        }
        return out
    }

    /// Reads the steps' Python files from the flow's base directory (`.` when unset) and
    /// returns every ConfigMap entry with its text. Errors name the missing or unreadable file
    /// and a total over the API server's 1 MiB ConfigMap limit.
    public static func loadCode(flow: FlowSpec) throws -> [StepCodeFile] {
        let base = flow.baseDirectory ?? FileManager.default.currentDirectoryPath
        var out: [StepCodeFile] = []
        var total = 0
        for (key, path) in try codeEntries(flow: flow) {
            let content: String
            if key == bootstrapKey {
                content = PythonBootstrap.source
            } else {
                let rel = String(path.dropFirst("code/".count))
                let full = (base as NSString).appendingPathComponent(rel)
                guard let data = FileManager.default.contents(atPath: full) else {
                    throw KubeRenderError("cannot read step code '\(rel)' (looked in \(base))")
                }
                guard let text = String(data: data, encoding: .utf8) else {
                    throw KubeRenderError("step code '\(rel)' is not UTF-8 text")
                }
                content = text
            }
            total += content.utf8.count + key.utf8.count
            out.append(StepCodeFile(key: key, path: path, content: content))
        }
        if total > maxConfigMapBytes {
            throw KubeRenderError(
                "the steps' code is \(total) bytes; a ConfigMap holds at most \(maxConfigMapBytes) (ship large code in the step image)")
        }
        return out
    }

    /// The flow's code ConfigMap.
    public static func codeConfigMap(flow: FlowSpec, namespace: String, files: [StepCodeFile]) -> KubeValue {
        [
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": [
                "name": .string(codeConfigMapName(flow: flow)), "namespace": .string(namespace),
                "labels": labels(flow: flow),
            ],
            "data": .object(files.map { ($0.key, .string($0.content)) }),
        ]
    }

    /// The pod volume carrying the code ConfigMap, each entry at its path.
    public static func codeVolume(flow: FlowSpec) throws(KubeRenderError) -> KubeValue {
        [
            "name": "trellis-code",
            "configMap": [
                "name": .string(codeConfigMapName(flow: flow)),
                "items": .array(try codeEntries(flow: flow).map { ["key": .string($0.key), "path": .string($0.path)] }),
            ],
        ]
    }

    // MARK: - Step container

    /// Variables the runner sets itself; a step's own `env` cannot override them.
    static let reservedEnv: Set<String> = [
        "VINEYARD_IPC_SOCKET", "TRELLIS_RUN_ID", "TRELLIS_STEP", "TRELLIS_NAME_PREFIX", "TRELLIS_INPUTS",
        "TRELLIS_OUTPUTS", "TRELLIS_NODE", "TRELLIS_LOCAL_COPIES",
    ]

    /// A step's environment, in order: its own `env` (sorted by name, minus the runner's
    /// names), then `VINEYARD_IPC_SOCKET`, `TRELLIS_RUN_ID`, `TRELLIS_STEP`,
    /// `TRELLIS_NAME_PREFIX` (`<run>/`, which the bootstrap applies to vineyard names, as in
    /// local runs), `TRELLIS_INPUTS`, `TRELLIS_OUTPUTS`, `TRELLIS_LOCAL_COPIES` (`[]`: nothing
    /// renders a move, so the bootstrap looks up no replica-local copies), `PYTHONPATH` (the
    /// bootstrap's directory first) and `PYTHONUNBUFFERED`.
    public static func stepEnv(step: StepSpec, runID: String, socket: String) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        for k in step.env.keys.sorted() where !reservedEnv.contains(k) && k != "PYTHONPATH" && k != "PYTHONUNBUFFERED" {
            out.append((k, step.env[k]!))
        }
        out.append(("VINEYARD_IPC_SOCKET", socket))
        out.append(("TRELLIS_RUN_ID", runID))
        out.append(("TRELLIS_STEP", step.name))
        out.append(("TRELLIS_NAME_PREFIX", ObjectNaming.prefix(runID: runID)))
        out.append(("TRELLIS_INPUTS", step.inputs.joined(separator: ",")))
        out.append(("TRELLIS_OUTPUTS", step.outputs.joined(separator: ",")))
        out.append(("TRELLIS_LOCAL_COPIES", "[]"))
        let userPath = step.env["PYTHONPATH"].flatMap { $0.isEmpty ? nil : $0 }
        out.append(("PYTHONPATH", Paths.libDirectory + (userPath.map { ":" + $0 } ?? "")))
        out.append(("PYTHONUNBUFFERED", step.env["PYTHONUNBUFFERED"] ?? "1"))
        return out
    }

    /// The argv a step's container runs. Python steps: the interpreter (`python3` unless the
    /// step names a bare interpreter or an absolute path; a relative path such as `.venv/bin/python`
    /// names a file of this machine) running the bootstrap with the file from the ConfigMap —
    /// never a shell. Command and Swift steps: their argv, which must exist in the step image.
    public static func stepCommand(step: StepSpec) throws(KubeRenderError) -> [String] {
        switch step.action {
        case .python(let p)?:
            var interpreter = "python3"
            if let i = p.interpreter, !i.isEmpty, i.hasPrefix("/") || !i.contains("/") { interpreter = i }
            let file = try pythonFile(step, p).map { Paths.codeDirectory + "/" + $0 } ?? p.file
            var argv = [interpreter, Paths.libDirectory + "/" + PythonBootstrap.fileName, "--file", file]
            if let f = p.function { argv += ["--function", f] }
            return argv
        case .command(let argv)?:
            guard !argv.isEmpty else { throw KubeRenderError("step '\(step.name)': empty command") }
            return argv
        case .swift(let s)?:
            return [s.executable] + s.arguments
        case nil:
            throw KubeRenderError("step '\(step.name)': nothing to run")
        }
    }

    /// A step's working directory in its pod: the base directory's copy in the ConfigMap
    /// mount, or an absolute `workdir` as written.
    public static func stepWorkingDirectory(step: StepSpec) throws(KubeRenderError) -> String {
        let w = try relativeWorkdir(step)
        if w.hasPrefix("/") { return w }
        return w.isEmpty ? Paths.codeDirectory : Paths.codeDirectory + "/" + w
    }

    /// The step's container (`name: step`).
    public static func stepContainer(step: StepSpec, runID: String, image: String, socket: String, socketMount: KubeValue?)
        throws(KubeRenderError) -> KubeValue
    {
        var mounts: [KubeValue] = [["name": "trellis-code", "mountPath": .string(Paths.codeMount), "readOnly": true]]
        if let socketMount { mounts.append(socketMount) }
        return [
            "name": "step",
            "image": .string(image),
            "command": .array(try stepCommand(step: step).map { .string($0) }),
            "workingDir": .string(try stepWorkingDirectory(step: step)),
            "env": .array(stepEnv(step: step, runID: runID, socket: socket).map {
                ["name": .string($0.name), "value": .string($0.value)]
            }),
            "volumeMounts": .array(mounts),
        ]
    }

    /// The label Fluid puts on nodes running a dataset's workers (`fluid.io/s-<ns>-<dataset>`),
    /// or `nil` when that name would be too long (Fluid then switches to the dataset's UID,
    /// which a render cannot know).
    public static func fluidWorkerNodeLabel(namespace: String, dataset: String) -> String? {
        let key = "fluid.io/s-\(namespace)-\(dataset)"
        return key.count < 63 ? key : nil
    }

    /// The pod spec of a step: `restartPolicy: Never`, the affinity, the step container, the
    /// code volume and the data mount.
    public static func stepPodSpec(
        flow: FlowSpec, step: StepSpec, runID: String, namespace: String, image: String, affinity: StepAffinity,
        data: KubeDataMount
    ) throws(KubeRenderError) -> KubeValue {
        var volumes: [KubeValue] = [try codeVolume(flow: flow)]
        let container: KubeValue
        var requiredLabel: (key: String, value: String)?
        switch data {
        case .trellisDaemonSet:
            volumes.append(daemonSocketVolume(flow: flow, namespace: namespace))
            container = try stepContainer(
                step: step, runID: runID, image: image, socket: Paths.daemonSocket,
                socketMount: ["name": "trellis-socket", "mountPath": .string(Paths.daemonSocketDirectory)])
        case .fluidDataset(let dataset):
            // A DataProcess gets the dataset volume from Fluid; a Job mounts the PVC itself.
            container = try stepContainer(step: step, runID: runID, image: image, socket: Paths.datasetSocket, socketMount: nil)
            if let key = fluidWorkerNodeLabel(namespace: namespace, dataset: dataset) { requiredLabel = (key, "true") }
        }
        var pod: KubeValue = ["restartPolicy": "Never"]
        if let a = KubeAffinity.podAffinity(affinity, requiredLabel: requiredLabel) { pod.set("affinity", a) }
        if let t = step.timeout { pod.set("activeDeadlineSeconds", .int(max(1, Int(t.rounded(.up))))) }
        pod.set("containers", [container])
        pod.set("volumes", .array(volumes))
        step.kubernetes?.apply(to: &pod)
        return pod
    }

    /// The hostPath volume of the Trellis DaemonSet's socket directory on the pod's node.
    public static func daemonSocketVolume(flow: FlowSpec, namespace: String) -> KubeValue {
        [
            "name": "trellis-socket",
            "hostPath": [
                "path": .string(Paths.hostSocketDirectory(namespace: namespace, runtime: runtimeName(flow: flow))),
                "type": "DirectoryOrCreate",
            ],
        ]
    }

    // MARK: - Per-step objects (the launcher's builders)

    /// A `batch/v1` Job running one step (`backoffLimit` = the step's retries, pod deadline =
    /// its timeout). `data` says where the pod finds its Trellis daemon: the DaemonSet's
    /// socket (default) or a Fluid Dataset's PVC at `/var/run`.
    public static func stepJob(
        flow: FlowSpec, step: StepSpec, runID: String, namespace: String, image: String,
        affinity: StepAffinity = .none, data: KubeDataMount = .trellisDaemonSet
    ) throws(KubeRenderError) -> KubeValue {
        var pod = try stepPodSpec(
            flow: flow, step: step, runID: runID, namespace: namespace, image: image, affinity: affinity, data: data)
        if case .fluidDataset(let dataset) = data {
            // Mount the Dataset's PVC (named after the Dataset) as Fluid would for a DataProcess.
            var containers = pod["containers"]?.array ?? []
            if var c = containers.first {
                var mounts = c["volumeMounts"]?.array ?? []
                mounts.append(["name": "fluid-dataset-vol", "mountPath": .string(Paths.datasetMountPath)])
                c.set("volumeMounts", .array(mounts))
                containers[0] = c
            }
            pod.set("containers", .array(containers))
            var volumes = pod["volumes"]?.array ?? []
            volumes.append(["name": "fluid-dataset-vol", "persistentVolumeClaim": ["claimName": .string(dataset)]])
            pod.set("volumes", .array(volumes))
        }
        let podLabels = labels(flow: flow, runID: runID, step: step.name)
        return [
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": [
                "name": .string(jobName(runID: runID, step: step.name)), "namespace": .string(namespace),
                "labels": podLabels,
            ],
            "spec": [
                "backoffLimit": .int(max(0, step.retries)),
                "template": ["metadata": ["labels": podLabels], "spec": pod],
            ],
        ]
    }

    /// A Fluid DataProcess running one step through `processor.job.podSpec` (the `script`
    /// processor has no affinity field), with the dataset at `/var/run` (Fluid adds the volume),
    /// `runAfter` the given DataProcess when there is one, and the pod held to nodes that carry
    /// the dataset's worker label. `annotations` are added to the object's metadata.
    public static func stepDataProcess(
        flow: FlowSpec, step: StepSpec, runID: String, namespace: String, image: String,
        affinity: StepAffinity = .none, dataset: String? = nil, runAfter: String? = nil,
        annotations: [(String, String)] = []
    ) throws(KubeRenderError) -> KubeValue {
        let dataset = dataset ?? runtimeName(flow: flow)
        let pod = try stepPodSpec(
            flow: flow, step: step, runID: runID, namespace: namespace, image: image, affinity: affinity,
            data: .fluidDataset(dataset))
        var meta: KubeValue = [
            "name": .string(dataProcessName(runID: runID, step: step.name)), "namespace": .string(namespace),
        ]
        var l = labels(flow: flow, runID: runID, step: step.name)
        l.set("fluid.io/dataflow", .string(KubeNames.labelValue(runID)))
        meta.set("labels", l)
        if !annotations.isEmpty { meta.set("annotations", .object(annotations.map { ($0.0, .string($0.1)) })) }
        var spec: KubeValue = [
            "dataset": ["name": .string(dataset), "namespace": .string(namespace), "mountPath": .string(Paths.datasetMountPath)]
        ]
        if let runAfter {
            spec.set("runAfter", ["kind": "DataProcess", "name": .string(runAfter), "namespace": .string(namespace)])
        }
        spec.set(
            "processor",
            [
                "podMetadata": ["labels": labels(flow: flow, runID: runID, step: step.name)],
                "job": ["podSpec": pod],
            ])
        return ["apiVersion": "data.fluid.io/v1alpha1", "kind": "DataProcess", "metadata": meta, "spec": spec]
    }

    // MARK: - Whole renders

    /// Every document of a render of `flow` for `target`, in apply order. Validates the flow
    /// first and reads the steps' code (``loadCode(flow:)``).
    public static func render(flow: FlowSpec, target: KubeTarget, options: KubeRenderOptions = KubeRenderOptions())
        throws -> [KubeValue]
    {
        let graph = try FlowGraph(flow)
        guard KubeNames.isDNSLabel(options.namespace) else {
            throw KubeRenderError("namespace '\(options.namespace)' is not a DNS-1123 label")
        }
        let files = try loadCode(flow: flow)
        switch target {
        case .fluid: return try renderFluid(flow: flow, graph: graph, files: files, options: options)
        case .argo: return try renderArgo(flow: flow, graph: graph, files: files, options: options)
        }
    }

    /// A file name for each document (`NN-kind-name.yaml`), in order, for `--out DIR`.
    public static func fileNames(_ docs: [KubeValue]) -> [String] {
        docs.enumerated().map { i, d in
            let kind = (d["kind"]?.string ?? "object").lowercased()
            var name = d[path: "metadata", "name"]?.string ?? d[path: "metadata", "generateName"]?.string ?? "unnamed"
            while name.hasSuffix("-") { name.removeLast() }
            let n = i < 10 ? "0\(i)" : "\(i)"
            return "\(n)-\(kind)-\(name).yaml"
        }
    }
}
