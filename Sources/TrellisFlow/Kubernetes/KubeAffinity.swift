/// Where a step's pod may run: anywhere, only on one node, or preferably on one node.
///
/// The node is a Kubernetes node name (what the Trellis daemon there reports as its node,
/// `MY_NODE_NAME` = `spec.nodeName`), matched exactly with `matchFields metadata.name`
/// (`kubernetes.io/hostname` usually equals it, but is not guaranteed to).
public enum StepAffinity: Sendable, Equatable {
    /// No node constraint.
    case none
    /// The pod runs on this node or not at all (it stays Pending when the node is full: the
    /// launcher should then fall back to ``preferredNode(_:)``).
    case requiredNode(String)
    /// The scheduler prefers this node (weight 100) and falls back to any other.
    case preferredNode(String)
}

/// The one place that spells Kubernetes node-affinity terms, for every renderer and the launcher.
///
/// Kubernetes accepts `matchFields` only with key `metadata.name`, operator `In`/`NotIn` and
/// exactly one value; these builders produce nothing else.
public enum KubeAffinity {
    /// Weight of a preferred node term (the largest Kubernetes allows).
    public static let preferredWeight = 100

    /// `{matchFields: [{key: metadata.name, operator: In, values: [node]}]}` — a node
    /// selector term naming one node exactly.
    public static func nodeNameTerm(_ node: String) -> KubeValue {
        ["matchFields": [["key": "metadata.name", "operator": "In", "values": [.string(node)]]]]
    }

    /// `{matchExpressions: [{key, operator: In, values: [value]}]}` — a node label term.
    public static func nodeLabelTerm(key: String, value: String) -> KubeValue {
        ["matchExpressions": [["key": .string(key), "operator": "In", "values": [.string(value)]]]]
    }

    /// A pod's `affinity` for `affinity`, or `nil` when there is no constraint at all.
    ///
    /// `requiredLabel` (e.g. Fluid's `fluid.io/s-<ns>-<dataset>: "true"`, set on nodes that run
    /// the dataset's workers) is ANDed into the required term, so a pinned node must also carry it.
    public static func podAffinity(_ affinity: StepAffinity, requiredLabel: (key: String, value: String)? = nil)
        -> KubeValue?
    {
        var required: KubeValue?
        var preferred: KubeValue?
        var requiredTerm: [(String, KubeValue)] = []
        if let l = requiredLabel {
            requiredTerm.append(("matchExpressions", nodeLabelTerm(key: l.key, value: l.value)["matchExpressions"]!))
        }
        switch affinity {
        case .none: break
        case .requiredNode(let node):
            requiredTerm.append(("matchFields", nodeNameTerm(node)["matchFields"]!))
        case .preferredNode(let node):
            preferred = [["weight": .int(preferredWeight), "preference": nodeNameTerm(node)]]
        }
        if !requiredTerm.isEmpty { required = ["nodeSelectorTerms": [.object(requiredTerm)]] }
        guard required != nil || preferred != nil else { return nil }
        var nodeAffinity: KubeValue = [:]
        if let required { nodeAffinity.set("requiredDuringSchedulingIgnoredDuringExecution", required) }
        if let preferred { nodeAffinity.set("preferredDuringSchedulingIgnoredDuringExecution", preferred) }
        return ["nodeAffinity": nodeAffinity]
    }
}
