import Foundation

/// The launcher's objects built with the renderer's public builders (``KubeRender``), so that
/// `flow run --on kubernetes` and `flow render --target fluid` produce the same Dataset,
/// VineyardRuntime, code ConfigMap and step pods. What the launcher changes on a rendered step
/// Job: the node affinity placement chose (required, or preferred after Unschedulable),
/// `backoffLimit: 0` (the runner retries, with its own record), no `activeDeadlineSeconds` (the
/// executor enforces the timeout, so the record says "timed out"), a TTL, the run label, and
/// the attempt's variables (`TRELLIS_ATTEMPT`, `TRELLIS_REPLICA`, `TRELLIS_FETCH=1`,
/// `MY_NODE_NAME`).
public enum KubeLaunchObjects {
    /// The renderer's affinity for a placement.
    public static func stepAffinity(_ a: NodeAffinity) -> StepAffinity {
        switch a {
        case .required(let n): return .requiredNode(n)
        case .preferred(let n): return .preferredNode(n)
        case .none: return .none
        }
    }

    /// The step Job of one attempt (`metadata.name` is set by the executor).
    public static func job(
        flow: FlowSpec, launch: StepLaunch, affinity: NodeAffinity, namespace: String, settings: KubeRunSettings
    ) throws -> KubeValue {
        var job = try KubeRender.stepJob(
            flow: flow, step: launch.step, runID: launch.runID, namespace: namespace, image: settings.image,
            affinity: stepAffinity(affinity), data: .fluidDataset(settings.dataset))
        let runLabel = KubeValue.string(KubeNaming.labelValue(launch.runID))
        job.set(path: ["metadata", "labels", KubeNaming.runLabel], runLabel)
        job.set(path: ["spec", "template", "metadata", "labels", KubeNaming.runLabel], runLabel)
        job.set(path: ["spec", "backoffLimit"], 0)
        job.set(path: ["spec", "ttlSecondsAfterFinished"], 86400)
        var pod = job[path: "spec", "template", "spec"] ?? .object([])
        pod = removing("activeDeadlineSeconds", from: pod)
        var containers = pod["containers"]?.array ?? []
        if var c = containers.first {
            var env = c["env"]?.array ?? []
            let have = Set(env.compactMap { $0["name"]?.string })
            for (k, v) in [
                ("TRELLIS_ATTEMPT", String(launch.attempt)), ("TRELLIS_REPLICA", String(launch.replica.index)),
                ("TRELLIS_FETCH", "1"),
            ] where !have.contains(k) {
                env.append(["name": .string(k), "value": .string(v)])
            }
            if !have.contains("MY_NODE_NAME") {
                env.append(["name": "MY_NODE_NAME", "valueFrom": ["fieldRef": ["fieldPath": "spec.nodeName"]]])
            }
            c.set("env", .array(env))
            containers[0] = c
            pod.set("containers", .array(containers))
        }
        job.set(path: ["spec", "template", "spec"], pod)
        return job
    }

    /// The static parts: the Dataset and VineyardRuntime (named `settings.dataset`; skipped
    /// without `runtime`) and the flow's code ConfigMap.
    public static func staticObjects(
        flow: FlowSpec, namespace: String, settings: KubeRunSettings, workerImage: String, runtime: Bool
    ) throws -> [KubeValue] {
        var out: [KubeValue] = []
        if runtime {
            var dataset = KubeRender.fluidDataset(flow: flow, namespace: namespace)
            var rt = try KubeRender.fluidRuntime(flow: flow, namespace: namespace, image: workerImage)
            dataset.set(path: ["metadata", "name"], .string(settings.dataset))
            rt.set(path: ["metadata", "name"], .string(settings.dataset))
            out += [dataset, rt]
        }
        out.append(KubeRender.codeConfigMap(flow: flow, namespace: namespace, files: try KubeRender.loadCode(flow: flow)))
        return out
    }

    static func removing(_ key: String, from v: KubeValue) -> KubeValue {
        guard case .object(let pairs) = v else { return v }
        return .object(pairs.filter { $0.0 != key })
    }
}
