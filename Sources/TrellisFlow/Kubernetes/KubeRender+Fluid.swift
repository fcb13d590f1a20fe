/// The Fluid target: Dataset + VineyardRuntime (Trellis as the worker), the code ConfigMap,
/// and one DataProcess per step.
extension KubeRender {
    /// How the DataProcesses of a flow are ordered, given that Fluid's `runAfter` names one
    /// predecessor only.
    public struct FluidOrder: Sendable, Equatable {
        /// The DataProcess step each step runs after (absent: starts at once).
        public var runAfter: [String: String]
        /// True when the whole flow is chained in topological order (see ``fluidOrder(graph:)``).
        public var chained: Bool
        /// The step that forced the chain, when ``chained``.
        public var chainedBecauseOf: String?
    }

    /// Orders the steps for `runAfter`:
    ///
    /// - A step whose dependencies are all implied by one of them — a dependency `P` such that
    ///   every other dependency is upstream of `P` — runs after `P`. Linear chains, fan-out and
    ///   fan-in of steps already ordered among themselves keep their parallelism.
    /// - If some step waits for two steps that may run in parallel (a true fan-in), no single
    ///   `runAfter` can express that, so the whole flow is chained in topological order (each step
    ///   after the one before it). That is always correct, at the price of running steps one at
    ///   a time; the launcher (`flow run --on kubernetes`) keeps the parallelism instead.
    public static func fluidOrder(graph: FlowGraph) -> FluidOrder {
        let order = graph.topologicalOrder
        var runAfter: [String: String] = [:]
        for s in order {
            let deps = graph.dependencies[s, default: []]
            if deps.isEmpty { continue }
            let covering = deps.first { p in deps.subtracting([p]).isSubset(of: graph.upstream(of: p)) }
            guard let p = covering else {
                var chain: [String: String] = [:]
                for (i, name) in order.enumerated() where i > 0 { chain[name] = order[i - 1] }
                return FluidOrder(runAfter: chain, chained: true, chainedBecauseOf: s)
            }
            runAfter[s] = p
        }
        return FluidOrder(runAfter: runAfter, chained: false, chainedBecauseOf: nil)
    }

    /// The Dataset of a flow (`accessModes: [ReadOnlyMany]`, as the Fluid SDK sends: data goes
    /// through the socket, not the volume).
    public static func fluidDataset(flow: FlowSpec, namespace: String) -> KubeValue {
        [
            "apiVersion": "data.fluid.io/v1alpha1", "kind": "Dataset",
            "metadata": [
                "name": .string(runtimeName(flow: flow)), "namespace": .string(namespace), "labels": labels(flow: flow),
            ],
            "spec": ["accessModes": ["ReadOnlyMany"]],
        ]
    }

    /// The VineyardRuntime of a flow, named like its Dataset: `replicas` workers of the Trellis
    /// `image`, each with one MEM tier of the flow's runtime size.
    public static func fluidRuntime(flow: FlowSpec, namespace: String, image: String) throws(KubeRenderError) -> KubeValue {
        guard let bytes = flow.runtime.sizeInBytes else {
            throw KubeRenderError("runtime.size '\(flow.runtime.size)' is not a size")
        }
        let (repo, tag) = splitImage(image)
        return [
            "apiVersion": "data.fluid.io/v1alpha1", "kind": "VineyardRuntime",
            "metadata": [
                "name": .string(runtimeName(flow: flow)), "namespace": .string(namespace), "labels": labels(flow: flow),
            ],
            "spec": [
                "replicas": .int(flow.runtime.replicas),
                "worker": ["image": .string(repo), "imageTag": .string(tag), "imagePullPolicy": "IfNotPresent"],
                "tieredstore": [
                    "levels": [["mediumtype": "MEM", "quota": .string(quantity(bytes: bytes)), "volumeType": "emptyDir"]]
                ],
            ],
        ]
    }

    static func renderFluid(flow: FlowSpec, graph: FlowGraph, files: [StepCodeFile], options: KubeRenderOptions) throws
        -> [KubeValue]
    {
        let ns = options.namespace
        let runID = options.runID ?? defaultRunID(flow: flow, target: .fluid)
        guard KubeNames.isDNSLabel(runID, maxLength: KubeNames.maxLabel) else {
            throw KubeRenderError("run id '\(runID)' is not a DNS-1123 label (it prefixes DataProcess names)")
        }
        var docs: [KubeValue] = [
            fluidDataset(flow: flow, namespace: ns),
            try fluidRuntime(flow: flow, namespace: ns, image: options.image),
            codeConfigMap(flow: flow, namespace: ns, files: files),
        ]
        let order = fluidOrder(graph: graph)
        func bySpec(_ names: Set<String>) -> [String] {
            names.sorted { graph.position[$0, default: 0] < graph.position[$1, default: 0] }
        }
        for name in graph.topologicalOrder {
            guard let step = flow.step(named: name) else { continue }
            var notes: [(String, String)] = []
            let deps = bySpec(graph.dependencies[name, default: []])
            if !deps.isEmpty { notes.append(("trellis.io/depends-on", deps.joined(separator: ","))) }
            if let prev = order.runAfter[name] {
                let why: String
                if order.chained {
                    why =
                        "\(prev): flow chained in topological order because step '\(order.chainedBecauseOf ?? "")' waits for steps that may run in parallel and runAfter names one predecessor"
                } else if deps.count > 1 {
                    why = "\(prev): every other dependency is upstream of it"
                } else {
                    why = prev
                }
                notes.append(("trellis.io/run-after", why))
            }
            docs.append(
                try stepDataProcess(
                    flow: flow, step: step, runID: runID, namespace: ns, image: options.stepImage,
                    runAfter: order.runAfter[name].map { dataProcessName(runID: runID, step: $0) }, annotations: notes))
        }
        return docs
    }
}
