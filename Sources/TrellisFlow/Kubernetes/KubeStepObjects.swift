import Foundation

/// The cluster-side settings of a Kubernetes run: the image steps run in, the Fluid Dataset
/// whose volume carries the worker's socket, and where that socket appears in a step pod.
public struct KubeRunSettings: Sendable, Equatable {
    /// Image of the step containers (needs `python3` with the vineyard client for Python steps).
    public var image: String
    /// The Fluid Dataset (= VineyardRuntime) name; its PVC has this name.
    public var dataset: String
    /// Where the Dataset volume is mounted in step pods.
    public var mountPath: String
    /// The worker's IPC socket as a step pod sees it (Fluid's fuse hard-links it into the volume).
    public var podSocket: String
    /// Python interpreter inside the image.
    public var python: String

    public init(
        image: String = "python:3.10", dataset: String, mountPath: String = "/var/run",
        podSocket: String = "/var/run/vineyard-worker.sock", python: String = "python3"
    ) {
        self.image = image
        self.dataset = dataset
        self.mountPath = mountPath
        self.podSocket = podSocket
        self.python = python
    }
}

/// The objects the launcher creates when no renderer builder is plugged in: the step Job, the
/// run's code ConfigMap, the static Dataset/VineyardRuntime, and the per-node cleanup Job.
/// Swap ``job(for:affinity:settings:)`` for the renderer's builder through
/// ``KubernetesExecutor/jobFactory``; everything else in the launcher stays the same.
public enum KubeStepObjects {
    /// Container name of step pods (the log is read from it).
    public static let container = "step"
    /// Where the code ConfigMap is mounted.
    public static let codeRoot = "/trellis"

    /// The runner's variables a step pod gets (the rest of the launcher machine's environment
    /// stays there).
    public static let shippedVariables = [
        "TRELLIS_RUN_ID", "TRELLIS_STEP", "TRELLIS_REPLICA", "TRELLIS_ATTEMPT", "TRELLIS_NAME_PREFIX", "TRELLIS_INPUTS",
        "TRELLIS_OUTPUTS", "TRELLIS_LOCAL_COPIES", "PYTHONUNBUFFERED",
    ]

    /// Variables of the runner's environment a pod gets (the rest of the launcher's machine
    /// environment stays there).
    public static func podEnvironment(_ launch: StepLaunch, settings: KubeRunSettings) -> [(String, String)] {
        var env: [String: String] = [:]
        for k in shippedVariables { env[k] = launch.environment[k] }
        for (k, v) in launch.step.env { env[k] = v }
        env["VINEYARD_IPC_SOCKET"] = settings.podSocket
        env["PYTHONPATH"] = codeRoot + (launch.step.env["PYTHONPATH"].map { ":" + $0 } ?? "")
        // The runner does not copy inputs between nodes from outside the cluster: the step's
        // own get migrates a remote object into its node's daemon (vineyard's fetch=True).
        env["TRELLIS_FETCH"] = "1"
        env["TRELLIS_NODE_HINT"] = launch.replica.node ?? ""
        return env.sorted { $0.key < $1.key }
    }

    /// The ConfigMap key of a shipped file (keys allow `[-._a-zA-Z0-9]`).
    public static func codeKey(_ path: String) -> String {
        "f-" + KubeNaming.hash(path) + "-"
            + String(path.unicodeScalars.map { c -> Character in
                (("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) || c == "." || c == "-")
                    ? Character(c) : "_"
            }.suffix(200))
    }

    /// Where a step's Python file lands in the pod (relative to the code root).
    public static func codePath(_ file: String) -> String {
        "code/" + (file.hasPrefix("/") ? String(file.drop { $0 == "/" }) : file)
    }

    /// The container command of a step.
    public static func command(_ step: StepSpec, settings: KubeRunSettings) -> [String] {
        switch step.action {
        case .python(let p)?:
            var argv = [
                p.interpreter.map { ($0 as NSString).lastPathComponent } ?? settings.python,
                codeRoot + "/" + PythonBootstrap.fileName, "--file", codeRoot + "/" + codePath(p.file),
            ]
            if let f = p.function { argv += ["--function", f] }
            return argv
        case .command(let argv)?: return argv
        case .swift(let s)?: return [s.executable] + s.arguments
        case nil: return ["false"]
        }
    }

    /// The Python files the steps name (relative to the flow's base directory, or absolute).
    public static func codeFiles(_ spec: FlowSpec) -> [String] {
        var files: [String] = []
        for s in spec.steps {
            if case .python(let p)? = s.action, !files.contains(p.file) { files.append(p.file) }
        }
        return files
    }

    /// The run's code ConfigMap: the step bootstrap and each step's Python file.
    public static func codeConfigMap(
        runID: String, spec: FlowSpec, readFile: (String) throws -> String
    ) throws -> KubeValue {
        var data: [(String, KubeValue)] = [(PythonBootstrap.fileName, .string(PythonBootstrap.source))]
        let base = spec.baseDirectory ?? FileManager.default.currentDirectoryPath
        for file in codeFiles(spec) {
            let full = file.hasPrefix("/") ? file : (base as NSString).appendingPathComponent(file)
            data.append((codeKey(file), .string(try readFile(full))))
        }
        return [
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": [
                "name": .string(KubeNaming.runObjectName(runID: runID, suffix: "code")),
                "labels": labels(runID: runID, step: nil),
            ],
            "data": .object(data),
        ]
    }

    /// The static parts of the default rendering: the Dataset and the VineyardRuntime bound to it
    /// (same name, as Fluid requires).
    public static func staticObjects(spec: FlowSpec, settings: KubeRunSettings) -> [KubeValue] {
        let labels: KubeValue = [KubeNaming.managedByLabel: "trellis"]
        return [
            [
                "apiVersion": "data.fluid.io/v1alpha1", "kind": "Dataset",
                "metadata": ["name": .string(settings.dataset), "labels": labels],
                "spec": ["accessModes": ["ReadOnlyMany"]],
            ],
            [
                "apiVersion": "data.fluid.io/v1alpha1", "kind": "VineyardRuntime",
                "metadata": ["name": .string(settings.dataset), "labels": labels],
                "spec": [
                    "replicas": .int(spec.runtime.replicas),
                    "tieredstore": ["levels": [["mediumtype": "MEM", "quota": .string(spec.runtime.size)]]],
                ],
            ],
        ]
    }

    static func labels(runID: String, step: String?) -> KubeValue {
        var l: KubeValue = [KubeNaming.managedByLabel: "trellis", KubeNaming.runLabel: .string(KubeNaming.labelValue(runID))]
        if let step { l.set(KubeNaming.stepLabel, .string(KubeNaming.labelValue(step))) }
        return l
    }

    /// The default step Job (`metadata.name` is set by the executor): one pod, no Job-level
    /// retries (the runner retries), the Dataset volume at `mountPath`, the code ConfigMap at
    /// ``codeRoot``, and the node affinity given.
    public static func job(for launch: StepLaunch, affinity: NodeAffinity, settings: KubeRunSettings) -> KubeValue {
        let labels = labels(runID: launch.runID, step: launch.step.name)
        var items: [KubeValue] = [["key": .string(PythonBootstrap.fileName), "path": .string(PythonBootstrap.fileName)]]
        if case .python(let p)? = launch.step.action {
            items.append(["key": .string(codeKey(p.file)), "path": .string(codePath(p.file))])
        }
        var env: [KubeValue] = podEnvironment(launch, settings: settings).map { ["name": .string($0.0), "value": .string($0.1)] }
        env.append(["name": "MY_NODE_NAME", "valueFrom": ["fieldRef": ["fieldPath": "spec.nodeName"]]])
        var workdir = codeRoot + "/code"
        if let w = launch.step.workdir, !w.isEmpty { workdir = w.hasPrefix("/") ? w : workdir + "/" + w }
        var podSpec: KubeValue = [
            "restartPolicy": "Never",
            "containers": [
                [
                    "name": .string(container), "image": .string(settings.image),
                    "command": .array(command(launch.step, settings: settings).map { .string($0) }),
                    "workingDir": .string(workdir),
                    "env": .array(env),
                    "volumeMounts": [
                        ["name": "vineyard", "mountPath": .string(settings.mountPath)],
                        ["name": "trellis-code", "mountPath": .string(codeRoot), "readOnly": true],
                    ],
                ]
            ],
            "volumes": [
                ["name": "vineyard", "persistentVolumeClaim": ["claimName": .string(settings.dataset)]],
                [
                    "name": "trellis-code",
                    "configMap": [
                        "name": .string(KubeNaming.runObjectName(runID: launch.runID, suffix: "code")), "items": .array(items),
                    ],
                ],
            ],
        ]
        if let a = affinity.podAffinity { podSpec.set("affinity", a) }
        launch.step.kubernetes?.apply(to: &podSpec)
        return [
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": [
                "name": .string(KubeNaming.jobName(runID: launch.runID, step: launch.step.name, attempt: launch.attempt)),
                "labels": labels,
                "annotations": ["trellis.io/run-id": .string(launch.runID), "trellis.io/step": .string(launch.step.name)],
            ],
            "spec": [
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": 86400,
                "template": ["metadata": ["labels": labels], "spec": podSpec],
            ],
        ]
    }

    /// The Python run by a cleanup Job: deletes the objects named in `TRELLIS_DELETE` (one per
    /// line) through the node's socket, and their names.
    public static let cleanupScript = """
        import os, sys, vineyard
        c = vineyard.connect(os.environ["VINEYARD_IPC_SOCKET"])
        bad = 0
        for n in os.environ.get("TRELLIS_DELETE", "").splitlines():
            if not n:
                continue
            try:
                o = c.get_name(n)
            except Exception:
                continue
            try:
                c.drop_name(n)
            except Exception:
                pass
            try:
                c.delete(o, force=True, deep=True)
                print("deleted", n)
            except Exception as e:
                bad += 1
                print("cannot delete", n, e, file=sys.stderr)
        sys.exit(1 if bad else 0)
        """

    /// A Job that deletes `names` on `node` through that node's daemon (required affinity:
    /// objects are deleted by the daemon that holds them).
    public static func cleanupJob(runID: String, node: String, names: [String], settings: KubeRunSettings) -> KubeValue {
        let suffix = "rm-" + KubeNaming.hash(node, names.joined(separator: "\n"))
        let labels = labels(runID: runID, step: nil)
        var podSpec: KubeValue = [
            "restartPolicy": "Never",
            "containers": [
                [
                    "name": .string(container), "image": .string(settings.image),
                    "command": [.string(settings.python), "-c", .string(cleanupScript)],
                    "env": [
                        ["name": "VINEYARD_IPC_SOCKET", "value": .string(settings.podSocket)],
                        ["name": "TRELLIS_DELETE", "value": .string(names.joined(separator: "\n"))],
                    ],
                    "volumeMounts": [["name": "vineyard", "mountPath": .string(settings.mountPath)]],
                ]
            ],
            "volumes": [["name": "vineyard", "persistentVolumeClaim": ["claimName": .string(settings.dataset)]]],
        ]
        podSpec.set("affinity", NodeAffinity.required(node: node).podAffinity!)
        return [
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": ["name": .string(KubeNaming.runObjectName(runID: runID, suffix: suffix)), "labels": labels],
            "spec": ["backoffLimit": 0, "ttlSecondsAfterFinished": 600, "template": ["metadata": ["labels": labels], "spec": podSpec]],
        ]
    }
}
