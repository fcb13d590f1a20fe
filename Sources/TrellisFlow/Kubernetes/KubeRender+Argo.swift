/// The Argo target, for clusters without Fluid: etcd (Service + StatefulSet), Trellis as a
/// DaemonSet (one daemon per node, socket in a hostPath directory), the code ConfigMap and a
/// Workflow whose DAG follows the flow's dependencies and pins steps next to their inputs.
extension KubeRender {
    /// Where an Argo task is placed relative to its producers.
    public struct ArgoPlacement: Sendable, Equatable {
        /// The task whose node the step should run on.
        public var producer: String
        /// Required (all inputs come from `producer`) or preferred (inputs from several producers:
        /// the one producing most of them, ties to the later one in topological order).
        public var required: Bool
    }

    /// The placement of a step in the Argo DAG: required on its producer's node when all its
    /// inputs come from one step; preferred on the node of the step producing most of its
    /// inputs when they come from several (the step may then fetch the rest over RPC); none
    /// when it has no inputs (`after` only orders, it carries no data).
    public static func argoPlacement(step: StepSpec, graph: FlowGraph) -> ArgoPlacement? {
        var count: [String: Int] = [:]
        for i in step.inputs { if let p = graph.producer[i], p != step.name { count[p, default: 0] += 1 } }
        guard !count.isEmpty else { return nil }
        let topo = Dictionary(uniqueKeysWithValues: graph.topologicalOrder.enumerated().map { ($1, $0) })
        let best = count.max { a, b in
            a.value != b.value ? a.value < b.value : topo[a.key, default: 0] < topo[b.key, default: 0]
        }!.key
        return ArgoPlacement(producer: best, required: count.count == 1)
    }

    /// Argo task name of a step (a DNS label, so `{{tasks.<name>.…}}` parses).
    public static func argoTaskName(_ step: String) -> String { KubeNames.dnsLabel(step) }
    /// Argo template name of a step.
    public static func argoTemplateName(_ step: String) -> String { "step-" + KubeNames.dnsLabel(step, maxLength: 58) }

    /// Name of the flow's Trellis DaemonSet.
    public static func daemonSetName(flow: FlowSpec) -> String {
        KubeNames.dnsLabel(runtimeName(flow: flow) + "-trellis", maxLength: KubeNames.maxController)
    }

    /// Name of the flow's etcd StatefulSet and Service.
    public static func etcdName(flow: FlowSpec) -> String {
        KubeNames.dnsLabel(runtimeName(flow: flow) + "-etcd", maxLength: KubeNames.maxController)
    }

    /// The client URL of the flow's etcd Service.
    public static func etcdEndpoint(flow: FlowSpec, namespace: String) -> String {
        "http://\(etcdName(flow: flow)).\(namespace).svc:\(etcdClientPort)"
    }

    static func selector(_ app: String, _ instance: String) -> KubeValue {
        ["app.kubernetes.io/name": .string(app), "app.kubernetes.io/instance": .string(instance)]
    }

    static func merged(_ a: KubeValue, _ b: KubeValue) -> KubeValue {
        var out = a
        if case .object(let pairs) = b { for (k, v) in pairs { out.set(k, v) } }
        return out
    }

    /// The etcd Service (client port 2379) the Trellis daemons share metadata through.
    public static func etcdService(flow: FlowSpec, namespace: String) -> KubeValue {
        let name = etcdName(flow: flow)
        return [
            "apiVersion": "v1", "kind": "Service",
            "metadata": ["name": .string(name), "namespace": .string(namespace), "labels": labels(flow: flow)],
            "spec": [
                "selector": selector("etcd", name),
                "ports": [["name": "client", "port": .int(etcdClientPort), "targetPort": .int(etcdClientPort)]],
            ],
        ]
    }

    /// A one-member etcd as a StatefulSet (data in an emptyDir: the daemons republish their
    /// objects when etcd comes back empty).
    public static func etcdStatefulSet(flow: FlowSpec, namespace: String, image: String) -> KubeValue {
        let name = etcdName(flow: flow)
        let member = name + "-0"
        let peer = "http://127.0.0.1:2380"
        let podLabels = merged(selector("etcd", name), labels(flow: flow))
        let command: [String] = [
            "etcd", "--name", member, "--data-dir", "/var/lib/etcd",
            "--listen-client-urls", "http://0.0.0.0:\(etcdClientPort)",
            "--advertise-client-urls", etcdEndpoint(flow: flow, namespace: namespace),
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "\(member)=\(peer)", "--initial-cluster-state", "new",
        ]
        return [
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": ["name": .string(name), "namespace": .string(namespace), "labels": labels(flow: flow)],
            "spec": [
                "serviceName": .string(name),
                "replicas": 1,
                "selector": ["matchLabels": selector("etcd", name)],
                "template": [
                    "metadata": ["labels": podLabels],
                    "spec": [
                        "containers": [
                            [
                                "name": "etcd",
                                "image": .string(image),
                                "command": .array(command.map { .string($0) }),
                                "ports": [["name": "client", "containerPort": .int(etcdClientPort)]],
                                "readinessProbe": ["tcpSocket": ["port": .int(etcdClientPort)], "periodSeconds": 5],
                                "volumeMounts": [["name": "data", "mountPath": "/var/lib/etcd"]],
                            ]
                        ],
                        "volumes": [["name": "data", "emptyDir": [:]]],
                    ],
                ],
            ],
        ]
    }

    /// Trellis on every node as a DaemonSet, the way Fluid runs vineyardd workers: host
    /// network with RPC on 9600, the socket in the hostPath directory steps mount,
    /// `MY_NODE_NAME` (the node, recorded with each instance) and `MY_HOST_NAME` (the pod IP it
    /// advertises for RPC) from the downward API, etcd metadata, readiness = the socket exists,
    /// memory = arena + 500 MiB.
    public static func trellisDaemonSet(flow: FlowSpec, namespace: String, image: String) throws(KubeRenderError)
        -> KubeValue
    {
        guard let bytes = flow.runtime.sizeInBytes else {
            throw KubeRenderError("runtime.size '\(flow.runtime.size)' is not a size")
        }
        let name = daemonSetName(flow: flow)
        let socket = Paths.daemonSocket
        var command: [String] = [
            "/usr/local/bin/trellis", "serve", "--socket", socket, "--size", quantity(bytes: bytes),
            "--meta", "etcd", "--etcd_endpoint", etcdEndpoint(flow: flow, namespace: namespace),
            "--etcd_prefix", "/vineyard", "--meta_timeout", "120",
            "--rpc_socket_port", String(rpcPort), "--rpc_host", "0.0.0.0",
        ]
        var mounts: [KubeValue] = [["name": "trellis-socket", "mountPath": .string(Paths.daemonSocketDirectory)]]
        var volumes: [KubeValue] = [daemonSocketVolume(flow: flow, namespace: namespace)]
        if flow.runtime.medium == .spill {
            command += ["--spill_path", "/var/lib/trellis/spill"]
            mounts.append(["name": "spill", "mountPath": "/var/lib/trellis/spill"])
            volumes.append(["name": "spill", "emptyDir": [:]])
        }
        if flow.runtime.hugePages { command += ["--huge_pages", "--reserve_memory"] }
        func field(_ n: String, _ path: String) -> KubeValue {
            ["name": .string(n), "valueFrom": ["fieldRef": ["fieldPath": .string(path)]]]
        }
        let memory = workerMemory(sizeBytes: bytes)
        let podLabels = merged(selector("trellis", name), labels(flow: flow))
        let container: KubeValue = [
            "name": "trellis",
            "image": .string(image),
            "command": .array(command.map { .string($0) }),
            "env": [
                field("MY_NODE_NAME", "spec.nodeName"), field("MY_HOST_NAME", "status.podIP"),
                field("MY_POD_NAME", "metadata.name"), field("MY_POD_NAMESPACE", "metadata.namespace"),
            ],
            "ports": [["name": "rpc", "containerPort": .int(rpcPort)]],
            "readinessProbe": [
                "exec": ["command": ["ls", .string(socket)]], "initialDelaySeconds": 5, "periodSeconds": 10,
                "failureThreshold": 10,
            ],
            "livenessProbe": ["tcpSocket": ["port": .int(rpcPort)], "initialDelaySeconds": 30, "periodSeconds": 60],
            "lifecycle": ["preStop": ["exec": ["command": ["sh", "-c", .string("rm -f \(socket)")]]]],
            "resources": ["requests": ["memory": .string(memory)], "limits": ["memory": .string(memory)]],
            "volumeMounts": .array(mounts),
        ]
        return [
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": ["name": .string(name), "namespace": .string(namespace), "labels": labels(flow: flow)],
            "spec": [
                "selector": ["matchLabels": selector("trellis", name)],
                "template": [
                    "metadata": ["labels": podLabels],
                    "spec": [
                        "hostNetwork": true,
                        "dnsPolicy": "ClusterFirstWithHostNet",
                        "containers": [container],
                        "volumes": .array(volumes),
                    ],
                ],
            ],
        ]
    }

    /// The Argo template of one step: its container (named `main`, as Argo names it), the
    /// node affinity from ``argoPlacement(step:graph:)`` through an input parameter `node`
    /// (the DAG task passes `{{tasks.<producer>.hostNodeName}}`: `tasks.*` only resolves in the
    /// DAG, not inside a template), the step's timeout and retries.
    public static func argoStepTemplate(
        flow: FlowSpec, step: StepSpec, graph: FlowGraph, runID: String, image: String
    ) throws(KubeRenderError) -> KubeValue {
        var container = try stepContainer(
            step: step, runID: runID, image: image, socket: Paths.daemonSocket,
            socketMount: ["name": "trellis-socket", "mountPath": .string(Paths.daemonSocketDirectory)])
        container.set("name", "main")
        var t: KubeValue = ["name": .string(argoTemplateName(step.name))]
        if let placement = argoPlacement(step: step, graph: graph) {
            t.set("inputs", ["parameters": [["name": "node"]]])
            let node = "{{inputs.parameters.node}}"
            t.set("metadata", ["labels": labels(flow: flow, runID: runID, step: step.name)])
            t.set("affinity", KubeAffinity.podAffinity(placement.required ? .requiredNode(node) : .preferredNode(node))!)
        } else {
            t.set("metadata", ["labels": labels(flow: flow, runID: runID, step: step.name)])
        }
        // Both are IntOrString, which Argo's schema.json types as a string.
        if let timeout = step.timeout { t.set("activeDeadlineSeconds", .string(String(max(1, Int(timeout.rounded(.up)))))) }
        if step.retries > 0 { t.set("retryStrategy", ["limit": .string(String(step.retries))]) }
        if let additions = step.kubernetes {
            // An Argo template carries its container and its own volumes.
            var pod: KubeValue = ["containers": [container]]
            additions.apply(to: &pod)
            container = pod["containers"]?.array?.first ?? container
            if let volumes = pod["volumes"] { t.set("volumes", volumes) }
        }
        t.set("container", container)
        return t
    }

    /// The Workflow: `generateName: <flow>-` (each submission is a run, `{{workflow.name}}`),
    /// a DAG task per step with `dependencies` from the flow graph (fan-out and fan-in as
    /// the local runner infers them), one template per step, and the code and socket volumes.
    public static func argoWorkflow(flow: FlowSpec, graph: FlowGraph, namespace: String, stepImage: String, runID: String)
        throws(KubeRenderError) -> KubeValue
    {
        var tasks: [KubeValue] = []
        var templates: [KubeValue] = []
        for name in graph.topologicalOrder {
            guard let step = flow.step(named: name) else { continue }
            var task: KubeValue = ["name": .string(argoTaskName(name)), "template": .string(argoTemplateName(name))]
            let deps = graph.dependencies[name, default: []].sorted {
                graph.position[$0, default: 0] < graph.position[$1, default: 0]
            }
            if !deps.isEmpty { task.set("dependencies", .array(deps.map { .string(argoTaskName($0)) })) }
            if let p = argoPlacement(step: step, graph: graph) {
                task.set(
                    "arguments",
                    ["parameters": [["name": "node", "value": .string("{{tasks.\(argoTaskName(p.producer)).hostNodeName}}")]]])
            }
            tasks.append(task)
            templates.append(try argoStepTemplate(flow: flow, step: step, graph: graph, runID: runID, image: stepImage))
        }
        let stem = KubeNames.dnsLabel(flow.name, maxLength: KubeNames.maxController)
        return [
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": ["generateName": .string(stem + "-"), "namespace": .string(namespace), "labels": labels(flow: flow)],
            "spec": [
                "entrypoint": "flow",
                "volumes": [try codeVolume(flow: flow), daemonSocketVolume(flow: flow, namespace: namespace)],
                "templates": .array([["name": "flow", "dag": ["tasks": .array(tasks)]]] + templates),
            ],
        ]
    }

    static func renderArgo(flow: FlowSpec, graph: FlowGraph, files: [StepCodeFile], options: KubeRenderOptions) throws
        -> [KubeValue]
    {
        let ns = options.namespace
        let runID = options.runID ?? defaultRunID(flow: flow, target: .argo)
        return [
            etcdService(flow: flow, namespace: ns),
            etcdStatefulSet(flow: flow, namespace: ns, image: options.etcdImage),
            try trellisDaemonSet(flow: flow, namespace: ns, image: options.image),
            codeConfigMap(flow: flow, namespace: ns, files: files),
            try argoWorkflow(flow: flow, graph: graph, namespace: ns, stepImage: options.stepImage, runID: runID),
        ]
    }
}
