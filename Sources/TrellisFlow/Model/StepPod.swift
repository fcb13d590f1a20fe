/// What a step's pod adds on Kubernetes: its own image, Python packages to install before it
/// runs, and volumes mounted into the step's container — Kubernetes `Volume` and
/// `VolumeMount` objects as written (a Fluid processor's `volumes`/`volume_mounts`).
///
/// Only the Kubernetes launcher and the renderers read it; a local run ignores it (trellis.fluid
/// honours a processor's volumes locally with mount namespaces of its own).
public struct StepPod: Codable, Sendable, Equatable {
    /// The step container's image; `nil` keeps the run's image.
    public var image: String?
    /// Requirements (`pandas==2.1.4`) pip installs in the pod before the step runs.
    public var packages: [String]
    /// The index pip installs them from; `nil` is pip's default.
    public var pipIndexURL: String?
    /// Kubernetes `Volume` objects added to the pod.
    public var volumes: [KubeValue]
    /// Kubernetes `VolumeMount` objects added to the step container.
    public var volumeMounts: [KubeValue]

    /// Volume names the step pod already uses (the code, the dataset, the daemon's socket).
    public static let reservedVolumeNames: Set<String> = ["trellis-code", "vineyard", "fluid-dataset-vol", "trellis-socket"]

    /// Creates pod additions.
    public init(
        image: String? = nil, packages: [String] = [], pipIndexURL: String? = nil, volumes: [KubeValue] = [],
        volumeMounts: [KubeValue] = []
    ) {
        self.image = image
        self.packages = packages
        self.pipIndexURL = pipIndexURL
        self.volumes = volumes
        self.volumeMounts = volumeMounts
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case image, packages, volumes
        case pipIndexURL = "pip_index_url"
        case volumeMounts = "volume_mounts"
    }

    /// Decodes the `kubernetes:` key of a step, rejecting unknown keys.
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, allowed: CodingKeys.allCases.map(\.rawValue), context: "kubernetes")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        image = try c.decodeIfPresent(String.self, forKey: .image)
        packages = try c.decodeIfPresent([String].self, forKey: .packages) ?? []
        pipIndexURL = try c.decodeIfPresent(String.self, forKey: .pipIndexURL)
        volumes = try c.decodeIfPresent([KubeValue].self, forKey: .volumes) ?? []
        volumeMounts = try c.decodeIfPresent([KubeValue].self, forKey: .volumeMounts) ?? []
    }

    /// Encodes it in the shape ``init(from:)`` reads (empty fields left out).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(image, forKey: .image)
        if !packages.isEmpty { try c.encode(packages, forKey: .packages) }
        try c.encodeIfPresent(pipIndexURL, forKey: .pipIndexURL)
        if !volumes.isEmpty { try c.encode(volumes, forKey: .volumes) }
        if !volumeMounts.isEmpty { try c.encode(volumeMounts, forKey: .volumeMounts) }
    }

    /// Why these additions cannot make a pod, one sentence each (empty when they can).
    /// `mountPaths` are paths the step container mounts already.
    public func problems(step: String, mountPaths: Set<String>) -> [String] {
        var out: [String] = []
        if let image, image.isEmpty || image.contains(where: \.isWhitespace) {
            out.append("step '\(step)': kubernetes.image '\(image)' is not an image reference")
        }
        for p in packages where p.isEmpty || p.hasPrefix("-") {
            out.append("step '\(step)': kubernetes.packages entry '\(p)' is not a requirement")
        }
        var names: Set<String> = []
        for v in volumes {
            guard let name = v["name"]?.string, KubeNames.isDNSLabel(name) else {
                out.append("step '\(step)': every kubernetes volume needs a name that is a DNS label, got \(v.json())")
                continue
            }
            if Self.reservedVolumeNames.contains(name) {
                out.append("step '\(step)': volume name '\(name)' is Trellis's own; use another")
            } else if !names.insert(name).inserted {
                out.append("step '\(step)': volume '\(name)' is given twice")
            }
        }
        var paths: Set<String> = []
        for m in volumeMounts {
            guard let name = m["name"]?.string, let path = m["mountPath"]?.string else {
                out.append("step '\(step)': every kubernetes volume mount needs name and mountPath, got \(m.json())")
                continue
            }
            if !names.contains(name) { out.append("step '\(step)': volume mount '\(name)' names no volume of the step") }
            if !path.hasPrefix("/") { out.append("step '\(step)': mountPath '\(path)' is not absolute") }
            if mountPaths.contains(path) || !paths.insert(path).inserted {
                out.append("step '\(step)': mountPath '\(path)' is mounted already")
            }
        }
        return out
    }
}
